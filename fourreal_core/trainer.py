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

import math
import time
from typing import TYPE_CHECKING, Callable, Mapping, Optional

from .errors import FourRealError
from .faults import inject

if TYPE_CHECKING:
    import torch

    from .run import StageContext

StepFn = Callable[[int], Mapping[str, float]]
StateFn = Callable[[], Mapping[str, "torch.Tensor"]]
LoadFn = Callable[[Mapping[str, "torch.Tensor"], dict], None]


class NonFiniteError(FourRealError):
    """Training produced NaN/inf: the stage stops before publishing or checkpointing it."""


#: How trained tensors are named to the user, by checkpoint-key prefix (the fitting engine's
#: convention: ``model.`` the Gaussians, ``model_opt.`` their Adam moments).
TENSOR_NAMES = {"model.": "Gaussian {}", "model_opt.": "Adam state of the Gaussians' {}"}


def describe_tensor(key: str) -> str:
    for prefix, fmt in TENSOR_NAMES.items():
        if key.startswith(prefix):
            return fmt.format(key[len(prefix):].split(".")[0])
    return f"tensor {key!r}"


def first_non_finite(tensors: Mapping[str, "torch.Tensor"]) -> Optional[str]:
    """The first floating-point tensor holding NaN or inf, by name, or None."""
    import torch

    for k, v in tensors.items():
        if torch.is_tensor(v) and v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all()):
            return k
    return None


def check_finite(ctx: "StageContext", step: int, metrics: Mapping[str, float],
                 tensors: Optional[Mapping[str, "torch.Tensor"]] = None) -> None:
    """Raise :class:`NonFiniteError` naming the stage, the step and the value."""
    for k, v in metrics.items():
        if not math.isfinite(v):
            raise NonFiniteError(
                f"{ctx.name} step {step}: the {k} became non-finite ({v}) (learning rate too high, or a loss "
                "weight/input out of range?); nothing from this step was saved"
            )
    if tensors is not None:
        bad = first_non_finite(tensors)
        if bad is not None:
            raise NonFiniteError(
                f"{ctx.name} step {step}: {describe_tensor(bad)} became non-finite (learning rate too high?); "
                "nothing from this step was saved"
            )


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
    """Run (or resume) a training loop of ``total`` steps. Returns the first step run.

    Guards every stage inherits: the metrics of every step and every trained tensor (all of
    ``state()``) at each log interval, before each checkpoint and at the end must be finite,
    else :class:`NonFiniteError` stops the stage (nothing published, no checkpoint written).
    A checkpoint that does not load into this stage (wrong keys or shapes), is truncated or
    holds NaN falls back to the previous one; discarding one, or restarting from step 0
    after discarding, is said in one line (``ctx.notice``)."""
    start = _resume(ctx, total, load, state)
    last_metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    with ctx.progress(total, description, start=start) as bar:
        for i in range(start, total):
            inject("train_step", i)
            metrics = {k: float(v) for k, v in step(i).items()}
            check_finite(ctx, i + 1, metrics)
            last_metrics = metrics
            bar.update(1, **metrics)
            logging = (i + 1) % log_every == 0 or i + 1 == total
            saving = (i + 1) % checkpoint_every == 0 or i + 1 == total
            if logging or saving:
                tensors = state()
                check_finite(ctx, i + 1, {}, tensors)
                if logging:
                    ctx.log("train", stage=ctx.name, step=i + 1, **metrics)
                if saving:
                    ctx.checkpoints.save(i + 1, tensors, meta() if meta else {})
    ctx.log(
        "train_end", stage=ctx.name, steps=total - start, seconds=round(time.perf_counter() - t0, 3), **last_metrics
    )
    return start


def _resume(ctx: "StageContext", total: int, load: LoadFn, state: StateFn) -> int:
    store = ctx.checkpoints
    discarded: list[str] = []
    found_any = False
    initial = None
    for done, tensors, saved_meta, path in store.candidates(device=ctx.device):
        if initial is None:
            initial = dict(state())  # to undo a load that failed half-way
        found_any = True
        try:
            load(tensors, saved_meta)
        except (KeyError, RuntimeError, ValueError, IndexError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            discarded.append(f"{path.name} (does not fit this stage: {first[:120]})")
            continue
        discarded = [f"{n} ({why})" for n, why in getattr(store, "rejected", [])] + discarded
        if discarded:
            ctx.notice(f"discarded checkpoint(s) {'; '.join(discarded)}; resuming from step {done}")
        start = min(done, total)
        ctx.log("resume", stage=ctx.name, step=start)
        return start
    discarded = [f"{n} ({why})" for n, why in getattr(store, "rejected", [])] + discarded
    if initial is not None:
        load(initial, {})
    if discarded or found_any:
        ctx.notice(f"discarded checkpoint(s) {'; '.join(discarded)}; restarting from step 0")
        ctx.log("restart", stage=ctx.name, step=0)
    return 0


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
