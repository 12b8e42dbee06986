"""Killing a run mid-stage and rerunning the same command finishes it without redoing
finished stages, and a training stage resumes from its last checkpoint."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import fourreal_env

RECIPE = """name: resumable
stages:
  - name: count
    id: quick
    params: {steps: 3, trace: trace.txt}
  - name: count
    id: slow
    params: {steps: 25, trace: trace.txt, sleep: 0.15}
"""


def _trace(tmp_path):
    p = tmp_path / "trace.txt"
    return [ln.split(":") for ln in p.read_text().split()] if p.exists() else []


def _start(tmp_path):
    exe = Path(sys.executable).parent / "fourreal"
    return subprocess.Popen(
        [str(exe), "run", "r.yaml", "--out", "run"], cwd=tmp_path, env=fourreal_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_slow_steps(tmp_path, proc, n, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if sum(1 for s, _ in _trace(tmp_path) if s == "slow") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("stage 'slow' never got going")


def test_kill_mid_stage_then_resume(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    proc = _start(tmp_path)
    _wait_for_slow_steps(tmp_path, proc, 6)
    proc.send_signal(signal.SIGKILL)  # a crash: no chance to clean up
    proc.wait()
    first = _trace(tmp_path)
    run = tmp_path / "run"
    assert (run / "stages" / "01_quick" / "result.json").exists()
    assert not (run / "stages" / "02_slow").exists()  # unfinished stage is not published
    killed_at = max(int(i) for s, i in first if s == "slow")

    res = subprocess.run(
        [str(Path(sys.executable).parent / "fourreal"), "run", "r.yaml", "--out", "run"],
        cwd=tmp_path, env=fourreal_env(), capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    second = _trace(tmp_path)[len(first):]
    assert all(s == "slow" for s, _ in second), "the finished stage ran again"
    resumed_from = int(second[0][1])
    # at most the one step that ran but was not yet checkpointed is redone
    assert killed_at <= resumed_from + 1 and resumed_from >= 5
    assert [int(i) for _, i in second] == list(range(resumed_from, 25))
    # restored state is exact: counter == number of steps, as in an uninterrupted run
    assert json.loads((run / "stages" / "02_slow" / "result.json").read_text()) == {"counter": 25.0}
    assert json.loads((run / "stages" / "01_quick" / "result.json").read_text()) == {"counter": 3.0}
    assert not (run / "checkpoints" / "02_slow").exists()  # cleaned once published
    events = [json.loads(ln)["event"] for ln in (run / "log.jsonl").read_text().splitlines()]
    assert "resume" in events and "stage_skip" in events

    # a third run does nothing but report completion
    res = subprocess.run(
        [str(Path(sys.executable).parent / "fourreal"), "run", "r.yaml", "--out", "run"],
        cwd=tmp_path, env=fourreal_env(), capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0 and len(_trace(tmp_path)) == len(first) + len(second)


def test_ctrl_c_says_how_to_resume(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    proc = _start(tmp_path)
    _wait_for_slow_steps(tmp_path, proc, 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "rerun the same command to resume" in err and "Traceback" not in err


def test_resolved_recipe_in_run_folder_resumes_same_run(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE.replace("25", "2").replace("0.15", "0"))
    exe = str(Path(sys.executable).parent / "fourreal")
    assert subprocess.run([exe, "run", "r.yaml", "--out", "run"], cwd=tmp_path, env=fourreal_env()).returncode == 0
    res = subprocess.run([exe, "run", "run/recipe.yaml", "--out", "run"], cwd=tmp_path, env=fourreal_env(),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "already complete" in res.stdout
