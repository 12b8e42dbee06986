"""`fourreal batch` on a local Ray instance with 2 CPUs: a batch of tiny demo-like jobs runs to
completion with the scores of the same jobs run alone; a job whose worker is SIGKILLed mid-stage
is retried and resumes from its checkpoint; a job failing on bad input at run time is reported
and not retried; bad jobs are refused before anything starts; a rerun skips finished jobs;
without Ray the command says how to install it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, fourreal_env, run_cli

# the demo recipe at a size that runs in seconds on one CPU thread (as tests/test_pipeline.py)
DEMO = ROOT / "recipes" / "demo.yaml"
TINY = [
    "iterations_scale=0.001",
    "stages.synthetic.params.width=32",
    "stages.synthetic.params.height=24",
    "stages.synthetic.params.num_reference_frames=4",
    "stages.synthetic.params.num_freeze_frames=6",
    "stages.synthetic.params.num_test_views=2",
    "stages.synthetic.params.num_test_static_views=2",
    "stages.synthetic.params.num_init_points=1500",
    "stages.canonical.params.representation.params.densify.max_gaussians=2000",
    "stages.motion.params.representation.params.densify.max_gaussians=3000",
    "stages.export.params.orbit_frames=2",
    "stages.export.params.grid_views=1",
    "stages.export.params.grid_times=1",
    "stages.eval.params.lpips=false",
]
STAGES = ["01_synthetic", "02_canonical", "03_motion", "04_export", "05_eval"]

# job 0 is the one whose worker gets killed mid-motion: it checkpoints that stage every 5 of 40 steps
SPEC = f"""\
recipe: {DEMO}
set: {json.dumps(TINY)}
cpus_per_job: 1
jobs:
  - {{name: victim, set: {{seed: 1, stages.motion.params.checkpoint_every: 5}}}}
  - {{set: {{seed: 2}}}}
  - {{set: [seed=3]}}
  - {{name: bad points, set: {{stages.canonical.params.init_points: bad.npz}}}}
"""
GOOD = {  # folder -> the same job's overrides for a plain `fourreal run`
    "000_victim": [*TINY, "seed=1", "stages.motion.params.checkpoint_every=5"],
    "001_seed-2": [*TINY, "seed=2"],
    "002_seed-3": [*TINY, "seed=3"],
}
BAD = "003_bad-points"
FOURREAL = str(Path(sys.executable).parent / "fourreal")


def _env() -> dict:
    return fourreal_env(extra_modules="", OMP_NUM_THREADS="1")


def _mean(run: Path) -> dict:
    return json.loads((run / "stages" / "05_eval" / "eval.json").read_text())["mean"]


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One batch (4 jobs on 2 CPUs; job 0's worker SIGKILLed mid-motion), and beside it each
    good job run alone with `fourreal run` at the same thread count."""
    pytest.importorskip("ray", reason="fourreal batch needs the batch extra (pip install -e .[batch])")
    tmp = tmp_path_factory.mktemp("batch")
    (tmp / "spec.yaml").write_text(SPEC)
    (tmp / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")  # exists (validates), fails when read
    cmd = [FOURREAL, "batch", "spec.yaml", "--out", "out", "--num-cpus", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    plain = {
        name: subprocess.Popen([FOURREAL, "run", str(DEMO), "--out", f"plain/{name}",
                                *[a for o in sets for a in ("--set", o)]],
                               cwd=tmp, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for name, sets in GOOD.items()
    }
    # kill job 0's worker once its motion stage has written a checkpoint
    ck = tmp / "out" / "000_victim" / "checkpoints" / "03_motion"
    attempts = tmp / "out" / "jobs" / "000_victim.attempts.jsonl"
    t0 = time.time()
    while not (ck.is_dir() and any(ck.glob("step_*.safetensors"))):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 400, "the victim's motion stage never checkpointed"
        time.sleep(0.05)
    killed = json.loads(attempts.read_text().splitlines()[0])["pid"]
    os.kill(killed, signal.SIGKILL)
    saved = max(int(p.stem.split("_")[1]) for p in ck.glob("step_*.safetensors"))  # checkpointed before the kill
    out, err = proc.communicate(timeout=600)
    for name, p in plain.items():
        _, perr = p.communicate(timeout=600)
        assert p.returncode == 0, (name, perr[-2000:])
    return {"tmp": tmp, "cmd": cmd, "rc": proc.returncode, "stdout": out, "stderr": err, "killed": killed, "saved": saved,
            "summary": json.loads((tmp / "out" / "batch.json").read_text())}


def _job(summary: dict, name: str) -> dict:
    return next(j for j in summary["jobs"] if j["name"] == name)


def test_batch_runs_every_job_with_the_scores_of_a_plain_run(batch):
    tmp, summary = batch["tmp"], batch["summary"]
    assert batch["rc"] == 2, batch["stderr"][-3000:]  # one job failed on bad input, the others finished
    assert [j["name"] for j in summary["jobs"]] == [*GOOD, BAD]
    for name in GOOD:
        run, alone = tmp / "out" / name, tmp / "plain" / name
        job = _job(summary, name)
        assert job["status"] == "done" and job["error"] is None, job
        assert sorted(p.name for p in (run / "stages").iterdir()) == STAGES
        assert (run / "recipe.yaml").read_text() == (alone / "recipe.yaml").read_text()
        a, b = _mean(run), _mean(alone)
        assert abs(a["psnr"] - b["psnr"]) < 1e-6 and abs(a["ssim"] - b["ssim"]) < 1e-6, (name, a, b)
        assert job["scores"] == {"05_eval": a}
        assert job["device"] == "cpu" and job["gpus"] == 0 and job["wall_seconds"] > 0
    # the jobs differ (different seeds), so equal scores are not an accident
    assert len({round(_job(summary, n)["scores"]["05_eval"]["psnr"], 6) for n in GOOD}) == 3
    assert summary["state"] == "incomplete" and summary["counts"] == {"bad_input": 1, "done": 3}
    # the final table names every job with its state and scores
    for name in [*GOOD, BAD]:
        assert name in batch["stdout"]
    assert "psnr" in batch["stdout"] and "Traceback" not in batch["stderr"]


def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(batch):
    tmp, summary = batch["tmp"], batch["summary"]
    job = _job(summary, "000_victim")
    assert job["status"] == "done" and job["attempts"] == 2, job
    attempts = [json.loads(x) for x in (tmp / "out" / "jobs" / "000_victim.attempts.jsonl").read_text().splitlines()]
    assert attempts[0]["pid"] == batch["killed"] and attempts[1]["pid"] != batch["killed"]
    log = _log(tmp / "out" / "000_victim")
    assert sum(e["event"] == "run_start" for e in log) == 2
    resumes = [e for e in log if e["event"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["stage"] == "motion", resumes
    assert resumes[0]["step"] >= batch["saved"] >= 1, (resumes, batch["saved"])
    # the first two stages ran once: the retry skipped them
    assert sum(e["event"] == "stage_skip" and e["stage"] in ("synthetic", "canonical") for e in log) == 2
    assert "000_victim: done after 2 attempts" in batch["stdout"]


def test_runtime_bad_input_is_reported_once_and_not_retried(batch):
    tmp, summary = batch["tmp"], batch["summary"]
    job = _job(summary, BAD)
    bad = str(tmp / "bad.npz")
    assert job["status"] == "bad_input" and job["attempts"] == 1, job
    assert job["error"] == f"{bad}: not a readable .npz file"
    assert re.search(rf"{BAD}: bad input in [0-9.]+ s: {re.escape(bad)}: not a readable .npz file", batch["stdout"])
    assert not (tmp / "out" / BAD / "stages" / "02_canonical").exists()
    assert (tmp / "out" / BAD / "stages" / "01_synthetic").is_dir()


def test_rerun_skips_finished_jobs_and_finishes_the_fixed_one(batch):
    tmp = batch["tmp"]
    logs = {n: (tmp / "out" / n / "log.jsonl").read_bytes() for n in GOOD}
    # fix the bad input: the synthetic scene's own initial points
    shutil.copy(tmp / "out" / BAD / "stages" / "01_synthetic" / "init_points.npz", tmp / "bad.npz")
    res = subprocess.run(batch["cmd"], cwd=tmp, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp / "out" / "batch.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["skipped", "skipped", "skipped", "done"]
    assert summary["state"] == "complete"
    assert "3 finished earlier, skipped" in res.stdout
    for n in GOOD:  # untouched
        assert (tmp / "out" / n / "log.jsonl").read_bytes() == logs[n]
        assert _job(summary, n)["scores"] == {"05_eval": _mean(tmp / "out" / n)}
    log = _log(tmp / "out" / BAD)
    assert [e["stage"] for e in log if e["event"] == "stage_skip"] == ["synthetic"]  # the run resumed
    assert (tmp / "out" / BAD / "stages" / "05_eval" / "eval.json").is_file()


def test_bad_jobs_are_refused_before_anything_starts(tmp_path):
    pytest.importorskip("ray", reason="fourreal batch needs the batch extra (pip install -e .[batch])")
    (tmp_path / "spec.yaml").write_text(
        f"recipe: {DEMO}\n"
        "jobs:\n"
        "  - {set: {seed: 1}}\n"
        "  - {name: typo, set: {stages.canonical.params.num_random_pionts: 5}}\n"
        "  - {set: [seed=two]}\n"
    )
    res = run_cli(["batch", "spec.yaml", "--out", "out", "--num-cpus", "2"], tmp_path, env=_env())
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0] == "error: 2 of 3 jobs are invalid; nothing was started", lines
    assert len(lines) == 3 and "Traceback" not in res.stderr
    assert lines[1].startswith("error: spec.yaml: jobs[1] (001_typo): ")
    assert "stages[1].params.num_random_pionts: unknown param; did you mean 'num_random_points'" in lines[1]
    assert lines[2].startswith("error: spec.yaml: jobs[2] (002_seed-two): ")
    assert "seed: expected an integer, got string 'two'" in lines[2]
    assert not (tmp_path / "out").exists()  # nothing was started or written


def test_without_ray_says_how_to_install(tmp_path):
    block = tmp_path / "noray" / "ray"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    (tmp_path / "spec.yaml").write_text(f"recipe: {DEMO}\njobs: [{{set: {{seed: 1}}}}]\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "noray"), env.get("PYTHONPATH", "")])
    res = run_cli(["batch", "spec.yaml"], tmp_path, env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip() == ("error: fourreal batch needs Ray: pip install 'fourreal[batch]' "
                                  "(or pip install 'ray>=2.9')")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ in-process unit tests
def test_spec_expands_prompts_into_named_jobs(tmp_path):
    from fourreal_cli.batch import load_spec

    (tmp_path / "r.yaml").write_text(DEMO.read_text())
    (tmp_path / "prompts.txt").write_text("A red fox, running!\n\n# a comment\n  a cat jumping  \n")
    (tmp_path / "s.yaml").write_text("recipe: r.yaml\nset: {iterations_scale: 0.5}\n"
                                     "jobs: [{name: First One, set: [seed=4]}]\n"
                                     "prompts: {file: prompts.txt, key: description}\n")
    spec = load_spec(tmp_path / "s.yaml")
    assert [j.folder for j in spec.jobs] == ["000_first-one", "001_a-red-fox-running", "002_a-cat-jumping"]
    assert spec.jobs[0].overrides == ["iterations_scale=0.5", "seed=4"]
    assert spec.jobs[1].overrides == ["iterations_scale=0.5", "description=A red fox, running!"]
    assert spec.jobs[2].where == f"{tmp_path / 'prompts.txt'}:4"
    assert spec.recipe == (tmp_path / "r.yaml").resolve()
    assert (spec.cpus_per_job, spec.gpus_per_job, spec.retries, spec.max_parallel) == (1.0, 1.0, 3, None)


@pytest.mark.parametrize("text, message", [
    ("recipe: r.yaml\njobz: []\n", "s.yaml: jobz: unknown key; did you mean 'jobs'?"),
    ("recipe: nowhere.yaml\njobs: [{}]\n", "s.yaml: recipe: recipe not found: "),
    ("recipe: r.yaml\njobs: [{sett: {seed: 1}}]\n", "s.yaml: jobs[0].sett: unknown key; did you mean 'set'?"),
    ("recipe: r.yaml\njobs: [{set: [seed]}]\n", "s.yaml: jobs[0].set[0]: expected KEY=VALUE (e.g. seed=3), got 'seed'"),
    ("recipe: r.yaml\njobs: []\n", "s.yaml: jobs: no jobs: give jobs: [...] and/or prompts: {file: ...}"),
    ("recipe: r.yaml\ncpus_per_job: 0\njobs: [{}]\n", "s.yaml: cpus_per_job: expected a number >= 0.01, got 0"),
    ("recipe: r.yaml\nretries: 1\njobs: [{}]\nretries: 5\n", "s.yaml: line 4: duplicate key 'retries' (first at line 2)"),
])
def test_spec_mistakes_are_one_line(tmp_path, text, message):
    from fourreal_cli.batch import load_spec
    from fourreal_core.errors import RecipeError

    (tmp_path / "r.yaml").write_text(DEMO.read_text())
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(RecipeError) as info:
        load_spec(tmp_path / "s.yaml")
    assert str(info.value).startswith(f"{tmp_path / 's.yaml'}: {message.split(': ', 1)[1]}"), str(info.value)
    assert "\n" not in str(info.value)


def test_batch_folder_that_is_not_a_batch_is_refused(tmp_path):
    from fourreal_cli.batch import check_batch_dir
    from fourreal_core.errors import RunDirError

    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="holds no fourreal batch"):
        check_batch_dir(tmp_path)
    check_batch_dir(tmp_path / "new")  # absent: fine
    (tmp_path / "batch.json").write_text("{}")
    check_batch_dir(tmp_path)  # an earlier batch: resumed


def test_gpus_follow_the_recipe_device():
    from fourreal_cli.batch import gpus_for

    assert gpus_for("cuda", 8, 1) == 1 and gpus_for("cuda", 0, 0.5) == 0.5
    assert gpus_for("auto", 4, 1) == 1 and gpus_for("auto", 0, 1) == 0
    assert gpus_for("cpu", 4, 1) == 0 and gpus_for("mps", 4, 1) == 0


def test_progress_table_reads_stage_step_and_rate_from_the_log(tmp_path):
    from rich.console import Console

    from fourreal_cli.batch import Job, LogTail, progress_table

    log = tmp_path / "log.jsonl"
    events = [
        {"time": 10.0, "event": "stage_start", "stage": "canonical", "index": 2},
        {"time": 11.0, "event": "stage_end", "stage": "canonical", "index": 2},
        {"time": 12.0, "event": "stage_start", "stage": "motion", "index": 3},
        {"time": 12.5, "event": "resume", "stage": "motion", "step": 100},
        {"time": 14.5, "event": "train", "stage": "motion", "step": 150, "loss": 0.1},
    ]
    log.write_text("".join(json.dumps(e) + "\n" for e in events[:4]) + json.dumps(events[4])[:20])  # half a line
    tail = LogTail(log)
    tail.poll()
    assert (tail.stage, tail.stage_index, tail.step, tail.rate) == ("motion", 3, 100, None)
    with open(log, "a") as f:
        f.write(json.dumps(events[4])[20:] + "\n")
    tail.poll()
    assert tail.step == 150 and tail.rate == pytest.approx(25.0)  # 50 steps in 2 s
    job = Job(index=0, folder="000_fox", where="s.yaml: jobs[0]", overrides=[],
              stages=["synthetic", "canonical", "motion", "eval"], state="retrying", attempts=2)
    console = Console(width=150, record=True)
    console.print(progress_table([job], {0: tail}, "t"))
    text = console.export_text()
    assert "000_fox" in text and "3/4 motion" in text and "150 (resumed @ 100)" in text and "25.0" in text
    assert "retrying (attempt 2)" in text
