"""Every user mistake: exit code 2, one line naming the file and YAML path, no traceback."""

import pytest

RECIPE = """name: toy
stages:
  - name: count
    params: {steps: 2, trace: trace.txt}
"""

CASES = {
    "yaml_syntax": ("name: toy\nstages:\n  - name: count\n    params: {steps: 2\n", [], r"r.yaml:5: YAML syntax error"),
    "unknown_top_level_key": (RECIPE + "sede: 3\n", [], "r.yaml: sede: unknown key; did you mean 'seed'?"),
    "unknown_plugin_name": (
        RECIPE.replace("name: count", "name: cont"), [],
        "r.yaml: stages[0].name: unknown stage 'cont'; did you mean 'count'?",
    ),
    "unknown_nested_plugin": (
        RECIPE, ["--set", "rasterizer.name=torh"],
        "r.yaml: rasterizer.name: unknown rasterizer 'torh'; did you mean 'torch'",
    ),
    "unknown_param_key": (
        RECIPE.replace("steps: 2", "step: 2, steps: 2"), [],
        "r.yaml: stages[0].params.step: unknown param; did you mean 'steps'",
    ),
    "wrong_param_type": (
        RECIPE.replace("steps: 2", "steps: two"), [],
        "r.yaml: stages[0].params.steps: expected an integer, got string 'two'",
    ),
    "wrong_type_from_set": (RECIPE, ["--set", "seed=abc"], "r.yaml: seed: expected an integer, got string 'abc'"),
    "missing_required_param": (
        RECIPE.replace("steps: 2, ", ""), [], "r.yaml: stages[0].params.steps: missing required param",
    ),
    "missing_input_file": (
        RECIPE.replace("steps: 2", "steps: 2, input: missing.mp4"), [],
        "r.yaml: stages[0].params.input: input not found: ",
    ),
    "input_is_a_folder": (
        RECIPE.replace("steps: 2", "steps: 2, input: ."), [],
        "r.yaml: stages[0].params.input: input is a folder, expected a file",
    ),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_user_mistakes(cli, tmp_path, case, command):
    text, extra, expected = CASES[case]
    (tmp_path / "r.yaml").write_text(text)
    res = cli(command, "r.yaml", *extra)
    assert res.returncode == 2, res.stdout + res.stderr
    assert expected in res.stderr, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1, res.stderr
    assert not (tmp_path / "runs").exists()  # nothing started


def test_missing_recipe_file(cli):
    res = cli("validate", "nope.yaml")
    assert res.returncode == 2 and "nope.yaml: recipe file not found" in res.stderr
    assert "Traceback" not in res.stderr


def test_debug_shows_traceback(cli, tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE + "sede: 3\n")
    res = cli("validate", "r.yaml", "--debug")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_out_folder_with_other_recipe_is_refused(cli, tmp_path):
    (tmp_path / "a.yaml").write_text(RECIPE)
    (tmp_path / "b.yaml").write_text(RECIPE.replace("steps: 2", "steps: 3"))
    assert cli("run", "a.yaml", "--out", "out").returncode == 0
    before = (tmp_path / "out" / "recipe.yaml").read_text()
    res = cli("run", "b.yaml", "--out", "out")
    assert res.returncode == 2
    assert "out: holds a run of a different recipe" in res.stderr and "refusing to overwrite" in res.stderr
    assert "Traceback" not in res.stderr
    assert (tmp_path / "out" / "recipe.yaml").read_text() == before
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    res = cli("run", "a.yaml", "--out", "junk")
    assert res.returncode == 2 and "junk: folder is not empty and holds no fourreal run" in res.stderr


def test_bad_device_and_bad_set_syntax(cli, tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    res = cli("run", "r.yaml", "--device", "tpu")
    assert res.returncode == 2 and "--device 'tpu'" in res.stderr
    res = cli("run", "r.yaml", "--set", "seed")
    assert res.returncode == 2 and "expected KEY=VALUE" in res.stderr


def test_usage_errors_exit_2_without_traceback(cli):
    res = cli("run")
    assert res.returncode == 2 and "Missing argument" in res.stderr and "Traceback" not in res.stderr
    res = cli("runn", "x.yaml")
    assert res.returncode == 2 and "No such command" in res.stderr
