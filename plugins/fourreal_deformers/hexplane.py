"""A K-Planes / HexPlane deformation field for w_t(x, t) (as 4DGaussians uses), much cheaper
than the Deformable-3DGS MLP per Gaussian.

The point ``(x, y, z, t)``, with the position normalised to ``[-1, 1]`` by the canonical
Gaussians' bounding box (robust: the 1st/99th percentiles, widened by ``bound_margin``) and
the time to ``[-1, 1]``, is looked up bilinearly in six feature planes per scale -- three of
space (xy, xz, yz) and three of space-time (xt, yt, zt) -- with ``torch.nn.functional.grid_sample``.
Per scale the six features are multiplied (K-Planes' Hadamard product); the scales are
concatenated, and a small ReLU MLP gives ``dx`` (3), ``dq`` (4, wxyz, added to the
quaternion) and ``ds`` (3, added to the log-scale) through zero-initialised heads.

Exactly zero at the canonical time t_c: the output is ``f(x, t) - f(x, t_c)`` (the space
planes are looked up once for both). Planes start as in K-Planes: space planes
U(0.1, 0.5), space-time planes near 1 (U(0.9, 1.1): exactly 1 would make ``f(x, t) - f(x, t_c)``
identically zero with no gradient to break the tie).

Why a hand-written module: the grid itself is six ``grid_sample`` calls; libraries that ship
K-Planes (nerfstudio's ``KPlanesEncoding``, tiny-cuda-nn) pull in a framework or need CUDA.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from fourreal_core.interfaces import Deformation, Deformer

from .common import as_time_tensor, has_zero_time, is_integer_time, register_canonical_buffers, set_zero_time
from .configs import HexPlaneDeformerConfig

#: coordinate pairs of the six planes: (horizontal, vertical) axes of (x, y, z, t)
PLANES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


class HexPlaneDeformer(nn.Module, Deformer):
    """See the module docstring and :class:`~fourreal_deformers.configs.HexPlaneDeformerConfig`."""

    frame_mode = False

    def __init__(self, cfg: Optional[HexPlaneDeformerConfig] = None) -> None:
        nn.Module.__init__(self)
        cfg = cfg or HexPlaneDeformerConfig()
        if cfg.features < 1 or cfg.width < 1 or cfg.depth < 0:
            raise ValueError(f"features and width must be >= 1 and depth >= 0, got features={cfg.features}, "
                             f"width={cfg.width}, depth={cfg.depth}")
        if not cfg.multires or min(cfg.multires) < 1 or cfg.resolution < 2 or cfg.time_resolution < 2:
            raise ValueError(f"resolution and time_resolution must be >= 2 and multires >= 1, got "
                             f"resolution={cfg.resolution}, time_resolution={cfg.time_resolution}, "
                             f"multires={cfg.multires}")
        self.cfg = cfg
        register_canonical_buffers(self)
        # the normalising box (set by setup() from the canonical Gaussians)
        self.register_buffer("bound_lo", torch.full((3,), -1.0))
        self.register_buffer("bound_hi", torch.full((3,), 1.0))
        self.lr, self.lr_final = float(cfg.lr), float(cfg.lr_final)
        self.grids = nn.ParameterList()
        for m in cfg.multires:
            r = int(cfg.resolution * m)
            for a, b in PLANES:
                ra = r if a < 3 else cfg.time_resolution
                rb = r if b < 3 else cfg.time_resolution
                plane = torch.empty(1, cfg.features, rb, ra)
                if b == 3:  # about 1: starts nearly time-independent, but not exactly, or
                    # f(x, t) - f(x, t_c) would be 0 with zero gradient to the heads and planes alike
                    nn.init.uniform_(plane, 0.9, 1.1)
                else:
                    nn.init.uniform_(plane, 0.1, 0.5)
                self.grids.append(nn.Parameter(plane))
        in_dim = cfg.features * len(cfg.multires)
        layers = []
        for i in range(cfg.depth):
            layers += [nn.Linear(in_dim if i == 0 else cfg.width, cfg.width), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        head_in = cfg.width if cfg.depth else in_dim
        self.head_dx = nn.Linear(head_in, 3)
        self.head_dq = nn.Linear(head_in, 4)
        self.head_ds = nn.Linear(head_in, 3) if cfg.predict_scale else None
        for head in (self.head_dx, self.head_dq, self.head_ds):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    # ------------------------------------------------------------------------- setup
    def setup(self, *, num_frames: Optional[int] = None, canonical: "int | float | None" = None,
              canonical_means: Optional[torch.Tensor] = None) -> None:
        """Remember t_c (the output is exactly zero there) and fit the normalising box to the
        canonical Gaussians (1st-99th percentile per axis, widened by ``bound_margin``)."""
        set_zero_time(self, canonical)
        if canonical_means is not None and canonical_means.numel() >= 3:
            x = canonical_means.detach().to(self.bound_lo.device, torch.float32).reshape(-1, 3)
            if x.shape[0] > 200_000:
                x = x[torch.randperm(x.shape[0], device=x.device)[:200_000]]
            lo = torch.quantile(x, 0.01, dim=0)
            hi = torch.quantile(x, 0.99, dim=0)
            pad = (hi - lo).clamp(min=1e-6) * self.cfg.bound_margin
            self.bound_lo.copy_(lo - pad)
            self.bound_hi.copy_(hi + pad)

    # ------------------------------------------------------------------------- network
    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        lo = self.bound_lo.to(x.dtype)
        hi = self.bound_hi.to(x.dtype)
        return ((x - lo) / (hi - lo) * 2 - 1).clamp(-1, 1)

    @staticmethod
    def _sample(plane: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Bilinear features ``[n, F]`` of ``plane [1,F,Rv,Ru]`` at ``(u, v)`` in [-1,1]."""
        grid = torch.stack([u, v], -1).reshape(1, 1, -1, 2).to(plane.dtype)
        out = F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.reshape(plane.shape[1], -1).t()

    def _space(self, xn: torch.Tensor) -> list[torch.Tensor]:
        """Per scale, the product of the three space planes' features ``[n, F]``."""
        out = []
        for s in range(len(self.cfg.multires)):
            f = None
            for p, (a, b) in enumerate(PLANES[:3]):
                v = self._sample(self.grids[6 * s + p], xn[:, a], xn[:, b])
                f = v if f is None else f * v
            out.append(f)
        return out

    def _head(self, space: list[torch.Tensor], xn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
        """``[n, 7|10]`` at normalised times ``tn`` (``[n]`` or ``[1]``)."""
        n = xn.shape[0]
        tn = tn.expand(n)
        feats = []
        for s in range(len(self.cfg.multires)):
            f = space[s]
            for p, (a, _) in enumerate(PLANES[3:]):
                f = f * self._sample(self.grids[6 * s + 3 + p], xn[:, a], tn)
            feats.append(f)
        h = self.trunk(torch.cat(feats, -1))
        outs = [self.head_dx(h), self.head_dq(h)]
        if self.head_ds is not None:
            outs.append(self.head_ds(h))
        return torch.cat(outs, -1)

    def _split(self, out: torch.Tensor) -> Deformation:
        return Deformation(dx=out[..., 0:3], dq=out[..., 3:7], ds=out[..., 7:10] if self.head_ds is not None else None)

    def _zeros(self, n: int, ref: torch.Tensor) -> Deformation:
        z = lambda d: torch.zeros(n, d, dtype=ref.dtype, device=ref.device)  # noqa: E731
        return Deformation(dx=z(3), dq=z(4), ds=z(3) if self.head_ds is not None else None)

    def _field(self, x: torch.Tensor, t: torch.Tensor, space=None) -> tuple[torch.Tensor, list]:
        """``f(x, t) - f(x, t_c)`` (or ``f(x, t)`` before setup) for ``t`` ``[1,1]`` or ``[n,1]``."""
        xn = self._normalise(x)
        space = self._space(xn) if space is None else space
        tn = t.reshape(-1) * 2 - 1
        out = self._head(space, xn, tn)
        if has_zero_time(self):
            t_c = self.zero_time.to(x.dtype).reshape(1)
            out = out - self._head(space, xn, t_c * 2 - 1)
            out = torch.where((t.reshape(-1, 1) != t_c), out, torch.zeros((), dtype=out.dtype, device=out.device))
        return out, space

    # ---------------------------------------------------------------------- interface
    def deform(self, means: torch.Tensor, time: "torch.Tensor | float | int",
               quats: Optional[torch.Tensor] = None) -> Deformation:
        """Offsets ``dx [N,3]``, ``dq [N,4]``, ``ds [N,3]`` (None without ``predict_scale``) of
        canonical positions ``means [N,3]`` at time ``t`` in [0,1] (or per-Gaussian ``[N]``)."""
        if means.ndim != 2 or means.shape[-1] != 3:
            raise ValueError(f"means must be [N,3], got {tuple(means.shape)}")
        ref = self.head_dx.weight
        x = means.to(ref.dtype)
        n = x.shape[0]
        if is_integer_time(time) and isinstance(time, torch.Tensor):
            time = time.to(ref.dtype)
        t = as_time_tensor(time, n, x.device, ref.dtype)
        if has_zero_time(self) and t.numel() == 1 and bool(t.reshape(()) == self.zero_time.to(ref.dtype)):
            return self._zeros(n, ref)
        return self._split(self._field(x, t)[0])

    def deform_pair(self, means: torch.Tensor, t: float, t_prev: float,
                    quats: Optional[torch.Tensor] = None) -> tuple[Deformation, Deformation]:
        """``(w(x, t), w(x, t_prev))`` sharing the space-plane lookups; the second without autograd
        (the motion stage's temporal regularisers take the previous state as a fixed reference)."""
        ref = self.head_dx.weight
        x = means.to(ref.dtype)
        n = x.shape[0]
        space = self._space(self._normalise(x))
        t_c = float(self.zero_time) if has_zero_time(self) else None

        def one(tt: float) -> Deformation:
            if t_c is not None and float(torch.tensor(tt, dtype=ref.dtype)) == float(torch.tensor(t_c, dtype=ref.dtype)):
                return self._zeros(n, ref)
            return self._split(self._field(x, torch.full((1, 1), float(tt), dtype=ref.dtype, device=x.device),
                                           space)[0])

        d = one(t)
        with torch.no_grad():
            dp = one(t_prev)
        return d, dp

    def plane_smoothness(self) -> torch.Tensor:
        """K-Planes' total variation of the planes (mean squared difference of neighbours),
        for a regulariser that wants a smooth field."""
        tv = 0.0
        for g in self.grids:
            tv = tv + (g[..., 1:, :] - g[..., :-1, :]).pow(2).mean() + (g[..., :, 1:] - g[..., :, :-1]).pow(2).mean()
        return tv

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"resolution={c.resolution}, time_resolution={c.time_resolution}, multires={c.multires}, "
                f"features={c.features}, width={c.width}, depth={c.depth}, predict_scale={c.predict_scale}")
