"""Stages declare the files they read and write (``Stage.reads`` / ``writes`` / ``may_write``):
the runner refuses to publish a stage that did not write a file it declares, and
``ctx.find_output`` takes a file from the newest earlier stage that declares writing it, so
a later stage that happens to hold a file of the same name does not shadow it."""

from __future__ import annotations

import fnmatch

import pytest

import _files_plugin
from conftest import fourreal_env, run_cli
from fourreal_core.errors import PluginError
from fourreal_core.recipe import load_recipe
from fourreal_core.registry import get_registry
from fourreal_core.run import execute


@pytest.fixture()
def registry():
    reg = get_registry()
    reg.register_module(_files_plugin, source="tests:_files_plugin")
    yield reg
    reg.unregister_source("tests:_files_plugin")


def _run(tmp_path, registry, stages: str, out: str = "run"):
    (tmp_path / "r.yaml").write_text(f"name: files\nstages:\n{stages}")
    return execute(load_recipe(tmp_path / "r.yaml", registry=registry, check_files=False), tmp_path / out, registry)


def _seen(run, folder):
    return (run / "stages" / folder / "seen.txt").read_text()


def test_find_output_prefers_the_newest_stage_that_declares_the_file(tmp_path, registry):
    stages = ("  - {name: writer, params: {content: declared}}\n"
              "  - {name: stray, params: {content: stray}}\n")
    run = _run(tmp_path, registry, stages + "  - {name: reader}\n")
    assert _seen(run, "03_reader") == "declared"  # the stray copy, newer, does not shadow it
    # the same from a resumed run, where writer and stray are skipped (their classes declare)
    run = _run(tmp_path, registry, stages + "  - {name: reader, id: again}\n", out="run2")
    assert _seen(run, "03_again") == "declared"
    (tmp_path / "run" / "stages" / "03_reader").rename(tmp_path / "gone")
    run = _run(tmp_path, registry, stages + "  - {name: reader}\n")  # stages 1-2 skipped, 3 runs again
    assert _seen(run, "03_reader") == "declared"


def test_find_output_without_declarations_takes_the_newest_stage_holding_the_file(tmp_path, registry):
    run = _run(tmp_path, registry, "  - {name: stray, id: a, params: {content: a}}\n"
                                   "  - {name: stray, id: b, params: {content: b}}\n  - {name: reader}\n")
    assert _seen(run, "03_reader") == "b"
    run = _run(tmp_path, registry, "  - {name: writer, params: {content: w}}\n"
                                   "  - {name: writer, id: w2, params: {content: w2}}\n  - {name: reader}\n", "r2")
    assert _seen(run, "03_reader") == "w2"  # two declaring stages: the newer


def test_a_stage_missing_a_declared_file_is_not_published(tmp_path, registry):
    with pytest.raises(PluginError) as info:
        _run(tmp_path, registry, "  - {name: writer, params: {forget: true}}\n")
    assert str(info.value) == ("stage 1 writer: finished without writing x.txt, which it declares (writes); "
                               "the stage was not published")
    assert not (tmp_path / "run" / "stages" / "01_writer").exists()


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path):
    (tmp_path / "r.yaml").write_text("name: files\nstages:\n"
                                     "  - {name: writer, params: {forget: true}}\n")
    res = run_cli(["run", "r.yaml", "--out", "run"], tmp_path, env=fourreal_env(extra_modules="_files_plugin"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "stage 1 writer: finished without writing x.txt" in res.stderr and "Traceback" not in res.stderr


def test_every_built_in_stage_declares_its_files_and_reads_what_another_writes():
    from fourreal_core.run import declared_writes, stage_class

    reg = get_registry()
    builtin = [e for e in reg.entries() if e.kind == "stage" and e.distribution.startswith("fourreal")]
    assert len(builtin) >= 9, [e.name for e in builtin]
    classes = {}
    for e in builtin:
        spec = type("Spec", (), {"kind": "stage", "name": e.name})()
        cls = stage_class(spec, reg)
        assert cls is not None and cls.writes, f"stage {e.name} declares no files it writes"
        classes[e.name] = cls
    written = [p for cls in classes.values() for p in declared_writes(cls)]
    old = {"per_frame_deformer.safetensors", "per_frame_deformer.json"}  # w_mv's files in runs before the rename
    for name, cls in classes.items():
        for f in set(cls.reads) - old:
            assert any(fnmatch.fnmatchcase(f, p) for p in written), f"stage {name} reads {f}, which no stage writes"
