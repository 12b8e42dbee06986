"""The Deformable-3DGS deformation MLP (4Real paper D.3), for w_t(x, t) and w_mv(x, k).

Architecture (Yang et al. 2023, "Deformable 3D Gaussians"): the encoded position
``gamma(x)`` (``3 (1 + 2 L_x)`` numbers) and the encoded time ``gamma(t)`` (``1 + 2 L_t``) --
or, for per-frame deformation, a learned per-frame code -- go through ``depth`` linear+ReLU
layers of ``width`` units; the encoded input is concatenated again (``[gamma(x), gamma(t), h]``)
after layer ``depth // 2``; three linear heads give ``dx`` (3), ``dq`` (4, wxyz, added to the
quaternion) and ``ds`` (3, added to the log-scale). The heads start at zero, so training
starts from the canonical scene.

Efficiency: the first layer and the skip layer are applied to ``gamma(x)`` and to the time
input separately and summed, so :meth:`MLPDeformer.deform_pair` encodes and projects the
positions once for both times. With ``chunk > 0`` at most ``chunk`` Gaussians are evaluated
at once; when autograd is recording, each chunk is wrapped in activation checkpointing, so
training memory is that of one chunk (plus the outputs), at the cost of a second forward
pass in backward.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from fourreal_core.interfaces import Deformation, Deformer

from .common import (
    PositionalEncoding,
    as_frame_index,
    as_time_tensor,
    chunk_ranges,
    has_zero_time,
    is_integer_time,
    register_canonical_buffers,
    resize_parameter,
    set_zero_time,
    setup_frame_table,
    upgrade_canonical_state,
)
from .configs import MLPDeformerConfig


def _linear_split(layer: nn.Linear, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``layer(cat(parts, -1))`` computed as a sum of per-part products (broadcasting over
    leading dims), so a part shared by many rows is multiplied once."""
    out = layer.bias
    off = 0
    for p in parts:
        d = p.shape[-1]
        out = out + F.linear(p, layer.weight[:, off : off + d])
        off += d
    if off != layer.in_features:
        raise RuntimeError(f"internal: split widths {off} != {layer.in_features}")
    return out


class MLPDeformer(nn.Module, Deformer):
    """Deformation MLP; see :class:`~fourreal_deformers.configs.MLPDeformerConfig`.

    ``deform(means [N,3], time, quats=None) -> Deformation(dx [N,3], dq [N,4], ds [N,3]|None)``:

    * ``time_input="time"``: ``time`` is a float t in [0,1], a 0-d tensor, or per-Gaussian
      times ``[N]`` / ``[N,1]``. After ``setup(canonical=t_c)`` the output is
      ``f(x, t) - f(x, t_c)``: exactly zero at t_c (paper §3.3: the canonical frame is
      undeformed), at the cost of a second network row per call (batched with the first).
    * ``time_input="frame_code"``: ``time`` is an int frame index k (or an integer tensor
      ``[N]``); call ``setup(num_frames=K, canonical=k_c)`` first. At k == k_c the
      output is exactly zero (by construction, whatever the weights).

    ``quats`` is accepted for interface parity with the LBS deformer and ignored (the MLP
    predicts an additive ``dq`` that does not depend on the canonical rotation).
    """

    def __init__(self, cfg: Optional[MLPDeformerConfig] = None) -> None:
        nn.Module.__init__(self)
        cfg = cfg or MLPDeformerConfig()
        if cfg.depth < 1 or cfg.width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={cfg.depth}, width={cfg.width}")
        if cfg.time_input == "frame_code" and cfg.code_dim < 1:
            raise ValueError(f"code_dim must be >= 1, got {cfg.code_dim}")
        self.cfg = cfg
        self.frame_mode = cfg.time_input == "frame_code"
        self.x_enc = PositionalEncoding(3, cfg.x_multires)
        if self.frame_mode:
            self.t_enc = None
            t_dim = cfg.code_dim
            # [K, code_dim]; K comes from setup(num_frames=K)
            self.codes = nn.Parameter(torch.zeros(0, cfg.code_dim))
        else:
            self.t_enc = PositionalEncoding(1, cfg.t_multires)
            t_dim = self.t_enc.out_dim
        register_canonical_buffers(self)
        self.lr, self.lr_final = float(cfg.lr), float(cfg.lr_final)
        self.x_dim, self.t_dim = self.x_enc.out_dim, t_dim
        in_dim = self.x_dim + self.t_dim
        self.skip = cfg.depth // 2
        W = cfg.width
        layers = [nn.Linear(in_dim, W)]
        for i in range(1, cfg.depth):
            layers.append(nn.Linear(W + in_dim if i == self.skip + 1 else W, W))
        self.layers = nn.ModuleList(layers)
        self.head_dx = nn.Linear(W, 3)
        self.head_dq = nn.Linear(W, 4)
        self.head_ds = nn.Linear(W, 3) if cfg.predict_scale else None
        for head in (self.head_dx, self.head_dq, self.head_ds):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    # ------------------------------------------------------------------------- setup
    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[0]) if self.frame_mode else 0

    def setup(
        self,
        *,
        num_frames: Optional[int] = None,
        canonical: "int | float | None" = None,
        canonical_means: Optional[torch.Tensor] = None,
    ) -> None:
        """Frame-code mode: make ``num_frames`` codes ``N(0, code_init_std^2)`` (kept if the
        table already has that size) and remember the canonical frame index ``canonical``.
        Temporal mode: remember the canonical time ``canonical`` = t_c (the output becomes
        exactly zero there). Call before building the optimiser."""
        if not self.frame_mode:
            set_zero_time(self, canonical)
            return
        dev = self.head_dx.weight.device
        setup_frame_table(
            self, "codes", num_frames, canonical,
            lambda k: nn.Parameter(torch.randn(k, self.cfg.code_dim, device=dev) * self.cfg.code_init_std),
            "per-frame deformation (time_input: frame_code)",
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        upgrade_canonical_state(state_dict, prefix, self)
        key = prefix + "codes"
        if self.frame_mode and key in state_dict:
            resize_parameter(self, "codes", tuple(state_dict[key].shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------------- network
    def _run(self, xe: torch.Tensor, te: torch.Tensor) -> torch.Tensor:
        """Encoded positions ``[...,n,Dx]`` and time inputs (broadcastable) -> ``[...,n,7|10]``."""
        h = F.relu(_linear_split(self.layers[0], [xe, te]))
        for i in range(1, len(self.layers)):
            if i == self.skip + 1:  # NeRF-style skip: [gamma(x), gamma(t), h]
                h = F.relu(_linear_split(self.layers[i], [xe, te, h]))
            else:
                h = F.relu(self.layers[i](h))
        outs = [self.head_dx(h), self.head_dq(h)]
        if self.head_ds is not None:
            outs.append(self.head_ds(h))
        return torch.cat(outs, dim=-1)

    def _evaluate(self, xe: torch.Tensor, te: torch.Tensor) -> torch.Tensor:
        """:meth:`_run` over row chunks of the Gaussian axis (dim -2)."""
        n = xe.shape[-2]
        per_row_t = te.shape[-2] == n and n > 1
        ranges = list(chunk_ranges(n, self.cfg.chunk))
        if len(ranges) == 1:
            return self._run(xe, te)
        outs = []
        for s, e in ranges:
            xc = xe[..., s:e, :]
            tc = te[..., s:e, :] if per_row_t else te
            if torch.is_grad_enabled():
                outs.append(checkpoint(self._run, xc, tc, use_reentrant=False))
            else:
                outs.append(self._run(xc, tc))
        return torch.cat(outs, dim=-2)

    def _split(self, out: torch.Tensor) -> Deformation:
        return Deformation(
            dx=out[..., 0:3],
            dq=out[..., 3:7],
            ds=out[..., 7:10] if self.head_ds is not None else None,
        )

    def _zeros(self, shape: tuple[int, ...], ref: torch.Tensor) -> Deformation:
        z = lambda d: torch.zeros(*shape, d, dtype=ref.dtype, device=ref.device)  # noqa: E731
        return Deformation(dx=z(3), dq=z(4), ds=z(3) if self.head_ds is not None else None)

    # ---------------------------------------------------------------------- interface
    def deform(
        self,
        means: torch.Tensor,
        time: "torch.Tensor | float | int",
        quats: Optional[torch.Tensor] = None,
    ) -> Deformation:
        """Offsets ``dx [N,3]``, ``dq [N,4]``, ``ds [N,3]`` (None without ``predict_scale``)
        of canonical positions ``means [N,3]`` at ``time`` (see the class docstring)."""
        if means.ndim != 2 or means.shape[-1] != 3:
            raise ValueError(f"means must be [N,3], got {tuple(means.shape)}")
        ref = self.head_dx.weight
        x = means.to(ref.dtype)
        n = x.shape[0]
        if self.frame_mode:
            k = as_frame_index(time, self.num_frames, n, x.device)
            c = int(self.zero_frame)
            if k.numel() == 1 and int(k) == c:
                return self._zeros((n,), ref)
            out = self._evaluate(self.x_enc(x), self.codes[k])
            keep = (k != c)[:, None]  # [1,1] or [N,1]
            out = torch.where(keep, out, torch.zeros((), dtype=out.dtype, device=out.device))
        else:
            if is_integer_time(time) and isinstance(time, torch.Tensor):
                time = time.to(ref.dtype)
            t = as_time_tensor(time, n, x.device, ref.dtype)  # [1,1] or [N,1]
            if not has_zero_time(self):
                out = self._evaluate(self.x_enc(x), self.t_enc(t))
            else:
                t_c = self.zero_time.to(ref.dtype).reshape(1, 1)
                if t.numel() == 1 and bool(t.reshape(()) == t_c.reshape(())):
                    return self._zeros((n,), ref)
                xe = self.x_enc(x)
                if t.shape[0] == 1:  # one time: [t, t_c] as one batch of two rows
                    both = self._evaluate(xe[None], self.t_enc(torch.cat([t, t_c])[:, None, :]))
                    out = both[0] - both[1]
                else:
                    out = self._evaluate(xe, self.t_enc(t)) - self._evaluate(xe, self.t_enc(t_c))
                    out = torch.where(t != t_c, out, torch.zeros((), dtype=out.dtype, device=out.device))
        return self._split(out)

    def deform_pair(
        self, means: torch.Tensor, t: float, t_prev: float, quats: Optional[torch.Tensor] = None
    ) -> tuple[Deformation, Deformation]:
        """``(w(x, t), w(x, t_prev))`` for the motion stage's temporal regularisers, the second
        without autograd (a fixed reference), sharing the position encoding and -- with a
        canonical time -- the row ``f(x, t_c)`` between the two (per-frame codes: the
        :class:`Deformer` default, two :meth:`deform` calls)."""
        if self.frame_mode:
            return super().deform_pair(means, t, t_prev, quats=quats)
        ref = self.head_dx.weight
        x = means.to(ref.dtype)
        n = x.shape[0]
        xe = self.x_enc(x)
        tt = torch.tensor([[float(t)], [float(t_prev)]], dtype=ref.dtype, device=x.device)
        if not has_zero_time(self):
            f_t = self._evaluate(xe, self.t_enc(tt[0:1]))
            with torch.no_grad():
                f_p = self._evaluate(xe, self.t_enc(tt[1:2]))
            return self._split(f_t), self._split(f_p)
        t_c = self.zero_time.to(ref.dtype).reshape(1, 1)
        both = self._evaluate(xe[None], self.t_enc(torch.cat([tt[0:1], t_c])[:, None, :]))  # [2,N,C]
        f_c = both[1]
        at_c = (tt == t_c).reshape(2).tolist()  # compared in the deformer's dtype, as deform() does
        d = self._zeros((n,), ref) if at_c[0] else self._split(both[0] - f_c)
        with torch.no_grad():
            dp = self._zeros((n,), ref) if at_c[1] else self._split(self._evaluate(xe, self.t_enc(tt[1:2])) - f_c.detach())
        return d, dp

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"time_input={c.time_input}, width={c.width}, depth={c.depth}, skip_after={self.skip}, "
            f"x_multires={c.x_multires}, t_multires={c.t_multires}, predict_scale={c.predict_scale}"
        )
