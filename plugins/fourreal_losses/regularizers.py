"""Deformation regularisers (4Real paper Eq. 3 and Appendix B, Eqs. 7-12).

Notation: N Gaussians; ``d = inputs["deformation"]`` at the current time t (or frame k),
``d_prev = inputs["deformation_prev"]`` at the previous time t-1, both for the same
Gaussians; canonical positions ``x0 = inputs["canonical"].means [N,3]`` and rotations
``q0 = inputs["canonical"].quats [N,4]`` (wxyz, any norm). Deformed state at t:
``x_t = x0 + d.dx``, ``q_t = q0 + d.dq``, ``R_t = R(normalize(q_t))``.

* ``small_motion`` (Eq. 3): ``mean_i |dx_i|_1 + |dq_i|_1``.
* ``norm`` (Eq. 7): ``mean_i |dx_i|_2 + |dq_i|_2 + |ds_i|_2`` (the paper's "L1 norm
  regularisation" -- an L1 sum over Gaussians of per-Gaussian Euclidean norms, which
  favours most Gaussians not moving at all).
* ``diff`` (Eq. 8): ``mean_i |dx_{i,t} - dx_{i,t-1}|_2``.
* ``rigid`` (Eqs. 9-11, Dynamic 3D Gaussians): over the k nearest canonical neighbours j of
  each i, ``w_ij |(x_{j,t-1} - x_{i,t-1}) - R_{i,t-1} R_{i,t}^T (x_{j,t} - x_{i,t})|_2``,
  averaged over ``k N``, with ``w_ij = exp(-lambda_w |x_{j,0} - x_{i,0}|^2)``.
* ``rot`` (Eq. 12): ``w_ij |q_{j,t} q_{j,t-1}^-1 - q_{i,t} q_{i,t-1}^-1|_2`` over the same
  neighbours (normalised quaternions), averaged over ``k N``.

``sample`` (``rigid``, ``rot``): the fraction of Gaussians i each step averages over -- a fresh
random subset every step, an unbiased estimate of the full mean at that fraction of the cost
(1, the default, is every Gaussian, as the paper and Dynamic 3DGS).

``lambda_w``: Dynamic 3DGS uses 2000 for metre-scale captures (a neighbour 2.2 cm away gets
weight 1/e). Scenes here have arbitrary scale, so by default (``lambda_w: null``) it adapts:
``lambda_w = 1 / mean_{i,j} |x_{j,0} - x_{i,0}|^2`` over the kNN pairs, i.e. a typical
neighbour gets weight ~1/e whatever the scene's scale and density. A number sets it
absolutely. The neighbours and ``lambda_w`` are recomputed only when ``gaussians_version``
changes -- from the fitting engine's shared kNN (``inputs["knn"]``, one KD-tree search per
change of the Gaussian set for all losses) when present; the weights use the current
canonical positions (detached) every step.

Gradients flow into ``d`` and, when it requires grad, ``d_prev`` (the fitting engine
passes ``d_prev`` detached: the previous state is a fixed reference, as in Dynamic 3DGS).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch

from fourreal_formats.quaternions import quat_conjugate, quat_multiply, quat_to_matrix  # noqa: F401

from fourreal_core.interfaces import Deformation

from .knn import KNNCache, KNNResult
from .recon import BaseLoss


# ------------------------------------------------------------------------------ helpers
def safe_norm(v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean norm along ``dim`` that is exactly 0 at 0 with a finite (zero) gradient."""
    sq = (v * v).sum(dim)
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))


# --------------------------------------------------------------------------- magnitude
class SmallMotionLoss(BaseLoss):
    """Eq. 3: ``mean_i |dx_i|_1 + |dq_i|_1`` of the per-frame deformation."""

    requires = ("deformation",)

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        self.check_inputs(inputs)
        d: Deformation = inputs["deformation"]
        return d.dx.abs().sum(-1).mean() + d.dq.abs().sum(-1).mean()


class OpacityLoss(BaseLoss):
    """3DGS-MCMC's opacity regulariser: ``mean_i sigmoid(o_i)`` of the canonical Gaussians.

    Every Gaussian pays for being opaque, so one that no view needs fades and is pruned;
    a semi-transparent blob that only one training view explains (the haze in front of a
    capture's plain walls) is the first to go.
    """

    requires = ("canonical",)

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        self.check_inputs(inputs)
        return inputs["canonical"].opacities.mean()


class ScaleLoss(BaseLoss):
    """3DGS-MCMC's scale regulariser: ``mean_i |s_i|_1`` (world units) of the canonical
    Gaussians, so large thin blobs that cover many pixels of one view split or shrink."""

    requires = ("canonical",)

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        self.check_inputs(inputs)
        return inputs["canonical"].scales.abs().sum(-1).mean()


class NormLoss(BaseLoss):
    """Eq. 7: ``mean_i |dx_i| + |dq_i| + |ds_i|`` (Euclidean norms; ``ds`` None counts 0)."""

    requires = ("deformation",)

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        self.check_inputs(inputs)
        d: Deformation = inputs["deformation"]
        total = safe_norm(d.dx) + safe_norm(d.dq)
        if d.ds is not None:
            total = total + safe_norm(d.ds)
        return total.mean()


class DiffLoss(BaseLoss):
    """Eq. 8: ``mean_i |dx_{i,t} - dx_{i,t-1}|`` (temporal smoothness of trajectories)."""

    requires = ("deformation", "deformation_prev")

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        self.check_inputs(inputs)
        d, dp = inputs["deformation"], inputs["deformation_prev"]
        if d.dx.shape != dp.dx.shape:
            raise ValueError(f"deformation {tuple(d.dx.shape)} and deformation_prev {tuple(dp.dx.shape)} differ")
        return safe_norm(d.dx - dp.dx).mean()


# ------------------------------------------------------------------------- neighbourhood
class _NeighbourLoss(BaseLoss):
    """Shared machinery of ``rigid`` and ``rot``: cached kNN and Eq. 9 weights."""

    requires = ("deformation", "deformation_prev", "canonical", "gaussians_version")

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if cfg.k < 1:
            raise ValueError(f"k must be >= 1, got {cfg.k}")
        self.cache = KNNCache(cfg.k)
        self._lambda_for: Optional[KNNResult] = None
        self._lambda = 0.0

    def neighbours(self, inputs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(index [N,k], weights [N,k])`` for the current canonical Gaussians: from the
        engine's shared kNN (``inputs["knn"]``, also sharing this step's weights with the
        other neighbourhood loss) when given, else from this loss's own cache."""
        x0 = inputs["canonical"].means.detach()
        version = int(inputs["gaussians_version"])
        shared = inputs.get("knn")
        nn_ = shared.get(x0, self.cfg.k, version) if shared is not None else self.cache.get(x0, version)
        if self._lambda_for is not nn_:
            if self.cfg.lambda_w is not None:
                self._lambda = float(self.cfg.lambda_w)
            else:
                m = float(nn_.dist2.mean()) if nn_.dist2.numel() else 0.0
                self._lambda = 1.0 / m if m > 0 else 0.0
            self._lambda_for = nn_
        lam = self._lambda

        def weights() -> tuple[torch.Tensor, torch.Tensor]:
            idx = nn_.index
            n, k = idx.shape
            nb = x0.index_select(0, idx.reshape(-1)).view(n, k, -1)
            return idx, torch.exp(-lam * ((nb - x0[:, None, :]) ** 2).sum(-1))

        if shared is None:
            return weights()
        return shared.memo(("weights", inputs.get("step"), version, self.cfg.k, lam, x0.data_ptr()), weights)

    def sampled_rows(self, inputs: Mapping[str, Any], n: int, device) -> Optional[torch.Tensor]:
        """The Gaussians i this step averages over: all (None) when ``cfg.sample`` is 1, else
        a fresh random ``ceil(sample * N)`` of them, drawn from the step number (an unbiased
        estimate of the full mean at ``sample`` times the cost)."""
        frac = float(getattr(self.cfg, "sample", 1.0))
        if frac >= 1.0 or n < 2:
            return None
        m = max(1, math.ceil(frac * n))
        g = torch.Generator().manual_seed(int(inputs.get("step", 0) or 0) * 1_000_003 + self.salt)
        return torch.randperm(n, generator=g)[:m].to(device)

    @property
    def lambda_w(self) -> float:
        """The weight scale in use (after the first call)."""
        return self._lambda

    @staticmethod
    def _states(inputs: Mapping[str, Any]):
        can = inputs["canonical"]
        d, dp = inputs["deformation"], inputs["deformation_prev"]
        n = can.means.shape[0]
        for name, t in (("deformation.dx", d.dx), ("deformation_prev.dx", dp.dx)):
            if t.shape[0] != n:
                raise ValueError(f"{name} has {t.shape[0]} rows but canonical has {n} Gaussians")
        q0 = can.quats.to(d.dq.dtype)
        x0 = can.means.to(d.dx.dtype)
        return x0 + d.dx, q0 + d.dq, x0 + dp.dx, q0 + dp.dq


class RigidLoss(_NeighbourLoss):
    """Eqs. 9-11: local rigidity of neighbourhoods between t-1 and t (see module doc)."""

    salt = 1

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        self.check_inputs(inputs)
        x_t, q_t, x_p, q_p = self._states(inputs)
        idx, w = self.neighbours(inputs)
        if idx.shape[1] == 0:
            return x_t.sum() * 0.0
        rows = self.sampled_rows(inputs, idx.shape[0], idx.device)
        if rows is not None:
            idx, w = idx[rows], w[rows]
        n, k = idx.shape
        flat = idx.reshape(-1)
        xi_t = x_t if rows is None else x_t[rows]
        xi_p = x_p if rows is None else x_p[rows]
        rel_t = x_t.index_select(0, flat).view(n, k, 3) - xi_t[:, None, :]  # [n,k,3]
        rel_p = x_p.index_select(0, flat).view(n, k, 3) - xi_p[:, None, :]
        if rows is not None:
            q_t, q_p = q_t[rows], q_p[rows]
        # R_{t-1} R_t^-1 as one quaternion q_{t-1} q_t^-1: exactly I when q_t == q_{t-1}
        qt = q_t / q_t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        qp = q_p / q_p.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        rot = quat_to_matrix(quat_multiply(qp, quat_conjugate(qt)))
        pred = torch.einsum("nab,nkb->nka", rot, rel_t)
        return (w * safe_norm(rel_p - pred)).mean()


class RotLoss(_NeighbourLoss):
    """Eq. 12: neighbours share their rotation from t-1 to t (see module doc)."""

    salt = 2

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        self.check_inputs(inputs)
        _, q_t, _, q_p = self._states(inputs)
        idx, w = self.neighbours(inputs)
        if idx.shape[1] == 0:
            return q_t.sum() * 0.0
        qt = q_t / q_t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        qp = q_p / q_p.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        rel = quat_multiply(qt, quat_conjugate(qp))  # [N,4]
        rows = self.sampled_rows(inputs, idx.shape[0], idx.device)
        rel_i = rel
        if rows is not None:
            idx, w, rel_i = idx[rows], w[rows], rel[rows]
        n, k = idx.shape
        return (w * safe_norm(rel.index_select(0, idx.reshape(-1)).view(n, k, 4) - rel_i[:, None, :])).mean()
