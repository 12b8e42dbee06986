import types

import pytest

from fourreal_core import hookimpl
from fourreal_core.errors import PluginError
from fourreal_core.interfaces import KINDS
from fourreal_core.registry import Registry


def _plugin(kind="deformer", name="twist"):
    mod = types.ModuleType(f"plug_{name}")

    @hookimpl
    def fourreal_register(registry):
        registry.add(kind, name, lambda cfg: ("built", cfg), description="a test component")

    mod.fourreal_register = fourreal_register
    return mod


def test_add_get_create_and_unregister():
    reg = Registry()
    reg.register_module(_plugin(), source="pkgA:mod")
    entry = reg.get("deformer", "twist")
    assert entry.distribution == "pkgA" and entry.description == "a test component"
    assert reg.create("deformer", "twist")[0] == "built"
    reg.unregister_source("pkgA:mod")
    assert ("deformer", "twist") not in reg


def test_duplicate_names_both_sources():
    reg = Registry()
    reg.register_module(_plugin(), source="pkgA:one")
    with pytest.raises(PluginError) as exc:
        reg.register_module(_plugin(), source="pkgB:two")
    msg = str(exc.value)
    assert "duplicate deformer 'twist'" in msg and "pkgA:one" in msg and "pkgB:two" in msg


def test_unknown_kind_and_name_suggest():
    reg = Registry()
    with pytest.raises(PluginError, match="unknown plugin kind 'deformr'; did you mean 'deformer'"):
        reg.register_module(_plugin(kind="deformr"), source="x:y")
    reg.register_module(_plugin(name="twist"), source="a:b")
    with pytest.raises(PluginError, match="did you mean 'twist'"):
        reg.get("deformer", "twst")
    with pytest.raises(PluginError, match="valid: twist"):
        reg.get("deformer", "zzzzzz")


def test_builtins_come_from_entry_points_and_env_restricts(monkeypatch):
    reg = Registry()
    reg.load_entry_points()
    srcs = {e.source for e in reg.entries()}
    assert all(s.startswith("fourreal:") for s in srcs)
    assert ("rasterizer", "torch") in reg and ("representation", "gaussians") in reg
    monkeypatch.setenv("FOURREAL_PLUGINS", "gaussians")
    only = Registry()
    only.load_entry_points()
    assert {e.source for e in only.entries()} == {"fourreal:fourreal_gaussians.plugin"}
    monkeypatch.setenv("FOURREAL_PLUGINS", "gaussians,nosuch")
    with pytest.raises(PluginError, match="unknown entry point"):
        Registry().load_entry_points()


def test_kinds_cover_design():
    for k in ("video_prior", "pose_estimator", "representation", "rasterizer", "deformer", "loss", "scheduler"):
        assert k in KINDS


def test_core_imports_no_plugin():
    """fourreal_core must not name any plugin package."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    plugins = sorted(d.name for d in (root / "plugins").iterdir() if (d / "__init__.py").exists())
    assert {"fourreal_poses", "fourreal_stages", "fourreal_diffusers"} <= set(plugins)  # the scan sees them
    for f in (root / "fourreal_core").glob("*.py"):
        text = f.read_text()
        for pkg in (*plugins, "gsplat", "diffusers", "pycolmap"):
            assert f"import {pkg}" not in text and f"from {pkg}" not in text, f"{f.name} imports {pkg}"


# ------------------------------------------------------------ one registration path (issue 30)
def test_a_lazy_target_is_imported_when_first_built_and_called_with_the_config(tmp_path, monkeypatch):
    import sys

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "lazy_twist_impl.py").write_text(
        "class Twist:\n    def __init__(self, cfg):\n        self.cfg = cfg\n")
    reg = Registry()
    mod = types.ModuleType("plug_lazy")

    @hookimpl
    def fourreal_register(registry):
        registry.add("deformer", "twist", "lazy_twist_impl:Twist", description="lazy")

    mod.fourreal_register = fourreal_register
    reg.register_module(mod, source="pkgL:mod")
    assert "lazy_twist_impl" not in sys.modules  # registering imported nothing
    built = reg.create("deformer", "twist")
    assert type(built).__name__ == "Twist" and built.cfg is not None
    assert "lazy_twist_impl" in sys.modules


@pytest.mark.parametrize("target,expected", [
    ("lazy_twist_impl.Twist", "pkgB:mod: deformer 'twist': target 'lazy_twist_impl.Twist' is not "
                              "'package.module:Attribute'"),
    (42, "pkgB:mod: deformer 'twist': the target must be 'module:Attribute' or a callable, got int"),
])
def test_a_malformed_target_is_refused_at_registration(target, expected):
    mod = types.ModuleType("plug_bad")

    @hookimpl
    def fourreal_register(registry):
        registry.add("deformer", "twist", target)

    mod.fourreal_register = fourreal_register
    with pytest.raises(PluginError) as exc:
        Registry().register_module(mod, source="pkgB:mod")
    assert str(exc.value) == expected


def test_a_target_naming_a_missing_attribute_fails_in_one_line_when_built(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "lazy_empty_impl.py").write_text("X = 1\n")
    mod = types.ModuleType("plug_missing")

    @hookimpl
    def fourreal_register(registry):
        registry.add("deformer", "twist", "lazy_empty_impl:Twist")

    mod.fourreal_register = fourreal_register
    reg = Registry()
    reg.register_module(mod, source="pkgM:mod")
    with pytest.raises(PluginError) as exc:
        reg.create("deformer", "twist")
    assert str(exc.value) == "pkgM:mod: deformer 'twist': target 'lazy_empty_impl:Twist': module 'lazy_empty_impl' has no 'Twist'"


def test_a_lazy_config_is_imported_on_first_use_and_must_be_a_dataclass(tmp_path, monkeypatch):
    """``config="module:Class"`` is resolved when the entry's config is first asked for; a
    target that is not a dataclass fails then, in the one line a dataclass-less config gets at
    registration; a malformed one is refused at registration."""
    import sys

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "lazy_cfg_impl.py").write_text(
        "from dataclasses import dataclass\n\n\n@dataclass\nclass TwistConfig:\n    amount: float = 2.0\n\n\n"
        "class NotADataclass:\n    pass\n")
    mod = types.ModuleType("plug_lazy_cfg")

    @hookimpl
    def fourreal_register(registry):
        registry.add("deformer", "twist", lambda cfg: ("built", cfg), config="lazy_cfg_impl:TwistConfig")
        registry.add("deformer", "plain", lambda cfg: cfg, config="lazy_cfg_impl:NotADataclass")

    mod.fourreal_register = fourreal_register
    reg = Registry()
    reg.register_module(mod, source="pkgC:mod")
    assert "lazy_cfg_impl" not in sys.modules  # registering imported nothing
    assert reg.get("deformer", "twist").config is sys.modules["lazy_cfg_impl"].TwistConfig
    assert reg.create("deformer", "twist")[1].amount == 2.0
    with pytest.raises(PluginError) as exc:
        reg.get("deformer", "plain").config
    assert str(exc.value) == "pkgC:mod: config for deformer 'plain' must be a dataclass"
    bad = types.ModuleType("plug_bad_cfg")

    @hookimpl
    def register_bad(registry):
        registry.add("deformer", "twist", lambda cfg: cfg, config="lazy_cfg_impl.TwistConfig")

    bad.fourreal_register = register_bad
    with pytest.raises(PluginError) as exc:
        Registry().register_module(bad, source="pkgD:mod")
    assert str(exc.value) == ("pkgD:mod: config for deformer 'twist': target 'lazy_cfg_impl.TwistConfig' is not "
                              "'package.module:Attribute'")


def test_registering_the_built_in_plugins_imports_no_stage_module_and_no_torch():
    """The built-in stages name their configs as lazy targets: loading the registry (as every
    `fourreal` command does, `--help` included) imports no stage module and not torch."""
    import os
    import subprocess
    import sys

    heavy = [f"fourreal_stages.{m}" for m in
             ("canonical", "motion", "multicam", "poses", "export", "evaluate", "render", "scheduler")]
    code = ("import sys\nfrom fourreal_core.registry import get_registry\nreg = get_registry()\n"
            "assert ('stage', 'canonical') in reg and ('scheduler', 'stagewise') in reg\n"
            f"print(sorted(m for m in sys.modules if m in {heavy + ['torch']!r}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("FOURREAL_PLUGINS", "FOURREAL_PLUGIN_MODULES")}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


def test_registration_goes_through_the_pluggy_hook():
    """``fourreal_register`` is called by pluggy (an undecorated one is not a hook
    implementation and is refused in one line), once per module, with the registry."""
    calls = []
    a, b = types.ModuleType("plug_a"), types.ModuleType("plug_b")

    @hookimpl
    def reg_a(registry):
        calls.append("a")
        registry.add("deformer", "a", lambda cfg: "A")

    @hookimpl
    def reg_b(registry):
        calls.append("b")
        registry.add("deformer", "b", lambda cfg: "B")

    a.fourreal_register, b.fourreal_register = reg_a, reg_b
    reg = Registry()
    reg.register_module(a, source="pa:m")
    reg.register_module(b, source="pb:m")
    assert calls == ["a", "b"]  # registering b did not call a's hook again
    assert [i.plugin for i in reg.pm.hook.fourreal_register.get_hookimpls()] == [a, b]
    plain = types.ModuleType("plug_plain")
    plain.fourreal_register = lambda registry: None
    with pytest.raises(PluginError) as exc:
        reg.register_module(plain, source="pc:m")
    assert str(exc.value) == ("pc:m: plugin module has no fourreal_register(registry) (it has one without "
                              "@hookimpl: decorate it with fourreal_core.hookimpl)")
    assert not reg.pm.has_plugin("pc:m")


def test_plugins_add_cli_commands_through_the_commands_hook():
    import typer
    from typer.testing import CliRunner

    mod = types.ModuleType("plug_cmd")

    @hookimpl
    def fourreal_register_commands(app):
        @app.command(name="hello")
        def hello(name: str):
            print(f"hello {name}")

    mod.fourreal_register_commands = fourreal_register_commands
    reg = Registry()
    reg.register_module(mod, source="pcmd:m")  # a module with only the commands hook is a plugin too
    app = typer.Typer()

    @app.command()
    def other():
        pass

    reg.register_commands(app)
    res = CliRunner().invoke(app, ["hello", "world"])
    assert res.exit_code == 0 and res.output.strip() == "hello world"


def test_the_built_in_commands_come_from_their_packages():
    """`view`, `train-prior` and `batch` are added by their packages' hooks; the CLI's main
    module names none of their modules, and no built-in plugin keeps a factory wrapper."""
    import ast
    from pathlib import Path

    import typer

    root = Path(__file__).resolve().parent.parent
    main_src = (root / "cli" / "fourreal_cli" / "main.py").read_text()
    for module in ("fourreal_viewer.server", "fourreal_masked_prior", "fourreal_cli.batch"):
        assert module not in main_src, module
    reg = Registry()
    reg.load_entry_points()
    app = typer.Typer()
    reg.register_commands(app)
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert {"view", "train-prior", "batch"} <= names, names
    wrappers = []
    for f in sorted((root / "plugins").glob("*/plugin.py")):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.FunctionDef) and len(node.body) == 2 and isinstance(node.body[0], ast.ImportFrom) \
                    and isinstance(node.body[1], ast.Return):
                wrappers.append(f"{f.parent.name}.{node.name}")
    assert not wrappers, wrappers
