"""Nothing lost, nothing silently wrong (issue 11): output-folder safety, the run lock,
non-finite guards, strict JSON, and one line for every bad input -- each through the real
console script where a user meets it (exit code, one line, the file or YAML path named, no
traceback; for the data-loss cases the victim folder is byte-identical afterwards)."""

from __future__ import annotations

import errno
import hashlib
import shutil
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, fourreal_env

RECIPE = """name: toy
stages:
  - name: count
    id: quick
    params: {steps: 3, trace: trace.txt}
  - name: count
    id: second
    params: {steps: 2, trace: trace.txt}
"""


def _one_line_error(res, *expected: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert len(lines) == 1, res.stderr
    for e in expected:
        assert e in lines[0], lines[0]
    return lines[0]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def toy_run(cli, tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    res = cli("run", "r.yaml", "--out", "run")
    assert res.returncode == 0, res.stderr
    return tmp_path / "run"


# ------------------------------------------------------------------------ data loss
@pytest.mark.parametrize("command", ["export"])  # eval and render share execute_adhoc
def test_adhoc_refuses_folders_it_did_not_write(cli, toy_run, command):
    run = toy_run
    before = _snapshot(run / "stages")
    res = cli(command, "run", "--out", "stages")
    _one_line_error(res, "--out 'stages'", "part of the run folder")
    assert _snapshot(run / "stages") == before
    mine = run / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    res = cli(command, "run", "--out", "mine")
    _one_line_error(res, "mine: already exists and is not a fourreal output folder", "nothing was touched")
    assert (mine / "notes.txt").read_text() == "my notes" and len(list(mine.iterdir())) == 1
    for bad in ("../escaped", "a/b"):
        res = cli(command, "run", "--out", bad)
        _one_line_error(res, f"--out {bad!r}: must be a plain sub-folder name")
    assert not (run.parent / "escaped").exists()


def test_adhoc_replaces_only_its_own_output(registry, tmp_path, toy_run):
    """A same-kind output holding only the files fourreal wrote is replaced; one with a file
    of the user's inside, or of another kind, is refused untouched."""
    from fourreal_core.errors import RunDirError
    from fourreal_cli.adhoc import execute_adhoc

    params = {"steps": 1, "trace": str(tmp_path / "t.txt")}
    out = execute_adhoc(toy_run, "count", params, "myout", registry)
    assert json.loads((out / ".fourreal-output.json").read_text()) == {"kind": "count", "files": ["result.json"]}
    execute_adhoc(toy_run, "count", params, "myout", registry)  # replaced: fine
    (out / "keep.txt").write_text("user file")
    before = _snapshot(out)
    with pytest.raises(RunDirError, match="holds files fourreal did not write \\(keep.txt\\)"):
        execute_adhoc(toy_run, "count", params, "myout", registry)
    assert _snapshot(out) == before
    (out / "keep.txt").unlink()
    with pytest.raises(RunDirError, match="is a fourreal count output, not a export output"):
        execute_adhoc(toy_run, "export", {}, "myout", registry)


@pytest.mark.parametrize("field,value,where", [
    ("id", "x/../../../escaped", "stages[0].id: 'x/../../../escaped' becomes a folder name"),
    ("id", "..", "stages[0].id: '..' becomes a folder name"),
    ("name", "../up", "name: '../up' becomes a folder name"),
])
def test_names_that_become_paths_are_validated(cli, tmp_path, field, value, where):
    text = RECIPE.replace("id: quick", f"id: {json.dumps(value)}") if field == "id" else \
        RECIPE.replace("name: toy", f"name: {json.dumps(value)}")
    (tmp_path / "r.yaml").write_text(text)
    for command in ("validate", "run"):
        res = cli(command, "r.yaml", "--out", "run") if command == "run" else cli(command, "r.yaml")
        _one_line_error(res, f"r.yaml: {where}")
    assert not (tmp_path / "run").exists() and not (tmp_path.parent / "escaped").exists()


def test_every_written_path_stays_inside_the_run(tmp_path):
    from fourreal_core.errors import RunDirError
    from fourreal_core.run import RunDir

    rd = RunDir(tmp_path / "run", "", "x", "f")
    with pytest.raises(RunDirError, match="outside"):
        rd.final_dir(1, "x/../../../escaped")
    with pytest.raises(RunDirError, match="outside"):
        rd.checkpoint_dir(1, "x/../../../y")


# ------------------------------------------------------------------------ concurrency
SLOW = """name: slow
stages:
  - name: count
    params: {steps: 40, trace: trace.txt, sleep: 0.1, hold: hold.txt}
"""


def test_two_runs_on_one_out_exactly_one_proceeds(tmp_path):
    (tmp_path / "r.yaml").write_text(SLOW)
    (tmp_path / "hold.txt").write_text("the first run waits at step 1 while this file exists")
    exe = Path(sys.executable).parent / "fourreal"
    first = subprocess.Popen([str(exe), "run", "r.yaml", "--out", "run"], cwd=tmp_path, env=fourreal_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (tmp_path / "trace.txt").exists():
        assert time.time() - t0 < 60 and first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = subprocess.run([str(exe), "run", "r.yaml", "--out", "run"], cwd=tmp_path, env=fourreal_env(),
                            capture_output=True, text=True, timeout=120)
    (tmp_path / "hold.txt").unlink()  # (held so a slow start of the second cannot miss the first)
    _one_line_error(second, f"run is in use by pid {first.pid} on {socket.gethostname()}")
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    result = json.loads((tmp_path / "run" / "stages" / "01_count" / "result.json").read_text())
    assert result["counter"] == 40.0  # every step ran once, in the one process that proceeded
    steps = [ln for ln in (tmp_path / "trace.txt").read_text().split()]
    assert steps == [f"count:{i}" for i in range(40)]
    assert not list((tmp_path / "run" / "stages").glob(".*partial"))


def test_lock_does_not_block_readers_and_dies_with_its_holder(registry, tmp_path, toy_run):
    """While a run holds its lock, an ad-hoc command writing its own sub-folder (what
    `fourreal eval` of a finished stage does) proceeds; a lock whose holder died is gone."""
    from fourreal_core.lock import FolderLock
    from fourreal_cli.adhoc import execute_adhoc

    with FolderLock(toy_run):
        out = execute_adhoc(toy_run, "count", {"steps": 1, "trace": str(tmp_path / "t.txt")}, "ev", registry)
        assert (out / "result.json").exists()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fourreal_core.lock import FolderLock; "
        f"l = FolderLock({str(toy_run)!r}).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    from fourreal_core.errors import RunDirError

    with pytest.raises(RunDirError, match=f"in use by pid {holder.pid}"):
        FolderLock(toy_run).acquire()
    holder.kill()
    holder.wait()
    FolderLock(toy_run).acquire().release()  # the OS released the dead holder's lock


# ------------------------------------------------------------------------ non-finite
NAN_RECIPE = """name: nan
stages:
  - name: count
    params: {steps: 12, trace: trace.txt, nan_at: 7}
"""


def test_guard_stops_a_loss_that_turns_nan(cli, tmp_path):
    (tmp_path / "r.yaml").write_text(NAN_RECIPE)
    res = cli("run", "r.yaml", "--out", "run")
    _one_line_error(res, "count step 8: the loss became non-finite (nan)")
    run = tmp_path / "run"
    assert not (run / "stages" / "01_count").exists()  # nothing from the failed stage published
    ckpts = sorted((run / "checkpoints" / "01_count").glob("*.safetensors"))
    assert [p.name for p in ckpts] == ["step_00000006.safetensors", "step_00000007.safetensors"]
    from safetensors.torch import load_file
    import torch

    assert all(torch.isfinite(t).all() for p in ckpts for t in load_file(str(p)).values())
    for line in (run / "log.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in log.jsonl"))


def test_guard_stops_a_learning_rate_that_blows_up(tmp_path):
    """`--set` a deformer learning rate of 1e30 (the temporal deformation w_t) through the
    console script: the run stops naming the stage, the step and the value; no non-finite
    checkpoint, nothing published. (``means_lr=1e6`` no longer makes NaN: the Gaussians fly
    far away but stay finite.)"""
    from test_pipeline import TINY

    from conftest import run_cli

    res = run_cli(["run", str(ROOT / "recipes" / "demo.yaml"), "--out", "run", *TINY,
                   "--set", "stages.motion.params.w_t.params.lr=1e30"],
                  tmp_path, env=fourreal_env(extra_modules="", OMP_NUM_THREADS="1"), timeout=600)
    line = _one_line_error(res, " step ", "became non-finite")
    import re

    m = re.search(r"error: (canonical|motion) step (\d+): ", line)
    assert m, line
    run = tmp_path / "run"
    assert (run / "stages" / "01_synthetic").is_dir()
    assert not list((run / "stages").glob(f"*_{m.group(1)}")), sorted(p.name for p in (run / "stages").iterdir())
    import torch
    from safetensors.torch import load_file

    for p in (run / "checkpoints").rglob("*.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(p)).values() if t.is_floating_point()), p


def test_strict_json_writes_null_for_non_finite(tmp_path):
    from fourreal_core.io import write_json
    from fourreal_core.run import RunLog

    write_json(tmp_path / "m.json", {"psnr": float("nan"), "ok": 1.5, "per": [float("inf")]})
    data = json.loads((tmp_path / "m.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data == {"psnr": None, "ok": 1.5, "per": [None], "non_finite": ["per[0]", "psnr"]}
    RunLog(tmp_path / "log.jsonl")("train", loss=float("-inf"))
    rec = json.loads((tmp_path / "log.jsonl").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert rec["loss"] is None and rec["non_finite"] == ["loss"]


def test_outputs_follow_the_umask(tmp_path):
    from fourreal_core.io import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_json(tmp_path / "b.json", {})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# ------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("value,expected", [
    (".nan", "iterations_scale: expected a finite number, got nan"),
    ("-1", "iterations_scale: must be > 0"),
])
def test_non_finite_iterations_scale(cli, tmp_path, value, expected):
    (tmp_path / "r.yaml").write_text(RECIPE)
    for command in ("validate", "run"):
        _one_line_error(cli(command, "r.yaml", "--set", f"iterations_scale={value}"), expected)


def test_negative_learning_rate(cli, tmp_path):
    res = cli("validate", str(ROOT / "recipes" / "demo.yaml"),
              "--set", "stages.canonical.params.representation.params.scales_lr=-0.1")
    _one_line_error(res, "representation.params.scales_lr: a learning rate must be >= 0, got -0.1")


def test_non_utf8_recipe(cli, tmp_path):
    (tmp_path / "r.yaml").write_bytes(RECIPE.encode() + b"# caf\xe9\n")
    _one_line_error(cli("validate", "r.yaml"), "r.yaml:9: not a UTF-8 text file (byte 0xe9)")


def _transforms(tmp_path: Path, mutate) -> Path:
    import numpy as np
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "img.png", np.zeros((8, 8, 3), np.uint8))
    data = {"fl_x": 10.0, "w": 8, "h": 8,
            "frames": [{"file_path": "img.png", "transform_matrix": np.eye(4).tolist(), "time": 0.0}] * 2}
    data = json.loads(json.dumps(data))
    mutate(data)
    (tmp_path / "t.json").write_text(json.dumps(data))
    return tmp_path / "t.json"


@pytest.mark.parametrize("case,mutate,expected", [
    ("ragged", lambda d: d["frames"][1].update(transform_matrix=[[1, 0, 0, 0], [0, 1]]),
     "t.json: frames[1].transform_matrix must be a 4x4 (or 3x4) list of rows of numbers"),
    ("string", lambda d: d["frames"][1].update(transform_matrix=[["a", 0, 0, 0]] * 4),
     "t.json: frames[1].transform_matrix[0][0] must be a number, got \"a\""),
    ("nan", lambda d: d["frames"][0]["transform_matrix"][0].__setitem__(3, float("nan")),
     "t.json: frames[0].transform_matrix[0][3] must be finite"),
    ("singular", lambda d: d["frames"][1].update(transform_matrix=[[0.0] * 4] * 3 + [[0, 0, 0, 1]]),
     "t.json: frames[1].transform_matrix is singular"),
    ("focal_string", lambda d: d.update(fl_x="wide"), "t.json: fl_x must be a number, got \"wide\""),
    ("focal_zero", lambda d: d["frames"][1].update(fl_x=0), "t.json: frames[1]: fl_x must be > 0, got 0"),
    ("focal_negative", lambda d: d.update(fl_x=-5), "t.json: fl_x must be > 0, got -5"),
    ("focal_inf", lambda d: d.update(fl_x=float("inf")), "t.json: fl_x must be finite"),
    ("time_nan", lambda d: d["frames"][1].update(time=float("nan")), "t.json: frames[1].time must be finite"),
    ("time_string", lambda d: d["frames"][0].update(time="noon"), "t.json: frames[0].time must be a number"),
])
def test_bad_transforms_json(tmp_path, case, mutate, expected):
    from fourreal_core.errors import InputError
    from fourreal_formats.transforms import load_transforms

    path = _transforms(tmp_path, mutate)
    with pytest.raises(InputError) as exc:
        load_transforms(path)
    assert str(exc.value).startswith(str(path) + expected[len("t.json"):]), str(exc.value)


def test_bad_transforms_json_through_a_recipe(cli, tmp_path):
    """The same errors reach a user of `fourreal run` as one line (a D-NeRF-style fit)."""
    path = _transforms(tmp_path, lambda d: d["frames"][1].update(transform_matrix=[[0.0] * 4] * 3 + [[0, 0, 0, 1]]))
    res = cli("run", str(ROOT / "recipes" / "dnerf.yaml"), "--out", "run", "--set", f"stages.motion.params.reference={path}",
              "--set", f"stages.eval.params.against={path}", env=fourreal_env(extra_modules="", OMP_NUM_THREADS="1"))
    _one_line_error(res, f"{path}: frames[1].transform_matrix is singular")


@pytest.mark.parametrize("content,expected", [
    (b"", "not a PLY file"),
    (b"hello world", "not a PLY file (it does not start with 'ply')"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nproperty float y\n"
     b"property float z\nend_header\n", "damaged or truncated PLY"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nprop", "damaged or truncated PLY"),
])
def test_bad_ply(tmp_path, content, expected):
    from fourreal_core.errors import InputError
    from fourreal_gaussians.ply import read_ply
    from fourreal_formats.points import read_points

    (tmp_path / "x.ply").write_bytes(content)
    for reader in (read_ply, read_points):
        with pytest.raises(InputError) as exc:
            reader(tmp_path / "x.ply")
        assert str(exc.value).startswith(f"{tmp_path / 'x.ply'}: {expected}"), str(exc.value)


def test_nan_in_points_and_splat_ply(tmp_path):
    import numpy as np

    from fourreal_core.errors import InputError
    from fourreal_core.types import PointCloud
    from fourreal_gaussians.ply import read_ply, write_ply
    from fourreal_formats.points import read_points, write_points_ply
    import torch

    pts = torch.rand(5, 3)
    pts[3, 1] = float("nan")
    write_points_ply(tmp_path / "p.ply", PointCloud(pts, torch.rand(5, 3)))
    with pytest.raises(InputError, match="p.ply: point 3 has a non-finite coordinate"):
        read_points(tmp_path / "p.ply")
    n = 4
    means = np.zeros((n, 3), np.float32)
    scales = np.zeros((n, 3), np.float32)
    scales[2, 0] = np.inf
    write_ply(tmp_path / "g.ply", means, np.tile([1, 0, 0, 0], (n, 1)), scales, np.zeros(n), np.zeros((n, 1, 3)),
              np.zeros((n, 0, 3)))
    with pytest.raises(InputError, match="g.ply: vertex 2 has a non-finite scale_0"):
        read_ply(tmp_path / "g.ply")


def test_non_image_png(tmp_path):
    from fourreal_core.errors import InputError
    from fourreal_media import read_image

    (tmp_path / "a.png").write_text("not an image")
    with pytest.raises(InputError, match="a.png: not an image file") as exc:
        read_image(tmp_path / "a.png")
    assert "pip install" not in str(exc.value)


@pytest.mark.parametrize("fault,expected", [
    ("train_step:cuda_oom@1", "stage 1 quick: out of CUDA memory; lower the resolution"),
    ("train_step:cpu_oom@1", "stage 1 quick: out of CPU memory; lower the resolution"),
    ("save_tensors:no_space", "step_00000001.safetensors: no space left on the disk"),
    ("atomic_write:read_only", "the filesystem is read-only; choose a writable --out"),
])
def test_environment_failures_are_one_line(cli, tmp_path, fault, expected):
    (tmp_path / "r.yaml").write_text(RECIPE)
    res = cli("run", "r.yaml", "--out", "run", env=fourreal_env(FOURREAL_FAULT=fault))
    _one_line_error(res, expected)
    run = tmp_path / "run"
    leftovers = [p for p in run.rglob("*") if p.name.startswith(".") and ".tmp." in p.name]
    assert leftovers == []  # nothing half-written under a temporary name
    if (run / "checkpoints").exists():
        for p in (run / "checkpoints").rglob("*.safetensors"):
            from safetensors.torch import load_file

            load_file(str(p))  # every checkpoint left is whole


@pytest.mark.parametrize("out,expected", [
    ("afile/run", "afile/run: a part of this path is a file, not a folder"),
    ("afile", "afile: is a file, not a folder; choose another --out"),
    ("/proc/fourreal-run", "/proc/fourreal-run: "),
])
def test_unwritable_out(cli, tmp_path, out, expected):
    (tmp_path / "r.yaml").write_text(RECIPE)
    (tmp_path / "afile").write_text("x")
    _one_line_error(cli("run", "r.yaml", "--out", out), expected)
    assert (tmp_path / "afile").read_text() == "x"


def test_train_prior_non_finite_exits_2(cli, tmp_path):
    import numpy as np
    import imageio.v3 as iio

    vids = tmp_path / "videos" / "clip"
    vids.mkdir(parents=True)
    for i in range(10):
        iio.imwrite(vids / f"{i:03d}.png", (np.random.rand(16, 16, 3) * 255).astype(np.uint8))
    res = cli("train-prior", "videos", "--out", "prior", "--steps", "4", "--lr", "1e30", "--frames", "4",
              "--height", "16", "--width", "16", "--patch", "8", "--dim", "16", "--depth", "1", "--heads", "2",
              env=fourreal_env(extra_modules="", OMP_NUM_THREADS="1"))
    _one_line_error(res, "train-prior step ", "the loss became non-finite", "lower --lr")


# ------------------------------------------------------------------------ resume / rerun
def test_rerun_after_fixing_an_unfinished_stage_is_allowed(cli, tmp_path):
    (tmp_path / "r2.yaml").write_text(RECIPE)
    # stage 1 finishes, then the second stage's input is "corrected" (a changed param of an unfinished stage)
    res = cli("run", "r2.yaml", "--out", "run", "--set", "stages.second.params.nan_at=0")
    assert res.returncode == 2 and not (tmp_path / "run" / "stages" / "02_second").exists()
    before = _snapshot(tmp_path / "run" / "stages" / "01_quick")
    res = cli("run", "r2.yaml", "--out", "run")
    assert res.returncode == 0, res.stderr
    assert "recipe changed since the last attempt (stages.second.params.nan_at: 0 -> null)" in res.stdout + res.stderr
    assert _snapshot(tmp_path / "run" / "stages" / "01_quick") == before  # kept, not rerun
    # a change to a finished stage is refused, naming the key and how to start fresh
    res = cli("run", "r2.yaml", "--out", "run", "--set", "stages.quick.params.steps=4")
    line = _one_line_error(res, "run: holds a run of a different recipe (stages.quick.params.steps: 3 -> 4",
                           "finished stage(s) 1 quick", "delete the folder to start fresh")
    assert "2 second" in line


def test_a_run_started_before_an_upgrade_added_parameters_is_kept(cli, tmp_path):
    """A newer fourreal (or plugin) resolves parameters the run's recipe.yaml does not have:
    the finished stages are kept, not refused as 'a different recipe'."""
    import yaml

    (tmp_path / "r.yaml").write_text(RECIPE)
    assert cli("run", "r.yaml", "--out", "run").returncode == 0
    run = tmp_path / "run"
    before = _snapshot(run / "stages")
    # what the run folder looks like when the older code had no `nan_at` parameter on this stage
    old = yaml.safe_load((run / "recipe.yaml").read_text())
    for st in old["stages"]:
        assert "nan_at" in st["params"]
        del st["params"]["nan_at"]
    (run / "recipe.yaml").write_text(yaml.safe_dump(old))
    info = json.loads((run / "run.json").read_text())
    info["fingerprint"] = "0" * 16
    info["stages"] = [{**st, "fingerprint": "0" * 16} for st in info["stages"]]
    (run / "run.json").write_text(json.dumps(info))
    res = cli("run", "r.yaml", "--out", "run")
    assert res.returncode == 0, res.stderr
    assert ("parameters added since this run started (stages.quick.params.nan_at, stages.second.params.nan_at) "
            "take their current values; finished stages are kept") in res.stdout + res.stderr
    assert _snapshot(run / "stages") == before  # nothing recomputed
    assert "nan_at" in (run / "recipe.yaml").read_text()  # the folder now records the new resolution
    # a changed value beside the added ones is still a different recipe
    (run / "recipe.yaml").write_text(yaml.safe_dump(old))
    (run / "run.json").write_text(json.dumps(info))
    res = cli("run", "r.yaml", "--out", "run", "--set", "stages.quick.params.steps=4")
    _one_line_error(res, "run: holds a run of a different recipe", "finished stage(s) 1 quick")
    # added parameters everywhere and a changed value in a later stage that has not finished:
    # the earlier finished stage is kept (its only differences are the added parameters)
    (run / "recipe.yaml").write_text(yaml.safe_dump(old))
    (run / "run.json").write_text(json.dumps(info))
    second = next((run / "stages").glob("02_*"))
    shutil.rmtree(second)
    quick = _snapshot(next((run / "stages").glob("01_*")))
    res = cli("run", "r.yaml", "--out", "run", "--set", "stages.second.params.steps=4")
    assert res.returncode == 0, res.stderr
    assert "finished stages before stage 2 are kept" in res.stdout + res.stderr
    assert _snapshot(next((run / "stages").glob("01_*"))) == quick
    assert second.is_dir()
    # an added parameter the user sets now is a change, not an addition: the finished stage
    # that lacks it is not passed off as computed with it
    (run / "recipe.yaml").write_text(yaml.safe_dump(old))
    (run / "run.json").write_text(json.dumps(info))
    res = cli("run", "r.yaml", "--out", "run", "--set", "stages.quick.params.nan_at=2")
    _one_line_error(res, "run: holds a run of a different recipe", "finished stage(s) 1 quick")


def test_checkpoint_with_wrong_keys_or_nan_falls_back(registry, tmp_path):
    """A checkpoint that loads but does not fit, or holds NaN, falls back to the previous one,
    and the run says so in one line."""
    import torch

    from fourreal_core.run import CheckpointStore, RunLog, StageContext
    from fourreal_core.trainer import train

    store = CheckpointStore(tmp_path / "ck", keep=5)
    store.save(2, {"w": torch.full((3,), 2.0)})
    store.save(3, {"w": torch.full((3,), float("nan"))})
    store.save(4, {"other": torch.zeros(1)})
    notes: list[str] = []
    ctx = StageContext(name="fit", index=1, run_dir=tmp_path, out_dir=tmp_path, recipe_dir=tmp_path,
                       device=torch.device("cpu"), seed=0, iterations_scale=1.0, checkpoints=store,
                       log=RunLog(tmp_path / "log.jsonl"), registry=registry)
    ctx.notice = notes.append  # type: ignore[method-assign]
    w = torch.zeros(3)
    seen: list[int] = []

    def load(t, meta):
        w.copy_(t["w"])

    def step(i):
        seen.append(i)
        w.add_(1.0)
        return {"loss": 1.0}

    start = train(ctx, 6, step, lambda: {"w": w}, load, checkpoint_every=100)
    assert start == 2 and seen == [2, 3, 4, 5] and torch.equal(w, torch.full((3,), 6.0))
    assert len(notes) == 1 and "resuming from step 2" in notes[0]
    assert "step_00000004.safetensors (does not fit this stage" in notes[0]
    assert "step_00000003.safetensors (non-finite tensor 'w')" in notes[0]


# ------------------------------------------------- phases and duplicate keys (issue 33)
PHASES_RECIPE = """name: phases
stages:
  - name: canonical
    params:
      scheduler:
        name: stagewise
        params:
          phases:
            - {name: warmup, iterations: 100, losses: [l1], train: [gaussians], deform: false}
            - {name: grow, iterations: 100, losses: [l1, small_motion], train: [gaussians, deformer], frames: all}
  - name: motion
    params:
      losses: [{name: align}]
      scheduler:
        name: stagewise
        params:
          phases:
            - {name: motion, iterations: 100, losses: [align], train: [deformer], frames: reference}
"""
_CANON = "r.yaml: stages[0].params.scheduler.params.phases"
_MOTION = "r.yaml: stages[1].params.scheduler.params.phases"


def test_the_phases_recipe_is_valid(cli, tmp_path):
    """The base of the cases below validates, as do phases of 0 iterations (skipped) and a
    phase naming a registered loss the stage leaves out (active when configured)."""
    (tmp_path / "r.yaml").write_text(PHASES_RECIPE.replace("losses: [l1, small_motion]",
                                                           "losses: [l1, small_motion, sds_multiview]"))
    res = cli("validate", "r.yaml", "--set", "stages.canonical.params.scheduler.params.phases.warmup.iterations=0")
    assert res.returncode == 0, res.stderr
    assert "ok r.yaml: phases (canonical -> motion)" in res.stdout


@pytest.mark.parametrize("old,new,expected", [
    ("train: [gaussians], deform", "train: [gausians], deform",
     f"{_CANON}[0].train[0]: unknown parameter group 'gausians'; did you mean 'gaussians'?"),
    ("train: [deformer]", "train: [deformer, cameras]",
     f"{_MOTION}[0].train[1]: unknown parameter group 'cameras' "
     "(stage 'motion' trains: gaussians, new_gaussians, deformer)"),
    ("losses: [l1], train", "losses: [l2], train",
     f"{_CANON}[0].losses[0]: unknown loss 'l2'; did you mean 'l1'?"),
    ("losses: [l1, small_motion]", "losses: [l1, smallmotion]",
     f"{_CANON}[1].losses[1]: unknown loss 'smallmotion'; did you mean 'small_motion'?"),
    ("losses: [l1, small_motion]", "losses: [l1, foo]",
     f"{_CANON}[1].losses[1]: unknown loss 'foo' (stage 'canonical' has the losses l1, small_motion; "
     "registered losses: "),
    ("frames: all", "frames: everything",
     f"{_CANON}[1].frames: 'everything' is not one of all, reference, freeze_time"),
    ("iterations: 100, losses: [align]", "iterations: -6000, losses: [align]",
     f"{_MOTION}[0].iterations: must be >= 0 (0 skips the phase), got -6000"),
    ("iterations: 100, losses: [align]", "iterations: 0, losses: [align]",
     f"{_MOTION}: no phase has iterations > 0: stage 'motion' would train nothing"),
    ("losses: [l1], train", "losses: [ssim], train",
     f"{_CANON}[0].losses: phase 'warmup' names no loss of stage 'canonical' (it names ssim; the stage has "
     "l1, small_motion), so it would train on nothing"),
    ("train: [deformer], frames: reference}", "train: [deformer], frames: reference, grow: true}\n"
     "            - {name: spawn, iterations: 100, losses: [align], train: [new_gaussians], grow: true}",
     f"{_MOTION}[1].grow: only one phase may grow; phase 'motion' already does"),
    ("deform: false}", "deform: false, grow: true}",
     f"{_CANON}[0].grow: stage 'canonical' does not grow new Gaussians (the motion stage does); remove 'grow'"),
    ("          phases:\n            - {name: warmup", "          camera_lr: 0.001\n          phases:\n            - {name: warmup",
     "r.yaml: stages[0].params.scheduler.params.camera_lr: moved to the canonical stage's params (the stage "
     "owns the cameras): write `camera_lr:` beside `refine_cameras:`"),
    ("losses: [{name: align}]", "losses: [{name: align}, {name: rigid}]",
     "r.yaml: stages[1].params.losses[1]: loss 'rigid' is active in no phase of stage 'motion'; add it to "
     "the 'losses' of the phases that should use it (scheduler.params.phases: motion)"),
])
def test_phases_are_validated_like_everything_else(cli, tmp_path, old, new, expected):
    """A typo in a phase trained something else (or nothing) with exit 0; now `validate` and
    `run` refuse it in one line naming the YAML path, before anything runs."""
    assert old in PHASES_RECIPE
    (tmp_path / "r.yaml").write_text(PHASES_RECIPE.replace(old, new, 1))
    for command in ("validate", "run"):
        res = cli(command, "r.yaml", "--out", "run") if command == "run" else cli(command, "r.yaml")
        _one_line_error(res, expected)
    assert not (tmp_path / "run").exists()


def test_a_bad_phase_from_set_names_its_path(cli, tmp_path):
    res = cli("validate", str(ROOT / "recipes" / "demo.yaml"),
              "--set", "stages.canonical.params.scheduler.params.phases.deform_grow.train=[gaussians,deformr]")
    _one_line_error(res, "demo.yaml: stages[1].params.scheduler.params.phases[1].train[1]: "
                         "unknown parameter group 'deformr'; did you mean 'deformer'?")


@pytest.mark.parametrize("text,expected", [
    ("name: a\nseed: 1\nname: b\nstages: [{name: count, params: {steps: 1}}]\n",
     "r.yaml: line 3: duplicate key 'name' (first at line 1)"),
    (PHASES_RECIPE.replace("- {name: motion, iterations: 100,", "- {name: motion, iterations: 100, iterations: 9,"),
     "r.yaml: line 18: duplicate key 'iterations' (first at line 18)"),
    (RECIPE.replace("    params: {steps: 2, trace: trace.txt}\n",
                    "    params: {steps: 2, trace: trace.txt}\n    params: {steps: 20}\n"),
     "r.yaml: line 9: duplicate key 'params' (first at line 8)"),
])
def test_a_duplicate_yaml_key_is_an_error_naming_both_lines(cli, tmp_path, text, expected):
    """PyYAML keeps the last of two equal keys without a word; a recipe refuses it."""
    (tmp_path / "r.yaml").write_text(text)
    for command in ("validate", "run"):
        res = cli(command, "r.yaml", "--out", "run") if command == "run" else cli(command, "r.yaml")
        _one_line_error(res, expected)
    assert not (tmp_path / "run").exists()


def test_a_merge_key_may_still_be_overridden(tmp_path):
    """`<<: *anchor` then the same key written out is YAML's override, not a duplicate."""
    from fourreal_core.recipe import load_yaml

    (tmp_path / "m.yaml").write_text("base: &b {steps: 1, trace: t.txt}\nuse:\n  <<: *b\n  steps: 5\n")
    assert load_yaml(tmp_path / "m.yaml")["use"] == {"steps": 5, "trace": "t.txt"}


# ------------------------------------------------ finished stages re-checked (issue 33)
def test_a_finished_stage_whose_output_is_gone_is_not_reused(cli, toy_run):
    """A rerun skipped a finished stage on its folder alone; the next stage then started from
    something else (a motion stage from the initial points without canonical.ply). The files
    and sizes recorded in run.json when it finished are checked first; nothing is touched."""
    info = json.loads((toy_run / "run.json").read_text())
    assert info["outputs"]["01_quick"] == {"result.json": (toy_run / "stages" / "01_quick" / "result.json").stat().st_size}
    res = cli("run", "r.yaml", "--out", "run")  # intact: both stages skipped, as before
    assert res.returncode == 0 and "stage 1 quick: already complete, skipped" in res.stdout, res.stderr
    (toy_run / "stages" / "01_quick" / "notes.txt").write_text("mine")  # added files are fine
    assert cli("run", "r.yaml", "--out", "run").returncode == 0

    (toy_run / "stages" / "01_quick" / "result.json").unlink()
    before = _snapshot(toy_run)
    _one_line_error(cli("run", "r.yaml", "--out", "run"),
                    "run: stage 1 quick finished, but its output result.json is gone; restore it, or delete "
                    "stages/01_quick (and the later stages' folders) to run the stage again")
    after = _snapshot(toy_run)
    mine = ("log.jsonl", ".fourreal.lock")  # the lock file records its last holder
    assert {k: v for k, v in after.items() if k not in mine} == {k: v for k, v in before.items() if k not in mine}


def test_a_finished_stage_whose_output_changed_size_is_not_reused(cli, toy_run):
    (toy_run / "stages" / "02_second" / "result.json").write_text("{}")
    _one_line_error(cli("run", "r.yaml", "--out", "run"),
                    "run: stage 2 second finished, but its output result.json (2 bytes, was ")
    shutil.rmtree(toy_run / "stages" / "02_second")  # as the line says: deleting it re-runs the stage
    res = cli("run", "r.yaml", "--out", "run")
    assert res.returncode == 0, res.stderr
    assert "stage 1 quick: already complete, skipped" in res.stdout
    assert json.loads((toy_run / "stages" / "02_second" / "result.json").read_text())


def test_a_run_made_before_outputs_were_recorded_is_still_reused(cli, toy_run):
    info = json.loads((toy_run / "run.json").read_text())
    del info["outputs"]
    (toy_run / "run.json").write_text(json.dumps(info))
    res = cli("run", "r.yaml", "--out", "run")
    assert res.returncode == 0 and "stage 2 second: already complete, skipped" in res.stdout, res.stderr


def test_an_adhoc_command_refuses_a_finished_stage_whose_output_is_gone(cli, toy_run):
    """`fourreal export/eval/render` read the run's finished stages the same way."""
    (toy_run / "stages" / "02_second" / "result.json").unlink()
    _one_line_error(cli("export", "run"), "run: stage 02_second finished, but its output result.json is gone; "
                                          "restore it, or rerun the recipe after deleting stages/02_second")
    assert not (toy_run / "export").exists() and not (toy_run / ".export.partial").exists()


def test_loaded_weights_are_checked_in_one_line(tmp_path):
    """A scene whose w_t weights hold NaN, or are truncated, is refused with one line naming the
    file (and the tensor) instead of rendering NaN rotations / background-only images with exit 0."""
    import torch
    from safetensors.torch import load_file, save_file

    from fourreal_core.errors import InputError
    from fourreal_core.recipe import component_from_plain
    from fourreal_core.registry import get_registry
    from fourreal_core.types import PointCloud
    from fourreal_formats.scene4d import Scene4D

    reg = get_registry()
    rep = component_from_plain("representation", {"name": "gaussians", "params": {}}, reg)
    spec = component_from_plain("deformer", {"name": "mlp", "params": {"width": 16, "depth": 2}}, reg)
    model = rep.build(reg)
    model.init_from_points(PointCloud(torch.rand(50, 3), torch.rand(50, 3)), 1.0)
    w_t = spec.build(reg)
    w_t.setup(canonical=0.5)
    Scene4D(model, w_t, torch.zeros(3), times=torch.linspace(0, 1, 4), deformer_spec=spec,
            representation_spec=rep).save(tmp_path)
    Scene4D.load(tmp_path, reg)  # loads as written
    wpath = tmp_path / "w_t.safetensors"
    good = wpath.read_bytes()
    t = load_file(str(wpath))
    name = sorted(k for k in t if t[k].is_floating_point() and t[k].numel() > 1)[0]
    t[name][0] = float("nan")
    save_file(t, str(wpath))
    with pytest.raises(InputError) as exc:
        Scene4D.load(tmp_path, reg)
    msg = str(exc.value)
    assert "\n" not in msg and str(wpath) in msg and repr(name) in msg and "non-finite" in msg
    wpath.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError) as exc:
        Scene4D.load(tmp_path, reg)
    msg = str(exc.value)
    assert "\n" not in msg and str(wpath) in msg and "not a readable safetensors file" in msg


# ---------------------------------------------------------- issue 33: loaded inputs checked
def _capture(root: Path, mutate=None, T: int = 2, C: int = 3, W: int = 8, H: int = 6) -> Path:
    """A tiny Dynamic-3D-Gaussians capture (C cameras on a ring, T times, WxH PNGs), its
    train_meta.json changed by ``mutate(root, meta)``."""
    import math

    import numpy as np
    from PIL import Image

    (root / "ims").mkdir(parents=True)
    meta = {"w": W, "h": H, "k": [], "w2c": [], "fn": [], "cam_id": []}
    for t in range(T):
        for key in ("k", "w2c", "fn", "cam_id"):
            meta[key].append([])
        for c in range(C):
            a = 2 * math.pi * c / C
            cen = np.array([3 * math.cos(a), 3 * math.sin(a), 0.5])
            z = -cen / np.linalg.norm(cen)
            x = np.cross(z, [0, 0, 1.0])
            x /= np.linalg.norm(x)
            R = np.stack([x, np.cross(z, x), z])
            w2c = np.eye(4)
            w2c[:3, :3], w2c[:3, 3] = R, -R @ cen
            fn = f"{c}/{t:06d}.png"
            (root / "ims" / str(c)).mkdir(exist_ok=True)
            Image.new("RGB", (W, H), (40 * c, 80, 120)).save(root / "ims" / fn)
            meta["k"][t].append([[10.0, 0, W / 2], [0, 10.0, H / 2], [0, 0, 1]])
            meta["w2c"][t].append(w2c.tolist())
            meta["fn"][t].append(fn)
            meta["cam_id"][t].append(c)
    if mutate is not None:
        meta = mutate(root, meta) or meta
    (root / "train_meta.json").write_text(json.dumps(meta))
    return root


def _set(key, value):
    def mutate(root, m):
        m[key] = value
    return mutate


def _resize_image(root, m):
    from PIL import Image

    Image.new("RGB", (16, 6)).save(root / "ims" / m["fn"][1][2])


@pytest.mark.parametrize("mutate,expected", [
    (_set("h", "tall"), "train_meta.json: h must be a positive whole number of pixels, got \"tall\""),
    (_set("w", 0), "train_meta.json: w must be a positive whole number of pixels, got 0"),
    (_set("w", 7.5), "train_meta.json: w must be a positive whole number of pixels, got 7.5"),
    (_set("h", None), "train_meta.json: h must be a positive whole number of pixels, got null"),
    (lambda r, m: m["fn"].__setitem__(1, m["fn"][1][:2]),
     "train_meta.json: fn[1] must hold one entry per camera of cam_id[1] (3), got 2 entries"),
    (lambda r, m: m["k"].__setitem__(0, "abc"), "train_meta.json: k[0] must hold one entry per camera of cam_id[0] (3)"),
    (lambda r, m: m.update(w2c=m["w2c"][:1]), "train_meta.json: w2c has 1 time steps, cam_id has 2"),
    (_set("fn", "abc"), "train_meta.json: fn must be a non-empty list with one list per time step"),
    (lambda r, m: m["k"][1][2][0].__setitem__(0, 0.0),
     "train_meta.json: k[1][2] (camera 2): focal lengths must be > 0, got fx=0, fy=10"),
    (lambda r, m: m["k"][0][0][1].__setitem__(1, -10.0),
     "train_meta.json: k[0][0] (camera 0): focal lengths must be > 0, got fx=10, fy=-10"),
    (lambda r, m: m["k"][0][1].__setitem__(2, [0, 0, 0]), "train_meta.json: k[0][1] (camera 1): not a pinhole intrinsics"),
    (lambda r, m: m["k"][0][0][0].__setitem__(0, True), "train_meta.json: k[0][0] (camera 0): expected a 3x3 matrix of numbers"),
    (lambda r, m: m["w2c"][0].__setitem__(1, [[0, 0, 0, 0]] * 3 + [[0, 0, 0, 1]]),
     "train_meta.json: w2c[0][1] (camera 1): not a camera pose (its rotation part is not a rotation: det 0"),
    (lambda r, m: m["w2c"][1][0].__setitem__(3, [0, 0, 0, 0]),
     "train_meta.json: w2c[1][0] (camera 0): last row must be [0, 0, 0, 1]"),
    (lambda r, m: m["w2c"][0][2][1].__setitem__(1, float("nan")), "train_meta.json: w2c[0][2] (camera 2): holds a non-finite number"),
    (lambda r, m: m["cam_id"][0].__setitem__(1, 0), "train_meta.json: cam_id[0][1]: camera 0 appears twice at time 0"),
    (lambda r, m: m["fn"][0].__setitem__(0, 5), "train_meta.json: fn[0][0] must be an image path under ims/, got 5"),
    (lambda r, m: [1, 2], "train_meta.json: expected a JSON object with w, h, k, w2c, fn, cam_id, got a list"),
])
def test_bad_capture_metadata_is_one_line(tmp_path, mutate, expected):
    """Capture metadata is checked entry by entry: each mistake is one line naming the file and
    the entry (these ended as IndexError / ValueError / ZeroDivisionError, or trained on a
    camera with fx = 0, a singular w2c or a negative focal length with exit 0)."""
    from fourreal_core.errors import InputError
    from fourreal_poses.capture import read_capture

    root = _capture(tmp_path / "cap", mutate)
    with pytest.raises(InputError) as exc:
        read_capture(root)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(root / expected.split(":")[0]) + ":"), msg
    assert expected.split(": ", 1)[1] in msg, msg


def test_a_good_capture_still_loads_and_a_frame_at_another_size_is_not_stretched(tmp_path):
    from fourreal_core.errors import InputError
    from fourreal_poses.capture import read_capture

    cap = read_capture(_capture(tmp_path / "good"))
    assert cap.cameras == ["0", "1", "2"] and cap.num_times == 2 and (cap.width, cap.height) == (8, 6)
    assert cap.frames("2", [0, 1], 6, 8).shape == (2, 6, 8, 3)
    root = _capture(tmp_path / "cap", _resize_image)
    cap = read_capture(root)
    cap.frames("2", [0], 3, 4)  # the other frames are fine
    with pytest.raises(InputError) as exc:
        cap.frames("2", [0, 1], 3, 4)
    assert str(exc.value) == (f"{root / 'ims' / '2' / '000001.png'}: camera 2 time 1: image is 16x6, but the capture's "
                              "meta file declares 8x6 (w x h); resize it or fix w/h (not stretched)")


def test_bad_capture_through_the_cli(cli, tmp_path):
    _capture(tmp_path / "cap", _set("h", "tall"))
    (tmp_path / "r.yaml").write_text("name: mc\ndevice: cpu\nstages:\n  - name: multicam\n"
                                     "    params: {capture: cap, long_side: 8, points: frustum, fill_points: 50}\n")
    res = cli("run", "r.yaml", "--out", "run", env=fourreal_env(extra_modules=""))
    _one_line_error(res, str(tmp_path / "cap" / "train_meta.json") + ": h must be a positive whole number of pixels")


@pytest.mark.parametrize("write,expected", [
    (lambda p: p.write_bytes(b"PK\x03\x04garbage"), "cannot read points (BadZipFile: File is not a zip file)"),
    (lambda p: p.write_bytes(b""), "cannot read points ("),
    (lambda p: __import__("numpy").savez(p, data=__import__("numpy").zeros((0, 7))), "holds no points"),
    (lambda p: __import__("numpy").savez(p, data=__import__("numpy").full((4, 7), float("nan"))),
     "points hold non-finite coordinates"),
    (lambda p: __import__("numpy").savez(p, data=__import__("numpy").zeros((4,))), "'data' must be [N,>=6] (xyz, rgb), got [4]"),
])
def test_corrupt_init_pt_cld(tmp_path, write, expected):
    from fourreal_core.errors import InputError
    from fourreal_poses.triangulate import read_points_file

    path = tmp_path / "init_pt_cld.npz"
    write(path)
    with pytest.raises(InputError) as exc:
        read_points_file(path)
    assert str(exc.value).startswith(f"{path}: {expected}"), str(exc.value)


@pytest.mark.parametrize("content,expected", [
    (b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n",
     "holds no points (element vertex 0)"),
    (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nproperty float red\n"
     b"property float green\nproperty float blue\nend_header\n0 0 0 1 1 1\n0 0 0 nan 1 1\n",
     "point 1 has a non-finite colour (1 of 2 points)"),
])
def test_points_ply_attributes_checked(tmp_path, content, expected):
    from fourreal_core.errors import InputError
    from fourreal_formats.points import read_points

    (tmp_path / "p.ply").write_bytes(content)
    with pytest.raises(InputError) as exc:
        read_points(tmp_path / "p.ply")
    assert str(exc.value) == f"{tmp_path / 'p.ply'}: {expected}"


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d["frames"][1].update(time=5.0), "t.json: frames[1].time must be in [0, 1] (D-NeRF convention), got 5.0"),
    (lambda d: d["frames"][0].update(time=-0.1), "t.json: frames[0].time must be in [0, 1] (D-NeRF convention), got -0.1"),
    (lambda d: d.update(w=16), "t.json: frames[0]: image img.png is 8x8, but the file declares w=16, h=8 (another aspect"),
])
def test_transforms_times_in_range_and_no_stretch(tmp_path, mutate, expected):
    from fourreal_core.errors import InputError
    from fourreal_formats.transforms import load_transforms

    path = _transforms(tmp_path, mutate)
    with pytest.raises(InputError) as exc:
        load_transforms(path)
    assert str(exc.value).startswith(str(path) + expected[len("t.json"):]), str(exc.value)
    ok = _transforms(tmp_path, lambda d: d.update(w=16, h=16))  # a half-size copy: intrinsics scaled
    assert float(load_transforms(ok).cameras.Ks[0, 0, 0]) == pytest.approx(5.0)


def test_eval_without_times_says_so(tmp_path):
    """Held-out views without ``time`` are scored at t_c -- and the notes say so."""
    import torch

    from fourreal_core.recipe import component_from_plain
    from fourreal_core.registry import get_registry
    from fourreal_core.types import Cameras, PosedVideo, Video
    from fourreal_stages.evaluate import evaluate_views
    from fourreal_formats.scene4d import Scene4D

    reg = get_registry()
    rep = component_from_plain("representation", {"name": "gaussians", "params": {}}, reg)
    model = rep.build(reg)
    model.init_random_box(n=50, extent=1.0, seed=0)
    scene = Scene4D(model, None, torch.zeros(3), times=torch.linspace(0, 1, 5), canonical_frame=2,
                    representation_spec=rep)
    vm = torch.eye(4)
    vm[2, 3] = 4.0
    K = torch.tensor([[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]])
    views = PosedVideo(Video(torch.rand(2, 8, 8, 3)), Cameras(vm.expand(2, 4, 4).clone(), K.expand(2, 3, 3).clone(), 8, 8),
                       meta={"source": "test.json", "warnings": []})
    rast = component_from_plain("rasterizer", {"name": "torch", "params": {}}, reg).build(reg)
    res = evaluate_views(scene, rast, views, lpips=False)
    assert "test.json: frames have no 'time'; every view was scored at the canonical time t_c = 0.5" in res["notes"]
    assert [r["time"] for r in res["per_frame"]] == [0.5, 0.5]


@pytest.mark.parametrize("kind,params,expected", [
    ("deformer", {"name": "mlp", "params": {"width": 0}}, "params.width: must be >= 1, got 0"),
    ("deformer", {"name": "mlp", "params": {"depth": -2}}, "params.depth: must be >= 1, got -2"),
    ("deformer", {"name": "hexplane", "params": {"multires": []}}, "params.multires: must be a non-empty list of scales"),
    ("deformer", {"name": "hexplane", "params": {"resolution": 1}}, "params.resolution: must be >= 2, got 1"),
    ("deformer", {"name": "lbs", "params": {"num_bones": 0}}, "params.num_bones: must be >= 1, got 0"),
    ("stage", {"name": "export", "params": {"orbit_frames": -3}}, "params.orbit_frames: must be >= 1, got -3"),
    ("stage", {"name": "export", "params": {"num_times": -1}}, "params.num_times: must be >= 0, got -1"),
    ("stage", {"name": "export", "params": {"fps": 0}}, "params.fps: must be > 0, got 0"),
    ("stage", {"name": "eval", "params": {"height": -5}}, "params.height: must be >= 1, got -5"),
    ("stage", {"name": "multicam", "params": {"stride": 0}}, "params.stride: must be >= 1, got 0"),
    ("representation", {"name": "gaussians", "params": {"sh_degree": 4}}, "params.sh_degree: must be 0, 1, 2 or 3"),
    ("representation", {"name": "gaussians", "params": {"init_opacity": 1.5}}, "params.init_opacity: must be < 1"),
    ("representation", {"name": "gaussians", "params": {"densify": {"max_gaussians": -5}}},
     "params.densify.max_gaussians: must be >= 0, got -5"),
    ("representation", {"name": "gaussians", "params": {"densify": {"split_into": 1}}},
     "params.densify.split_into: must be >= 2, got 1"),
])
def test_counts_and_sizes_are_validated(kind, params, expected):
    from fourreal_core.errors import RecipeError
    from fourreal_core.recipe import component_from_plain
    from fourreal_core.registry import get_registry

    with pytest.raises(RecipeError) as exc:
        component_from_plain(kind, params, get_registry(), source="r.yaml")
    assert str(exc.value) == f"r.yaml: {expected}" or str(exc.value).startswith(f"r.yaml: {expected}"), str(exc.value)


@pytest.mark.parametrize("args,expected", [
    (["export", "run", "--orbit-frames", "-3"], "fourreal export: params.orbit_frames: must be >= 1, got -3"),
    (["eval", "run", "--against", "r.yaml", "--height", "-5"], "fourreal eval: params.height: must be >= 1, got -5"),
])
def test_adhoc_options_out_of_range(cli, toy_run, args, expected):
    _one_line_error(cli(*args), expected)
    assert not (toy_run / "export").exists() and not (toy_run / "eval").exists()


@pytest.mark.parametrize("seed", ["100000000000000000000000", "-1", "9223372036854775808"])
def test_seed_beyond_64_bits(cli, tmp_path, seed):
    (tmp_path / "r.yaml").write_text(RECIPE)
    _one_line_error(cli("validate", "r.yaml", "--set", f"seed={seed}"), f"r.yaml: seed: must be an integer in [0, 2^63), got {seed}")


@pytest.mark.parametrize("content,kind", [("[1, 2]\n", "list"), ('"x"\n', "string")])
def test_run_json_that_is_not_an_object(cli, toy_run, content, kind):
    (toy_run / "run.json").write_text(content)
    before = _snapshot(toy_run / "stages")
    expected = f"run/run.json: not a fourreal run record (a JSON {kind}, expected an object)"
    _one_line_error(cli("run", "r.yaml", "--out", "run"), expected)
    _one_line_error(cli("export", "run"), expected)
    assert _snapshot(toy_run / "stages") == before and (toy_run / "run.json").read_text() == content
    assert not (toy_run / "export").exists()


def test_yaml_alias_bomb_is_refused_quickly(cli, tmp_path):
    lines = ['name: toy', 'x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"x{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    lines += ["stages:", "  - name: count", "    id: *a8", "    params: {steps: 1, trace: t.txt}"]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    res = cli("validate", "bomb.yaml")
    _one_line_error(res, "bomb.yaml: line 12 (stages): YAML aliases expand to 9.26e+08 values (more than 1,000,000)")
    assert time.perf_counter() - t0 < 20
    from fourreal_core.recipe import load_yaml

    (tmp_path / "ok.yaml").write_text("a: &x [1, 2]\nb: [*x, *x]\n")
    assert load_yaml(tmp_path / "ok.yaml") == {"a": [1, 2], "b": [[1, 2], [1, 2]]}  # aliases still work


# ------------------------------------------------------- issue 33: errors from the machine
@pytest.mark.parametrize("err,expected", [
    (errno.ENOSPC, "no space left on the disk"),
    (errno.EFBIG, "file too large for this filesystem or the file-size limit (ulimit -f)"),
    (errno.EMFILE, "too many open files for this process (ulimit -n)"),
    (errno.EDQUOT, "disk quota exceeded"),
    (errno.EIO, "input/output error from the disk"),
])
def test_os_errors_name_the_stage_and_the_path(registry, tmp_path, monkeypatch, capsys, err, expected):
    """An OSError that names no file (safetensors, zipfile and ffmpeg raise such) while a stage
    writes a checkpoint: one line naming the stage and the file, exit 2."""
    import safetensors.torch

    from fourreal_cli.main import main

    def fail(*a, **k):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # main() silences it after the line
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(RECIPE)
    with pytest.raises(SystemExit) as exc:
        main(["run", "r.yaml", "--out", "run"])
    assert exc.value.code == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"error: stage 1 quick: {Path('run') / 'checkpoints' / '01_quick' / 'step_00000001.safetensors'}: "
                           f"{expected}"), line
    assert not [p for p in (tmp_path / "run").rglob("*.tmp.*")]


@pytest.mark.parametrize("exc_factory,expected", [
    (lambda: MemoryError(), "stage 1 quick: out of CPU memory"),
    (lambda: OSError(errno.ENOMEM, "Cannot allocate memory"), "stage 1 quick: out of CPU memory"),
])
def test_out_of_memory_in_a_stage_is_one_line(registry, tmp_path, monkeypatch, capsys, exc_factory, expected):
    import safetensors.torch

    from fourreal_cli.main import main

    def fail(*a, **k):
        raise exc_factory()

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(RECIPE)
    with pytest.raises(SystemExit) as exc:
        main(["run", "r.yaml", "--out", "run"])
    assert exc.value.code == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and line.startswith(f"error: {expected}"), line


def test_environment_error_lines():
    from fourreal_core.errors import environment_error

    lib = ImportError("libscipy_openblas64_-32a4b2a6.so: failed to map segment from shared object")
    assert environment_error(lib) == ("cannot load the shared library libscipy_openblas64_-32a4b2a6.so: out of memory "
                                      "or address space (ulimit -v); raise the limit or free memory and rerun")
    assert environment_error(OSError(errno.EMFILE, "Too many open files", "/x/y")).startswith(
        "/x/y: too many open files for this process (ulimit -n)")
    assert environment_error(SystemError("<function _find_and_load at 0x1> returned NULL without setting an exception")) \
        .startswith("out of memory or address space while loading Python modules")
    assert environment_error(ValueError("a bug")) is None


def test_small_address_space_is_one_line(cli, tmp_path):
    """Under ``ulimit -v`` too small for torch: one line (the library that could not be mapped,
    or out of memory), exit 2 -- not an 82-line MemoryError traceback."""
    (tmp_path / "r.yaml").write_text(RECIPE)
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (300 * 2**20, 300 * 2**20)); "
              "from fourreal_cli.main import main; sys.argv = ['fourreal', 'run', 'r.yaml', '--out', 'run']; main()")
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=fourreal_env(), capture_output=True,
                         text=True, timeout=120)
    line = _one_line_error(res)
    assert "ulimit -v" in line and "memory" in line, line


def test_a_video_over_the_file_size_limit_is_one_error_and_no_file(tmp_path):
    """ffmpeg killed by the file-size limit: imageio-ffmpeg's writer left a truncated mp4 with no
    error; write_video raises EFBIG naming the file, leaves nothing, and prints nothing."""
    script = (
        "import resource, errno, sys, torch\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from fourreal_media import write_video\n"
        "try:\n"
        f"    write_video({str(tmp_path / 'v.mp4')!r}, torch.rand(20, 96, 96, 3), fps=8)\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno], e.filename)\n"
    )
    res = subprocess.run([sys.executable, "-c", script], env=fourreal_env(), capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == f"EFBIG {tmp_path / 'v.mp4'}", (res.stdout, res.stderr)
    assert res.stderr.strip() == "" and list(tmp_path.iterdir()) == []


# ------------------------------------------- issue 33: a rerun removes only what it wrote
def test_a_rerun_does_not_remove_files_it_did_not_write(cli, tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    res = cli("run", "r.yaml", "--out", "run", env=fourreal_env(FOURREAL_FAULT="train_step:cpu_oom@2"))
    assert res.returncode == 2
    run = tmp_path / "run"
    partial, ckpt = run / "stages" / ".01_quick.partial", run / "checkpoints" / "01_quick"
    assert partial.is_dir() and list(ckpt.glob("step_*.safetensors"))
    (partial / "notes.txt").write_text("mine")
    (ckpt / "my-weights.bin").write_text("mine too")
    res = cli("run", "r.yaml", "--out", "run")
    _one_line_error(res, "run/stages/.01_quick.partial: the unfinished stage folder holds files fourreal did not write "
                         "(stages/.01_quick.partial/notes.txt); a rerun would remove them")
    assert (partial / "notes.txt").read_text() == "mine"
    (partial / "notes.txt").rename(tmp_path / "notes.txt")
    res = cli("run", "r.yaml", "--out", "run")
    assert res.returncode == 0, res.stderr
    assert (run / "stages" / "01_quick").is_dir()
    assert [p.name for p in ckpt.iterdir()] == ["my-weights.bin"]  # fourreal's checkpoints went, the user's stayed


def test_an_adhoc_command_does_not_remove_files_in_its_leftover(cli, toy_run):
    partial = toy_run / ".export.partial"
    partial.mkdir()
    (partial / ".fourreal-output.json").write_text(json.dumps({"kind": "export", "partial": True, "files": []}))
    (partial / "keep.txt").write_text("mine")
    line = _one_line_error(cli("export", "run"), "the leftover of an interrupted export holds files fourreal did not write")
    assert ".export.partial/keep.txt" in line
    assert (partial / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("args,expected", [
    (["--fps", "0"], "--fps 0.0: must be > 0"),
    (["--height", "-3"], "--height -3: must be >= 1"),
    (["--interactive-height", "0"], "--interactive-height 0: must be >= 1"),
])
def test_view_options_out_of_range(cli, toy_run, args, expected):
    pytest.importorskip("viser")
    _one_line_error(cli("view", "run", *args, timeout=60), expected)


@pytest.mark.parametrize("mutate,expected", [
    (lambda m: [1], "unknown format 'list'"),
    (lambda m: m.pop("canonical") and m, "canonical must name the canonical PLY file, got null"),
    (lambda m: m.update(deformer="mlp") or m, "deformer must be {name, params}, got \"mlp\""),
    (lambda m: m["reference"].update(times=[0, 5.0]) or m, "reference.times must be a non-empty list of times in [0, 1]"),
    (lambda m: m["reference"].update(canonical_frame=99) or m, "reference.canonical_frame must index reference.times (0..3), got 99"),
    (lambda m: m["reference"]["camera"].update(width=0) or m, "reference.camera.width must be a positive whole number of pixels"),
    (lambda m: m["reference"]["camera"].update(Ks=[[[0, 0, 16], [0, 0, 12], [0, 0, 1]]]) or m,
     "reference.camera.Ks[0]: focal lengths must be > 0, got fx=0, fy=0"),
    (lambda m: m["freeze_time_cameras"].update(viewmats=[[[0.0] * 4] * 3 + [[0, 0, 0, 1]]]) or m,
     "freeze_time_cameras.viewmats[0]: not a camera pose"),
    (lambda m: m.update(background="white") or m, "background must be three numbers (RGB), got \"white\""),
    (lambda m: m.update(near_plane=-1) or m, "near_plane must be a number > 0, got -1"),
    (lambda m: m["deformer"]["params"].update(width=32) or m, "does not fit the deformer 'mlp' described in scene4d.json"),
])
def test_a_bad_scene_manifest_is_one_line(tmp_path, mutate, expected):
    import torch

    from fourreal_core.errors import InputError
    from fourreal_core.recipe import component_from_plain
    from fourreal_core.registry import get_registry
    from fourreal_core.types import Cameras
    from fourreal_formats.scene4d import MANIFEST, Scene4D

    reg = get_registry()
    rep = component_from_plain("representation", {"name": "gaussians", "params": {}}, reg)
    model = rep.build(reg)
    model.init_random_box(n=30, extent=1.0, seed=0)
    spec = component_from_plain("deformer", {"name": "mlp", "params": {"width": 16, "depth": 2}}, reg)
    w_t = spec.build(reg)
    w_t.setup(canonical=0.5)
    vm = torch.eye(4)
    vm[2, 3] = 4.0
    cam = Cameras(vm[None], torch.tensor([[[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]]]), 32, 24)
    Scene4D(model, w_t, torch.zeros(3), times=torch.linspace(0, 1, 4), canonical_frame=2, reference_camera=cam,
            freeze_cameras=cam, deformer_spec=spec, representation_spec=rep).save(tmp_path)
    Scene4D.load(tmp_path, reg)
    path = tmp_path / MANIFEST
    path.write_text(json.dumps(mutate(json.loads(path.read_text()))))
    with pytest.raises(InputError) as exc:
        Scene4D.load(tmp_path, reg)
    assert "\n" not in str(exc.value) and expected in str(exc.value), str(exc.value)


def test_a_fixed_input_reruns_the_stages_that_read_it(cli, tmp_path):
    """A finished multicam stage records its capture's fingerprint; fixing the capture (a
    principal point corrected in train_meta.json) re-runs that stage and the later ones with one
    line saying so, instead of 'already complete, skipped'. A file of the user's in the stage
    folder stops it instead, nothing removed."""
    root = _capture(tmp_path / "cap")
    (tmp_path / "r.yaml").write_text("name: mc\ndevice: cpu\nstages:\n  - name: multicam\n"
                                     "    params: {capture: cap, long_side: 8, points: frustum, fill_points: 50}\n")
    env = fourreal_env(extra_modules="")
    assert cli("run", "r.yaml", "--out", "run", env=env).returncode == 0
    res = cli("run", "r.yaml", "--out", "run", env=env)
    assert "already complete, skipped" in res.stdout and "input changed" not in res.stdout + res.stderr
    meta = json.loads((root / "train_meta.json").read_text())
    meta["k"][0][0][0][2] = 4.5
    (root / "train_meta.json").write_text(json.dumps(meta))
    res = cli("run", "r.yaml", "--out", "run", env=env)
    assert res.returncode == 0, res.stderr
    assert ("note: input changed since stage 1 multicam finished (params.capture); stage 1 multicam and the later "
            "finished stages run again") in res.stdout
    assert "already complete" not in res.stdout
    capture = json.loads((tmp_path / "run" / "stages" / "01_multicam" / "capture.json").read_text())
    assert capture["train_cameras"] == ["0", "1", "2"]
    (tmp_path / "run" / "stages" / "01_multicam" / "mine.txt").write_text("mine")
    meta["k"][0][0][0][2] = 4.0
    (root / "train_meta.json").write_text(json.dumps(meta))
    _one_line_error(cli("run", "r.yaml", "--out", "run", env=env),
                    "stage 1 multicam must run again (its input changed), but it holds files fourreal did not write "
                    "(mine.txt)")
    assert (tmp_path / "run" / "stages" / "01_multicam" / "mine.txt").read_text() == "mine"


def test_no_traceback_from_destructors_after_the_error_line(tmp_path):
    """An object whose destructor raises at exit (a writer closed on a full disk) prints
    nothing after fourreal's one error line."""
    script = (
        "import sys\n"
        "class Writer:\n"
        "    def __del__(self):\n"
        "        raise OSError(28, 'No space left on device')\n"
        "w = Writer(); w.self = w\n"  # a cycle: freed by the collector at shutdown, after main() returns
        "from fourreal_cli.main import main\n"
        "main(['validate', 'missing.yaml'])\n"
    )
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=fourreal_env(), capture_output=True,
                         text=True, timeout=120)
    _one_line_error(res, "missing.yaml: recipe file not found")
    assert "Exception ignored" not in res.stderr
