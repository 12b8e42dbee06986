"""The training loop every optimisation stage shares: progress, logging, checkpoints, resume.

A stage supplies three callables::

    def step(i) -> dict[str, float]        # one iteration; returns metrics (loss, ...)
    def state() -> dict[str, Tensor]       # everything needed to resume (params, Adam moments, rng)
    def load(tensors, meta) -> None        # restore from state()

and :func:`train` runs ``step(i)`` for ``i`` in ``[start, total)``, where ``start`` is the
step after the last checkpoint of this stage (0 for a fresh run). Checkpoints are
safetensors written atomically every ``checkpoint_every`` steps and at the end.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Mapping, Optional

if TYPE_CHECKING:
    import torch

    from .run import StageContext

StepFn = Callable[[int], Mapping[str, float]]
StateFn = Callable[[], Mapping[str, "torch.Tensor"]]
LoadFn = Callable[[Mapping[str, "torch.Tensor"], dict], None]


def scaled_steps(steps: int, scale: float) -> int:
    """Iteration counts under ``iterations_scale`` (at least 1 when ``steps`` > 0)."""
    return 0 if steps <= 0 else max(1, int(round(steps * scale)))


def train(
    ctx: "StageContext",
    total: int,
    step: StepFn,
    state: StateFn,
    load: LoadFn,
    checkpoint_every: int = 500,
    log_every: int = 50,
    description: str = "",
    meta: Optional[Callable[[], dict]] = None,
) -> int:
    """Run (or resume) a training loop of ``total`` steps. Returns the first step run."""
    start = 0
    latest = ctx.checkpoints.latest(device=ctx.device)
    if latest is not None:
        done, tensors, saved_meta = latest
        load(tensors, saved_meta)
        start = min(done, total)
        ctx.log("resume", stage=ctx.name, step=start)
    last_metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    with ctx.progress(total, description, start=start) as bar:
        for i in range(start, total):
            metrics = {k: float(v) for k, v in step(i).items()}
            last_metrics = metrics
            bar.update(1, **metrics)
            if (i + 1) % log_every == 0 or i + 1 == total:
                ctx.log("train", stage=ctx.name, step=i + 1, **metrics)
            if (i + 1) % checkpoint_every == 0 or i + 1 == total:
                ctx.checkpoints.save(i + 1, state(), meta() if meta else {})
    ctx.log(
        "train_end", stage=ctx.name, steps=total - start, seconds=round(time.perf_counter() - t0, 3), **last_metrics
    )
    return start


def optimizer_tensors(opt: "torch.optim.Optimizer", prefix: str) -> dict[str, "torch.Tensor"]:
    """Flat ``name -> tensor`` view of an optimiser's per-parameter state (Adam moments,
    step counts) for safetensors checkpoints; param groups' hyper-parameters are not saved
    (schedules recompute them from the step)."""
    import torch

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
