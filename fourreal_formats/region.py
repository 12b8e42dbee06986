"""w_t restricted to the reference video's dynamic region (the motion stage's ``dynamic_region``).

The reference video is filmed from one fixed camera, so it says how the scene moves only
where its pixels change: a Gaussian that projects (at its canonical position) into the part
of the reference frame that never changes, or outside the reference camera's view, gets no
motion signal from it -- the photometric loss can only ask it to stay or to hide. With
``dynamic_region`` set, such Gaussians are static: :class:`RegionDeformer` evaluates the
wrapped w_t only on the Gaussians whose centre projects into the reference camera's dynamic
mask (pixels that change over the reference video, :func:`~fourreal_stages.evaluate.dynamic_masks`,
dilated by a margin) and returns exactly zero offsets for the rest.

What it buys on a full-frame scene with a small moving subject: the per-step cost of w_t
(the 128x6 MLP, forward and backward, at t and t-1 -- most of a motion step on a CPU) falls
with the dynamic fraction, and the background cannot drift. What it costs: motion outside
the region the reference camera sees change is not modelled -- which the reference video
could not have taught anyway. The test is re-done at every call on the positions given, so
Gaussians added by growth or moved by the joint phase are classified where they are.

Saved beside the 4D scene as ``motion_region.safetensors`` (camera + mask), so ``fourreal
render / export / eval`` and the viewer apply the same split.
"""

from __future__ import annotations

from typing import Optional

import torch

from fourreal_core.interfaces import Deformation, Deformer
from fourreal_core.types import Cameras

REGION_FILE = "motion_region.safetensors"


def region_mask(dynamic: torch.Tensor, margin: float) -> torch.Tensor:
    """``[H,W]`` bool: the union of a camera's per-frame dynamic masks ``[T,H,W]``, dilated by
    ``margin`` times the image's long side (so limbs that leave the measured region by a
    little, and Gaussians whose centre is just outside it, still move)."""
    m = dynamic.any(0).float() if dynamic.dim() == 3 else dynamic.float()
    r = int(round(float(margin) * max(m.shape)))
    if r > 0:
        m = torch.nn.functional.max_pool2d(m[None, None], 2 * r + 1, stride=1, padding=r)[0, 0]
    return m > 0.5


class RegionDeformer(torch.nn.Module, Deformer):
    """``inner`` (a temporal deformer, w_t) applied only to the Gaussians whose centre projects
    into ``mask`` ``[H,W]`` of the camera (``viewmat`` ``[4,4]`` world-to-camera, OpenCV, and
    ``K`` ``[3,3]``); zero offsets elsewhere. Its parameters and learning rate are the inner
    deformer's; it is zero at t_c exactly when the inner one is."""

    def __init__(self, inner: torch.nn.Module, viewmat: torch.Tensor, K: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("viewmat", viewmat.detach().float().reshape(4, 4).clone())
        self.register_buffer("K", K.detach().float().reshape(3, 3).clone())
        self.register_buffer("mask", mask.detach().bool().clone())

    @property
    def frame_mode(self) -> bool:
        return bool(self.inner.frame_mode)

    def setup(self, **kw) -> None:
        self.inner.setup(**kw)

    def learning_rate(self, step: int, total: int) -> float:
        return self.inner.learning_rate(step, total)

    @torch.no_grad()
    def selected(self, means: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool: the Gaussians whose centre is in front of the camera and projects into
        the mask."""
        H, W = self.mask.shape
        uv, z = Cameras(self.viewmat[None], self.K[None], W, H).project(means.detach())
        ui, vi, z = torch.floor(uv[0, :, 0]).long(), torch.floor(uv[0, :, 1]).long(), z[0]
        inside = (z > 1e-6) & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
        out = torch.zeros_like(inside)
        idx = inside.nonzero().squeeze(1)
        out[idx] = self.mask.to(means.device)[vi[idx], ui[idx]]
        return out

    @staticmethod
    def _scatter(n: int, sel: torch.Tensor, d: Optional[Deformation], like: torch.Tensor) -> Deformation:
        dx = like.new_zeros(n, 3)
        dq = like.new_zeros(n, 4)
        ds = None
        if d is not None:
            dx = dx.index_put((sel,), d.dx)
            dq = dq.index_put((sel,), d.dq)
            if d.ds is not None:
                ds = like.new_zeros(n, 3).index_put((sel,), d.ds)
        return Deformation(dx, dq, ds)

    def deform(self, means: torch.Tensor, time, quats: Optional[torch.Tensor] = None) -> Deformation:
        sel = self.selected(means).nonzero().squeeze(1)
        q = None if quats is None else quats[sel]
        d = self.inner.deform(means[sel], time, quats=q) if len(sel) else None
        return self._scatter(len(means), sel, d, means)

    def deform_pair(self, means: torch.Tensor, t: float, t_prev: float, quats: Optional[torch.Tensor] = None):
        """``(w(x, t), w(x, t_prev))`` on the selected Gaussians, through the inner deformer's
        ``deform_pair`` (the second without autograd)."""
        sel = self.selected(means).nonzero().squeeze(1)
        if not len(sel):
            z = self._scatter(len(means), sel, None, means)
            return z, z
        q = None if quats is None else quats[sel]
        d, dp = self.inner.deform_pair(means[sel], t, t_prev, quats=q)
        return self._scatter(len(means), sel, d, means), self._scatter(len(means), sel, dp, means)

    # ---------------------------------------------------------------------- saving
    def region_tensors(self) -> dict:
        return {"viewmat": self.viewmat.cpu(), "K": self.K.cpu(), "mask": self.mask.cpu().to(torch.uint8)}

    @staticmethod
    def from_region_tensors(inner: torch.nn.Module, t: dict) -> "RegionDeformer":
        return RegionDeformer(inner, t["viewmat"], t["K"], t["mask"].bool())
