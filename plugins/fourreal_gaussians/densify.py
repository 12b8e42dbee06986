"""3DGS adaptive density control (clone / split / prune / opacity reset), gsplat style.

A :class:`DensifyStrategy` is a small dataclass holding only its config; the running
statistics live in a plain ``state`` dict of flat tensors (safetensors-compatible) the
trainer owns and checkpoints::

    strategy = DensifyStrategy(cfg.densify)
    state = strategy.initialize_state(len(model))
    for step in range(total):
        out = rasterizer.rasterize(model.params(step), cams, bg)
        loss = ...; loss.backward()
        strategy.step_post_backward(model, state, out, step)   # stats + densify
        model.optimizer_step()

Statistics (per Gaussian, accumulated from every render while ``step < cfg.stop``):

* ``grad2d`` ``[N]``: sum of view-space positional gradient norms, normalised to NDC like
  3DGS / gsplat (``dL/dx_pix * W/2``, ``dL/dy_pix * H/2``, times the number of cameras in
  the batch, because the loss averages over them);
* ``count`` ``[N]``: number of renders where the Gaussian was visible (``radii > 0``);
* ``radii`` ``[N]``: max screen radius as a fraction of ``max(W, H)``.

Every ``cfg.every`` steps in ``(cfg.start, cfg.stop)``: Gaussians whose mean gradient
exceeds ``cfg.grad_threshold`` are cloned when small (max scale <= ``grow_scale3d *
extent``) or split into ``cfg.split_into`` samples with scale ``/ (0.8 * split_into)``
when large; then low-opacity (< ``prune_opacity``) Gaussians are pruned and, once past the
first opacity reset, too-large ones (world scale > ``prune_scale3d * extent``, or screen
radius > ``prune_screen_radius`` when that is > 0). Every ``cfg.reset_opacity_every``
steps opacities are capped at ``cfg.reset_opacity_value``.

Frozen Gaussians (``model.frozen``) are never cloned, split, pruned or reset; Gaussians
created here are never frozen. Adam moments follow their rows: new rows (clones and split
children) start with zero moments, removed rows take theirs away (as gsplat).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import torch

from fourreal_core.interfaces import DensifyStrategy as DensifyStrategyBase
from fourreal_core.interfaces import RenderOutput
from fourreal_formats.quaternions import quat_to_matrix

from .configs import DensifyConfig
from .model import GROUPS

if TYPE_CHECKING:
    from .model import GaussianModel

STATE_KEYS = ("grad2d", "count", "radii")


class DensifyReport(dict):
    """What a densification step did: ``cloned``, ``split``, ``pruned`` (counts), ``reset``
    (bool), ``n`` (Gaussians after), ``spawned`` (growth start). Its truth value is the
    :class:`~fourreal_core.interfaces.DensifyStrategy` contract's: whether the set of
    Gaussians changed (rows added or removed)."""

    def __bool__(self) -> bool:
        return bool(self.get("cloned") or self.get("split") or self.get("pruned") or self.get("spawned"))


def _sample_in_gaussians(model: "GaussianModel", idx: torch.Tensor, samples: int, generator=None):
    """``[samples*M,3]`` points drawn from the Gaussians ``idx`` (sample-major order)."""
    means = model.means.data[idx]
    scales = torch.exp(model.scales.data[idx])
    rot = quat_to_matrix(model.quats.data[idx])  # [M,3,3]
    noise = torch.randn(
        (samples,) + tuple(means.shape), generator=generator, device="cpu"
    ).to(means.device)
    local = noise * scales[None]  # [S,M,3]
    world = torch.einsum("mij,smj->smi", rot, local) + means[None]
    return world.reshape(-1, 3)


def _rows(model: "GaussianModel", idx: torch.Tensor, repeats: int = 1) -> dict[str, torch.Tensor]:
    """Raw values of rows ``idx``, repeated ``repeats`` times (sample-major)."""
    out = {}
    for name in GROUPS:
        t = model.raw[name].data[idx]
        out[name] = t.repeat((repeats,) + (1,) * (t.ndim - 1)) if repeats > 1 else t.clone()
    return out


@dataclass
class DensifyStrategy(DensifyStrategyBase):
    """3DGS adaptive density control over a :class:`~.model.GaussianModel`.

    Attributes:
        cfg: thresholds and schedule (:class:`DensifyConfig`).
        seed: seed of the split sampling (a generator is kept per strategy).
    """

    cfg: DensifyConfig = field(default_factory=DensifyConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        self._gen = torch.Generator().manual_seed(int(self.seed))

    # ------------------------------------------------------------------ state
    def initialize_state(self, n: int = 0, device: "torch.device | str" = "cpu") -> dict[str, torch.Tensor]:
        """Zeroed statistics for ``n`` Gaussians: ``grad2d``, ``count``, ``radii`` ``[n]``."""
        return {k: torch.zeros(n, device=device) for k in STATE_KEYS}

    def _ensure_state(self, state: dict, model: "GaussianModel") -> None:
        n = len(model)
        if any(k not in state or state[k].shape != (n,) for k in STATE_KEYS):
            # the model changed size outside the strategy (load, spawn): statistics restart
            state.update(self.initialize_state(n, model.device))

    # ------------------------------------------------------------------ statistics
    def update_state(self, state: dict, model: "GaussianModel", render: RenderOutput) -> None:
        """Accumulate view-space gradient norms, visibility counts and max radii from a render
        whose loss has been back-propagated (``render.means2d.grad`` ``[C,N,2]``)."""
        self._ensure_state(state, model)
        grad = render.means2d.grad
        if grad is None:
            raise RuntimeError(
                "densify: render.means2d.grad is None; call backward() on a loss of this "
                "render before step_post_backward (and keep means2d's retain_grad)"
            )
        c, h, w = render.rgb.shape[0], render.rgb.shape[1], render.rgb.shape[2]
        g = grad.detach().reshape(c, -1, 2).clone()
        g[..., 0] *= w / 2.0 * c
        g[..., 1] *= h / 2.0 * c
        radii = render.radii.detach()
        if radii.ndim == 3:  # gsplat >= 1.5 returns per-axis radii
            radii = radii.max(dim=-1).values
        sel = radii > 0  # [C,N]
        gs_ids = torch.nonzero(sel, as_tuple=False)[:, 1]
        dev = state["grad2d"].device
        gs_ids = gs_ids.to(dev)
        state["grad2d"].index_add_(0, gs_ids, g[sel].norm(dim=-1).to(dev))
        state["count"].index_add_(0, gs_ids, torch.ones(gs_ids.shape[0], device=dev))
        r = radii[sel].float().to(dev) / float(max(w, h))
        state["radii"].scatter_reduce_(0, gs_ids, r, reduce="amax", include_self=True)

    def average_grads(self, state: dict) -> torch.Tensor:
        """``[N]`` mean NDC view-space gradient norm over the renders where visible."""
        return state["grad2d"] / state["count"].clamp_min(1.0)

    # ------------------------------------------------------------------ main entry
    def step_post_backward(
        self, model: "GaussianModel", state: dict, render: RenderOutput, step: int
    ) -> DensifyReport:
        """Accumulate statistics from ``render`` and, on schedule, densify / prune / reset.

        Call after ``backward()``; before or after the optimiser step (grads and moments are
        carried through row changes). Returns a :class:`DensifyReport`: ``cloned``,
        ``split``, ``pruned`` (counts), ``reset`` (bool), ``n`` (Gaussians after the step);
        truthy when the set of Gaussians changed.
        """
        cfg = self.cfg
        report = DensifyReport(cloned=0, split=0, pruned=0, reset=False, n=len(model))
        if step >= cfg.stop:
            return report
        self.update_state(state, model, render)
        if step > cfg.start and cfg.every > 0 and step % cfg.every == 0:
            report.update(self.refine(model, state, step))
        if cfg.reset_opacity_every > 0 and step > 0 and step % cfg.reset_opacity_every == 0:
            model.reset_opacity(cfg.reset_opacity_value)
            report["reset"] = True
        report["n"] = len(model)
        return report

    def refine(self, model: "GaussianModel", state: dict, step: int) -> DensifyReport:
        """Clone / split / prune now from the accumulated ``state``; statistics restart."""
        self._ensure_state(state, model)
        cloned, split, radii = self._grow(model, state)
        pruned = self._prune(model, radii, step)
        state.update(self.initialize_state(len(model), model.device))
        return DensifyReport(cloned=cloned, split=split, pruned=pruned)

    # ------------------------------------------------------------------ operations
    def _grow(self, model: "GaussianModel", state: dict) -> tuple[int, int, torch.Tensor]:
        cfg = self.cfg
        dev = model.device
        grads = self.average_grads(state).to(dev)
        frozen = model.frozen
        high = (grads > cfg.grad_threshold) & ~frozen
        max_scale = torch.exp(model.scales.data).max(dim=-1).values
        small = max_scale <= cfg.grow_scale3d * model.scene_extent
        is_clone = high & small
        is_split = high & ~small
        s = max(int(cfg.split_into), 1)
        if cfg.max_gaussians > 0:
            is_clone, is_split = self._cap(len(model), grads, is_clone, is_split, s)
        radii = state["radii"].to(dev)

        clone_idx = torch.nonzero(is_clone, as_tuple=False)[:, 0]
        split_idx = torch.nonzero(is_split, as_tuple=False)[:, 0]
        n0 = len(model)
        # clone: exact copies (3DGS / gsplat), zero moments
        if clone_idx.numel():
            model.append(_rows(model, clone_idx), frozen=False)
            radii = torch.cat([radii, radii[clone_idx]])
        # split: S samples drawn from each Gaussian, scale / (0.8 S); originals removed
        if split_idx.numel():
            new = _rows(model, split_idx, repeats=s)
            new["means"] = _sample_in_gaussians(model, split_idx, s, self._gen)
            scales = torch.exp(model.scales.data[split_idx]).repeat(s, 1) / (0.8 * s)
            new["scales"] = torch.log(scales)
            model.append(new, frozen=False)
            radii = torch.cat([radii, radii[split_idx].repeat(s)])
            rm = torch.zeros(len(model), dtype=torch.bool, device=dev)
            rm[split_idx] = True
            model.remove(rm)
            radii = radii[~rm]
        assert len(model) == n0 + clone_idx.numel() + (s - 1) * split_idx.numel()
        return int(clone_idx.numel()), int(split_idx.numel()), radii

    def _cap(self, n: int, grads, is_clone, is_split, s: int):
        """Keep the highest-gradient candidates so that N stays <= cfg.max_gaussians."""
        budget = self.cfg.max_gaussians - n
        cand = torch.nonzero(is_clone | is_split, as_tuple=False)[:, 0]
        if budget <= 0:
            return torch.zeros_like(is_clone), torch.zeros_like(is_split)
        cost = torch.where(is_split[cand], s - 1, 1)
        order = torch.argsort(grads[cand], descending=True)
        fits = torch.cumsum(cost[order], 0) <= budget
        chosen = torch.zeros_like(is_clone)
        chosen[cand[order[fits]]] = True
        return is_clone & chosen, is_split & chosen

    def _prune(self, model: "GaussianModel", radii: torch.Tensor, step: int) -> int:
        cfg = self.cfg
        opac = torch.sigmoid(model.opacities.data)
        is_prune = opac < cfg.prune_opacity
        if cfg.reset_opacity_every <= 0 or step > cfg.reset_opacity_every:
            max_scale = torch.exp(model.scales.data).max(dim=-1).values
            too_big = max_scale > cfg.prune_scale3d * model.scene_extent
            if cfg.prune_screen_radius > 0:
                too_big |= radii > cfg.prune_screen_radius
            is_prune |= too_big
        is_prune &= ~model.frozen
        return model.remove(is_prune)

    # ------------------------------------------------------------------ motion-stage growth
    def spawn_mask(self, model: "GaussianModel", state: dict, threshold: Optional[float] = None):
        """``[N]`` bool: Gaussians whose mean view-space gradient exceeds ``threshold``
        (default ``cfg.grad_threshold``), frozen ones included."""
        self._ensure_state(state, model)
        thr = self.cfg.grad_threshold if threshold is None else threshold
        return self.average_grads(state).to(model.device) > thr

    def spawn_from_gradients(
        self, model: "GaussianModel", state: dict, threshold: Optional[float] = None, **kwargs
    ) -> int:
        """Paper D.2: at the start of the motion-stage growth, add trainable Gaussians where
        the (frozen) canonical Gaussians' accumulated gradients are high. Statistics restart.
        Returns how many were added; ``kwargs`` go to :func:`spawn_from`."""
        mask = self.spawn_mask(model, state, threshold)
        added = spawn_from(model, mask, generator=self._gen, **kwargs)
        state.update(self.initialize_state(len(model), model.device))
        return added

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, state: dict) -> dict[str, torch.Tensor]:
        """Flat copy of ``state`` for safetensors (keys ``grad2d``, ``count``, ``radii``)."""
        return {k: state[k].detach().clone() for k in STATE_KEYS if k in state}

    def load_state_dict(self, state: dict, saved: dict) -> None:
        """Restore statistics saved by :meth:`state_dict` into ``state``."""
        for k in STATE_KEYS:
            if k in saved:
                state[k] = saved[k].detach().clone().float()


@dataclass
class GrowthStrategy(DensifyStrategy):
    """The motion stage's growth of new Gaussians (paper C.2 (b), D.2) over steps
    ``[start, end)`` of the stage, as a strategy:

    * before ``start``: view-space gradient statistics of the canonical Gaussians accumulate;
    * at ``start`` (:meth:`step_pre`): every Gaussian is frozen and one trainable copy is
      spawned from each whose mean gradient exceeds ``cfg.grad_threshold`` (the strongest
      ``cfg.max_gaussians - N`` when capped); statistics restart;
    * in ``[start, end)``: only the new Gaussians grow -- clone / split / prune (with
      ``cfg.prune_opacity`` = tau_alpha) every ``cfg.every`` steps;
    * at ``end`` (or :meth:`step_end`): everything unfreezes.

    ``cfg``'s own ``start`` / ``stop`` / opacity reset are not used.
    """

    start: int = 0
    end: int = 0

    def step_pre(self, model: "GaussianModel", state: dict, step: int) -> DensifyReport:
        report = DensifyReport(spawned=0, n=len(model))
        if step == self.start:
            model.freeze()
            mask = self.spawn_mask(model, state)
            cap = self.cfg.max_gaussians
            if cap > 0 and int(mask.sum()) > max(cap - len(model), 0):  # keep the strongest gradients
                grads = self.average_grads(state).to(mask.device).masked_fill(~mask, -1.0)
                keep = torch.topk(grads, max(cap - len(model), 0)).indices
                mask = torch.zeros_like(mask)
                mask[keep] = True
            report["spawned"] = spawn_from(model, mask, generator=torch.Generator().manual_seed(self.seed))
            state.update(self.initialize_state(len(model), model.device))
            report["n"] = len(model)
        elif step == self.end:
            model.unfreeze()
        return report

    def step_post_backward(self, model: "GaussianModel", state: dict, render: RenderOutput,
                           step: int) -> DensifyReport:
        if step >= self.end:
            return DensifyReport(n=len(model))
        self.update_state(state, model, render)
        if step > self.start and self.cfg.every > 0 and (step - self.start) % self.cfg.every == 0:
            return self.refine(model, state, step)
        return DensifyReport(n=len(model))

    def step_end(self, model: "GaussianModel", state: dict) -> None:
        model.unfreeze()


def spawn_from(
    model: "GaussianModel",
    mask: torch.Tensor,
    scale_factor: float = 1.0 / 1.6,
    opacity: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> int:
    """Add one new, trainable (not frozen) Gaussian per selected Gaussian (paper D.2).

    Each copy has the source's rotation and colour, a position sampled from the source
    Gaussian, its scale times ``scale_factor`` (default ``1/1.6``, as a 2-way split), and
    the source's opacity (or ``opacity`` if given). The sources are left unchanged.

    Args:
        mask: ``[N]`` bool, the source Gaussians (typically frozen canonical ones).
    Returns:
        number of Gaussians added (their rows are appended at the end).
    """
    mask = mask.to(model.device, torch.bool).reshape(len(model))
    idx = torch.nonzero(mask, as_tuple=False)[:, 0]
    if idx.numel() == 0:
        return 0
    new = _rows(model, idx)
    new["means"] = _sample_in_gaussians(model, idx, 1, generator)
    new["scales"] = model.scales.data[idx] + float(torch.log(torch.tensor(scale_factor)))
    if opacity is not None:
        p = torch.tensor(float(opacity)).clamp(1e-6, 1 - 1e-6)
        new["opacities"] = torch.full_like(new["opacities"], float(torch.logit(p)))
    return model.append(new, frozen=False)


# ====================================================================== 3DGS-MCMC
def relocation(opacities: torch.Tensor, scales: torch.Tensor, ratios: torch.Tensor, max_ratio: int = 51):
    """3DGS-MCMC's relocation (Kheradmand et al. 2024, Eq. 9): the opacity and scale that
    ``ratios[i]`` copies of Gaussian ``i`` need so that together they render like the one
    Gaussian did (``opacities [M]`` in (0,1), ``scales [M,3]`` world units, ``ratios [M]``
    counts >= 1). gsplat's ``compute_relocation`` is a CUDA kernel; this is the same closed
    form in torch (the double sum over binomial terms is evaluated for every ratio up to the
    largest present, at most ``max_ratio``)."""
    n = ratios.to(torch.long).clamp(1, max_ratio)
    o = opacities.clamp(1e-8, 1 - 1e-6)
    new_o = 1.0 - (1.0 - o) ** (1.0 / n.to(o.dtype))
    top = int(n.max()) if n.numel() else 1
    # denom(N) = sum_{i=1..N} sum_{k=0..i-1} C(i-1,k) (-1)^k new_o^(k+1) / sqrt(k+1)
    denom = torch.zeros_like(o)
    for i in range(1, top + 1):
        term = torch.zeros_like(o)
        for k in range(i):
            term = term + math.comb(i - 1, k) * (-1.0) ** k * new_o ** (k + 1) / math.sqrt(k + 1)
        denom = denom + torch.where(n >= i, term, torch.zeros_like(term))
    new_s = scales * (o / denom).unsqueeze(-1)
    return new_o, new_s


def _zero_moments(model: "GaussianModel", rows: torch.Tensor) -> None:
    """Restart the Adam moments of ``rows`` in every parameter group."""
    for g in model.optimizer.param_groups:
        st = model.optimizer.state.get(g["params"][0])
        for key in ("exp_avg", "exp_avg_sq"):
            if st and key in st:
                st[key][rows] = 0.0


@dataclass
class MCMCStrategy(DensifyStrategyBase):
    """3DGS-MCMC density control (Kheradmand et al. 2024), as gsplat's ``MCMCStrategy``:
    ``densify: {strategy: mcmc, max_gaussians: N}``.

    Every ``cfg.every`` steps in ``(cfg.start, cfg.stop)``:

    * **relocate**: Gaussians with opacity <= ``cfg.prune_opacity`` are dead; each is moved
      onto a live Gaussian drawn with probability proportional to opacity, and the source and
      its copies share its opacity and scale by :func:`relocation` (so the image does not
      change); Adam moments of the rows involved restart;
    * **add**: ``min(max_gaussians, 1.05 N) - N`` new Gaussians the same way (the set grows
      by 5% per refinement up to the hard cap).

    Every step: positions get noise ``lr_means * cfg.noise_lr * Sigma_i * eps`` (SGLD),
    gated by ``sigmoid(-100 (o_i - 0.005))`` so only near-transparent Gaussians wander.
    Nothing is pruned and opacities are never reset; pair it with the ``opacity`` and
    ``scale`` losses (weight 0.01 each, as 3DGS-MCMC) so unneeded Gaussians fade and are
    relocated where the image needs them. Frozen Gaussians are never moved or copied.
    """

    cfg: DensifyConfig = field(default_factory=DensifyConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        self._gen = torch.Generator().manual_seed(int(self.seed))

    def initialize_state(self, n: int = 0, device: "torch.device | str" = "cpu") -> dict[str, torch.Tensor]:
        return {}

    def step_post_backward(self, model: "GaussianModel", state: dict, render: RenderOutput,
                           step: int) -> DensifyReport:
        cfg = self.cfg
        report = DensifyReport(relocated=0, added=0, n=len(model))
        if cfg.start < step < cfg.stop and cfg.every > 0 and step % cfg.every == 0:
            report["relocated"] = self.relocate(model)
            report["added"] = self.add(model)
        if step < cfg.stop:
            self.inject_noise(model)
        report["n"] = len(model)
        return report

    # ------------------------------------------------------------------ operations
    def _draw(self, model: "GaussianModel", pool: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` row indices from ``pool`` with probability proportional to opacity."""
        w = torch.sigmoid(model.opacities.data[pool]).float().cpu()
        pick = torch.multinomial(w, n, replacement=True, generator=self._gen)
        return pool[pick.to(pool.device)]

    def _share(self, model: "GaussianModel", sampled: torch.Tensor, extra: torch.Tensor) -> None:
        """Give each sampled source (and so its copies) the relocated opacity and scale for
        ``1 + copies`` Gaussians; its Adam moments restart."""
        ratios = torch.bincount(sampled, minlength=len(model))[sampled] + 1 + extra
        op = torch.sigmoid(model.opacities.data[sampled])
        sc = torch.exp(model.scales.data[sampled])
        new_o, new_s = relocation(op, sc, ratios)
        new_o = new_o.clamp(self.cfg.prune_opacity, 1.0 - 1e-6)
        with torch.no_grad():
            model.opacities.data[sampled] = torch.log(new_o / (1.0 - new_o)).to(model.opacities.dtype)
            model.scales.data[sampled] = torch.log(new_s).to(model.scales.dtype)
        _zero_moments(model, sampled)

    def relocate(self, model: "GaussianModel") -> int:
        dev = model.device
        op = torch.sigmoid(model.opacities.data)
        dead = (op <= self.cfg.prune_opacity) & ~model.frozen
        alive = torch.nonzero(~dead & ~model.frozen, as_tuple=False)[:, 0]
        dead_idx = torch.nonzero(dead, as_tuple=False)[:, 0]
        n = int(dead_idx.numel())
        if n == 0 or alive.numel() == 0:
            return 0
        sampled = self._draw(model, alive, n)
        self._share(model, sampled, torch.zeros_like(sampled))
        with torch.no_grad():
            for name in GROUPS:
                p = model.raw[name]
                p.data[dead_idx] = p.data[sampled]
        _zero_moments(model, dead_idx)
        return n

    def add(self, model: "GaussianModel") -> int:
        n0 = len(model)
        target = min(int(self.cfg.max_gaussians), int(1.05 * n0))
        n = max(0, target - n0)
        pool = torch.nonzero(~model.frozen, as_tuple=False)[:, 0]
        if n == 0 or pool.numel() == 0:
            return 0
        sampled = self._draw(model, pool, n)
        self._share(model, sampled, torch.zeros_like(sampled))
        return model.append(_rows(model, sampled), frozen=False)

    @torch.no_grad()
    def inject_noise(self, model: "GaussianModel") -> None:
        lr = float(model.group("means")["lr"])
        op = torch.sigmoid(model.opacities.data)
        gate = torch.sigmoid(-100.0 * (op - 0.005)) * (~model.frozen).to(op.dtype)
        s = torch.exp(model.scales.data)
        R = quat_to_matrix(torch.nn.functional.normalize(model.quats.data, dim=-1))
        eps = torch.randn(model.means.shape, generator=self._gen).to(model.means)
        # Sigma eps = R S^2 R^T eps
        noise = torch.einsum("nij,nj->ni", R, s * s * torch.einsum("nji,nj->ni", R, eps))
        model.means.data.add_(noise * (gate * lr * self.cfg.noise_lr).unsqueeze(-1))
