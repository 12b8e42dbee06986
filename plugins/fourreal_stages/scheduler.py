"""The `stagewise` scheduler: named phases, exponential learning-rate decay.

It is built from a config whose phase lengths are already multiplied by the recipe's
``iterations_scale`` (the stage applies :func:`fourreal_core.config.scale_steps` to its whole
config once), so it never scales anything itself.
"""

from __future__ import annotations

from fourreal_core.interfaces import Phase, Scheduler

from .configs import StagewiseConfig
from .fit import exp_decay  # noqa: F401 (re-exported)


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
                      {"deform": p.deform, "frames": p.frames, "downscale": int(p.downscale)})
            )
            start += n

    @property
    def phases(self) -> list[Phase]:
        return self._phases

    def lr_at(self, group: str, step: int, base_lr: float) -> float:
        if group == "cameras":
            return exp_decay(step, self.total_steps, self.cfg.camera_lr, self.cfg.camera_lr_final)
        return base_lr
