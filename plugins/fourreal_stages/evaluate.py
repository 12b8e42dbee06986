"""Evaluation: render each test camera at its time and score PSNR, SSIM and LPIPS. The `eval`
stage (:class:`EvalStage`, params :class:`EvalConfig`; `fourreal eval` runs it too) scores a
scene with :func:`run_eval`.

LPIPS is computed when the ``lpips`` package is installed and its backbone weights load
(they are fetched by torchvision on first use, so an offline machine without them cached
reports why LPIPS is missing instead of a number).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from fourreal_core.config import InputPath, at_least
from fourreal_core.errors import InputError
from fourreal_core.interfaces import Stage
from fourreal_core.io import write_json
from fourreal_core.types import PosedVideo


@dataclass
class EvalConfig:
    """Score held-out views (each rendered at its own camera and time): PSNR, SSIM, LPIPS."""

    against: Optional[InputPath] = None  # transforms.json (default: an earlier test/transforms.json)
    scene: Optional[InputPath] = None
    white_background: Optional[bool] = None  # RGBA targets: None = white (D-NeRF convention)
    lpips: bool = True
    # Size to score at (test images resized, intrinsics scaled). Default: the size the scene
    # was trained at, as D-NeRF-style benchmarks do; native_resolution: the test images' own.
    height: Optional[int] = None
    width: Optional[int] = None
    native_resolution: bool = False

    def __post_init__(self) -> None:
        at_least(self, height=1, width=1)


def psnr_per_frame(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``[N]`` PSNR (dB) of ``[N,H,W,3]`` images in [0,1]."""
    mse = ((pred.float() - gt.float()) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def ssim_per_frame(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``[N]`` SSIM (11x11 Gaussian window, sigma 1.5, as 3DGS)."""
    from fourreal_losses.ssim import ssim

    return torch.stack([ssim(pred[i:i + 1], gt[i:i + 1]).reshape(()) for i in range(len(pred))])


class _Lpips:
    """LPIPS (AlexNet) if available; ``why`` says why not."""

    def __init__(self) -> None:
        self.model = None
        self.why: Optional[str] = None
        try:
            import lpips  # type: ignore
        except ImportError:
            self.why = "lpips package not installed (pip install fourreal[metrics])"
            return
        try:
            self.model = lpips.LPIPS(net="alex", verbose=False).eval()
        except Exception as exc:  # offline without cached backbone weights
            self.why = f"lpips could not load its weights ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            a = pred.permute(0, 3, 1, 2) * 2 - 1
            b = gt.permute(0, 3, 1, 2) * 2 - 1
            return self.model(a, b).flatten()


# ------------------------------------------------------------------ dynamic region
#: a pixel "changes" when some channel differs from its temporal median by more than this
DYNAMIC_THRESHOLD = 0.1
#: the same for the per-frame moving region that evaluation scores (each frame's own pixels)
FRAME_DYNAMIC_THRESHOLD = 0.08


def camera_groups(cameras, atol: float = 1e-4) -> list[list[int]]:
    """Indices of views that share one camera (same world-to-camera matrix and intrinsics),
    in order of first appearance: a held-out camera scored over time is one group."""
    V = cameras.viewmats.detach().double().cpu().reshape(len(cameras), -1)
    K = cameras.Ks.detach().double().cpu().reshape(len(cameras), -1)
    key = torch.cat([V, K / max(float(K.abs().max()), 1.0)], dim=1)
    groups: list[list[int]] = []
    reps: list[torch.Tensor] = []
    for i in range(len(cameras)):
        for g, r in zip(groups, reps):
            if torch.allclose(key[i], r, atol=atol, rtol=0):
                g.append(i)
                break
        else:
            groups.append([i])
            reps.append(key[i])
    return groups


def dynamic_masks(frames: torch.Tensor, cameras, given: Optional[torch.Tensor] = None,
                  threshold: Optional[float] = None, dilate: int = 2,
                  per_frame: bool = False) -> tuple[torch.Tensor, str]:
    """``[N,H,W]`` bool: the dynamic region of each view, and where it came from.

    ``given`` masks (``[N,H,W,1]``, e.g. a capture's segmentation of the moving subject) are
    used as they are. Otherwise, per camera (:func:`camera_groups`), from that camera's own
    ground-truth frames over time: a pixel changes in a frame when some channel differs from
    the pixel's temporal median by more than ``threshold`` (after a 3x3 box filter, so sensor
    noise does not count), dilated by ``dilate`` pixels.

    * ``per_frame=True`` (what evaluation scores; threshold :data:`FRAME_DYNAMIC_THRESHOLD`):
      each view's own changed pixels -- where the moving subject is in that frame, so a render
      that loses it is scored there and nowhere else.
    * ``per_frame=False`` (threshold :data:`DYNAMIC_THRESHOLD`): the union over the camera's
      frames, the same mask for each -- every place the subject ever is (the motion stage's
      region and loss weight).

    Cameras seen at a single time have no temporal signal: an empty mask.
    """
    if threshold is None:
        threshold = FRAME_DYNAMIC_THRESHOLD if per_frame else DYNAMIC_THRESHOLD
    N, H, W, _ = frames.shape
    if given is not None:
        return given[..., 0] > 0.5, "given"
    out = torch.zeros(N, H, W, dtype=torch.bool)
    f = frames.float().cpu()
    for g in camera_groups(cameras):
        if len(g) < 2:
            continue
        x = f[g]
        med = x.median(dim=0).values
        dev = (x - med).abs().amax(-1)  # [n,H,W]
        dev = torch.nn.functional.avg_pool2d(dev[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
        m = (dev > threshold).float()[:, None]  # [n,1,H,W]
        if not per_frame:
            m = m.amax(0, keepdim=True)
        if dilate > 0:
            k = 2 * dilate + 1
            m = torch.nn.functional.max_pool2d(m, k, stride=1, padding=dilate)
        out[g] = m[:, 0].bool()
    return out, "frames"


def masked_scores(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``([N] PSNR, [N] SSIM)`` over the pixels of ``mask [N,H,W]`` (NaN where it is empty);
    SSIM is the mean of the SSIM map over the mask."""
    from fourreal_losses.ssim import ssim_map

    m = mask.float()
    cnt = m.flatten(1).sum(1)
    se = ((pred.float() - gt.float()) ** 2).mean(-1)
    mse = (se * m).flatten(1).sum(1) / cnt.clamp_min(1)
    p = -10.0 * torch.log10(mse.clamp_min(1e-12))
    s = torch.stack([(ssim_map(pred[i:i + 1].float(), gt[i:i + 1].float())[0].mean(-1) * m[i]).sum() / cnt[i].clamp_min(1)
                     for i in range(len(pred))])
    nan = torch.full_like(p, float("nan"))
    return torch.where(cnt > 0, p, nan), torch.where(cnt > 0, s, nan)


def pooled_dynamic_scores(renders: torch.Tensor, gt: torch.Tensor, dmask: torch.Tensor,
                          dssim: Optional[torch.Tensor] = None) -> dict:
    """``{dynamic_psnr, dynamic_ssim, dynamic_fraction}`` over the ``dmask [N,H,W]`` pixels
    of all views together (PSNR pooled over every masked pixel, so a view's share follows
    its mask size; SSIM the mean of the views that have a mask), or ``{}`` when the mask is
    empty. ``dssim``: per-view masked SSIM when already computed (:func:`masked_scores`)."""
    frac = dmask.float().flatten(1).mean(1)
    has = frac > 0
    if not bool(has.any()):
        return {}
    if dssim is None:
        _, dssim = masked_scores(renders.cpu(), gt.cpu(), dmask)
    se = ((renders.cpu().float() - gt.cpu().float()) ** 2).mean(-1)
    mse = float((se * dmask).sum() / dmask.sum())
    return {"dynamic_psnr": -10.0 * math.log10(max(mse, 1e-12)), "dynamic_ssim": float(dssim[has].mean()),
            "dynamic_fraction": float(frac.mean())}


#: below this gain of the 4D scene over its frozen canonical scene in the moving region, eval
#: says the subject barely moves in the scored views
FROZEN_GAIN_DB = 0.5


def _frozen_baseline(scene, rasterizer, views, times, gt, dmask, dynamic_psnr: float, notes: list) -> dict:
    """``{frozen_dynamic_psnr, motion_gain_db}``: the moving region scored again on the scene
    frozen at its canonical time t_c (w_t off), and how much w_t adds over it. A 4D scene whose
    subject stays in its pose at c scores about as well frozen as moving -- a gain near zero
    says so (and a note says it in words) where the whole-image score cannot. ``{}`` for a
    static scene, an unknown t_c or views that are all at t_c."""
    if getattr(scene, "deformer", None) is None or scene.times is None or scene.canonical_frame is None:
        return {}
    t_c = float(scene.times[scene.canonical_frame])
    if bool((times.float() - t_c).abs().max() < 1e-6):
        return {}
    frozen = scene.render_each(rasterizer, views.cameras, torch.full((len(views),), t_c))
    fp = pooled_dynamic_scores(frozen, gt, dmask)
    if not fp:
        return {}
    gain = dynamic_psnr - fp["dynamic_psnr"]
    if gain < FROZEN_GAIN_DB:
        notes.append(f"the moving region scores {dynamic_psnr:.2f} dB, and {fp['dynamic_psnr']:.2f} dB with the "
                     f"scene frozen at t_c = {t_c:.3g}: w_t adds {gain:+.2f} dB -- the subject barely moves "
                     f"in these views")
    return {"frozen_dynamic_psnr": fp["dynamic_psnr"], "motion_gain_db": gain}


@torch.no_grad()
def evaluate_views(scene, rasterizer, views: PosedVideo, lpips: bool = True) -> dict:
    """Render every view of ``views`` at its own time (``views.times``; the scene's canonical
    time when absent) and score it: PSNR, SSIM (LPIPS), and inside each view's moving region
    ``dynamic_psnr`` / ``dynamic_ssim``, with ``frozen_dynamic_psnr`` / ``motion_gain_db`` (the
    same region on the scene frozen at t_c, :func:`_frozen_baseline`) for a 4D scene. Returns
    ``{"per_frame": [...], "mean": {...}, "renders": [N,H,W,3], "notes": [...]}``."""
    times = views.times
    notes = [f"{views.meta.get('source', 'views')}: {w}" for w in views.meta.get("warnings", [])]
    if times is None:
        t_c = float(scene.times[scene.canonical_frame]) if scene.times is not None and scene.canonical_frame is not None else 0.0
        times = torch.full((len(views),), t_c)
        notes.append(f"{views.meta.get('source', 'the views')}: frames have no 'time'; every view was scored at "
                     f"the canonical time t_c = {t_c:.4g}")
    renders = scene.render_each(rasterizer, views.cameras, times)
    gt = views.video.frames.cpu()
    p = psnr_per_frame(renders, gt)
    s = ssim_per_frame(renders, gt)
    lp = None
    if lpips:
        metric = _Lpips()
        if metric.model is not None:
            lp = metric(renders, gt)
        else:
            notes.append(f"LPIPS not computed: {metric.why}")
    given = views.dynamic_masks.cpu() if views.dynamic_masks is not None else None
    dmask, dsource = dynamic_masks(gt, views.cameras, given, per_frame=True)
    if given is not None:
        unknown = int(torch.isnan(given).flatten(1).all(1).sum())
        if unknown:
            notes.append(f"{unknown} of {len(views)} views have no moving-region mask (dynamic_mask_path): "
                         "their moving region is not scored")
    dp, ds = masked_scores(renders.cpu(), gt, dmask)
    frac = dmask.float().flatten(1).mean(1)
    per = []
    names = views.meta.get("file_paths") or [str(i) for i in range(len(views))]
    for i in range(len(views)):
        row = {"frame": names[i], "time": float(times[i]), "psnr": float(p[i]), "ssim": float(s[i])}
        if lp is not None:
            row["lpips"] = float(lp[i])
        if float(frac[i]) > 0:
            row.update(dynamic_psnr=float(dp[i]), dynamic_ssim=float(ds[i]), dynamic_fraction=float(frac[i]))
        per.append(row)
    mean = {"psnr": float(p.mean()), "ssim": float(s.mean())}
    if lp is not None:
        mean["lpips"] = float(lp.mean())
    if not all(math.isfinite(v) for v in mean.values()):
        notes.append("non-finite metric (a render or target contains NaN)")
    pooled = pooled_dynamic_scores(renders, gt, dmask, ds)
    if pooled:
        mean.update(pooled)
        mean.update(_frozen_baseline(scene, rasterizer, views, times, gt, dmask, pooled["dynamic_psnr"], notes))
    else:
        notes.append("no dynamic-region score: no view has masks and no camera is seen at two or more times")
    return {"per_frame": per, "mean": mean, "renders": renders, "notes": notes,
            "dynamic_mask": dmask, "dynamic_mask_source": dsource}


# --------------------------------------------------------------------------- the stage
def eval_size(scene, against: Path, height: Optional[int], width: Optional[int], native: bool):
    """``(height, width, source)`` to score at: as given; the native size of the test images
    (``native``); else the size the scene was trained at (its reference camera), the usual
    protocol of D-NeRF-style benchmarks -- a scene trained at 200x200 is scored at 200x200,
    not asked to super-resolve 800x800 targets. When the test images have another aspect
    ratio than training, only the height is matched and the aspect ratio kept."""
    from fourreal_formats.transforms import load_transforms

    if height is not None or width is not None:
        return height, width, "given"
    ref = scene.reference_camera
    if native or ref is None:
        return None, None, "native"
    cams = load_transforms(against, load_images=False).cameras
    if abs(cams.width / cams.height - ref.width / ref.height) < 0.01:
        return int(ref.height), int(ref.width), "training"
    return int(ref.height), None, "training"


def run_eval(scene, rasterizer, against: Path, white_background, lpips: bool, out_json: Path,
             height: Optional[int] = None, width: Optional[int] = None, native: bool = False) -> dict:
    """Score ``scene`` on the views of ``against``, each at its own camera and time, at the
    size :func:`eval_size` picks (the training size by default)."""
    from fourreal_formats.transforms import load_transforms

    h, w, source = eval_size(scene, against, height, width, native)
    views = load_transforms(against, height=h, width=w, white_background=white_background)
    res = evaluate_views(scene, rasterizer, views, lpips=lpips)
    payload = {"against": str(against), "num_views": len(views),
               "resolution": {"height": views.video.height, "width": views.video.width, "from": source},
               "mean": res["mean"], "dynamic_mask": res["dynamic_mask_source"], "notes": res["notes"],
               "per_frame": res["per_frame"]}
    write_json(out_json, payload)
    return {**payload, "renders": res["renders"], "targets": views.video.frames}


class EvalStage(Stage):
    reads = ("scene4d.json", "test/transforms.json")
    writes = ("eval.json", "eval.mp4")

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        from fourreal_media import write_video

        from fourreal_formats.scene4d import MANIFEST, Scene4D

        cfg = self.cfg
        spath = ctx.resolve(cfg.scene) if cfg.scene else ctx.find_output(MANIFEST)
        against = ctx.resolve(cfg.against) if cfg.against else ctx.find_output("test/transforms.json")
        if spath is None or against is None:
            missing = "4D scene (scene4d.json) among the finished stages" if spath is None else "held-out views (params.against)"
            raise InputError(f"stage {ctx.name!r}: nothing to evaluate: no {missing}")
        scene = Scene4D.load(spath, ctx.registry, ctx.device)
        res = run_eval(scene, ctx.rasterizer, against, cfg.white_background, cfg.lpips, ctx.out_dir / "eval.json",
                       height=cfg.height, width=cfg.width, native=cfg.native_resolution)
        write_video(ctx.out_dir / "eval.mp4", torch.cat([res["targets"], res["renders"]], dim=2), fps=4)
        ctx.log("eval", stage=ctx.name, **res["mean"])
        for note in res["notes"]:  # as `fourreal eval` prints them (e.g. a subject that barely moves)
            ctx.notice(note)
