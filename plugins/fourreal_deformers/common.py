"""Pieces both deformers use: positional encoding, time parsing, quaternion maths."""

from __future__ import annotations

import math
from typing import Optional

import torch

from fourreal_formats.quaternions import quat_multiply, quat_to_matrix  # noqa: F401 (re-exported)
from torch import nn

IDENTITY_QUAT = (1.0, 0.0, 0.0, 0.0)


# ----------------------------------------------------------------------- positional encoding
class PositionalEncoding(nn.Module):
    """NeRF / Deformable-3DGS encoding ``gamma(p) = [p, sin(2^0 p), cos(2^0 p), ...,
    sin(2^(L-1) p), cos(2^(L-1) p)]`` applied per coordinate (frequencies not multiplied
    by pi, as in Deformable-3DGS).

    Args:
        in_dim: number of input coordinates D.
        multires: number of frequencies L (0: identity).

    ``forward(p [...,D]) -> [..., D * (1 + 2L)]``.
    """

    def __init__(self, in_dim: int, multires: int) -> None:
        super().__init__()
        if multires < 0:
            raise ValueError(f"multires must be >= 0, got {multires}")
        self.in_dim = in_dim
        self.multires = multires
        self.register_buffer("freqs", 2.0 ** torch.arange(multires, dtype=torch.float32), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.in_dim * (1 + 2 * self.multires)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        if self.multires == 0:
            return p
        x = p[..., None, :] * self.freqs.to(p.dtype)[:, None]  # [...,L,D]
        sc = torch.stack([torch.sin(x), torch.cos(x)], dim=-2)  # [...,L,2,D]
        return torch.cat([p, sc.flatten(-3)], dim=-1)


# --------------------------------------------------------------------------------- time
def is_integer_time(time) -> bool:
    """True for a Python int or an integer-dtype tensor (a frame index k)."""
    if isinstance(time, bool):
        raise TypeError("time must be a number or a tensor, not a bool")
    if isinstance(time, int):
        return True
    if isinstance(time, torch.Tensor):
        return not (time.is_floating_point() or time.is_complex())
    return False


def as_time_tensor(time, n: int, device, dtype=torch.float32) -> torch.Tensor:
    """A float time (scalar or per-Gaussian) -> ``[1,1]`` or ``[N,1]`` tensor.

    Accepts a Python number, a 0-d or one-element tensor, or a tensor ``[N]`` / ``[N,1]``.
    """
    t = torch.as_tensor(time, dtype=dtype, device=device)
    if t.numel() == 1:
        return t.reshape(1, 1)
    if t.ndim == 1 and t.shape[0] == n:
        return t[:, None]
    if t.ndim == 2 and t.shape == (n, 1):
        return t
    raise ValueError(f"time must be a scalar, [N] or [N,1] with N={n}; got shape {tuple(t.shape)}")


def as_frame_index(time, num_frames: int, n: int, device) -> torch.Tensor:
    """An int frame index (scalar or per-Gaussian) -> long tensor ``[1]`` or ``[N]``."""
    if not is_integer_time(time):
        raise TypeError(
            f"this deformer takes an int frame index k (per-frame deformation); got {time!r}"
        )
    k = torch.as_tensor(time, device=device).long().reshape(-1)
    if k.numel() not in (1, n):
        raise ValueError(f"frame index must be a scalar or [N] with N={n}; got {k.numel()} values")
    if num_frames <= 0:
        raise RuntimeError("call setup(num_frames=K) before deform() with frame indices")
    if bool(((k < 0) | (k >= num_frames)).any()):
        bad = k[(k < 0) | (k >= num_frames)][0].item()
        raise IndexError(f"frame index {bad} out of range for {num_frames} frames")
    return k


# ----------------------------------------------------------------------------- quaternions
def residual_quat(delta: torch.Tensor) -> torch.Tensor:
    """``[...,4]`` residual -> unit quaternion ``normalize((1,0,0,0) + delta)``.

    Exactly ``(1,0,0,0)`` when ``delta`` is zero; smooth everywhere near the identity.
    """
    ident = torch.tensor(IDENTITY_QUAT, dtype=delta.dtype, device=delta.device)
    q = ident + delta
    return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def compose_dq(q_delta_blend: torch.Tensor, quats: Optional[torch.Tensor]) -> torch.Tensor:
    """Additive quaternion offset that turns ``quats`` by a rotation.

    Args:
        q_delta_blend: ``[...,N,4]`` unit quaternion of the rotation to apply.
        quats: ``[N,4]`` canonical rotations (any norm), or None for identity rotations.

    Returns ``r * q - q`` (so ``q + dq = r * q``), or ``r - (1,0,0,0)`` when ``quats`` is None.
    """
    if quats is None:
        ident = torch.tensor(IDENTITY_QUAT, dtype=q_delta_blend.dtype, device=q_delta_blend.device)
        return q_delta_blend - ident
    return quat_multiply(q_delta_blend, quats) - quats


def resize_parameter(module: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    """Replace parameter ``name`` by a zero one of ``shape`` (same device/dtype) if its
    shape differs -- lets ``load_state_dict`` restore tables whose size comes from data."""
    p = getattr(module, name)
    if tuple(p.shape) != tuple(shape):
        setattr(module, name, nn.Parameter(torch.zeros(shape, dtype=p.dtype, device=p.device)))


def chunk_ranges(n: int, chunk: int):
    """``(start, end)`` row ranges of at most ``chunk`` (all at once when ``chunk <= 0``)."""
    if chunk <= 0 or n <= chunk:
        yield 0, n
        return
    for s in range(0, n, chunk):
        yield s, min(n, s + chunk)


def median_spacing(centres: torch.Tensor) -> float:
    """Median distance from each point ``[B,3]`` to its nearest other point (1.0 if B < 2)."""
    if centres.shape[0] < 2:
        return 1.0
    d = torch.cdist(centres, centres)
    d.fill_diagonal_(math.inf)
    v = float(d.min(dim=1).values.median())
    return v if v > 0 else 1.0


def setup_frame_table(module, name: str, num_frames, canonical, make, what: str) -> None:
    """Shared ``setup`` of a per-frame parameter table (``mlp`` codes, ``lbs`` per-frame bone
    motion): (re)create ``module.<name>`` with ``make(K)`` when K changes, and record the
    canonical frame index (``module.zero_frame``: the deformation is exactly zero there)."""
    if num_frames is None and module.num_frames == 0:
        raise ValueError(f"{what} needs setup(num_frames=K)")
    if num_frames is not None and int(num_frames) != module.num_frames:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        setattr(module, name, make(int(num_frames)))
    if canonical is not None:
        if not is_integer_time(canonical):
            raise TypeError(f"{what}: the canonical input must be an int frame index, got {canonical!r}")
        c = int(canonical)
        if not 0 <= c < module.num_frames:
            raise IndexError(f"canonical frame {c} out of range for {module.num_frames} frames")
        module.zero_frame.fill_(c)


def register_canonical_buffers(module) -> None:
    """The buffers that remember a deformer's canonical input: ``zero_frame`` (long, -1:
    none) and ``zero_time`` (float, -1: none; checkpoints must stay finite)."""
    module.register_buffer("zero_frame", torch.tensor(-1, dtype=torch.long))
    module.register_buffer("zero_time", torch.tensor(-1.0))


def set_zero_time(module, canonical) -> None:
    """Record a temporal deformer's canonical time t_c (``None`` leaves it unset)."""
    if canonical is None:
        return
    t = float(canonical)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"the canonical time must be in [0,1], got {t}")
    module.zero_time.fill_(t)


def has_zero_time(module) -> bool:
    return bool(module.zero_time >= 0)


def upgrade_canonical_state(state_dict, prefix: str, module) -> None:
    """Load state saved before the rename ``canonical_index`` -> ``zero_frame`` (and before
    ``zero_time`` existed: such deformers were not made zero at t_c, so it stays unset)."""
    old = prefix + "canonical_index"
    if old in state_dict and prefix + "zero_frame" not in state_dict:
        state_dict[prefix + "zero_frame"] = state_dict.pop(old)
    if prefix + "zero_time" not in state_dict:
        state_dict[prefix + "zero_time"] = torch.tensor(-1.0)
