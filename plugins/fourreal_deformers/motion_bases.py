"""Motion bases (Shape of Motion, Wang et al. 2024) for w_t: K rigid SE(3) trajectories over
the reference video and per-Gaussian softmax blend weights, exactly zero at t_c.

The bases' algebra is the ``lbs`` deformer's with ``motion: per_frame`` (a per-frame table of
rigid transforms, blended by a softmax weight field of the canonical position, zero at the
canonical input), reused rather than copied; what is added here is the Shape-of-Motion
configuration (a time input over the reference frames, table learning rates) and
:meth:`MotionBasesDeformer.init_from_tracks`, which sets each basis's trajectory from 3D point
tracks by weighted Procrustes (Kabsch via ``torch.linalg.svd``).
"""

from __future__ import annotations

from typing import Optional

import torch

from .configs import LBSDeformerConfig, MotionBasesDeformerConfig
from .lbs import LBSDeformer


def _kabsch(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rigid ``(R [3,3], t [3])`` minimising ``sum w |R a + t - b|^2`` (``a``, ``b`` ``[P,3]``)."""
    w = w / w.sum().clamp_min(1e-12)
    ca, cb = (w[:, None] * a).sum(0), (w[:, None] * b).sum(0)
    H = ((a - ca) * w[:, None]).T @ (b - cb)
    U, _, Vt = torch.linalg.svd(H)
    d = torch.sign(torch.det(Vt.T @ U.T))
    D = torch.diag(torch.tensor([1.0, 1.0, float(d) if d != 0 else 1.0], dtype=a.dtype))
    R = Vt.T @ D @ U.T
    return R, cb - R @ ca


def _matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    from fourreal_formats.quaternions import matrix_to_quat

    q = matrix_to_quat(R)
    return torch.where(q[..., :1] < 0, -q, q)


class MotionBasesDeformer(LBSDeformer):
    """See :class:`~fourreal_deformers.configs.MotionBasesDeformerConfig`.

    ``setup(num_frames=T, canonical=t_c, canonical_means=x0)`` places the bases' weight
    centres and sizes the table; ``deform(means, t, quats=None)`` -> ``Deformation(dx, dq,
    ds=None)``.
    """

    def __init__(self, cfg: Optional[MotionBasesDeformerConfig] = None) -> None:
        cfg = cfg or MotionBasesDeformerConfig()
        self.bases_cfg = cfg
        super().__init__(LBSDeformerConfig(
            num_bones=cfg.num_bases, motion="per_frame", skin_sigma=cfg.weight_sigma,
            skin_mlp_width=cfg.weight_mlp_width, skin_mlp_depth=cfg.weight_mlp_depth,
            skin_multires=cfg.weight_multires, kmeans_iters=cfg.kmeans_iters, seed=cfg.seed,
            chunk=cfg.chunk, lr=cfg.lr, lr_final=cfg.lr_final,
        ))

    def setup(self, *, num_frames=None, canonical=None, canonical_means=None) -> None:
        if canonical is not None and not isinstance(canonical, float) and not (
                isinstance(canonical, torch.Tensor) and canonical.is_floating_point()):
            raise TypeError(f"motion_bases is a temporal deformer (w_t): the canonical input is a time t_c, "
                            f"got {canonical!r}")
        super().setup(num_frames=num_frames, canonical=canonical, canonical_means=canonical_means)

    def deform(self, means, time, quats=None):
        if isinstance(time, int) and not isinstance(time, bool):
            time = float(time)  # t = 0 or 1, never a frame index
        return super().deform(means, time, quats)

    @torch.no_grad()
    def init_from_tracks(self, canonical: torch.Tensor, tracks: torch.Tensor, visible: torch.Tensor,
                         min_points: int = 3) -> int:
        """Set every basis's per-frame trajectory from 3D tracks (Shape of Motion's
        initialisation): each track goes to the basis whose weight it is largest for at its
        canonical position; per frame the basis's rigid motion is the weighted Procrustes fit
        (weights: blend weight x visibility) of its tracks' canonical positions onto their
        positions at that frame. Bases with fewer than ``min_points`` visible tracks in a frame
        keep that frame as it is.

        Args:
            canonical: ``[Q,3]`` track points at t_c (world).
            tracks: ``[Q,T,3]`` their positions at the T reference frames.
            visible: ``[Q,T]`` bool.
        Returns the number of (basis, frame) pairs set.
        """
        T = self.num_frames
        if tracks.shape[:2] != (canonical.shape[0], T) or visible.shape != tracks.shape[:2]:
            raise ValueError(f"tracks must be [Q,{T},3] with visible [Q,{T}] for canonical [Q,3]; got "
                             f"{tuple(tracks.shape)}, {tuple(visible.shape)}, {tuple(canonical.shape)}")
        dev = self.pivots.device
        x = canonical.to(dev, torch.float32)
        w = self.skinning_weights(x)  # [Q,B]
        owner = w.argmax(1)
        n = 0
        for b in range(self.cfg.num_bones):
            sel = owner == b
            for k in range(T):
                m = sel & visible[:, k].to(dev)
                if int(m.sum()) < min_points:
                    continue
                R, t = _kabsch(x[m], tracks[m, k].to(dev, torch.float32), w[m, b])
                # bone form: R (x - c) + c + t_b  =>  t_b = t + R c - c
                c = self.pivots[b]
                q = _matrix_to_quat(R)
                self.frame_params[k, b, :4] = q - torch.tensor([1.0, 0.0, 0.0, 0.0], device=dev)
                self.frame_params[k, b, 4:] = t + R @ c - c
                n += 1
        return n

    def extra_repr(self) -> str:
        return f"num_bases={self.cfg.num_bones}, weight_mlp_width={self.cfg.skin_mlp_width}"
