"""``fourreal export RUN --web OUT/``: a static folder whose ``index.html`` plays the 4D scene
in a browser from ``file://``, with no server (docs/viewing.md#the-web-page).

Built on viser4d (``pip install -e .[view]``): a viser extension that records scene updates
per time step and exports them, with viser's own client and a playback bar (play/pause,
step, time slider, speed, loop), as one self-contained HTML file. viser draws Gaussian
splats itself (WebGL, sorted on the GPU), so the page is viser's splat renderer fed with the
scene's Gaussians at each exported time:

* Gaussians that do not move (position, rotation and scale within ``static_tol`` of the
  scene's size at every exported time -- e.g. everything outside the motion stage's
  dynamic region) are stored once, in node ``/scene/static``; the others once per time step
  in ``/scene/moving``. So the slider changes only the moving part, and a scene whose
  subject is small costs little per step.
* viser's splat format is fixed: centre float32 x3, covariance (upper triangle) float16 x6,
  RGBA uint8 -- 32 bytes a Gaussian. One RGB per Gaussian: the SH colour is evaluated up to
  ``sh_degree`` toward the reference camera (at the canonical positions) and baked.
  Covariances are stored for a node scaled by ``node_scale`` (median Gaussian about 0.1
  wide inside the node), so float16 keeps its precision for small Gaussians.
* ``position_bits`` (optional) rounds the moving centres to a grid of 2^bits steps over the
  scene's box before they are written; the file is zstd-compressed by viser, so rounded
  values compress better.

The page adds a small panel (plain HTML/JS beside viser's client): the time of the current
step, buttons that put the view at the reference or a freeze-time camera (viser's own
camera messages, pushed into its message queue), "go to t_c", and what the export dropped.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fourreal_core.errors import FourRealError, InputError

MARKER = ".fourreal-web.json"
STATIC, MOVING = "/scene/static", "/scene/moving"
F16_MAX = 65000.0


@dataclass
class WebOptions:
    num_times: int = 0  # time steps; 0: the reference frames' times (30 evenly spaced without them)
    min_opacity: float = 0.0  # Gaussians below this opacity are dropped
    sh_degree: Optional[int] = None  # SH bands baked into the colour; None: the scene's own degree
    position_bits: int = 0  # 0: float32 centres as they are; 8..24: rounded to 2^bits over the box
    static_tol: float = 1e-4  # fraction of the scene's size under which a Gaussian counts as static
    fps: float = 8.0  # playback rate at 1x (time steps per second)
    max_gaussians: int = 0  # 0: all; else keep the most opaque N (the page says so)
    splatv: bool = False  # also OUT/scene.splatv: trajectories fitted for antimatter15's splaTV viewer


@dataclass
class WebReport:
    """What the page holds and what was dropped; written to ``web.json`` and shown in the page."""

    gaussians_in_scene: int
    gaussians_kept: int
    dropped_low_opacity: int
    dropped_over_max: int
    static: int
    moving: int
    times: list
    canonical_step: int
    scene_sh_degree: int
    sh_degree: int
    position_bits: int
    node_scale: float
    clamped_covariances: int = 0  # Gaussian-steps whose covariance exceeded float16 (clamped)
    bytes: int = 0
    client_bytes: int = 0  # viser's own client (the page without the scene)
    data_bytes: int = 0  # the scene's share of the page
    seconds: float = 0.0
    notes: list = field(default_factory=list)
    splatv: Optional[dict] = None  # the .splatv fit report (fourreal_stages.splatv)


def _quat_to_mat(q: torch.Tensor) -> torch.Tensor:
    q = torch.nn.functional.normalize(q, dim=-1)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``[N,3,3]`` world covariances R diag(s^2) R^T of Gaussians (``quats`` wxyz, ``scales``
    standard deviations)."""
    R = _quat_to_mat(quats)
    return (R * scales[:, None, :] ** 2) @ R.transpose(1, 2)


def camera_pose(cam, target: torch.Tensor) -> dict:
    """viser's camera messages for one OpenCV camera: position, look-at (``target``, on the
    camera's axis) and vertical field of view (radians)."""
    c2w = torch.linalg.inv(cam.viewmats[0].detach().cpu().double()).float()
    pos = c2w[:3, 3]
    fwd = c2w[:3, 2]
    depth = float((target.float() - pos) @ fwd)
    look = pos + fwd * (depth if depth > 1e-6 else 1.0)
    fy = float(cam.Ks[0, 1, 1])
    return {"position": [float(v) for v in pos], "look_at": [float(v) for v in look],
            "fov": 2.0 * math.atan(cam.height / (2.0 * fy)), "width": int(cam.width), "height": int(cam.height)}


def export_times(scene, num_times: int) -> torch.Tensor:
    if num_times <= 0:
        return scene.times.float().cpu() if scene.times is not None and len(scene.times) >= 2 \
            else torch.linspace(0, 1, 30)
    return torch.linspace(0, 1, max(int(num_times), 2))


def check_options(opts: WebOptions, scene_sh: Optional[int] = None) -> None:
    """One-line errors naming the option (exit 2)."""
    if opts.num_times < 0 or opts.num_times == 1:
        raise FourRealError(f"--web-times {opts.num_times}: must be 0 (the reference times) or at least 2")
    if not 0.0 <= opts.min_opacity < 1.0:
        raise FourRealError(f"--web-min-opacity {opts.min_opacity}: must be in [0, 1)")
    if opts.sh_degree is not None and not 0 <= opts.sh_degree <= 3:
        raise FourRealError(f"--web-sh-degree {opts.sh_degree}: must be 0..3")
    if scene_sh is not None and opts.sh_degree is not None and opts.sh_degree > scene_sh:
        raise FourRealError(f"--web-sh-degree {opts.sh_degree}: the scene has SH degree {scene_sh}")
    if opts.position_bits and not 8 <= opts.position_bits <= 24:
        raise FourRealError(f"--web-position-bits {opts.position_bits}: must be 0 (off) or 8..24")
    if opts.max_gaussians < 0:
        raise FourRealError(f"--web-max-gaussians {opts.max_gaussians}: must be >= 0 (0: all)")
    if not opts.fps > 0:
        raise FourRealError(f"--web-fps {opts.fps}: must be > 0")


def prepare_out(out: Path) -> None:
    """``out`` may be new, empty, or an earlier web export (its files are replaced); anything
    else is refused untouched."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FourRealError(f"--web {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FourRealError(f"--web {out}: folder exists, is not empty and is not a fourreal web export; "
                            "choose another folder (nothing was touched)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quantise(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    levels = float(2 ** bits - 1)
    span = np.maximum(hi - lo, 1e-12)
    return (np.round((x - lo) / span * levels) / levels * span + lo).astype(np.float32)


@torch.no_grad()
def build_web(scene, out: Path, opts: Optional[WebOptions] = None) -> WebReport:
    """Write ``out/index.html`` (self-contained) and ``out/web.json``; returns the report."""
    import time

    try:
        import viser4d
    except ImportError as exc:
        raise FourRealError(f"--web needs viser4d (pip install -e '.[view]'): {exc}") from None
    from fourreal_gaussians.sh import eval_sh
    from fourreal_formats.cameras import look_at_target, scene_up

    from .source import canonical_time

    opts = opts or WebOptions()
    start = time.perf_counter()
    model = scene.model
    scene_sh = int(getattr(model, "max_sh_degree", 0))
    check_options(opts, scene_sh)
    cam = scene.reference_camera
    if cam is None:
        raise InputError("the 4D scene has no reference camera; the web page needs one to start from")
    cam = cam[:1]
    times = export_times(scene, opts.num_times)
    t_c = canonical_time(scene)
    c_step = int(torch.argmin((times - t_c).abs()))

    # --- which Gaussians
    old_active = getattr(model, "active_sh_degree", None)
    if old_active is not None:
        model.set_active_sh_degree(scene_sh)
    try:
        g0 = model.params()
    finally:
        if old_active is not None:
            model.set_active_sh_degree(old_active)
    n_all = len(g0)
    opac = g0.opacities.detach().float().cpu().reshape(-1)
    keep = opac >= opts.min_opacity
    dropped_low = int((~keep).sum())
    dropped_max = 0
    if opts.max_gaussians and int(keep.sum()) > opts.max_gaussians:
        order = torch.argsort(torch.where(keep, opac, torch.full_like(opac, -1.0)), descending=True)
        k2 = torch.zeros_like(keep)
        k2[order[: opts.max_gaussians]] = True
        dropped_max = int(keep.sum()) - opts.max_gaussians
        keep = k2
    idx = keep.nonzero().squeeze(1)
    if len(idx) == 0:
        raise FourRealError(f"--web-min-opacity {opts.min_opacity}: drops every Gaussian of the scene")

    # --- colours: SH up to sh_degree toward the reference camera, at the canonical positions
    deg = scene_sh if opts.sh_degree is None else int(opts.sh_degree)
    cam_centre = torch.linalg.inv(cam.viewmats[0].detach().cpu().double()).float()[:3, 3]
    means0 = g0.means.detach().float().cpu()[idx]
    colors = g0.colors.detach().float().cpu()[idx]
    if g0.sh_degree is None:
        rgb = colors.clamp(0, 1)
    else:
        rgb = eval_sh(deg, colors, means0 - cam_centre).clamp(0, 1)

    # --- the Gaussians at each time; static = unchanged at every time
    states = []
    for t in times.tolist():
        g = scene.gaussians_at(t)
        states.append((g.means.detach().float().cpu()[idx],
                       torch.nn.functional.normalize(g.quats.detach().float().cpu()[idx], dim=-1),
                       g.scales.detach().float().cpu()[idx]))
    lo = torch.stack([s[0] for s in states]).amin((0, 1))
    hi = torch.stack([s[0] for s in states]).amax((0, 1))
    extent = float((hi - lo).norm()) or 1.0
    c_means, c_q, c_s = (g0.means.detach().float().cpu()[idx],
                         torch.nn.functional.normalize(g0.quats.detach().float().cpu()[idx], dim=-1),
                         g0.scales.detach().float().cpu()[idx])
    moving = torch.zeros(len(idx), dtype=torch.bool)
    tol = opts.static_tol * extent
    for m, q, s in states:
        moving |= (m - c_means).norm(dim=-1) > tol
        moving |= (1 - (q * c_q).sum(-1).abs()) > 1e-6
        moving |= ((s - c_s).abs() / c_s.clamp_min(1e-12)).amax(-1) > 1e-4

    # node scale: the median Gaussian's standard deviation becomes 0.1 inside the node, so
    # viser's float16 covariances keep their precision
    med = float(c_s.median()) or 1.0
    node_scale = med / 0.1

    def splats(m, q, s, sel):
        cov = covariances(q[sel], s[sel] / node_scale).numpy()
        clamped[0] += int((np.abs(cov) > F16_MAX).any((1, 2)).sum())
        cov = np.clip(cov, -F16_MAX, F16_MAX)  # viser stores float16
        centres = m[sel].numpy() / node_scale
        if opts.position_bits:
            centres = _quantise(centres, lo.numpy() / node_scale, hi.numpy() / node_scale, opts.position_bits)
        return dict(centers=np.ascontiguousarray(centres, np.float32), covariances=cov.astype(np.float32),
                    rgbs=rgb[sel].numpy().astype(np.float32),
                    opacities=opac[idx][sel].numpy().astype(np.float32)[:, None])

    static_sel, moving_sel = ~moving, moving
    clamped = [0]
    with contextlib.redirect_stdout(io.StringIO()):  # viser's banner: nothing is served
        server = viser4d.Viser4dServer(num_steps=len(times), fps=float(opts.fps), host="127.0.0.1",
                                       port=_free_port(), verbose=False)
    try:
        up = scene_up(scene, cam)
        server.scene.set_up_direction(tuple(float(v) for v in up))
        bg = (scene.background.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        server.scene.set_background_image(np.broadcast_to(bg, (8, 8, 3)).copy(), format="png")
        handle = None
        for k, (m, q, s) in enumerate(states):
            with server.at(k) as tl:
                if k == 0 and bool(static_sel.any()):
                    tl.scene.add_gaussian_splats(STATIC, **splats(*states[c_step], static_sel), scale=node_scale)
                if bool(moving_sel.any()):
                    data = splats(m, q, s, moving_sel)
                    if handle is None:
                        handle = tl.scene.add_gaussian_splats(MOVING, **data, scale=node_scale)
                    else:
                        handle.set_gaussians(**data)
        target = look_at_target(scene, cam)
        cams = {"reference": camera_pose(cam, target)}
        if scene.freeze_cameras is not None:
            for i in range(len(scene.freeze_cameras)):
                cams[f"freeze-time {i}"] = camera_pose(scene.freeze_cameras[i:i + 1], target)
        html = server.as_html(dark_mode=True)
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            server.stop()

    report = WebReport(
        gaussians_in_scene=n_all, gaussians_kept=len(idx), dropped_low_opacity=dropped_low,
        dropped_over_max=dropped_max, static=int(static_sel.sum()), moving=int(moving_sel.sum()),
        times=[round(float(t), 6) for t in times], canonical_step=c_step, scene_sh_degree=scene_sh,
        sh_degree=deg if g0.sh_degree is not None else 0, position_bits=int(opts.position_bits),
        node_scale=node_scale, clamped_covariances=clamped[0])
    report.notes = _notes(report, opts)
    page = {"cameras": cams, "up": [float(v) for v in up], "times": report.times, "canonical_step": c_step,
            "canonical_time": t_c, "report": asdict(report)}
    html = _inject(html, page)
    out = Path(out)
    prepare_out(out)
    tmp = out.parent / f".{out.name}.tmp-web"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "index.html").write_text(html, encoding="utf-8")
    report.bytes = (tmp / "index.html").stat().st_size
    report.client_bytes = _client_bytes()
    report.data_bytes = report.bytes - report.client_bytes
    report.seconds = round(time.perf_counter() - start, 3)
    files = ["index.html", "web.json"]
    if opts.splatv:
        from fourreal_stages.splatv import write_splatv

        report.splatv = write_splatv(scene, tmp / "scene.splatv", times, t_c, keep, rgb, opac[idx], extent)
        files.append("scene.splatv")
    (tmp / "web.json").write_text(json.dumps({**asdict(report), "options": asdict(opts), "cameras": cams}, indent=1))
    (tmp / MARKER).write_text(json.dumps({"kind": "web", "files": files}))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return report


def _client_bytes() -> int:
    import viser

    p = Path(viser.__file__).parent / "client" / "build" / "index.html"
    return p.stat().st_size if p.is_file() else 0


def _notes(r: WebReport, opts: WebOptions) -> list:
    notes = [f"{r.gaussians_kept:,} of {r.gaussians_in_scene:,} Gaussians "
             f"({r.static:,} static, stored once; {r.moving:,} moving, stored at each of {len(r.times)} times)"]
    if r.dropped_low_opacity:
        notes.append(f"dropped {r.dropped_low_opacity:,} Gaussians with opacity < {opts.min_opacity:g}")
    if r.dropped_over_max:
        notes.append(f"dropped {r.dropped_over_max:,} of the least opaque Gaussians (--web-max-gaussians "
                     f"{opts.max_gaussians})")
    notes.append(f"time: {len(r.times)} steps (the scene is continuous in t; the page shows these times only)")
    if r.sh_degree < r.scene_sh_degree:
        notes.append(f"colour: SH degree {r.sh_degree} of the scene's {r.scene_sh_degree}, baked toward the "
                     "reference camera (one RGB per Gaussian: no view-dependent colour)")
    else:
        notes.append(f"colour: SH degree {r.sh_degree}, baked toward the reference camera (one RGB per "
                     "Gaussian: no view-dependent colour)")
    notes.append("precision: centres float32, covariances float16, colour and opacity 8 bits (viser's format)"
                 + (f"; moving centres rounded to {r.position_bits} bits over the scene's box"
                    if r.position_bits else ""))
    if r.clamped_covariances:
        notes.append(f"{r.clamped_covariances:,} Gaussian-steps wider than float16 allows were clamped")
    return notes


_PANEL_JS = r"""
(function () {
  const D = __DATA__;
  function viewer() { const r = window.__VISER4D__; return r && r.viser && r.viser.originalPush ? r.viser : null; }
  function go(name) {
    const v = viewer(); const c = D.cameras[name]; if (!v || !c) return false;
    v.pushMessages([
      {type: "SetCameraUpDirectionMessage", position: D.up, initial: false},
      {type: "SetCameraLookAtMessage", look_at: c.look_at, initial: false},
      {type: "SetCameraPositionMessage", position: c.position, initial: false},
      {type: "SetCameraFovMessage", fov: c.fov, initial: false},
    ]);
    window.__FOURREAL_WEB__.camera = name;
    return true;
  }
  function slider() { return document.querySelector('input[aria-label="Timeline step"]'); }
  function seek(step) {
    const s = slider(); if (!s) return;
    s.value = String(step); s.dispatchEvent(new Event("input", {bubbles: true}));
    s.dispatchEvent(new Event("change", {bubbles: true}));
  }
  const panel = document.createElement("div");
  panel.id = "fourreal-panel";
  panel.style.cssText = "position:fixed;left:12px;top:12px;z-index:2147483001;max-width:340px;padding:10px 12px;" +
    "background:rgba(22,24,30,0.86);color:#e8e8ef;border-radius:10px;font:12px/1.4 ui-sans-serif,system-ui,sans-serif;";
  const title = document.createElement("div");
  title.innerHTML = "<b>fourreal</b> 4D scene";
  const time = document.createElement("div");
  time.id = "fourreal-time";
  const buttons = document.createElement("div");
  buttons.style.cssText = "display:flex;flex-wrap:wrap;gap:4px;margin:6px 0;";
  function button(label, fn) {
    const b = document.createElement("button"); b.textContent = label; b.setAttribute("aria-label", label);
    b.style.cssText = "padding:3px 7px;border-radius:6px;border:1px solid #556;background:#2a2d38;color:#e8e8ef;cursor:pointer;font:12px ui-sans-serif,system-ui;";
    b.addEventListener("click", fn); buttons.appendChild(b);
  }
  Object.keys(D.cameras).forEach((name) => button(name === "reference" ? "reference camera" : name, () => go(name)));
  button("go to t_c", () => seek(D.canonical_step));
  const details = document.createElement("details");
  details.innerHTML = "<summary>what this page holds</summary><ul style='margin:4px 0;padding-left:16px'>" +
    D.report.notes.map((n) => "<li>" + n.replace(/&/g, "&amp;").replace(/</g, "&lt;") + "</li>").join("") + "</ul>";
  panel.append(title, time, buttons, details);
  function tick() {
    const s = slider();
    if (s) {
      const k = Number(s.value); const t = D.times[Math.min(k, D.times.length - 1)];
      time.textContent = "t = " + t.toFixed(3) + "  (step " + (k + 1) + " / " + D.times.length + ", t_c = " +
        D.canonical_time.toFixed(3) + ")";
      window.__FOURREAL_WEB__.step = k;
    }
  }
  window.__FOURREAL_WEB__ = {data: D, go: go, seek: seek, ready: false, step: 0, camera: null};
  function start() {
    if (!document.body || !viewer()) { setTimeout(start, 100); return; }
    document.body.appendChild(panel);
    // the view starts at the reference camera, at the canonical time
    setTimeout(() => {
      const p = document.querySelector('[data-viser4d-playback] button[aria-label="Pause"]');
      if (p) p.click();  // start paused, at t_c, from the reference camera
      go("reference"); seek(D.canonical_step); window.__FOURREAL_WEB__.ready = true;
    }, 300);
    setInterval(tick, 100);
  }
  start();
})();
"""


def _inject(html: str, page: dict) -> str:
    data = json.dumps(page).replace("</", "<\\/")
    script = "<script>" + _PANEL_JS.replace("__DATA__", data) + "</script>"
    i = html.rindex("</body>")
    return html[:i] + script + html[i:]
