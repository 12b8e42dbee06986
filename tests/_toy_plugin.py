"""A tiny stage plugin used by the foundation tests (registered by tests, never installed).

Stage ``count``: ``steps`` iterations of the shared trainer, each appending its index to
``trace`` (a file outside the run folder) so tests can see which steps ran in which
process, checkpointing every step; writes ``result.json`` with the final counter.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from fourreal_core import hookimpl
from fourreal_core.config import Component, InputFile, Ramp, component_default


@dataclass
class CountConfig:
    steps: int
    trace: str
    sleep: float = 0.0
    hold: Optional[str] = None  # while this file exists, step 1 waits (at most 120 s): a test holds a run open
    nan_at: Optional[int] = None  # the step whose loss is NaN (tests of the non-finite guard)
    weight: Ramp = field(default_factory=lambda: Ramp(1.0))
    deformer: Optional[Component("deformer")] = None  # type: ignore[valid-type]
    input: Optional[InputFile] = None  # a file the stage would read (checked by validate)
    extra_deformers: list[Component("deformer")] = field(  # type: ignore[valid-type]
        default_factory=lambda: [{"name": "shift", "params": {"amount": 0.5}}]
    )


@dataclass
class ShiftConfig:
    amount: float = 1.0


def make_shift(cfg: ShiftConfig):
    import torch

    from fourreal_core.interfaces import Deformation, Deformer

    class Shift(Deformer):
        def deform(self, means, time, quats=None):
            dx = torch.zeros_like(means)
            dx[:, 2] = cfg.amount * float(time)
            return Deformation(dx=dx, dq=torch.zeros(means.shape[0], 4))

    return Shift()


class CountStage:
    def __init__(self, cfg: CountConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        import torch

        from fourreal_core.io import write_json
        from fourreal_core.trainer import train

        counter = torch.zeros(1)

        def step(i):
            time.sleep(self.cfg.sleep)
            t0 = time.time()
            while i == 1 and self.cfg.hold and os.path.exists(self.cfg.hold) and time.time() - t0 < 120:
                time.sleep(0.05)
            with open(self.cfg.trace, "a") as f:
                f.write(f"{ctx.name}:{i}\n")
            counter.add_(self.cfg.weight.at(i))
            return {"loss": float("nan") if i == self.cfg.nan_at else 1.0 / (i + 1)}

        def state():
            return {"counter": counter}

        def load(t, meta):
            counter.copy_(t["counter"])

        train(ctx, self.cfg.steps, step, state, load, checkpoint_every=1)
        result = {"counter": float(counter.item())}
        if self.cfg.deformer is not None:  # build the named deformer and deform a few points
            deformer = self.cfg.deformer.build(ctx.registry)
            d = deformer.deform(torch.ones(2, 3), 0.5)
            result["deformed_dx"] = d.dx.tolist()
        write_json(ctx.out_dir / "result.json", result)


@hookimpl
def fourreal_register(registry):
    registry.add("stage", "count", CountStage, config=CountConfig, description="test stage: counts steps")
    registry.add("deformer", "shift", make_shift, config=ShiftConfig, description="test deformer: z += amount * t")
