"""``fourreal view`` in a real browser (headless Chromium, Debian's ``chromium`` package,
driven by playwright without ``playwright install``), on a demo-sized procedural run
(the articulated scene at 96x72: a static floor and base, an arm that moves):

* the first frame arrives and is not blank;
* moving the time slider changes the picture where the scene moves and not where it is
  static (the regions come from ``fourreal render`` at the two times);
* the reference-camera view (first at connection, then again through its button after an
  orbit with the mouse) matches ``fourreal render`` of the same camera and time;
* the canonical toggle shows the undeformed Gaussians; play/pause moves the time slider;
* Ctrl-C stops the server cleanly; a bad path or a busy port ends in one line, exit 2.

Screenshots are test artefacts under pytest's tmp dir. ``FOURREAL_DOCS_SCREENSHOT=path``
also writes the orbit view with the cameras shown there (docs/viewer.png was made so).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import fourreal_env, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
T0, T1 = 0.0, 0.8  # reference frames 0 and 4: the articulated arm's poses differ most


def _env():
    return fourreal_env(extra_modules="", OMP_NUM_THREADS="1")


def _recipe() -> str:
    from fourreal_stages.motion import MotionConfig

    key = "w_t" if "w_t" in {f.name for f in dataclasses.fields(MotionConfig)} else "deformer"
    return f"""
name: view-test
seed: 0
iterations_scale: 1.0
rasterizer: torch
stages:
  - name: synthetic
    params: {{scene: articulated, width: 96, height: 72, num_reference_frames: 6, num_freeze_frames: 6,
             num_test_views: 1, num_test_static_views: 1, imperfections: {{wobble: 0.0, moving_object: 0.0, flicker: 0.0}}}}
  - name: motion
    params:
      per_frame_deformer: false
      {key}: {{name: mlp, params: {{width: 64, lr: 0.01, lr_final: 0.001}}}}
      losses: [{{name: l1}}]
      scheduler:
        name: stagewise
        params:
          phases:
            - {{name: motion, iterations: 300, losses: [l1], train: [gaussians, deformer], frames: reference}}
"""


@pytest.fixture(scope="module")
def view_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("view")
    (tmp / "view.yaml").write_text(_recipe())
    res = run_cli(["run", "view.yaml", "--out", "run"], tmp, env=_env(), timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return tmp, tmp / "run"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe() -> str:
    return str(Path(sys.executable).parent / "fourreal")


def _read_line(proc, timeout: float) -> str:
    out: list[str] = []
    th = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    th.start()
    th.join(timeout)
    return out[0] if out else ""


def _render(tmp: Path, t: float) -> np.ndarray:
    import imageio.v3 as iio

    res = run_cli(["render", "run", "--time", f"{t}", "--out", f"render_{t:.1f}"], tmp, env=_env())
    assert res.returncode == 0, res.stderr
    png = next((tmp / "run" / f"render_{t:.1f}").glob("render_000_*.png"))
    return iio.imread(png)[..., :3].astype(np.float32) / 255


def _to_size(png: Path, w: int, h: int) -> np.ndarray:
    from PIL import Image

    img = Image.open(png).convert("RGB").resize((w, h), Image.BOX)  # area average of the upscaled frame
    return np.asarray(img, dtype=np.float32) / 255


def test_bad_path_is_one_line_exit_2(tmp_path):
    res = run_cli(["view", str(tmp_path / "nowhere")], tmp_path, env=_env(), timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0] and "no such run folder" in lines[0]
    from fourreal_core.errors import FourRealError
    from fourreal_viewer.source import ViewSource

    (tmp_path / "empty").mkdir()  # the same one-line error class, in-process (a CLI start is slow)
    with pytest.raises(FourRealError, match="not a fourreal run folder"):
        ViewSource(tmp_path / "empty")


def test_busy_port_is_one_line_exit_2(view_run):
    tmp, run = view_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = run_cli(["view", "run", "--port", str(port)], tmp, env=_env(), timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "--port" in lines[0]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run does)")
def test_browser_time_slider_and_reference_view(view_run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e .[browser])")
    tmp, run = view_run
    r0, r1 = _render(tmp, T0), _render(tmp, T1)
    h, w = r0.shape[:2]
    diff = np.abs(r0 - r1).max(-1)
    valid = np.ones((h, w), bool)
    valid[int(h * 0.8):, : int(w * 0.15)] = False  # viser's orientation gizmo (bottom left)
    moving, static = (diff > 0.15) & valid, (diff < 0.01) & valid
    assert moving.mean() > 0.02 and static.mean() > 0.5, (moving.mean(), static.mean())

    port = _free_port()
    proc = subprocess.Popen([_exe(), "view", "run", "--port", str(port)], cwd=tmp, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        line = _read_line(proc, 120)
        assert f"http://127.0.0.1:{port}" in line and "Ctrl-C" in line, (line, proc.poll())
        with sync_api.sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
                viewport={"width": 960, "height": 480})
            page = ctx.new_page()
            page.goto(f"http://127.0.0.1:{port}")
            page.get_by_text("frame: full").wait_for(timeout=60_000)
            # a 4:3 canvas beside the fixed control panel, so a full frame is the render's 96x72
            box = page.locator("canvas").first.bounding_box()
            panel = 960 - int(box["width"])
            page.set_viewport_size({"width": panel + 640, "height": 480})
            page.get_by_text("show cameras").click()  # frusta off: compare the splats alone

            def shot(name: str, text: str) -> Path:
                page.get_by_text(text).wait_for(timeout=60_000)
                page.evaluate("() => document.querySelectorAll('.mantine-Notification-root, .mantine-Notifications-root')"
                              ".forEach(e => e.remove())")
                time.sleep(0.5)  # the PNG frame is decoded and drawn
                p = shots / f"{name}.png"
                page.locator("canvas").first.screenshot(path=str(p))
                return p

            def set_time(t: float) -> None:
                box = page.locator(".mantine-NumberInput-input").first
                box.fill(f"{t}")
                box.press("Enter")

            set_time(T0)
            a = _to_size(shot("t0", f"frame: full {w}x{h}, t={T0:.3f}"), w, h)
            set_time(T1)
            b = _to_size(shot("t1", f"frame: full {w}x{h}, t={T1:.3f}"), w, h)
            # orbit with the mouse, then back through the reference-camera button
            page.mouse.move(box["width"] / 2, 240)
            page.mouse.down()
            page.mouse.move(box["width"] / 2 + 120, 250, steps=8)
            page.mouse.up()
            time.sleep(1.0)
            c = _to_size(shot("orbit", f"frame: full {w}x{h}, t={T1:.3f}"), w, h)
            if os.environ.get("FOURREAL_DOCS_SCREENSHOT"):
                page.get_by_text("show cameras").click()
                time.sleep(1.5)
                page.screenshot(path=os.environ["FOURREAL_DOCS_SCREENSHOT"])
                page.get_by_text("show cameras").click()
            page.get_by_role("button", name="reference camera").click()
            time.sleep(1.0)
            d = _to_size(shot("reference", f"frame: full {w}x{h}, t={T1:.3f}"), w, h)
            # the canonical toggle renders the undeformed Gaussians; play moves time, pause stops it
            page.get_by_text("canonical", exact=True).click()
            e = _to_size(shot("canonical", f"t={T1:.3f} canonical"), w, h)
            page.get_by_role("button", name="play").click()
            time.sleep(2.0)
            page.get_by_role("button", name="pause").click()
            played = float(page.locator(".mantine-NumberInput-input").first.input_value())
            ctx.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err, (proc.returncode, out, err)

    m = valid[..., None]
    errs = [float((np.abs(g - w_) * m).sum() / (m.sum() * 3)) for g, w_ in ((a, r0), (b, r1), (d, r1))]
    change = np.abs(a - b).max(-1)
    measured = {"ref_error_t0": errs[0], "ref_error_t1": errs[1], "ref_error_after_jump": errs[2],
                "change_moving": float(change[moving].mean()), "change_static": float(change[static].mean()),
                "orbit_change": float(np.abs(c - b).mean())}
    (shots / "measured.json").write_text(json.dumps(measured, indent=1))
    print("viewer test:", json.dumps(measured))
    for img in (a, b):  # not blank: varied pixels
        assert img.std() > 0.05 and len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200
    # the reference camera's view matches `fourreal render` of the same camera and time
    for err in errs:
        assert err < 0.015, measured
    # time changes the picture where the scene moves, not where it is static
    assert change[moving].mean() > 0.1, change[moving].mean()
    assert change[static].mean() < 0.02, change[static].mean()
    # the mouse really moved the camera (and the button brought it back)
    assert float(np.abs(c - b).mean()) > 0.03
    # canonical: not the scene at t=0.8 where it moves; the same where nothing moves
    canon = np.abs(e - b).max(-1)
    assert canon[moving].mean() > 0.05 and canon[static].mean() < 0.03, (canon[moving].mean(), canon[static].mean())
    assert abs(played - T1) > 0.01, played
