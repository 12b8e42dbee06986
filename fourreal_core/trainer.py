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


class DivergedError(FourRealError):
    """Training stayed finite but ran away (the Gaussians flew off, the loss exploded): the
    stage stops before publishing, its checkpoints never hold the diverged state."""


#: Divergence thresholds (:class:`DivergenceGuard`), from measured runs (their numbers:
#: docs/runs.md, "Divergence"). PSNR: a step is "collapsed" when it is more than COLLAPSE_DB
#: under the best of the first EARLY_STEPS steps (the best so far, during them); the stage has
#: diverged when COLLAPSE_STEPS (or a quarter of the stage, if more) consecutive steps
#: collapsed, or the stage ends with at least END_COLLAPSE_STEPS (or a tenth of the stage) of
#: them. Loss: over LOSS_FACTOR x the smallest loss of the first EARLY_STEPS steps on
#: LOSS_STEPS of the last LOSS_WINDOW steps.
EARLY_STEPS = 10
COLLAPSE_DB = 6.0
COLLAPSE_STEPS = 150
END_COLLAPSE_STEPS = 50
LOSS_FACTOR = 100.0
LOSS_WINDOW = 40
LOSS_STEPS = 20
CAUSE = "a learning rate too high? e.g. the Gaussians' means_lr or a deformer's lr"


class DivergenceGuard:
    """Watches the ``psnr`` and ``loss`` metrics a stage's steps return (either may be
    absent) and says when the run has diverged while staying finite; see the thresholds above.
    :meth:`suspect` is true while the latest steps look diverged (a collapsed PSNR or a loss
    spike): :func:`train` writes no checkpoint then, so the last checkpoint kept is a good one."""

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.collapse_steps = max(COLLAPSE_STEPS, self.total // 4)
        self.end_steps = max(END_COLLAPSE_STEPS, self.total // 10)
        self.seen = 0
        self.level: Optional[float] = None  # best PSNR of the first EARLY_STEPS steps
        self.loss0: Optional[float] = None  # smallest loss of the first EARLY_STEPS steps
        self.run = 0  # consecutive collapsed steps
        self.run_since: Optional[int] = None
        self.spikes: list[bool] = []

    def update(self, step: int, metrics: Mapping[str, float]) -> Optional[str]:
        """Record step ``step``'s metrics; the reason (a phrase) when the run has diverged."""
        self.seen += 1
        psnr, loss = metrics.get("psnr"), metrics.get("loss")
        early = self.seen <= EARLY_STEPS
        if psnr is not None and math.isfinite(psnr):
            if early:  # the level is the best so far, so an early collapse counts too
                self.level = psnr if self.level is None else max(self.level, psnr)
            if psnr < self.level - COLLAPSE_DB:
                self.run += 1
                self.run_since = step if self.run == 1 else self.run_since
            else:
                self.run = 0
        if loss is not None and math.isfinite(loss):
            if early:
                self.loss0 = loss if self.loss0 is None else min(self.loss0, loss)
            elif self.loss0 is not None and self.loss0 > 0:
                self.spikes = (self.spikes + [loss > LOSS_FACTOR * self.loss0])[-LOSS_WINDOW:]
        if self.run >= self.collapse_steps:
            return self._collapse()
        if sum(self.spikes) >= LOSS_STEPS:
            return (f"the loss rose over {LOSS_FACTOR:g}x its early {self.loss0:.3g} on {sum(self.spikes)} of the "
                    f"last {len(self.spikes)} steps (now {loss:.3g})")
        return None

    def _collapse(self) -> str:
        return (f"the training PSNR has stayed more than {COLLAPSE_DB:g} dB under its early {self.level:.1f} dB "
                f"for {self.run} steps (since step {self.run_since})")

    def at_end(self) -> Optional[str]:
        """The reason when the stage ends inside a long collapse, else None."""
        return self._collapse() if self.run >= self.end_steps else None

    def suspect(self) -> bool:
        return self.run > 0 or any(self.spikes[-LOSS_STEPS:])


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
    before: Optional[Callable[[int], None]] = None,
) -> int:
    """Run (or resume) a training loop of ``total`` steps. Returns the first step run.

    ``before(start)``, when given, runs once after resuming and before the first step, with the
    step the loop starts from (0 for a fresh run or one whose checkpoints were all discarded):
    work that only a run from scratch needs (an initialisation) is skipped on a resume.

    Guards every stage inherits: the metrics of every step and every trained tensor (all of
    ``state()``) at each log interval, before each checkpoint and at the end must be finite,
    else :class:`NonFiniteError` stops the stage (nothing published, no checkpoint written).
    A checkpoint that does not load into this stage (wrong keys or shapes), is truncated or
    holds NaN falls back to the previous one; discarding one, or restarting from step 0
    after discarding, is said in one line (``ctx.notice``).

    A run that diverges while staying finite (:class:`DivergenceGuard`: the training PSNR
    collapsing far under its early level and staying there, or the loss rising by orders of
    magnitude) stops with :class:`DivergedError` naming the stage, the step and the likely
    cause; a checkpoint is not written while the steps look diverged (it waits for the first
    step that does not), so the last one kept is the last good one."""
    start = _resume(ctx, total, load, state)
    if before is not None:
        before(start)
    guard = DivergenceGuard(total - start)
    last_saved: Optional[int] = start if start else None
    pending = False
    last_metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    with ctx.progress(total, description, start=start) as bar:
        for i in range(start, total):
            inject("train_step", i)
            metrics = {k: float(v) for k, v in step(i).items()}
            check_finite(ctx, i + 1, metrics)
            why = guard.update(i + 1, metrics)
            if why is None and i + 1 == total:
                why = guard.at_end()
            if why is not None:
                kept = f"the last good checkpoint is step {last_saved}" if last_saved else "no checkpoint was kept"
                raise DivergedError(f"{ctx.name} step {i + 1}: training diverged: {why} ({CAUSE}); {kept}")
            last_metrics = metrics
            bar.update(1, **metrics)
            logging = (i + 1) % log_every == 0 or i + 1 == total
            # a checkpoint due while the steps look diverged waits for the first step that does not
            pending = pending or (i + 1) % checkpoint_every == 0
            saving = i + 1 == total or (pending and not guard.suspect())
            if logging or saving:
                tensors = state()
                check_finite(ctx, i + 1, {}, tensors)
                if logging:
                    ctx.log("train", stage=ctx.name, step=i + 1, **metrics)
                if saving:
                    ctx.checkpoints.save(i + 1, tensors, meta() if meta else {})
                    last_saved, pending = i + 1, False
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
