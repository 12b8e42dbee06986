"""Point-track supervision of the motion stage (Shape of Motion's track loss, Wang et al. 2024).

The reference video's 2D point tracks (a ``tracker`` plugin: OpenCV, or an external tracker's
``.npz``) say where a point seen at the canonical frame c is at frame t. The loss: render the
canonical Gaussians from the reference camera at c with, as their "colour", each Gaussian's
projection into the reference camera at t after w_t has moved it; alpha-composited (divided by
the accumulated opacity) that is the expected position at t of what is seen at each pixel at c.
At each track's pixel at c it must be the track's position at t:

    L_track = sum_q v_q(t) |P_t(u_q) - u_q(t)|_1 / (sum_q v_q(t) * max(H, W))

with ``v_q(t)`` the track's visibility at t (and at c, and a covered pixel there). It is what a
photometric loss cannot give once a subject has moved further than its own size: a gradient
toward where it went. The canonical render's weights are detached (the tracks move Gaussians,
they do not reshape the canonical frame); the positions carry gradients to w_t (and to the
canonical positions in phases that train them).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from fourreal_core.interfaces import GaussianParams, Tracks


def choose_queries(frame: torch.Tensor, dynamic: Optional[torch.Tensor], n: int, c: int) -> torch.Tensor:
    """About ``n`` query points ``[Q,3]`` ``(c, x, y)`` on frame c ``[H,W,3]``: corners that a
    tracker can follow (``cv2.goodFeaturesToTrack``, Shi-Tomasi), half of them inside the
    reference video's moving region at c when there is one (``dynamic`` ``[H,W]`` bool), the
    rest anywhere."""
    import cv2

    g = (frame.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    g = cv2.cvtColor(g, cv2.COLOR_RGB2GRAY)
    pts = []
    n_dyn = n // 2 if dynamic is not None and bool(dynamic.any()) else 0
    if n_dyn:
        m = dynamic.cpu().numpy().astype(np.uint8) * 255
        p = cv2.goodFeaturesToTrack(g, maxCorners=n_dyn, qualityLevel=0.001, minDistance=1.5, mask=m)
        if p is not None:
            pts.append(p.reshape(-1, 2))
    p = cv2.goodFeaturesToTrack(g, maxCorners=n - sum(len(x) for x in pts), qualityLevel=0.001, minDistance=3)
    if p is not None:
        pts.append(p.reshape(-1, 2))
    xy = np.concatenate(pts) if pts else np.zeros((0, 2), np.float32)
    return torch.cat([torch.full((len(xy), 1), float(c)), torch.from_numpy(xy).float()], dim=1)


def save_tracks(path, tracks: Tracks, height: int, width: int) -> None:
    """Write ``tracks`` in the ``tracks_file`` layout (so a run's tracks can be looked at and reused)."""
    np.savez(path, tracks=tracks.tracks.cpu().numpy(), visible=tracks.visible.cpu().numpy(),
             queries=tracks.queries.cpu().numpy(), size=np.array([height, width]))


class TrackLoss:
    """The track loss for one reference video; see the module docstring.

    Args:
        tracks: the reference video's tracks (T frames).
        c: the canonical frame index.
        ref_cams: the reference cameras (T), on the training device.
        rasterizer: the stage's rasterizer.
    """

    def __init__(self, tracks: Tracks, c: int, ref_cams, rasterizer) -> None:
        dev = ref_cams.viewmats.device
        vis_c = tracks.visible[:, c].bool()
        self.c = c
        self.cams = ref_cams
        self.rasterizer = rasterizer
        self.H, self.W = int(ref_cams.height), int(ref_cams.width)
        # rasterizer pixel convention: centres at +0.5
        self.uv_c = (tracks.tracks[vis_c, c] + 0.5).to(dev)  # [Q,2]
        self.uv_t = (tracks.tracks[vis_c] + 0.5).to(dev)  # [Q,T,2]
        self.vis = tracks.visible[vis_c].bool().to(dev)  # [Q,T]
        self.num = int(vis_c.sum())

    def __len__(self) -> int:
        return self.num

    def __call__(self, g0: GaussianParams, g: GaussianParams, j: int) -> Optional[torch.Tensor]:
        """The loss at reference frame ``j`` for canonical Gaussians ``g0`` and the same
        Gaussians moved to frame j's time, ``g``; None when no track is visible at j."""
        if j == self.c or self.num == 0:
            return None
        v = self.vis[:, j]
        if not bool(v.any()):
            return None
        uv, _ = self.cams[j].project(g.means)  # [1,N,2]
        with torch.no_grad():
            uv_c, _ = self.cams[self.c].project(g0.means)
        scale = float(max(self.H, self.W))
        disp = (uv[0] - uv_c[0]) / scale  # each Gaussian's image motion from c to j
        feat = torch.cat([disp, torch.zeros_like(disp[:, :1])], dim=1)
        canon = GaussianParams(g0.means.detach(), g0.quats.detach(), g0.scales.detach(),
                               g0.opacities.detach(), feat, None)
        out = self.rasterizer.rasterize(canon, self.cams[self.c], background=torch.zeros(3, device=feat.device),
                                        render_depth=False)
        px = self.uv_c[:, 0].floor().long().clamp(0, self.W - 1)
        py = self.uv_c[:, 1].floor().long().clamp(0, self.H - 1)
        alpha = out.alpha[0, py, px, 0]
        ok = v & (alpha.detach() > 0.5)
        if not bool(ok.any()):
            return None
        pred = out.rgb[0, py, px, :2] / alpha.clamp_min(1e-6)[:, None]  # expected motion / scale
        err = (pred - (self.uv_t[:, j] - self.uv_c) / scale).abs().sum(-1)
        return (err * ok).sum() / ok.sum()


def build_track_loss(ctx, cfg, ref, c: int, dynamic: Optional[torch.Tensor], ref_cams, rasterizer, out_dir):
    """The motion stage's :class:`TrackLoss` from ``cfg.tracker`` (None when it is unset):
    tracks the reference video from ``cfg.track_points`` query points at c, writes them to
    ``tracks.npz`` in the stage folder and logs how many are usable."""
    if cfg.tracker is None:
        return None
    tracker = cfg.tracker.build(ctx.registry)
    frames = ref.video.frames
    queries = choose_queries(frames[c], None if dynamic is None else dynamic[c], int(cfg.track_points), c)
    tracks = tracker.track(frames, queries)
    save_tracks(out_dir / "tracks.npz", tracks, frames.shape[1], frames.shape[2])
    loss = TrackLoss(tracks, c, ref_cams, rasterizer)
    ctx.log("tracks", stage=ctx.name, tracker=cfg.tracker.name, tracks=len(tracks), at_canonical=len(loss),
            visible=round(float(tracks.visible.float().mean()), 3))
    if len(loss) == 0:
        ctx.notice(f"{cfg.tracker.source or 'tracker'}: no track is visible at the canonical frame {c}; "
                   "the track loss is off")
        return None
    return loss
