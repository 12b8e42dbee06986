"""The `stagewise` scheduler: named phases in order, and its config -- the phases, which the
canonical and motion stages share (their defaults, :func:`canonical_phases` and
:func:`motion_phases`, follow the paper's Appendix C; :func:`check_phases` checks a stage's
phases against its losses and parameter groups at validation).

`iterations_scale` in the recipe multiplies every phase length and every other step count
(each is typed ``Steps``): the stage applies :func:`fourreal_core.config.scale_steps` to its
whole config once, before building anything, so the scheduler never scales anything itself.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

from fourreal_core.config import ConfigValueError, Steps
from fourreal_core.interfaces import Phase, Scheduler


@dataclass
class PhaseConfig:
    """One named phase of a training stage.

    losses: labels of the stage's losses active in this phase (a loss's label is its name).
    train: parameter groups optimised: ``gaussians`` (every Gaussian attribute), ``new_gaussians``
        (only Gaussians added in this stage; the rest frozen), ``deformer`` (the stage's
        deformation field: w_mv in the canonical stage, w_t in the motion stage), ``cameras``.
    deform: apply the stage's deformation field in this phase.
    densify: run Gaussian densification (3DGS clone/split/prune) in this phase.
    grow: this phase grows new Gaussians (paper D.2, the motion stage only; at most one phase):
        spawned where the frozen Gaussians' view-space gradients are high, pruned at
        ``growth_opacity``. Recipes written before the flag: when no phase sets it, a phase
        *named* ``growth`` grows, as it always did.
    frames: which training frames to sample: ``all``, ``reference`` or ``freeze_time`` (the
        motion stage; the canonical stage always samples the freeze-time video).
    iterations: the phase's length; 0 skips the phase (a negative count is refused).
    downscale: render and supervise at 1/downscale of the frames' size (cameras scaled, frames
        and masks area-averaged): a coarse-to-fine start, as splatfacto's ``num_downscales`` /
        ``resolution_schedule``, at about 1/downscale^2 of the rasterizer's cost per step.
        Densification statistics are in normalised image units, so thresholds still hold.
    """

    name: str
    iterations: Steps
    losses: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=lambda: ["gaussians"])
    deform: bool = True
    densify: bool = False
    frames: Literal["all", "reference", "freeze_time"] = "all"
    downscale: int = 1
    grow: bool = False

    def __post_init__(self) -> None:
        if int(self.iterations) < 0:
            raise ConfigValueError("iterations", f"must be >= 0 (0 skips the phase), got {self.iterations}")
        if int(self.downscale) < 1:
            raise ValueError(f"downscale must be an integer >= 1, got {self.downscale}")


@dataclass
class StagewiseConfig:
    """Named phases run in order. (Learning rates come from the configs of what they train --
    the Gaussians, the deformer, the canonical stage's ``camera_lr`` -- and decay log-linearly
    over the whole stage; paper D.4.)"""

    phases: list[PhaseConfig] = field(default_factory=list)
    camera_lr: Any = None  # moved to the canonical stage's params: kept only to say so
    camera_lr_final: Any = None

    def __post_init__(self) -> None:
        for key in ("camera_lr", "camera_lr_final"):
            if getattr(self, key) is not None:
                raise ConfigValueError(key, "moved to the canonical stage's params (the stage owns the cameras): "
                                            f"write `{key}:` beside `refine_cameras:`")


def canonical_phases() -> list[dict]:
    """Paper Appendix C.1 (global iteration counts): warm-up 3,000 its without deformation;
    then per-frame deformation + Gaussians for 20,000 its with growth until iteration 15,000
    and multi-view SDS from 15,000 (active when an SDS loss is configured) -- 23k in all, 8k of
    SDS. §4's "20k per stage, SDS in the last 5k" reads these counts as global (3k + 12k + 5k);
    recipes/4real.yaml follows that, the defaults keep what the CPU recipes were measured on
    (docs/pipeline.md, "Schedules vs the paper")."""
    return [
        {"name": "warmup", "iterations": 3000, "losses": ["l1"], "train": ["gaussians"], "deform": False,
         "densify": True},
        {"name": "deform_grow", "iterations": 12000, "losses": ["l1", "small_motion"],
         "train": ["gaussians", "deformer", "cameras"], "deform": True, "densify": True},
        {"name": "deform_sds", "iterations": 8000, "losses": ["l1", "small_motion", "sds_multiview"],
         "train": ["gaussians", "deformer", "cameras"], "deform": True, "densify": False},
    ]


def motion_phases() -> list[dict]:
    """Paper Appendix C.2: (a) motion only on the reference video, 10,000 its, Gaussians frozen;
    (b) growth of new Gaussians only, 5,000 its, canonical frozen (tau_alpha = 1e-2);
    (c) joint fine-tuning on all frames until iteration 35,000; (d) + temporal and multi-view
    SDS for the last 5,000 its -- 40k in all. Read as global counts after the canonical stage's
    20k, as §4's "20k per stage" implies, (c) and (d) are one 5k phase (35k-40k): recipes/4real.yaml
    follows that (docs/pipeline.md, "Schedules vs the paper")."""
    regs = ["norm", "diff", "rigid", "rot"]
    return [
        {"name": "motion", "iterations": 10000, "losses": ["align", *regs], "train": ["deformer"],
         "frames": "reference"},
        {"name": "growth", "iterations": 5000, "losses": ["align", *regs], "train": ["new_gaussians", "deformer"],
         "grow": True, "densify": True, "frames": "reference"},
        {"name": "joint", "iterations": 20000, "losses": ["align", *regs], "train": ["gaussians", "deformer"],
         "frames": "all"},
        {"name": "joint_sds", "iterations": 5000, "losses": ["align", *regs, "sds_temporal", "sds_multiview"],
         "train": ["gaussians", "deformer"], "frames": "all"},
    ]


def scheduler_default(phases: list[dict]) -> Any:
    return field(default_factory=lambda: {"name": "stagewise", "params": {"phases": phases}})


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_phases(cfg: Any, registry: Any, stage: str, groups: tuple[str, ...], grows: bool = False) -> None:
    """Refuse, at validation, a phase list that would train something other than what was
    written: a loss name that is neither one of the stage's ``losses`` nor a registered loss
    (a phase may name a registered loss the stage leaves out: it is active when configured, as
    the default phases name ``sds_multiview``), a ``train`` group the stage does not have
    (``groups``), ``grow: true`` in a stage that does not grow (``grows``) or on two phases,
    no phase with iterations, a phase naming none of the stage's losses (it would
    train on nothing), and a configured loss that no phase names (it would never act; :meth:`fourreal_stages.fit.Fit.check_losses` refuses it again at run time).
    Paths in the :class:`ConfigValueError` are relative to the stage's params."""
    phases = getattr(getattr(cfg.scheduler, "params", None), "phases", None)
    if phases is None:  # another scheduler: its own config checks itself
        return
    base = "scheduler.params.phases"
    configured = [getattr(s, "name", str(s)) for s in cfg.losses]
    registered = list(registry.names("loss")) if registry is not None else []
    known = configured + [n for n in registered if n not in configured]
    for i, p in enumerate(phases):
        for j, name in enumerate(p.losses):
            if name not in known:
                hint = _did_you_mean(name, known) or (
                    f" (stage {stage!r} has the losses {', '.join(configured) or 'none'}; registered losses: "
                    f"{', '.join(registered) or 'none'})")
                raise ConfigValueError(f"{base}[{i}].losses[{j}]", f"unknown loss {name!r}{hint}")
        for j, group in enumerate(p.train):
            if group not in groups:
                hint = _did_you_mean(group, list(groups)) or f" (stage {stage!r} trains: {', '.join(groups)})"
                raise ConfigValueError(f"{base}[{i}].train[{j}]", f"unknown parameter group {group!r}{hint}")
    growing = [i for i, p in enumerate(phases) if getattr(p, "grow", False)]
    if growing and not grows:
        raise ConfigValueError(f"{base}[{growing[0]}].grow",
                               f"stage {stage!r} does not grow new Gaussians (the motion stage does); remove 'grow'")
    if len(growing) > 1:
        raise ConfigValueError(f"{base}[{growing[1]}].grow",
                               f"only one phase may grow; phase {phases[growing[0]].name!r} already does")
    running = [p for p in phases if int(p.iterations) > 0]
    if not running:
        raise ConfigValueError(base, f"no phase has iterations > 0: stage {stage!r} would train nothing")
    for i, p in enumerate(phases):
        if int(p.iterations) > 0 and not any(n in configured for n in p.losses):
            raise ConfigValueError(
                f"{base}[{i}].losses",
                f"phase {p.name!r} names no loss of stage {stage!r} ("
                + (f"it names {', '.join(p.losses)}; " if p.losses else "")
                + f"the stage has {', '.join(configured) or 'none'}), so it would train on nothing; name one "
                "of the stage's losses, or add the loss to its 'losses'")
    named = {n for p in running for n in p.losses}
    for k, spec in enumerate(cfg.losses):
        name = getattr(spec, "name", str(spec))
        if name not in named:  # would silently never train
            raise ConfigValueError(
                f"losses[{k}]",
                f"loss {name!r} is active in no phase of stage {stage!r}; add it to the 'losses' of the phases "
                f"that should use it (scheduler.params.phases: {', '.join(p.name for p in running)})")


class StagewiseScheduler(Scheduler):
    """Phases in order, each ``iterations`` long (phases of 0 iterations are skipped)."""

    def __init__(self, cfg: StagewiseConfig) -> None:
        self.cfg = cfg
        self._phases: list[Phase] = []
        start = 0
        for p in cfg.phases:
            n = int(p.iterations)
            if n <= 0:
                continue
            self._phases.append(
                Phase(p.name, start, start + n, tuple(p.losses), tuple(p.train), p.densify,
                      deform=p.deform, frames=p.frames, downscale=int(p.downscale), grow=p.grow)
            )
            start += n

    @property
    def phases(self) -> list[Phase]:
        return self._phases
