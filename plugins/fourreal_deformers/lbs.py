"""Linear blend skinning (LBS) deformer for articulated motion (4Real paper Sec. 3.1 notes
that the MLP "can be substituted by more specialized representations, such as linear blend
skinning").

Model (B bones, canonical position x, time t):

* bones: rest centres ``c_b`` ``[B,3]`` from k-means on the canonical Gaussians; per time a
  rigid transform ``(R_b(t), t_b(t))`` about ``c_b`` -- ``R_b = R(normalize((1,0,0,0) + d_b))``
  from a 4-number quaternion residual ``d_b`` and a translation ``t_b``, both predicted by a
  small MLP of ``gamma(t)`` (``motion: mlp``) or read from a per-frame table
  (``motion: per_frame``). Zero-initialised, so every bone starts at the identity.
* skinning weights: ``w_b(x) = softmax_b(-|x - s_b|^2 / sigma_b^2 + r_b(x))`` with learnable
  centres ``s_b`` (start at ``c_b``), learnable widths ``sigma_b`` and a zero-initialised
  residual MLP ``r`` on the encoded (normalised) position. Being a field of x rather than a
  table per Gaussian, it stays valid when densification adds or removes Gaussians.
* position: ``x_t = sum_b w_b (R_b (x - c_b) + c_b + t_b)``, computed as
  ``dx = (sum_b w_b (R_b - I)) x + sum_b w_b (t_b - (R_b - I) c_b)`` -- exactly zero when every
  bone is at the identity (no reliance on the weights summing to one).
* rotation: the blended bone rotation ``r = normalize((1,0,0,0) + sum_b w_b (q_b - (1,0,0,0)))``
  (bone quaternions on the w >= 0 hemisphere) is composed with the Gaussian's own rotation:
  ``dq = r * q - q`` so that ``q + dq = r * q``. This needs the canonical quaternions, passed
  as ``deform(means, time, quats=q)``; without ``quats``, ``dq = r - (1,0,0,0)`` (exact for
  Gaussians whose canonical rotation is the identity). Stages should always pass ``quats``
  (the MLP deformer accepts and ignores it).
* scale: not modelled (``ds`` is None).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from fourreal_core.interfaces import Deformation, Deformer

from .common import (
    IDENTITY_QUAT,
    PositionalEncoding,
    chunk_ranges,
    compose_dq,
    has_zero_time,
    is_integer_time,
    median_spacing,
    quat_to_matrix,
    register_canonical_buffers,
    resize_parameter,
    residual_quat,
    set_zero_time,
    setup_frame_table,
    upgrade_canonical_state,
)
from .configs import LBSDeformerConfig


# ---------------------------------------------------------------------------------- k-means
def kmeans(
    points: torch.Tensor,
    k: int,
    iters: int = 30,
    max_points: int = 100_000,
    seed: int = 0,
) -> torch.Tensor:
    """Deterministic k-means (k-means++ seeding, Lloyd iterations) of ``points [N,3]``.

    Runs on a random subset of at most ``max_points`` points on the points' device. Empty
    clusters are re-seeded at the point farthest from its centre. With fewer than ``k``
    distinct points some centres coincide.

    Returns:
        ``[k,3]`` centres (float32, on ``points.device``).
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"k-means needs a non-empty [N,D] tensor, got {tuple(points.shape)}")
    g = torch.Generator().manual_seed(int(seed))
    pts = points.detach().float()
    n = pts.shape[0]
    if n > max_points:
        idx = torch.randperm(n, generator=g)[:max_points].to(pts.device)
        pts = pts[idx]
        n = max_points
    # k-means++ seeding
    first = int(torch.randint(n, (1,), generator=g))
    centres = [pts[first]]
    d2 = ((pts - pts[first]) ** 2).sum(-1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # all remaining points coincide with a centre
            nxt = int(torch.randint(n, (1,), generator=g))
        else:
            nxt = int(torch.multinomial((d2 / total).cpu(), 1, generator=g))
        centres.append(pts[nxt])
        d2 = torch.minimum(d2, ((pts - pts[nxt]) ** 2).sum(-1))
    C = torch.stack(centres)
    for _ in range(iters):
        dist = torch.cdist(pts, C)  # [n,k]
        assign = dist.argmin(dim=1)
        counts = torch.bincount(assign, minlength=k).to(pts.dtype)
        sums = torch.zeros_like(C).index_add_(0, assign, pts)
        newC = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], C)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel() and n >= k:
            far = dist.gather(1, assign[:, None])[:, 0].clone()
            for e in empty.tolist():
                j = int(far.argmax())
                newC[e] = pts[j]
                far[j] = -1.0
        if torch.allclose(newC, C):
            C = newC
            break
        C = newC
    return C


def _mlp(in_dim: int, width: int, depth: int, out_dim: int) -> nn.Sequential:
    """``depth`` Linear+ReLU layers of ``width`` then a zero-initialised linear output."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    out = nn.Linear(d, out_dim)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    layers.append(out)
    return nn.Sequential(*layers)


class LBSDeformer(nn.Module, Deformer):
    """Linear-blend-skinning deformer; see the module docstring and
    :class:`~fourreal_deformers.configs.LBSDeformerConfig`.

    Call ``setup(canonical_means=x0 [N,3])`` (and ``num_frames=K`` for ``motion: per_frame``)
    before the optimiser is built; ``setup`` with ``canonical_means`` (re)places the bones by
    k-means and resets the skinning. ``canonical``: an int frame index k_c (per-frame table:
    its row is the identity) or a float time t_c (the bone parameters at t_c are subtracted,
    so the deformation is exactly zero at t_c).

    ``deform(means [N,3], time, quats=None)`` -> ``Deformation(dx [N,3], dq [N,4], ds=None)``.
    ``time``: float t in [0,1] (``motion: mlp``); int frame index k or float t
    (``motion: per_frame``, t interpolates between frames ``t (K-1)``).
    """

    def __init__(self, cfg: Optional[LBSDeformerConfig] = None) -> None:
        nn.Module.__init__(self)
        cfg = cfg or LBSDeformerConfig()
        if cfg.num_bones < 1:
            raise ValueError(f"num_bones must be >= 1, got {cfg.num_bones}")
        self.cfg = cfg
        B = cfg.num_bones
        self.register_buffer("pivots", torch.zeros(B, 3))  # rest bone centres c_b
        self.register_buffer("x_center", torch.zeros(3))  # skinning-MLP input normalisation
        self.register_buffer("x_scale", torch.ones(()))
        self.register_buffer("initialized", torch.tensor(False))
        register_canonical_buffers(self)
        self.lr, self.lr_final = float(cfg.lr), float(cfg.lr_final)
        self.skin_centres = nn.Parameter(torch.zeros(B, 3))
        self.skin_log_sigma = nn.Parameter(torch.zeros(B))
        if cfg.skin_mlp_width > 0 and B > 1:
            self.skin_enc = PositionalEncoding(3, cfg.skin_multires)
            self.skin_mlp = _mlp(self.skin_enc.out_dim, cfg.skin_mlp_width, cfg.skin_mlp_depth, B)
        else:
            self.skin_enc = None
            self.skin_mlp = None
        if cfg.motion == "mlp":
            self.t_enc = PositionalEncoding(1, cfg.t_multires)
            self.motion_mlp = _mlp(self.t_enc.out_dim, cfg.motion_width, cfg.motion_depth, B * 7)
        else:
            self.t_enc = None
            self.motion_mlp = None
            self.frame_params = nn.Parameter(torch.zeros(0, B, 7))  # [K,B,7]; K from setup

    # ---------------------------------------------------------------------------- setup
    @property
    def num_bones(self) -> int:
        return self.cfg.num_bones

    @property
    def num_frames(self) -> int:
        return int(self.frame_params.shape[0]) if self.motion_mlp is None else 0

    def setup(
        self,
        *,
        num_frames: Optional[int] = None,
        canonical: "int | float | None" = None,
        canonical_means: Optional[torch.Tensor] = None,
    ) -> None:
        """Place the bones (k-means on ``canonical_means [N,3]``), size the per-frame table
        (``num_frames``) and remember the canonical input (``canonical``: an int frame index
        -- per-frame motion -- or a float time t_c): the deformation is exactly zero there."""
        dev = self.pivots.device
        if canonical_means is not None:
            x = canonical_means.detach().to(dev, torch.float32)
            with torch.no_grad():
                C = kmeans(x, self.cfg.num_bones, self.cfg.kmeans_iters, self.cfg.kmeans_max_points, self.cfg.seed)
                self.pivots.copy_(C)
                self.skin_centres.copy_(C)
                sigma = self.cfg.skin_sigma * median_spacing(C)
                self.skin_log_sigma.fill_(math.log(max(sigma, 1e-8)))
                lo, hi = x.min(0).values, x.max(0).values
                self.x_center.copy_((lo + hi) / 2)
                self.x_scale.fill_(max(float((hi - lo).max()) / 2, 1e-8))
                if self.skin_mlp is not None:
                    nn.init.zeros_(self.skin_mlp[-1].weight)
                    nn.init.zeros_(self.skin_mlp[-1].bias)
                self.initialized.fill_(True)
        elif not bool(self.initialized):
            raise ValueError("the lbs deformer needs setup(canonical_means=...) to place its bones")
        frame_index = canonical if canonical is not None and is_integer_time(canonical) else None
        if canonical is not None and frame_index is None:
            set_zero_time(self, canonical)
        if self.motion_mlp is None:
            setup_frame_table(
                self, "frame_params", num_frames, frame_index,
                lambda k: nn.Parameter(torch.zeros(k, self.cfg.num_bones, 7, device=dev)),
                "lbs with motion: per_frame",
            )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        upgrade_canonical_state(state_dict, prefix, self)
        key = prefix + "frame_params"
        if self.motion_mlp is None and key in state_dict:
            resize_parameter(self, "frame_params", tuple(state_dict[key].shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---------------------------------------------------------------------------- parts
    def skinning_weights(self, means: torch.Tensor) -> torch.Tensor:
        """``[N,B]`` skinning weights (rows sum to 1) at canonical positions ``[N,3]``."""
        sigma2 = torch.exp(2 * self.skin_log_sigma)
        d2 = ((means[:, None, :] - self.skin_centres[None]) ** 2).sum(-1)  # [N,B]
        logits = -d2 / sigma2
        if self.skin_mlp is not None:
            logits = logits + self.skin_mlp(self.skin_enc((means - self.x_center) / self.x_scale))
        return torch.softmax(logits, dim=-1)

    def bone_params(self, times: torch.Tensor, frames: bool) -> torch.Tensor:
        """Raw per-bone parameters ``[T,B,7]`` (quaternion residual, translation) at
        ``times [T]`` (floats in [0,1], or frame indices when ``frames`` and the motion is
        per-frame); with a canonical time t_c, minus their value at t_c (exactly zero there)."""
        p = self._bone_params(times, frames)
        if frames or not has_zero_time(self):
            return p
        t_c = self.zero_time.to(p.dtype).reshape(1)
        p = p - self._bone_params(t_c, False)
        same = (times.to(p.dtype).reshape(-1) == t_c)[:, None, None]
        return torch.where(same, torch.zeros((), dtype=p.dtype, device=p.device), p)

    def _bone_params(self, times: torch.Tensor, frames: bool) -> torch.Tensor:
        B = self.cfg.num_bones
        if self.motion_mlp is not None:  # an int time is just t (0 or 1)
            return self.motion_mlp(self.t_enc(times.to(self.pivots.dtype)[:, None])).reshape(-1, B, 7)
        K = self.num_frames
        if K == 0:
            raise RuntimeError("call setup(num_frames=K) before deform() with motion: per_frame")
        table = self.frame_params
        c = int(self.zero_frame)
        if c >= 0:  # the canonical frame is the identity, whatever its table row holds
            keep = torch.ones(K, 1, 1, dtype=table.dtype, device=table.device)
            keep[c] = 0
            table = table * keep
        if frames:
            k = times.long()
            if bool(((k < 0) | (k >= K)).any()):
                raise IndexError(f"frame index out of range for {K} frames: {k.tolist()}")
            return table[k]
        f = times.to(table.dtype).clamp(0, 1) * (K - 1)
        k0 = f.floor().long().clamp(0, K - 1)
        k1 = (k0 + 1).clamp(max=K - 1)
        a = (f - k0.to(f.dtype))[:, None, None]
        return (1 - a) * table[k0] + a * table[k1]

    def bone_transforms(self, times: torch.Tensor, frames: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(quats [T,B,4] unit wxyz, translations [T,B,3])`` of the bones at ``times``:
        bone b maps a rest point x to ``R_b (x - c_b) + c_b + t_b``."""
        p = self.bone_params(times, frames)
        return residual_quat(p[..., :4]), p[..., 4:]

    def _blend(self, x: torch.Tensor, w: torch.Tensor, q_b: torch.Tensor, t_b: torch.Tensor):
        """Positions ``x [n,3]``, weights ``w [n,B]``, bone quats ``[T,B,4]`` and translations
        ``[T,B,3]`` -> ``dx [T,n,3]``, blended rotation ``[T,n,4]``."""
        T, B = q_b.shape[:2]
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        A = quat_to_matrix(q_b) - eye  # [T,B,3,3]: exactly 0 at the identity
        u = t_b - (A @ self.pivots[None, :, :, None])[..., 0]  # [T,B,3]
        M = (w @ A.reshape(T, B, 9)).reshape(T, -1, 3, 3)  # [T,n,3,3]
        dx = (M @ x[None, :, :, None])[..., 0] + w @ u  # [T,n,3]
        ident = torch.tensor(IDENTITY_QUAT, dtype=x.dtype, device=x.device)
        q_h = torch.where(q_b[..., :1] < 0, -q_b, q_b)  # one hemisphere before blending
        r = ident + w @ (q_h - ident)  # [T,n,4]
        r = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return dx, r

    def _deform_times(
        self, means: torch.Tensor, times: torch.Tensor, frames: bool, quats: Optional[torch.Tensor]
    ) -> Deformation:
        if not bool(self.initialized):
            raise RuntimeError("call setup(canonical_means=...) before deform() on the lbs deformer")
        if means.ndim != 2 or means.shape[-1] != 3:
            raise ValueError(f"means must be [N,3], got {tuple(means.shape)}")
        x = means.to(self.pivots.dtype)
        if quats is not None and quats.shape != (x.shape[0], 4):
            raise ValueError(f"quats must be [N,4] like means, got {tuple(quats.shape)}")
        q_b, t_b = self.bone_transforms(times, frames)
        dxs, rs = [], []
        for s, e in chunk_ranges(x.shape[0], self.cfg.chunk):
            dx, r = self._blend(x[s:e], self.skinning_weights(x[s:e]), q_b, t_b)
            dxs.append(dx)
            rs.append(r)
        dx = torch.cat(dxs, dim=1)
        r = torch.cat(rs, dim=1)
        dq = compose_dq(r, None if quats is None else quats.to(r.dtype))
        return Deformation(dx=dx, dq=dq, ds=None)

    # ------------------------------------------------------------------------ interface
    def deform(
        self,
        means: torch.Tensor,
        time: "torch.Tensor | float | int",
        quats: Optional[torch.Tensor] = None,
    ) -> Deformation:
        """``dx [N,3]``, ``dq [N,4]`` (``q + dq = r q`` for ``quats [N,4]``; identity canonical
        rotations when None), ``ds=None`` at one ``time`` (see the class docstring)."""
        frames = is_integer_time(time)
        t = torch.as_tensor(time, device=self.pivots.device)
        if t.numel() != 1:
            raise ValueError("the lbs deformer takes one time per call")
        t = t.reshape(1)
        if self.motion_mlp is None and frames and int(t) == int(self.zero_frame):
            n = means.shape[0]
            z = lambda d: torch.zeros(n, d, dtype=self.pivots.dtype, device=self.pivots.device)  # noqa: E731
            return Deformation(dx=z(3), dq=z(4), ds=None)
        d = self._deform_times(means, t, frames, quats)
        return Deformation(dx=d.dx[0], dq=d.dq[0], ds=None)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"num_bones={c.num_bones}, motion={c.motion}, skin_mlp_width={c.skin_mlp_width}"
