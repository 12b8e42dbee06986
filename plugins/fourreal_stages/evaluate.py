"""Evaluation: render each test camera at its time and score PSNR, SSIM and LPIPS.

LPIPS is computed when the ``lpips`` package is installed and its backbone weights load
(they are fetched by torchvision on first use, so an offline machine without them cached
reports why LPIPS is missing instead of a number).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from fourreal_core.types import PosedVideo


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


@torch.no_grad()
def evaluate_views(scene, rasterizer, views: PosedVideo, lpips: bool = True) -> dict:
    """Render every view of ``views`` at its own time (``views.times``; the scene's canonical
    time when absent) and score it. Returns ``{"per_frame": [...], "mean": {...},
    "renders": [N,H,W,3], "notes": [...]}``."""
    times = views.times
    if times is None:
        t_c = float(scene.times[scene.canonical_index]) if scene.times is not None and scene.canonical_index is not None else 0.0
        times = torch.full((len(views),), t_c)
    renders = scene.render_each(rasterizer, views.cameras, times)
    gt = views.video.frames.cpu()
    p = psnr_per_frame(renders, gt)
    s = ssim_per_frame(renders, gt)
    notes = []
    lp = None
    if lpips:
        metric = _Lpips()
        if metric.model is not None:
            lp = metric(renders, gt)
        else:
            notes.append(f"LPIPS not computed: {metric.why}")
    per = []
    names = views.meta.get("file_paths") or [str(i) for i in range(len(views))]
    for i in range(len(views)):
        row = {"frame": names[i], "time": float(times[i]), "psnr": float(p[i]), "ssim": float(s[i])}
        if lp is not None:
            row["lpips"] = float(lp[i])
        per.append(row)
    mean = {"psnr": float(p.mean()), "ssim": float(s.mean())}
    if lp is not None:
        mean["lpips"] = float(lp.mean())
    if not all(math.isfinite(v) for v in mean.values()):
        notes.append("non-finite metric (a render or target contains NaN)")
    return {"per_frame": per, "mean": mean, "renders": renders, "notes": notes}
