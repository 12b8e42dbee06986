"""3D Gaussians with SH colour: parameters, Adam optimiser, freezing, checkpoints, PLY I/O.

Stored (raw) parameters, ``N`` Gaussians, ``K=(max_sh_degree+1)**2``:

=============  ============  ==========================================
name           shape         meaning
=============  ============  ==========================================
``means``      ``[N,3]``     world positions
``quats``      ``[N,4]``     rotations ``wxyz`` (unnormalised)
``scales``     ``[N,3]``     log standard deviations
``opacities``  ``[N]``       opacity logits
``sh0``        ``[N,1,3]``   DC SH coefficients
``shN``        ``[N,K-1,3]`` higher SH coefficients
=============  ============  ==========================================

:meth:`GaussianModel.params` returns them activated as :class:`GaussianParams`.

One Adam optimiser holds one param group per attribute (named as above) with the 3DGS
learning rates and the paper's (Appendix D.4): positions decay exponentially from
``1.6e-4`` to ``1.6e-6`` times the scene extent, scales and rotations ``1e-3``,
``betas=(0.9, 0.999)``, ``eps=1e-15``.

Freezing (paper D.2): ``model.frozen`` is a bool mask ``[N]``. Frozen rows are detached in
:meth:`params` (no gradient flows to them) and an optimiser step hook restores their
values and Adam moments after every ``optimizer.step()`` -- Adam with a zero gradient
would otherwise still move them with its momentum. Densification never touches them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Optional

import torch
import torch.nn.functional as F

from fourreal_core.interfaces import GaussianParams, Representation, log_linear_decay
from fourreal_core.types import PointCloud

from .configs import GaussiansConfig

#: Attribute / param-group names, in a fixed order.
GROUPS: tuple[str, ...] = ("means", "quats", "scales", "opacities", "sh0", "shN")

_SH_C0 = 0.28209479177387814


def _rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    try:
        from .sh import rgb_to_sh
    except ImportError:  # sh.py is optional for this conversion
        return (rgb - 0.5) / _SH_C0
    return rgb_to_sh(rgb)


def knn_mean_sq_dist(points: torch.Tensor, k: int = 3, chunk_elems: int = 1 << 24) -> torch.Tensor:
    """Mean squared distance of each point to its ``k`` nearest other points.

    Pure torch, chunked so memory stays at ``chunk_elems`` floats whatever ``P`` is.

    Args:
        points: ``[P,3]``.
        k: number of neighbours (fewer when ``P <= k``).
    Returns:
        ``[P]`` mean of the squared distances; ``+inf`` when ``P == 1``.
    """
    p = points.shape[0]
    kk = min(k, p - 1)
    if kk <= 0:
        return torch.full((p,), float("inf"), device=points.device)
    pts = points.float()
    rows = max(1, chunk_elems // max(p, 1))
    out = torch.empty(p, device=points.device)
    for s in range(0, p, rows):
        d2 = torch.cdist(pts[s : s + rows], pts).square_()
        # drop self (the smallest entry of each row; a duplicate point is equivalent)
        vals = torch.topk(d2, kk + 1, dim=1, largest=False).values[:, 1:]
        out[s : s + rows] = vals.mean(dim=1)
    return out


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class GaussianModel(Representation):
    """N 3D Gaussians with SH colour (see the module docstring for the stored layout).

    Attributes:
        cfg: the :class:`GaussiansConfig`.
        max_sh_degree: the SH degree stored (``cfg.sh_degree``, or a loaded PLY's).
        active_sh_degree: the degree :meth:`params` evaluates; raised by :meth:`step_sh`.
        scene_extent: the scene radius the position lr and densification scale with.
        frozen: ``[N]`` bool, Gaussians excluded from optimisation and densification.
        optimizer: ``torch.optim.Adam`` with one group per name in :data:`GROUPS`.
    """

    def __init__(self, cfg: Optional[GaussiansConfig] = None, device: "torch.device | str" = "cpu"):
        self.cfg = cfg if cfg is not None else GaussiansConfig()
        self.max_sh_degree = int(self.cfg.sh_degree)
        self.active_sh_degree = 0
        self.scene_extent = 1.0
        self.device = torch.device(device)
        k1 = (self.max_sh_degree + 1) ** 2 - 1
        empty = {
            "means": torch.zeros(0, 3), "quats": torch.zeros(0, 4), "scales": torch.zeros(0, 3),
            "opacities": torch.zeros(0), "sh0": torch.zeros(0, 1, 3), "shN": torch.zeros(0, k1, 3),
        }
        self._params: dict[str, torch.nn.Parameter] = {}
        self.frozen = torch.zeros(0, dtype=torch.bool, device=self.device)
        self.optimizer: torch.optim.Adam
        self._frozen_snapshot: Optional[dict] = None
        self.set_raw(empty)

    # ------------------------------------------------------------------ basic access
    def __len__(self) -> int:
        return int(self._params["means"].shape[0])

    @property
    def means(self) -> torch.nn.Parameter:
        """``[N,3]`` raw positions."""
        return self._params["means"]

    @property
    def quats(self) -> torch.nn.Parameter:
        """``[N,4]`` raw quaternions wxyz."""
        return self._params["quats"]

    @property
    def scales(self) -> torch.nn.Parameter:
        """``[N,3]`` log-scales."""
        return self._params["scales"]

    @property
    def opacities(self) -> torch.nn.Parameter:
        """``[N]`` opacity logits."""
        return self._params["opacities"]

    @property
    def sh0(self) -> torch.nn.Parameter:
        """``[N,1,3]`` DC SH coefficients."""
        return self._params["sh0"]

    @property
    def shN(self) -> torch.nn.Parameter:
        """``[N,K-1,3]`` higher SH coefficients."""
        return self._params["shN"]

    @property
    def raw(self) -> dict[str, torch.nn.Parameter]:
        """The raw parameters by name (a new dict; the tensors are the live Parameters)."""
        return dict(self._params)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self._params[n] for n in GROUPS]

    # ------------------------------------------------------------------ activation
    def step_sh(self, step: int) -> int:
        """Raise the active SH degree to ``step // cfg.sh_degree_interval`` (capped at the
        stored degree; never lowered, as 3DGS's ``oneupSHdegree``). Returns the degree."""
        interval = max(1, int(self.cfg.sh_degree_interval))
        target = min(int(step) // interval, self.max_sh_degree)
        self.active_sh_degree = max(self.active_sh_degree, target)
        return self.active_sh_degree

    def set_active_sh_degree(self, degree: int) -> None:
        """Set the active SH degree explicitly (0..max_sh_degree)."""
        if not 0 <= degree <= self.max_sh_degree:
            raise ValueError(f"SH degree {degree} outside 0..{self.max_sh_degree}")
        self.active_sh_degree = int(degree)

    def params(self, step: Optional[int] = None) -> GaussianParams:
        """Activated parameters; ``step`` (if given) first raises the SH degree (:meth:`step_sh`).

        Returns:
            :class:`GaussianParams` with normalised quats ``[N,4]``, ``exp`` scales ``[N,3]``,
            ``sigmoid`` opacities ``[N]``, colors ``[N,(d+1)**2,3]`` for the active degree
            ``d``. Frozen rows are detached (they receive no gradient).
        """
        if step is not None:
            self.step_sh(step)
        p = self._params
        means, quats, scales, opac, sh0, shN = (p[n] for n in GROUPS)
        if bool(self.frozen.any()):
            f = self.frozen

            def fz(t: torch.Tensor) -> torch.Tensor:
                return torch.where(f.view(-1, *([1] * (t.ndim - 1))), t.detach(), t)

            means, quats, scales, opac, sh0, shN = map(fz, (means, quats, scales, opac, sh0, shN))
        k = (self.active_sh_degree + 1) ** 2
        colors = torch.cat([sh0, shN[:, : k - 1]], dim=1)
        return GaussianParams(
            means=means,
            quats=F.normalize(quats, dim=-1),
            scales=torch.exp(scales),
            opacities=torch.sigmoid(opac),
            colors=colors,
            sh_degree=self.active_sh_degree,
        )

    # ------------------------------------------------------------------ initialisation
    def init_from_points(self, points: PointCloud, scene_extent: float) -> None:
        """Initialise one Gaussian per point (3DGS): colours -> SH DC, isotropic scale from the
        RMS distance to the 3 nearest neighbours (times ``cfg.init_scale``), identity rotations,
        opacity ``cfg.init_opacity``."""
        pts = torch.as_tensor(points.points, dtype=torch.float32, device=self.device).reshape(-1, 3)
        cols = torch.as_tensor(points.colors, dtype=torch.float32, device=self.device).reshape(-1, 3)
        if pts.shape[0] == 0:
            raise ValueError("init_from_points: the point cloud is empty")
        self.scene_extent = float(scene_extent)
        n = pts.shape[0]
        d2 = knn_mean_sq_dist(pts, 3)
        fallback = (0.01 * self.scene_extent) ** 2
        d2 = torch.where(torch.isfinite(d2), d2, torch.full_like(d2, fallback)).clamp_min(1e-7)
        log_s = torch.log(torch.sqrt(d2) * self.cfg.init_scale)[:, None].repeat(1, 3)
        quats = torch.zeros(n, 4, device=self.device)
        quats[:, 0] = 1.0
        k1 = (self.max_sh_degree + 1) ** 2 - 1
        self.set_raw(
            {
                "means": pts.clone(),
                "quats": quats,
                "scales": log_s,
                "opacities": torch.full((n,), _logit(self.cfg.init_opacity), device=self.device),
                "sh0": _rgb_to_sh(cols.clamp(0, 1))[:, None, :].contiguous(),
                "shN": torch.zeros(n, k1, 3, device=self.device),
            }
        )
        self.active_sh_degree = 0

    def init_random_box(
        self,
        n: Optional[int] = None,
        extent: Optional[float] = None,
        seed: int = 0,
        scene_extent: Optional[float] = None,
    ) -> None:
        """Initialise ``n`` Gaussians uniformly in the cube ``[-extent, extent]^3`` with random
        colours (defaults: ``cfg.init_num_points``, ``cfg.init_extent``); ``scene_extent``
        defaults to ``extent``."""
        n = int(self.cfg.init_num_points if n is None else n)
        extent = float(self.cfg.init_extent if extent is None else extent)
        g = torch.Generator().manual_seed(int(seed))
        pts = (torch.rand(n, 3, generator=g) * 2 - 1) * extent
        cols = torch.rand(n, 3, generator=g)
        self.init_from_points(
            PointCloud(pts.to(self.device), cols.to(self.device)),
            extent if scene_extent is None else scene_extent,
        )

    def init_from_config(
        self, points: Optional[PointCloud] = None, scene_extent: Optional[float] = None, seed: int = 0
    ) -> None:
        """Initialise as ``cfg.init`` says: ``"points"`` -> :meth:`init_from_points` (needs
        ``points`` and ``scene_extent``), ``"box"`` -> :meth:`init_random_box` with the config's
        count and extent (``scene_extent`` defaults to ``cfg.init_extent``)."""
        if self.cfg.init == "points":
            if points is None or scene_extent is None:
                raise ValueError("gaussians init 'points' needs a point cloud and a scene extent")
            self.init_from_points(points, scene_extent)
        elif self.cfg.init == "box":
            self.init_random_box(seed=seed, scene_extent=scene_extent)
        else:
            raise ValueError(f"unknown gaussians init {self.cfg.init!r}; expected 'points' or 'box'")

    def set_raw(self, raw: Mapping[str, torch.Tensor], frozen: Optional[torch.Tensor] = None) -> None:
        """Replace all raw parameters (names in :data:`GROUPS`) and rebuild a fresh optimiser.

        The stored SH degree follows ``raw['shN']``'s shape.
        """
        n = int(raw["means"].shape[0])
        new = {}
        for name in GROUPS:
            t = torch.as_tensor(raw[name]).detach().to(self.device, torch.float32).clone()
            if t.shape[0] != n:
                raise ValueError(f"set_raw: {name} has {t.shape[0]} rows, means has {n}")
            new[name] = torch.nn.Parameter(t.contiguous())
        new["opacities"] = torch.nn.Parameter(new["opacities"].data.reshape(n))
        new["sh0"] = torch.nn.Parameter(new["sh0"].data.reshape(n, 1, 3))
        k1 = new["shN"].numel() // max(n, 1) // 3 if n else new["shN"].shape[1]
        new["shN"] = torch.nn.Parameter(new["shN"].data.reshape(n, k1, 3))
        degree = int(round(math.sqrt(k1 + 1))) - 1
        if (degree + 1) ** 2 != k1 + 1:
            raise ValueError(f"set_raw: shN has {k1} coefficients per channel; not (d+1)^2-1")
        self.max_sh_degree = degree
        self.active_sh_degree = min(self.active_sh_degree, degree)
        self._params = new
        if frozen is None:
            frozen = torch.zeros(n, dtype=torch.bool)
        self.frozen = torch.as_tensor(frozen, dtype=torch.bool).to(self.device).reshape(n).clone()
        self._build_optimizer()

    # ------------------------------------------------------------------ optimiser
    def base_lr(self, name: str) -> float:
        """The initial learning rate of group ``name`` (positions scaled by scene extent)."""
        c = self.cfg
        return {
            "means": c.means_lr * self.scene_extent,
            "quats": c.quats_lr,
            "scales": c.scales_lr,
            "opacities": c.opacities_lr,
            "sh0": c.sh0_lr,
            "shN": c.shN_lr,
        }[name]

    def _build_optimizer(self) -> None:
        groups = [{"params": [self._params[n]], "lr": self.base_lr(n), "name": n} for n in GROUPS]
        self.optimizer = torch.optim.Adam(groups, lr=0.0, betas=(0.9, 0.999), eps=1e-15)
        self.optimizer.register_step_pre_hook(self._pre_step_hook)
        self.optimizer.register_step_post_hook(self._post_step_hook)

    def means_lr_at(self, step: int, total_steps: int) -> float:
        """Position learning rate at ``step`` of ``total_steps``: exponential (log-linear)
        decay from ``cfg.means_lr`` to ``cfg.means_lr_final``, times the scene extent."""
        return log_linear_decay(step, total_steps, self.cfg.means_lr, self.cfg.means_lr_final) * self.scene_extent

    def update_learning_rate(self, step: int, total_steps: int) -> float:
        """Set the ``means`` group's lr to :meth:`means_lr_at` and return it."""
        lr = self.means_lr_at(step, total_steps)
        for g in self.optimizer.param_groups:
            if g["name"] == "means":
                g["lr"] = lr
        return lr

    def group(self, name: str) -> dict:
        """The optimiser param group called ``name``."""
        for g in self.optimizer.param_groups:
            if g["name"] == name:
                return g
        raise KeyError(name)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def optimizer_step(self, groups: Optional[Iterable[str]] = None, zero_grad: bool = True) -> None:
        """One Adam step, optionally only for the named ``groups`` (others keep their grads
        out of the step and their moments untouched). Frozen rows never move."""
        if groups is not None:
            keep = set(groups)
            unknown = keep - set(GROUPS)
            if unknown:
                raise KeyError(f"unknown param groups {sorted(unknown)}; expected {GROUPS}")
            for name in GROUPS:
                if name not in keep:
                    self._params[name].grad = None
        self.optimizer.step()
        if zero_grad:
            self.zero_grad()

    def _pre_step_hook(self, optimizer, args, kwargs) -> None:
        if not bool(self.frozen.any()):
            self._frozen_snapshot = None
            return
        idx = torch.nonzero(self.frozen, as_tuple=False)[:, 0]
        snap = {}
        for g in optimizer.param_groups:
            p = g["params"][0]
            if p.grad is None:
                continue
            st = optimizer.state.get(p, {})
            snap[g["name"]] = (
                p.data.index_select(0, idx),
                st["exp_avg"].index_select(0, idx) if "exp_avg" in st else None,
                st["exp_avg_sq"].index_select(0, idx) if "exp_avg_sq" in st else None,
            )
        self._frozen_snapshot = {"idx": idx, "rows": snap}

    def _post_step_hook(self, optimizer, args, kwargs) -> None:
        snap = self._frozen_snapshot
        self._frozen_snapshot = None
        if snap is None:
            return
        idx = snap["idx"]
        for g in optimizer.param_groups:
            if g["name"] not in snap["rows"]:
                continue
            p = g["params"][0]
            val, m, v = snap["rows"][g["name"]]
            p.data.index_copy_(0, idx, val)
            st = optimizer.state.get(p)
            if st:
                for key, old in (("exp_avg", m), ("exp_avg_sq", v)):
                    if key in st:
                        st[key].index_copy_(0, idx, old if old is not None else torch.zeros_like(val))

    # ------------------------------------------------------------------ row operations
    def _map_rows(self, fn) -> None:
        """Replace every parameter ``p`` by ``fn(name, p.data, kind)`` keeping the optimiser
        in sync; ``kind`` is ``'param'``, ``'grad'`` or ``'moment'``."""
        opt = self.optimizer
        for g in opt.param_groups:
            name = g["name"]
            old = g["params"][0]
            new = torch.nn.Parameter(fn(name, old.data, "param").contiguous())
            if old.grad is not None:
                new.grad = fn(name, old.grad, "grad").contiguous()
            st = opt.state.pop(old, None)
            if st:
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in st:
                        st[key] = fn(name, st[key], "moment").contiguous()
                opt.state[new] = st
            g["params"][0] = new
            self._params[name] = new

    def append(self, raw: Mapping[str, torch.Tensor], frozen: bool = False) -> int:
        """Add Gaussians given raw values for every name in :data:`GROUPS` (``[M,...]``).

        New rows get zero Adam moments and zero gradients; ``frozen`` sets their mask.
        Returns ``M``."""
        m = int(raw["means"].shape[0])
        if m == 0:
            return 0
        vals = {n: raw[n].detach().to(self.device, torch.float32) for n in GROUPS}

        def fn(name, t, kind):
            add = vals[name] if kind == "param" else torch.zeros_like(vals[name])
            return torch.cat([t, add.reshape((m,) + tuple(t.shape[1:]))], dim=0)

        self._map_rows(fn)
        self.frozen = torch.cat(
            [self.frozen, torch.full((m,), bool(frozen), dtype=torch.bool, device=self.device)]
        )
        return m

    def remove(self, mask: torch.Tensor) -> int:
        """Delete the Gaussians where ``mask`` ``[N]`` is True (params, grads, moments,
        frozen mask all stay row-aligned). Returns how many were removed."""
        mask = mask.to(self.device, torch.bool).reshape(len(self))
        n_rm = int(mask.sum())
        if n_rm == 0:
            return 0
        keep = torch.nonzero(~mask, as_tuple=False)[:, 0]
        self._map_rows(lambda name, t, kind: t.index_select(0, keep))
        self.frozen = self.frozen[keep]
        return n_rm

    def reset_opacity(self, value: float, mask: Optional[torch.Tensor] = None) -> None:
        """3DGS opacity reset: opacities become ``min(opacity, value)`` and their Adam moments
        zero, for ``mask`` rows (default all) minus frozen ones."""
        sel = ~self.frozen if mask is None else (mask.to(self.device, torch.bool) & ~self.frozen)
        cap = _logit(value)
        p = self._params["opacities"]
        with torch.no_grad():
            p.data[sel] = p.data[sel].clamp_max(cap)
        st = self.optimizer.state.get(p)
        if st:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    st[key][sel] = 0.0

    def freeze(self, mask: Optional[torch.Tensor] = None) -> None:
        """Mark ``mask`` rows (default: all current Gaussians) frozen."""
        if mask is None:
            self.frozen = torch.ones(len(self), dtype=torch.bool, device=self.device)
        else:
            self.frozen = self.frozen | mask.to(self.device, torch.bool).reshape(len(self))

    def unfreeze(self) -> None:
        """Make every Gaussian trainable again."""
        self.frozen = torch.zeros(len(self), dtype=torch.bool, device=self.device)

    # ------------------------------------------------------------------ strategies
    def densify_strategy(self, seed: int = 0):
        """Density control with this model's ``cfg.densify`` (its steps already scaled by the
        stage): a :class:`~.densify.DensifyStrategy` (3DGS), or a
        :class:`~.densify.MCMCStrategy` for ``strategy: mcmc``."""
        from .densify import DensifyStrategy, MCMCStrategy

        if self.cfg.densify.strategy == "mcmc":
            return MCMCStrategy(self.cfg.densify, seed=seed)
        return DensifyStrategy(self.cfg.densify, seed=seed)

    def growth_strategy(self, start: int, end: int, grad_threshold: float, prune_opacity: float, seed: int = 0,
                        max_gaussians: Optional[int] = None):
        """The motion stage's growth (paper D.2) over ``[start, end)``: a
        :class:`~.densify.GrowthStrategy` with ``cfg.densify``'s interval, scale thresholds
        and cap (the lower of it and ``max_gaussians`` when given), and the given gradient
        threshold and tau_alpha."""
        from dataclasses import replace

        from .densify import GrowthStrategy

        cap = int(self.cfg.densify.max_gaussians)
        if max_gaussians is not None:
            cap = int(max_gaussians) if cap <= 0 else min(cap, int(max_gaussians))
        cfg = replace(self.cfg.densify, grad_threshold=float(grad_threshold), prune_opacity=float(prune_opacity),
                      max_gaussians=cap)
        return GrowthStrategy(cfg, seed=seed, start=int(start), end=int(end))

    # ------------------------------------------------------------------ device
    def to(self, device: "torch.device | str") -> "GaussianModel":
        """Move parameters, grads, Adam moments and the frozen mask to ``device``."""
        device = torch.device(device)
        self._map_rows(lambda name, t, kind: t.to(device))
        for st in self.optimizer.state.values():
            if "step" in st and torch.is_tensor(st["step"]) and st["step"].device.type != "cpu":
                st["step"] = st["step"].to(device)
        self.frozen = self.frozen.to(device)
        self.device = device
        return self

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat, safetensors-compatible model state: the raw parameters (:data:`GROUPS`),
        ``frozen`` (bool ``[N]``), ``active_sh_degree``, ``max_sh_degree`` (int64 ``[1]``)
        and ``scene_extent`` (float64 ``[1]``). Adam moments: :meth:`optimizer_state_dict`."""
        out = {n: self._params[n].detach().clone() for n in GROUPS}
        out["frozen"] = self.frozen.clone()
        out["active_sh_degree"] = torch.tensor([self.active_sh_degree], dtype=torch.int64)
        out["max_sh_degree"] = torch.tensor([self.max_sh_degree], dtype=torch.int64)
        out["scene_extent"] = torch.tensor([self.scene_extent], dtype=torch.float64)
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output; the optimiser restarts (load its moments with
        :meth:`load_optimizer_state_dict`)."""
        missing = [n for n in GROUPS if n not in state]
        if missing:
            raise KeyError(f"Gaussian state is missing {missing}")
        if "scene_extent" in state:
            self.scene_extent = float(state["scene_extent"].reshape(-1)[0])
        self.active_sh_degree = 0
        self.set_raw({n: state[n] for n in GROUPS}, frozen=state.get("frozen"))
        if "active_sh_degree" in state:
            self.set_active_sh_degree(int(state["active_sh_degree"].reshape(-1)[0]))

    def optimizer_state_dict(self) -> dict[str, torch.Tensor]:
        """Flat Adam state: ``{group}.lr`` (float64 ``[1]``) for every group and, once stepped,
        ``{group}.exp_avg``, ``{group}.exp_avg_sq`` (param-shaped), ``{group}.step`` (``[1]``)."""
        out: dict[str, torch.Tensor] = {}
        for g in self.optimizer.param_groups:
            name = g["name"]
            out[f"{name}.lr"] = torch.tensor([float(g["lr"])], dtype=torch.float64)
            st = self.optimizer.state.get(g["params"][0])
            if st and "exp_avg" in st:
                out[f"{name}.exp_avg"] = st["exp_avg"].detach().clone()
                out[f"{name}.exp_avg_sq"] = st["exp_avg_sq"].detach().clone()
                step = st["step"]
                out[f"{name}.step"] = torch.as_tensor(step, dtype=torch.float32).reshape(1).clone()
        return out

    def load_optimizer_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`optimizer_state_dict` output (after :meth:`load_state_dict`)."""
        opt = self.optimizer
        for g in opt.param_groups:
            name = g["name"]
            p = g["params"][0]
            if f"{name}.lr" in state:
                g["lr"] = float(state[f"{name}.lr"].reshape(-1)[0])
            if f"{name}.exp_avg" not in state:
                opt.state.pop(p, None)
                continue
            m, v = state[f"{name}.exp_avg"], state[f"{name}.exp_avg_sq"]
            if m.shape != p.shape or v.shape != p.shape:
                raise ValueError(
                    f"optimizer state for {name} has shape {tuple(m.shape)}, parameter has "
                    f"{tuple(p.shape)}; load the matching model state first"
                )
            opt.state[p] = {
                "step": torch.tensor(float(state[f"{name}.step"].reshape(-1)[0]), dtype=torch.float32),
                "exp_avg": m.detach().to(p.device, p.dtype).clone(),
                "exp_avg_sq": v.detach().to(p.device, p.dtype).clone(),
            }

    # ------------------------------------------------------------------ PLY
    def save_ply(self, path: "os.PathLike | str") -> None:
        """Write the standard 3DGS PLY (all stored SH coefficients), atomically."""
        from .ply import write_ply

        p = self._params
        write_ply(path, p["means"], p["quats"], p["scales"], p["opacities"], p["sh0"], p["shN"])

    def load_ply(self, path: "os.PathLike | str") -> None:
        """Replace everything by a standard 3DGS PLY of any SH degree; the stored and active
        degree become the file's; nothing is frozen; the optimiser restarts."""
        from .ply import read_ply

        g = read_ply(Path(path))
        self.set_raw(g.to_torch(self.device))
        self.active_sh_degree = self.max_sh_degree
