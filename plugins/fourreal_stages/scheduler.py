"""The `stagewise` scheduler: named phases in order.

It is built from a config whose phase lengths are already multiplied by the recipe's
``iterations_scale`` (the stage applies :func:`fourreal_core.config.scale_steps` to its whole
config once), so it never scales anything itself.
"""

from __future__ import annotations

from fourreal_core.interfaces import Phase, Scheduler

from .configs import StagewiseConfig


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
