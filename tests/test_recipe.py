import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fourreal_core.config import Ramp
from fourreal_core.errors import RecipeError
from fourreal_core.recipe import dump_recipe, load_recipe


def _write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = """
name: toy
seed: 3
stages:
  - name: count
    params: {steps: 4, trace: trace.txt, weight: [10, 0.0, 2.0, 20]}
"""


def test_ramp_values():
    r = Ramp([10, 0.0, 2.0, 20])
    assert r.at(0) == 0.0 and r.at(10) == 0.0 and r.at(15) == pytest.approx(1.0) and r.at(99) == 2.0
    assert Ramp(0.5).at(1000) == 0.5 and Ramp(0.5) == 0.5
    assert Ramp([10, 0.0, 2.0, 20]).scaled_steps(0.1).to_yaml() == [1, 0.0, 2.0, 2]
    with pytest.raises(ValueError):
        Ramp([20, 0, 1, 10])
    with pytest.raises(ValueError):
        Ramp("fast")


def test_load_resolves_defaults_and_components(tmp_path, registry):
    rec = load_recipe(_write(tmp_path, BASE), check_files=False)
    st = rec.stages[0]
    assert st.name == "count" and st.params.steps == 4 and st.params.sleep == 0.0
    assert isinstance(st.params.weight, Ramp) and st.params.weight.at(15) == pytest.approx(1.0)
    assert rec.rasterizer.name == "auto" and rec.rasterizer.params.eps2d == 0.3
    assert rec.seed == 3 and rec.device == "auto"
    # component defaults given as YAML in a dataclass are resolved like YAML
    (d,) = st.params.extra_deformers
    assert d.kind == "deformer" and d.name == "shift" and d.params.amount == 0.5
    resolved = yaml.safe_load(dump_recipe(rec))["stages"][0]["params"]["extra_deformers"]
    assert resolved == [{"name": "shift", "params": {"amount": 0.5}}]


def test_overrides_are_typed_by_target(tmp_path, registry):
    p = _write(tmp_path, BASE)
    rec = load_recipe(p, ["seed=7", "stages.count.params.steps=9", "stages.0.params.sleep=1",
                          "stages.count.params.weight=[0, 1, 2, 5]", "name=123",
                          "rasterizer.name=torch", "rasterizer.params.tile_size=8"], check_files=False)
    assert rec.seed == 7 and rec.stages[0].params.steps == 9
    assert rec.stages[0].params.sleep == 1.0 and isinstance(rec.stages[0].params.sleep, float)
    assert rec.stages[0].params.weight.at(5) == 2.0
    assert rec.name == "123"  # a str field keeps the text
    assert rec.rasterizer.name == "torch" and rec.rasterizer.params.tile_size == 8
    with pytest.raises(RecipeError, match=r"stages\[0\]\.params\.steps: expected an integer"):
        load_recipe(p, ["stages.count.params.steps=many"], check_files=False)
    with pytest.raises(RecipeError, match=r"no item 'nosuch'"):
        load_recipe(p, ["stages.nosuch.params.steps=1"], check_files=False)
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(p, ["seed"], check_files=False)


def test_resolved_recipe_runs_again_identically(tmp_path, registry):
    p = _write(tmp_path, BASE)
    rec = load_recipe(p, check_files=False)
    text = dump_recipe(rec)
    data = yaml.safe_load(text)
    assert data["stages"][0]["params"]["sleep"] == 0.0  # defaults filled in
    assert data["stages"][0]["params"]["weight"] == [10, 0.0, 2.0, 20]
    p2 = _write(tmp_path, text, "resolved.yaml")
    again = load_recipe(p2, check_files=False)
    assert dump_recipe(again) == text


def test_validate_imports_no_torch(tmp_path):
    """Listing plugins must not import torch or heavy plugin code. (Validating a recipe imports
    its stages' modules, and torch with them: a stage's config lives beside its code.)"""
    code = (
        "import sys\n"
        "from fourreal_cli.main import main\n"
        "try:\n    main(['plugins'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'gsplat', 'diffusers', 'pycolmap') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_set_on_a_defaulted_component_keeps_its_name(tmp_path, registry):
    p = _write(tmp_path, BASE)
    rec = load_recipe(p, ["rasterizer.params.tile_size=8"], check_files=False)
    assert rec.rasterizer.name == "auto" and rec.rasterizer.params.tile_size == 8


def test_input_paths_from_set_are_relative_to_cwd(tmp_path, registry, monkeypatch):
    sub = tmp_path / "recipes"
    sub.mkdir()
    p = _write(sub, BASE)
    (tmp_path / "clip.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    rec = load_recipe(p, ["stages.count.params.input=clip.txt"])
    assert rec.stages[0].params.input == str((tmp_path / "clip.txt").resolve())
    (sub / "inside.txt").write_text("y")
    p2 = _write(sub, BASE.replace("trace: trace.txt", "trace: trace.txt, input: inside.txt"), "r2.yaml")
    assert load_recipe(p2).stages[0].params.input == str((sub / "inside.txt").resolve())
