"""Freeze-time usability report: is this video likely to reconstruct?

A freeze-time video (paper §3.2) must show a *static* scene filmed by an *orbiting* camera.
Generated ones often do not quite: an object keeps moving, surfaces wobble, the camera
barely turns, or the autoregressive windows do not join. Reconstruction (COLMAP, then the
canonical 3DGS fit) finds out an hour later; :func:`freeze_time_report` finds out in
seconds, from the video alone or with the cameras the poses stage will use.

How it measures (all at a working size of at most ``max_side`` pixels):

1. **Residual motion after registration.** Dense optical flow (OpenCV DIS) between
   frames ``k`` and ``k + stride``, kept where it is reliable (textured pixels whose
   forward-backward flow agrees within ``fb_max_px``). A static scene seen by two cameras
   moves every pixel along its epipolar line, so the part of the flow that leaves the line
   (the Sampson distance to the epipolar geometry ``F``) is motion the cameras cannot
   explain: scene motion, wobble, or flicker the flow mistook for motion. ``F`` comes from
   the cameras when they are given (``cameras``: what the poses stage estimated or knows)
   and otherwise from the flow itself (an essential matrix for an assumed ``fov_deg``
   pinhole camera, RANSAC: roughly what structure-from-motion would find; weaker, since
   two views can partly absorb a moving object). A pixel is *static* when its residual is under
   ``residual_px`` (px at the working size); ``static_fraction`` is the share of reliable
   pixels that are, over all pairs (and per frame in ``per_frame``).
2. **Orbit angle covered.** With cameras: the angle swept by the camera centres around
   the point nearest all optical axes. Without: the relative rotations between frame
   pairs (essential matrix from the flow, a ``fov_deg`` horizontal field of view assumed),
   summed -- for a camera orbiting while looking at the centre, its rotation equals the
   azimuth it sweeps; the number is approximate.
3. **Seams** between autoregressive windows (``windows`` from ``generation.json``): the
   mean absolute difference between each window's first generated frame and the last
   context frame before it, divided by the median difference of consecutive frames of the
   video (``seam_ratio``; 1: the join looks like any other frame step).

A warning (``usable: false``) is raised when the static fraction is under
``min_static_fraction``, the orbit under ``min_orbit_deg``, or a seam over
``max_seam_ratio``; ``advice`` says what usually helps. :func:`summary_line` gives the one
line the stages print. The ``generate`` stage calls :func:`write_report` on its output
(without cameras), the ``poses`` stage on any freeze-time input (with its cameras).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

__all__ = ["ReportOptions", "freeze_time_report", "summary_line", "write_report", "REPORT_NAME"]

REPORT_NAME = "freeze_time_report.json"


@dataclass
class ReportOptions:
    """Thresholds and working parameters of :func:`freeze_time_report`. Defaults were set
    on the procedural garden orbit (24 frames over 90 deg, 160x120, known cameras): clean
    1.000 static, the demo's imperfections 0.997, the ball drifting four radii
    (``moving_object: 0.3``) 0.955 (docs/priors.md#freeze-time-report)."""

    max_side: int = 256  # working size: longest side in pixels
    stride: int = 1  # frame pairs (k, k + stride)
    residual_px: float = 0.5  # epipolar residual (px at the working size) under which a pixel is static
    fb_max_px: float = 0.5  # forward-backward flow disagreement above which a pixel is unreliable
    min_gradient: float = 0.02  # image gradient (intensity in [0,1] per px) a pixel needs to be reliable
    min_static_fraction: float = 0.99  # of reliable pixels: a small object that keeps moving is ~1-2%
    # a real capture (kind: capture) of a static scene loses a few % to blur, rolling shutter and
    # exposure changes; below this something really moves
    min_static_fraction_capture: float = 0.9
    min_orbit_deg: float = 20.0
    max_seam_ratio: float = 3.0
    fov_deg: float = 60.0  # assumed horizontal field of view when no cameras are given


#: advice for a generated freeze-time video (the generate stage's)
ADVICE = (
    "generate more frames (freeze_frames), try another seed, add a freeze-time LoRA (prior.params.loras, "
    "uses: [freeze_time]) or use a stronger freeze-time prompt (freeze_prompt, e.g. 'bullet time, frozen "
    "moment, camera orbiting around ...')"
)


#: advice for a real capture (a video the user filmed, given to the poses stage)
CAPTURE_ADVICE = {
    "static": ("a real static scene measures as moving through motion blur, rolling shutter, auto-exposure or "
               "lens distortion: film slower with exposure locked, keep people and leaves out of the frame (w_mv "
               "absorbs only small residue), and judge the result by its held-out score (holdout_every)"),
    "orbit": "walk further around the subject (120 deg or more) or sample the whole video (max_frames, sampling: even)",
    "flow": "the frames show too little texture at this size: give the poses stage more pixels (height)",
}


def advice_for(kind: str, warnings_kinds: Sequence[str]) -> str:
    """The advice line for what went wrong (``static``, ``orbit``, ``seam``, ``flow``), for a
    ``capture`` (a real video) or a ``generated`` freeze-time video."""
    if not warnings_kinds:
        return ""
    if kind != "capture":
        return ADVICE
    return "; ".join(CAPTURE_ADVICE[k] for k in dict.fromkeys(warnings_kinds) if k in CAPTURE_ADVICE)


def _gray(frames: torch.Tensor, max_side: int) -> tuple[list[np.ndarray], float]:
    """``[K,H,W,3]`` in [0,1] -> K float32 grey images (longest side <= max_side) and the
    scale applied."""
    x = frames.detach().float().cpu().clamp(0, 1)
    K, H, W, _ = x.shape
    s = min(1.0, float(max_side) / max(H, W))
    if s < 1.0:
        h, w = max(8, round(H * s)), max(8, round(W * s))
        x = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2), size=(h, w), mode="area").permute(0, 2, 3, 1)
        s = w / W
    g = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]).numpy().astype(np.float32)
    return [g[k] for k in range(K)], s


def _flow(cv2, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow a -> b, ``[h,w,2]`` (x, y) in pixels (OpenCV's DIS flow, medium preset:
    on the procedural orbits it is ~5x more accurate than Farneback on moving objects)."""
    u8 = lambda im: np.clip(im * 255.0 + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(u8(a), u8(b), None)


def _reliable(cv2, a: np.ndarray, fwd: np.ndarray, bwd: np.ndarray, opt: ReportOptions) -> np.ndarray:
    """Pixels of ``a`` whose flow is trustworthy: textured, inside the image after the
    flow, forward-backward consistent."""
    h, w = a.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    x2, y2 = xs + fwd[..., 0], ys + fwd[..., 1]
    back = cv2.remap(bwd, x2, y2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    fb = np.linalg.norm(fwd + back, axis=-1)
    gx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    grad = np.sqrt(gx * gx + gy * gy)
    inside = (x2 >= 0) & (x2 <= w - 1) & (y2 >= 0) & (y2 <= h - 1)
    border = np.zeros_like(inside)
    m = 2
    border[m:-m, m:-m] = True
    return inside & border & (fb < opt.fb_max_px) & (grad > opt.min_gradient)


def _sampson(F: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Sampson distance (px) of correspondences ``[N,2]`` to the epipolar geometry ``F``."""
    x1 = np.concatenate([p1, np.ones((len(p1), 1))], 1)
    x2 = np.concatenate([p2, np.ones((len(p2), 1))], 1)
    Fx1 = x1 @ F.T
    Ftx2 = x2 @ F
    num = np.abs(np.sum(x2 * Fx1, 1))
    den = np.sqrt(Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2)
    return num / np.maximum(den, 1e-12)


def _skew(t: np.ndarray) -> np.ndarray:
    return np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]], dtype=np.float64)


def _fundamental(cameras, i: int, j: int, s: float) -> np.ndarray:
    """F mapping pixels of camera i to epipolar lines of camera j, at image scale ``s``."""
    V = cameras.viewmats.detach().double().cpu().numpy()
    K = cameras.Ks.detach().double().cpu().numpy().copy()
    K[:, :2] *= s
    R1, t1, R2, t2 = V[i, :3, :3], V[i, :3, 3], V[j, :3, :3], V[j, :3, 3]
    R = R2 @ R1.T
    t = t2 - R @ t1
    return np.linalg.inv(K[j]).T @ _skew(t) @ R @ np.linalg.inv(K[i])


def _focus(cameras) -> np.ndarray:
    """The point nearest to all optical axes (least squares)."""
    c2w = np.linalg.inv(cameras.viewmats.detach().double().cpu().numpy())
    o, d = c2w[:, :3, 3], c2w[:, :3, 2]
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for oi, di in zip(o, d):
        M = np.eye(3) - np.outer(di, di)
        A += M
        b += M @ oi
    if np.linalg.cond(A) > 1e8:
        return o.mean(0) + d.mean(0)
    return np.linalg.solve(A, b)


def _orbit_from_cameras(cameras) -> float:
    """Degrees of orbit the camera centres cover around the orbit axis through the point
    nearest all optical axes: the span (max - min) of their unwrapped, signed azimuth about
    the world up (the direction orthogonal to the cameras' right vectors, else their mean up:
    a phone or a generated orbit is held upright; the normal of the centres' best-fit plane
    is the fallback when the ups disagree). Summing the
    unsigned angle between neighbours about the plane normal, as before, counted every
    back-and-forth jitter and a flipped pose, and a handheld path's plane is ill-defined (a
    ~30 deg real orbit read 113 deg); the fox capture reads 93 deg with its known poses."""
    c2w = np.linalg.inv(cameras.viewmats.detach().double().cpu().numpy())
    o = c2w[:, :3, 3]
    if len(o) < 2:
        return 0.0
    p = _focus(cameras)
    v = o - p
    up = -c2w[:, :3, 1].mean(0)  # OpenCV: camera y points down
    right = c2w[:, :3, 0]
    sv, vt = np.linalg.svd(right, full_matrices=False)[1:]
    if len(o) >= 3 and sv[1] > 3.0 * sv[2] and abs(vt[2] @ up) > 0.5:
        # upright cameras' right vectors are horizontal: the world up is the direction
        # orthogonal to all of them (exact for cameras looking down at the subject, whose own
        # ups lean inward) once they span enough azimuth to pin it down
        axis = vt[2] * np.sign(vt[2] @ up)
    elif np.linalg.norm(up) > 0.5:
        axis = up / np.linalg.norm(up)
    elif len(o) >= 3:
        _, _, vt = np.linalg.svd(o - o.mean(0))
        axis = vt[2]
    else:
        return 0.0
    v = v - np.outer(v @ axis, axis)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    # signed angle of each step about the axis, accumulated: the unwrapped azimuth
    sin = np.cross(v[:-1], v[1:]) @ axis
    cos = np.clip(np.sum(v[1:] * v[:-1], 1), -1.0, 1.0)
    az = np.concatenate([[0.0], np.cumsum(np.degrees(np.arctan2(sin, cos)))])
    return float(min(360.0, az.max() - az.min()))


def _rotation_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def freeze_time_report(
    frames: torch.Tensor,
    cameras=None,
    canonical_view: Optional[int] = None,
    windows: Optional[Sequence[dict]] = None,
    options: Optional[ReportOptions] = None,
    source: str = "",
    kind: str = "generated",
) -> dict:
    """How usable a freeze-time video is for reconstruction (see the module docstring).

    Args:
        frames: ``[K,H,W,3]`` in [0,1].
        cameras: optional :class:`~fourreal_core.types.Cameras` (K of them, any image size:
            the intrinsics are rescaled to the frames) -- the poses the poses stage uses.
        canonical_view: k_c, the index of the canonical frame (recorded).
        windows: the freeze-time windows of ``generation.json`` (``start``, ``known``,
            ``direction``) for the seam scores.
        options: thresholds (:class:`ReportOptions`).
        source: what was measured (recorded).
        kind: ``generated`` (a video model's freeze-time video: the 99% static bar, advice
            about generating it again) or ``capture`` (a video someone filmed: the
            ``min_static_fraction_capture`` bar, advice about filming).

    Returns:
        a JSON-friendly dict: ``usable``, ``static_fraction``, ``residual_px`` (median
        epipolar residual of reliable pixels), ``orbit_deg``, ``seams``, ``warnings``,
        ``advice``, ``per_frame`` and the settings used.
    """
    opt = options or ReportOptions()
    frames = torch.as_tensor(frames).detach().float().cpu()
    K, H, W = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
    out: dict[str, Any] = {"source": source, "kind": kind, "frames": K, "height": H, "width": W, "canonical_view": canonical_view,
                           "poses": "given" if cameras is not None else "estimated from the video (no cameras)",
                           "options": asdict(opt)}
    warnings: list[str] = []
    try:
        import cv2
    except ImportError:
        out.update(usable=None, skipped="needs OpenCV (pip install opencv-python-headless, in fourreal[video] "
                   "and fourreal[colmap])", warnings=[], advice="")
        return out
    if cameras is not None and len(cameras) != K:
        raise ValueError(f"freeze-time report: {len(cameras)} cameras for {K} frames")
    gray, s = _gray(frames, opt.max_side)
    h, w = gray[0].shape
    if cameras is not None:
        s_cam = w / float(cameras.width)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    stride = max(1, min(int(opt.stride), K - 1)) if K > 1 else 1
    static_px = total_px = 0
    residuals: list[np.ndarray] = []
    per_frame: list[Optional[float]] = [None] * K
    rot_sum, rot_pairs = 0.0, 0
    fx = 0.5 * w / math.tan(0.5 * math.radians(opt.fov_deg))
    Kmat = np.array([[fx, 0, w / 2.0], [0, fx, h / 2.0], [0, 0, 1]])
    for i in range(0, K - stride):
        j = i + stride
        fwd = _flow(cv2, gray[i], gray[j])
        bwd = _flow(cv2, gray[j], gray[i])
        ok = _reliable(cv2, gray[i], fwd, bwd, opt)
        n = int(ok.sum())
        if n < 16:
            continue
        p1 = np.stack([xs[ok], ys[ok]], 1).astype(np.float64)
        p2 = p1 + fwd[ok].astype(np.float64)
        if cameras is not None:
            F = _fundamental(cameras, i, j, s_cam)
        else:
            # the epipolar geometry of an assumed pinhole camera (5 degrees of freedom: an
            # essential matrix is much less able than a general F to absorb a moving object)
            sub = np.random.default_rng(i).choice(n, size=min(n, 4000), replace=False)
            E, _ = cv2.findEssentialMat(p1[sub], p2[sub], Kmat, method=cv2.RANSAC, prob=0.999,
                                        threshold=0.5 * opt.residual_px)
            if E is None or E.shape != (3, 3):
                continue
            _, R, _, _ = cv2.recoverPose(E, p1[sub], p2[sub], Kmat)
            rot_sum += _rotation_deg(R)
            rot_pairs += 1
            Ki = np.linalg.inv(Kmat)
            F = Ki.T @ E @ Ki
        r = _sampson(F, p1, p2)
        st = int((r < opt.residual_px).sum())
        static_px += st
        total_px += n
        residuals.append(r)
        per_frame[i] = round(st / n, 4)
    if total_px == 0:
        out.update(usable=False, static_fraction=None, residual_px=None, orbit_deg=None, seams=[],
                   warnings=["no reliable flow between frames (textureless or too small video)"],
                   advice=advice_for(kind, ["flow"]),
                   per_frame=per_frame)
        return out
    static = static_px / total_px
    resid = float(np.median(np.concatenate(residuals)))
    if cameras is not None:
        orbit = _orbit_from_cameras(cameras)
        orbit_src = "cameras"
    else:
        # pairs were (k, k+stride): the sum covers the video once when stride divides it
        orbit = rot_sum * (K - 1) / max(1, rot_pairs * stride) if rot_pairs else 0.0
        orbit_src = f"essential matrices (fov {opt.fov_deg:g} deg assumed)"
    # ---- seams ---------------------------------------------------------------------------
    steps = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3)) if K > 1 else torch.zeros(1)
    typical = float(steps.median()) if K > 1 else 0.0
    seams = []
    for win in windows or []:
        d, start, known = win.get("direction"), int(win.get("start", 0)), list(win.get("known", []))
        if d == "forward" and known:
            last_ctx, first_new = start + max(known), start + max(known) + 1
        elif d == "backward" and known:
            last_ctx, first_new = start + min(known), start + min(known) - 1
        else:
            continue
        if not (0 <= last_ctx < K and 0 <= first_new < K):
            continue
        mad = float((frames[first_new] - frames[last_ctx]).abs().mean())
        seams.append({"direction": d, "frame": first_new, "context_frame": last_ctx, "mad": round(mad, 5),
                      "seam_ratio": round(mad / typical, 3) if typical > 0 else None})
    # ---- verdict -------------------------------------------------------------------------
    notes = []
    if K > 1 and orbit / (K - 1) > 8.0:
        notes.append(f"the camera turns {orbit / (K - 1):.1f} deg per frame: optical flow is unreliable at such "
                     "steps, so the static fraction is a lower bound")
    if cameras is None:
        notes.append("no cameras: epipolar geometry from the video with an assumed field of view; the poses "
                     "stage's report (with its cameras) is the stricter check")
    kinds: list[str] = []
    bar = opt.min_static_fraction_capture if kind == "capture" else opt.min_static_fraction
    if static < bar:
        kinds.append("static")
        warnings.append(f"only {static:.1%} of the video is static scene after registration (need {bar:.0%}"
                        + (" for a real capture): something in the scene moves, or the frames are blurred"
                           if kind == "capture" else "): something moves or wobbles while the camera orbits"))
    elif kind == "capture" and static < opt.min_static_fraction:
        notes.append(f"{static:.1%} static: usual for a real capture (motion blur, rolling shutter, exposure)")
    if orbit < opt.min_orbit_deg:
        kinds.append("orbit")
        warnings.append(f"the camera covers only {orbit:.0f} deg of orbit (need {opt.min_orbit_deg:g})")
    bad = [x for x in seams if x["seam_ratio"] is not None and x["seam_ratio"] > opt.max_seam_ratio]
    if bad:
        worst = max(bad, key=lambda x: x["seam_ratio"])
        kinds.append("seam")
        warnings.append(f"{len(bad)} window seam(s) jump more than {opt.max_seam_ratio:g}x a normal frame step "
                        f"(worst {worst['seam_ratio']:.1f}x at frame {worst['frame']})")
    out.update(
        usable=not warnings,
        static_fraction=round(static, 4),
        residual_px=round(resid, 4),
        orbit_deg=round(orbit, 2),
        orbit_from=orbit_src,
        typical_frame_step_mad=round(typical, 5),
        seams=seams,
        max_seam_ratio=max((x["seam_ratio"] for x in seams if x["seam_ratio"] is not None), default=None),
        warnings=warnings,
        notes=notes,
        advice=advice_for(kind, kinds),
        per_frame=per_frame,
        working_size=[h, w],
    )
    return out


def summary_line(report: dict) -> str:
    """One line: ``freeze-time video: 97% static, orbit 150 deg, seams <= 1.2x: usable``."""
    if report.get("skipped"):
        return f"freeze-time report skipped: {report['skipped']}"
    if report.get("static_fraction") is None:
        return "freeze-time video: WARNING " + "; ".join(report.get("warnings", [])) + f". Advice: {report['advice']}"
    seam = report.get("max_seam_ratio")
    parts = [f"{report['static_fraction']:.1%} static (residual {report['residual_px']:.2f} px)",
             f"orbit {report['orbit_deg']:.0f} deg"]
    if seam is not None:
        parts.append(f"seams <= {seam:.1f}x")
    head = ("orbit video (a capture): " if report.get("kind") == "capture" else "freeze-time video: ") + ", ".join(parts)
    if report.get("usable"):
        return head + ": usable"
    return head + ": WARNING, unlikely to reconstruct: " + "; ".join(report["warnings"]) + f". Advice: {report['advice']}"


def write_report(out_dir: Path, frames: torch.Tensor, cameras=None, canonical_view: Optional[int] = None,
                 windows: Optional[Sequence[dict]] = None, options: Optional[ReportOptions] = None,
                 source: str = "", ctx=None, kind: str = "generated") -> dict:
    """:func:`freeze_time_report` -> ``out_dir/freeze_time_report.json``; the summary line goes
    to ``ctx.notice`` (stderr + the run log) when a stage context is given."""
    from fourreal_core.io import write_json

    report = freeze_time_report(frames, cameras=cameras, canonical_view=canonical_view, windows=windows, options=options,
                                source=source, kind=kind)
    report["summary"] = summary_line(report)
    write_json(Path(out_dir) / REPORT_NAME, report)
    if ctx is not None:
        ctx.notice(report["summary"])
        ctx.log("freeze_time_report", stage=ctx.name, usable=report.get("usable"),
                static_fraction=report.get("static_fraction"), orbit_deg=report.get("orbit_deg"))
    return report
