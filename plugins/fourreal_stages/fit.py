"""The fitting engine the canonical and motion stages share (paper §3.3, §3.4, Appendix C).

A stage subclasses :class:`Fit` and declares only what differs -- which frames a step
samples (:meth:`Fit.sample`), how the Gaussians are deformed for it (:meth:`Fit.deform`),
what the video SDS losses see (:meth:`Fit.sds_context`), which extra modules train
(:meth:`Fit.modules`) and which densification strategies run (:meth:`Fit.strategies`).
:meth:`Fit.run` owns the rest, and drives it through :func:`fourreal_core.trainer.train`
(progress, logs, checkpoints, resume and the trainer's guards). Per step ``i``::

    phase = scheduler.phase_at(i)
    strategies' step_pre                      (growth start: freeze + spawn; growth end: unfreeze)
    view = sample(i, phase, rng)              (a frame: target, camera, deformer input)
    g0 = representation.params(i)             (canonical Gaussians)
    g, extra = deform(g0, view, phase)        (deformed Gaussians + loss inputs: deformation, ...)
    render = rasterizer.rasterize(g, view.camera)
    inputs = {render, target, canonical, step, gaussians_version, knn, ...}
             + sds inputs when an active loss requires render_video
    loss = sum over the phase's losses whose `requires` are present of weight.at(i) * loss(inputs)
    loss.backward()
    representation lr + optimizer_step   (if "gaussians" / "new_gaussians" in phase.train)
    each module's optimiser step          (if its group is in phase.train)
    strategies' step_post_backward        (densify / grow; bumps gaussians_version on change)

Losses are matched to inputs by their ``requires``: one that needs an input the stage never
provides is refused before training (one line naming the recipe path); one whose input is
absent on a step (``deformation`` in a ``deform: false`` phase) is skipped on that step.
kNN for the neighbourhood regularisers is computed once per change of the Gaussian set and
shared by every loss through ``inputs["knn"]`` (:class:`fourreal_losses.knn.SharedKNN`).

The stage's config has ``iterations_scale`` applied once, before anything is built from it
(:func:`fourreal_core.config.scale_steps`; every ``Steps`` field and every ramp).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch

from fourreal_core.errors import InputError
from fourreal_core.interfaces import DensifyStrategy, Deformer, GaussianParams, Loss, Phase
from fourreal_core.trainer import train
from fourreal_core.types import Cameras
from fourreal_media import psnr

#: inputs every step provides (a stage's :attr:`Fit.provides` adds its own)
BASE_INPUTS = ("render", "target", "canonical", "gaussians", "step", "gaussians_version", "knn", "background")
#: what the engine adds when an active loss requires ``render_video`` (video SDS)
SDS_INPUTS = ("render_video", "freeze_cameras", "canonical_view", "canonical_image",
              "reference_camera", "canonical_time", "sds_progress", "prompt", "rng", "sds_mode")


# ------------------------------------------------------------------------------ pieces
@dataclass
class View:
    """One training sample.

    Attributes:
        source: ``"reference"`` or ``"freeze_time"``.
        index: the frame's index in its video.
        target: ``[1,H,W,3]`` the frame.
        key: what the deformer gets: the frame index k (w_mv) or the time t (w_t).
        camera: its camera (``Cameras`` of 1), or None when :meth:`Fit.camera` makes it.
    """

    source: str
    index: int
    target: torch.Tensor
    key: "int | float"
    camera: Optional[Cameras] = None
    inputs: dict = field(default_factory=dict)


@dataclass
class Trainable:
    """A module the engine optimises with its own Adam when ``group`` is in the phase's
    ``train`` list and ``active(phase)`` holds; ``lr(step, total)`` sets its learning rate."""

    module: torch.nn.Module
    group: str
    lr: Callable[[int, int], float]
    active: Callable[[Phase], bool] = lambda phase: True
    optimizer: Optional[torch.optim.Optimizer] = None

    def build(self) -> None:
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=self.lr(0, 1)) if params else None


# ------------------------------------------------------------------- deformer contract
def setup_deformer(deformer: Any, spec: Any, *, num_frames: Optional[int], canonical: "int | float | None",
                   canonical_means: Optional[torch.Tensor], device: Any, where: str) -> Any:
    """Set a deformer up and check the :class:`~fourreal_core.interfaces.Deformer` contract
    (docs/plugins.md, "Deformers"): an ``nn.Module``, a :class:`Deformer`, ``setup`` with the
    documented keywords, and ``deform`` exactly zero at ``canonical``. Returns it on ``device``.
    Breaches end in one :class:`InputError` line naming ``where`` (the recipe path)."""
    name = getattr(spec, "name", type(deformer).__name__)
    doc = "see the Deformer contract in docs/plugins.md"
    if not isinstance(deformer, torch.nn.Module) or not isinstance(deformer, Deformer):
        missing = "a torch.nn.Module" if not isinstance(deformer, torch.nn.Module) else "a fourreal Deformer"
        raise InputError(f"{where}: deformer {name!r} is not {missing} ({type(deformer).__name__}); {doc}")
    try:
        deformer.setup(num_frames=num_frames, canonical=canonical, canonical_means=canonical_means)
    except TypeError as exc:
        if "canonical" in str(exc) or "unexpected keyword" in str(exc):
            raise InputError(
                f"{where}: deformer {name!r}: setup() must take keywords num_frames, canonical, canonical_means "
                f"(renamed: canonical_index -> canonical) ({exc}); {doc}"
            ) from None
        raise
    deformer = deformer.to(device)
    if canonical is not None and canonical_means is not None and len(canonical_means):
        x = canonical_means[:256].detach().to(device)
        q = torch.zeros(len(x), 4, device=device)
        q[:, 0] = 1.0
        with torch.no_grad():
            d = deformer.deform(x, canonical, quats=q)
        parts = [d.dx, d.dq] + ([d.ds] if d.ds is not None else [])
        if any(bool((p != 0).any()) for p in parts):
            kind = "frame index" if isinstance(canonical, int) else "time"
            raise InputError(
                f"{where}: deformer {name!r} is not zero at the canonical {kind} {canonical} "
                f"(deform(x, {canonical}) must return exactly zero offsets there); {doc}"
            )
    return deformer


#: per-pixel loss inputs ``[C,H,W,k]`` that follow the image size in a ``downscale`` phase
IMAGE_INPUTS = ("mask", "dynamic_mask")


def downscaled(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[C,H,W,k]`` images area-averaged to ``[C,height,width,k]``: each pixel the mean of the
    frame pixels it covers, as a render at that size integrates them (``fourreal_media.resize_frames``
    is bilinear and clamps to [0,1]); float masks become fractions, bool masks a majority."""
    if images.shape[1] == height and images.shape[2] == width:
        return images
    x = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2).float(), size=(height, width), mode="area")
    return x.permute(0, 2, 3, 1).to(images.dtype) if images.dtype.is_floating_point else x.permute(0, 2, 3, 1) > 0.5


# ---------------------------------------------------------------------------- engine
class Fit:
    """The shared fitting loop; see the module docstring. Subclasses set the attributes
    below in their ``__init__`` (after calling ``super().__init__``) and override hooks."""

    description = "fit"
    #: loss inputs this stage provides beyond :data:`BASE_INPUTS`
    provides: tuple[str, ...] = ()

    def __init__(self, ctx, *, model, scheduler, losses: Mapping[str, Loss], loss_specs: list,
                 background: torch.Tensor, checkpoint_every: int, prompt: str = "",
                 near_plane: Optional[float] = None, random_background: bool = False) -> None:
        from fourreal_losses.knn import SharedKNN

        from fourreal_formats.scene4d import with_near_plane

        self.ctx = ctx
        self.model = model
        self.scheduler = scheduler
        self.losses = dict(losses)
        self.loss_specs = {s.name: s for s in loss_specs}
        self.background = background
        self.random_background = bool(random_background)
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.prompt = prompt
        self.rasterizer = with_near_plane(ctx.rasterizer, near_plane)
        self.near_plane = near_plane
        self.total = scheduler.total_steps
        self.version = 0
        self.meta: dict = {}
        self.knn = SharedKNN()
        self.trainables: dict[str, Trainable] = {}
        self.strategy_states: dict[str, tuple[DensifyStrategy, dict]] = {}

    # ------------------------------------------------------------------- stage hooks
    def sample(self, i: int, phase: Phase, gen: torch.Generator) -> View:
        raise NotImplementedError

    def camera(self, view: View, phase: Phase) -> Cameras:
        return view.camera

    def deform(self, g0: GaussianParams, view: View, phase: Phase) -> tuple[GaussianParams, dict]:
        """Deformed Gaussians for ``view`` and the loss inputs that come with them."""
        return g0, {}

    def sds_context(self, g0: GaussianParams, i: int, gen: torch.Generator) -> tuple[dict, torch.Generator]:
        """What the video SDS losses read besides ``sds_progress`` / ``prompt`` / ``rng`` /
        ``sds_mode`` (see fourreal_losses.sds), and the generator they draw from."""
        raise NotImplementedError

    def modules(self) -> dict[str, Trainable]:
        return {}

    def strategies(self) -> dict[str, DensifyStrategy]:
        return {}

    def strategy_active(self, name: str, phase: Phase) -> bool:
        return True

    # ---------------------------------------------------------------------- helpers
    def check_losses(self) -> None:
        """Refuse, before training, a loss that needs an input this stage never provides."""
        offered = set(BASE_INPUTS) | set(self.provides) | set(SDS_INPUTS)
        phases = getattr(self.scheduler, "phases", None)
        named = {n for p in phases for n in p.losses} if phases is not None else None
        for name, loss in self.losses.items():
            src = getattr(self.loss_specs.get(name), "source", f"losses.{name}")
            if named is not None and name not in named:  # would silently never train
                raise InputError(
                    f"{src}: loss {name!r} is active in no phase of stage {self.ctx.name!r}; add it to the "
                    f"'losses' of the phases that should use it (scheduler.params.phases: "
                    f"{', '.join(p.name for p in phases)})"
                )
            missing = [r for r in getattr(loss, "requires", ()) if r not in offered]
            if missing:
                raise InputError(
                    f"{src}: loss {name!r} needs {', '.join(missing)}, which stage {self.ctx.name!r} does not "
                    f"provide (it provides: {', '.join(sorted(set(BASE_INPUTS) | set(self.provides)))})"
                )

    def weighted_loss(self, active: list[str], inputs: Mapping[str, Any], step: int):
        total = None
        parts: dict[str, float] = {}
        for name in active:
            loss = self.losses[name]
            weight = getattr(loss, "weight", None)
            w = 1.0 if weight is None else (weight.at(step) if hasattr(weight, "at") else float(weight))
            if w == 0.0:
                continue
            val = loss(inputs)
            parts[name] = float(val.detach())
            total = w * val if total is None else total + w * val
        if total is None:  # nothing active this step: keep the loop uniform
            total = inputs["render"].rgb.sum() * 0.0
        return total, parts

    def sds_inputs(self, g0: GaussianParams, phase: Phase, i: int, gen: torch.Generator, active: list[str]) -> dict:
        ctx_inputs, rng = self.sds_context(g0, i, gen)
        out = {**ctx_inputs,
               "sds_progress": (i - phase.start) / max(phase.end - phase.start - 1, 1),
               "prompt": self.prompt, "rng": rng}
        kinds = {getattr(self.losses[n], "mode", None) for n in active}
        if {"multiview", "temporal"} <= kinds:  # both kinds: alternate (paper D.1)
            from fourreal_losses.sds import alternate

            out["sds_mode"] = alternate(i, rng)
        return out

    # --------------------------------------------------------------------------- loop
    def step(self, i: int) -> dict:
        sched, model = self.scheduler, self.model
        phase = sched.phase_at(i)
        for sname, (strategy, state) in self.strategy_states.items():
            rep = strategy.step_pre(model, state, i)
            if rep:
                self.version += 1
                if isinstance(rep, dict) and rep.get("spawned"):
                    self.meta["spawned"] = int(rep["spawned"])
                    self.ctx.log("growth_spawn", stage=self.ctx.name, step=i, added=int(rep["spawned"]), n=len(model))
        gen = torch.Generator().manual_seed(self.ctx.seed * 1_000_003 + i)
        view = self.sample(i, phase, gen)
        g0 = model.params(i)
        g, extra = self.deform(g0, view, phase)
        cam = self.camera(view, phase)
        view_inputs, target = view.inputs, view.target
        ds = int(phase.downscale)
        if ds > 1:  # coarse-to-fine phase: the camera, the frame and its masks at 1/ds
            cam = cam.scaled(1.0 / ds)
            target = downscaled(target, cam.height, cam.width)
            view_inputs = {k: downscaled(v, cam.height, cam.width) if k in IMAGE_INPUTS and v is not None else v
                           for k, v in view_inputs.items()}
        bg = self.background
        if self.random_background:  # a fresh colour each step: transparency never matches the target
            bg = torch.rand(3, generator=gen).to(bg)
        out = self.rasterizer.rasterize(g, cam, background=bg, render_depth=False)
        inputs = {"render": out, "target": target, "canonical": g0, "gaussians": g, "step": i, "background": bg,
                  "gaussians_version": self.version, "knn": self.knn, **view_inputs, **extra}
        wanted = [n for n in phase.losses if n in self.losses]
        if any("render_video" in getattr(self.losses[n], "requires", ()) for n in wanted):
            inputs.update(self.sds_inputs(g0, phase, i, gen, wanted))
        active = [n for n in wanted if all(inputs.get(r) is not None for r in getattr(self.losses[n], "requires", ()))]
        loss, parts = self.weighted_loss(active, inputs, i)
        loss.backward()
        model.update_learning_rate(i, self.total)
        if "gaussians" in phase.param_groups or "new_gaussians" in phase.param_groups:
            model.optimizer_step()  # frozen rows (canonical, during growth) never move
        else:
            model.zero_grad()
        for tr in self.trainables.values():
            if tr.optimizer is None:
                continue
            if tr.group in phase.param_groups and tr.active(phase):
                for gp in tr.optimizer.param_groups:
                    gp["lr"] = tr.lr(i, self.total)
                tr.optimizer.step()
            tr.optimizer.zero_grad(set_to_none=True)
        for sname, (strategy, state) in self.strategy_states.items():
            if self.strategy_active(sname, phase) and strategy.step_post_backward(model, state, out, i):
                self.version += 1
        return {"loss": float(loss.detach()), "psnr": psnr(out.rgb, target), "n": len(model), **parts}

    # --------------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        s = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        s.update({f"model_opt.{k}": v for k, v in self.model.optimizer_state_dict().items()})
        for name, tr in self.trainables.items():
            s.update({f"{name}.{k}": v for k, v in tr.module.state_dict().items()})
            if tr.optimizer is not None:
                s.update(optimizer_tensors(tr.optimizer, f"{name}_opt."))
        for name, (strategy, state) in self.strategy_states.items():
            s.update({f"{name}.{k}": v for k, v in strategy.state_dict(state).items()})
        return s

    def load(self, t: Mapping[str, torch.Tensor], meta: dict) -> None:
        def sub(prefix: str) -> dict:
            return {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}

        self.model.load_state_dict(sub("model."))
        self.model.load_optimizer_state_dict(sub("model_opt."))
        for name, tr in self.trainables.items():
            tr.module.load_state_dict(sub(f"{name}."))
            if tr.optimizer is not None:
                load_optimizer_tensors(tr.optimizer, t, f"{name}_opt.")
        for name, (strategy, state) in self.strategy_states.items():
            strategy.load_state_dict(state, sub(f"{name}."))
        self.version = int(meta.get("version", 0))
        self.meta.update({k: v for k, v in meta.items() if k != "version"})

    # ---------------------------------------------------------------------------- run
    def run(self, before: Optional[Callable[[int], None]] = None) -> int:
        """Train (or resume) all ``scheduler.total_steps`` steps through
        :func:`fourreal_core.trainer.train`; returns the first step run. ``before(start)`` runs
        after resuming, before the first step (the motion stage's track initialisation, which a
        resumed run does not repeat)."""
        self.check_losses()
        self.trainables = self.modules()
        for tr in self.trainables.values():
            tr.build()
        dev = self.ctx.device
        self.strategy_states = {n: (s, s.initialize_state(len(self.model), dev)) for n, s in self.strategies().items()}
        try:
            return train(self.ctx, self.total, self.step, self.state, self.load, checkpoint_every=self.checkpoint_every,
                         description=self.description, meta=lambda: {"version": self.version, **self.meta},
                         before=before)
        finally:
            for strategy, state in self.strategy_states.values():
                strategy.step_end(self.model, state)


# ------------------------------------------------------------ optimiser checkpoints
def optimizer_tensors(opt: "torch.optim.Optimizer", prefix: str) -> dict[str, "torch.Tensor"]:
    """Flat ``name -> tensor`` view of an optimiser's per-parameter state (Adam moments,
    step counts) for safetensors checkpoints; param groups' hyper-parameters are not saved
    (schedules recompute them from the step)."""
    out: dict[str, torch.Tensor] = {}
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            for k, v in opt.state.get(p, {}).items():
                out[f"{prefix}{gi}.{pi}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def load_optimizer_tensors(opt: "torch.optim.Optimizer", tensors: Mapping[str, "torch.Tensor"], prefix: str) -> None:
    """Restore what :func:`optimizer_tensors` saved into an optimiser over the same params."""
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            key = f"{prefix}{gi}.{pi}."
            state = {n[len(key):]: t.to(p.device) for n, t in tensors.items() if n.startswith(key)}
            if state:
                if "step" in state:
                    state["step"] = state["step"].cpu().float()
                opt.state[p] = state
