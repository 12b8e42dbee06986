"""The `stagewise` scheduler: named phases, exponential learning-rate decay."""

from __future__ import annotations

import math

from fourreal_core.interfaces import Phase, Scheduler
from fourreal_core.trainer import scaled_steps

from .configs import StagewiseConfig


def exp_decay(step: int, total: int, lr0: float, lr1: float) -> float:
    """Log-linear interpolation from lr0 at step 0 to lr1 at step ``total`` (3DGS style)."""
    if total <= 0 or lr0 <= 0 or lr1 <= 0:
        return lr0
    f = min(max(step / total, 0.0), 1.0)
    return math.exp(math.log(lr0) * (1 - f) + math.log(lr1) * f)


class StagewiseScheduler(Scheduler):
    """Phases in order, each ``iterations * iterations_scale`` long (at least 1)."""

    def __init__(self, cfg: StagewiseConfig, iterations_scale: float = 1.0) -> None:
        self.cfg = cfg
        self.phases: list[Phase] = []
        start = 0
        for p in cfg.phases:
            n = scaled_steps(p.iterations, iterations_scale)
            if n == 0:
                continue
            self.phases.append(
                Phase(p.name, start, start + n, tuple(p.losses), tuple(p.train), p.densify,
                      {"deform": p.deform, "frames": p.frames})
            )
            start += n
        self._total = start

    def with_iterations_scale(self, scale: float) -> "StagewiseScheduler":
        return StagewiseScheduler(self.cfg, scale)

    @property
    def total_steps(self) -> int:
        return self._total

    def phase_at(self, step: int) -> Phase:
        for p in self.phases:
            if p.start <= step < p.end:
                return p
        return self.phases[-1]

    def phase_named(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    def lr_at(self, group: str, step: int, base_lr: float) -> float:
        if group == "cameras":
            return exp_decay(step, self._total, self.cfg.camera_lr, self.cfg.camera_lr_final)
        return base_lr
