"""Run folders, the stage runner and what a stage sees (:class:`StageContext`).

Layout of a run folder::

    RUN/
      recipe.yaml          the fully resolved recipe (runnable again as it is)
      run.json             fingerprint of the recipe + which stages finished
      log.jsonl            one JSON object per event (stage start/end, losses, metrics)
      stages/01_NAME/      each finished stage's outputs (moved into place atomically)
      checkpoints/01_NAME/ mid-stage checkpoints (safetensors) of the running stage

A stage writes into ``ctx.out_dir`` (``stages/.01_NAME.partial``); when its ``run``
returns, the runner renames it to ``stages/01_NAME`` -- a stage is complete exactly when
its folder exists. Rerunning the same recipe on the same folder skips complete stages
and a training stage resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from .errors import RunDirError
from .io import load_tensors, save_tensors, write_json, write_text

if TYPE_CHECKING:
    import torch

    from .recipe import Recipe
    from .registry import Registry


class RunLog:
    """Append-only JSON-lines log (``log.jsonl``); one line per event, flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, event: str, **fields: Any) -> None:
        rec = {"time": round(time.time(), 3), "event": event, **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    try:
        return float(obj)
    except Exception:
        return str(obj)


class CheckpointStore:
    """Mid-stage checkpoints as safetensors in ``checkpoints/NN_stage/``.

    ``save(step, tensors, meta)`` writes ``step_{step:08d}.safetensors`` atomically and
    keeps the newest ``keep``; ``latest()`` returns ``(step, tensors, meta)`` or None.
    ``meta`` values must be JSON-serialisable; they round-trip as JSON.
    """

    def __init__(self, folder: Path, keep: int = 2) -> None:
        self.folder = folder
        self.keep = keep

    def save(self, step: int, tensors: Mapping[str, "torch.Tensor"], meta: Optional[dict] = None) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step_{step:08d}.safetensors"
        save_tensors(path, tensors, {"step": str(step), "meta": json.dumps(meta or {})})
        for old in sorted(self.folder.glob("step_*.safetensors"))[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def latest(self, device: Any = "cpu") -> Optional[tuple[int, dict, dict]]:
        files = sorted(self.folder.glob("step_*.safetensors")) if self.folder.exists() else []
        for path in reversed(files):
            try:
                tensors, meta = load_tensors(path, device=device)
            except Exception:  # a truncated file from a crash: fall back to the previous one
                continue
            return int(meta.get("step", 0)), tensors, json.loads(meta.get("meta", "{}"))
        return None

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class StageContext:
    """Everything a stage may use. Stages must not write outside ``out_dir``/``checkpoints``.

    Attributes:
        name: the stage's name in the recipe (e.g. ``canonical``).
        index: 1-based position among the recipe's stages.
        run_dir: the run folder.
        out_dir: where this stage writes its outputs (renamed into place when it finishes).
        recipe_dir: folder of the recipe file (relative input paths resolve against it).
        device: the torch device chosen by ``--device``.
        seed: the recipe's seed.
        iterations_scale: global multiplier for iteration counts (CPU recipes use < 1).
        checkpoints: mid-stage checkpoint store for this stage.
        log: ``ctx.log(event, **fields)`` appends to ``log.jsonl``.
        registry: the plugin registry (to build nested components).
        rasterizer_spec: the recipe's top-level rasterizer component (``ctx.rasterizer``
            builds it once).
    """

    name: str
    index: int
    run_dir: Path
    out_dir: Path
    recipe_dir: Path
    device: "torch.device"
    seed: int
    iterations_scale: float
    checkpoints: CheckpointStore
    log: RunLog
    registry: "Registry"
    rasterizer_spec: Any = None
    stage_dirs: dict = field(default_factory=dict)
    _rasterizer: Any = None

    def stage_dir(self, name: str) -> Path:
        """Output folder of an earlier, finished stage, by its recipe name."""
        try:
            return self.stage_dirs[name]
        except KeyError:
            raise RunDirError(
                f"stage {self.name!r} needs the outputs of stage {name!r}, which is not an earlier "
                f"stage of this recipe (earlier: {', '.join(self.stage_dirs) or 'none'})"
            ) from None

    def find_output(self, filename: str) -> Optional[Path]:
        """The newest earlier stage's ``filename`` (e.g. ``canonical.ply``), or None."""
        for d in reversed(list(self.stage_dirs.values())):
            if (d / filename).exists():
                return d / filename
        return None

    @property
    def rasterizer(self):
        if self._rasterizer is None:
            self._rasterizer = self.rasterizer_spec.build(self.registry)
        return self._rasterizer

    def resolve(self, path: str | os.PathLike) -> Path:
        """An input path from the recipe, relative to the recipe's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.recipe_dir / p)

    def progress(self, total: int, description: str = "", start: int = 0) -> "Progress":
        """A rich progress bar: ``with ctx.progress(n, 'fit') as bar: bar.update(loss=...)``."""
        return Progress(total, f"{self.index}:{self.name}" + (f" {description}" if description else ""), start)


class Progress:
    """Rich progress bar with iteration, metrics (loss, PSNR...) and it/s.
    ``update(advance=1, **metrics)`` advances and shows the metrics."""

    def __init__(self, total: int, description: str, start: int = 0) -> None:
        self.total = total
        self.description = description
        self.start = start
        self._progress = None
        self._task = None

    def __enter__(self) -> "Progress":
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress as RichProgress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
            disable=bool(os.environ.get("FOURREAL_NO_PROGRESS")),
        )
        self._progress.__enter__()
        self._task = self._progress.add_task(
            self.description, total=self.total, completed=self.start, metrics="", rate=""
        )
        self._t0 = time.perf_counter()
        self._n = 0
        return self

    def update(self, advance: int = 1, /, **metrics: float) -> None:
        n = advance
        self._n += n
        dt = time.perf_counter() - self._t0
        rate = f"{self._n / dt:.1f} it/s" if dt > 0 else ""
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        self._progress.update(self._task, advance=n, metrics=text, rate=rate)

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)


# ------------------------------------------------------------------------------ runner
def recipe_fingerprint(resolved_yaml: str) -> str:
    return hashlib.sha256(resolved_yaml.encode()).hexdigest()[:16]


def stage_folder_name(index: int, name: str) -> str:
    return f"{index:02d}_{name}"


class RunDir:
    """A run folder bound to one resolved recipe."""

    def __init__(self, path: Path, resolved_yaml: str, recipe_name: str, fingerprint: str) -> None:
        self.path = Path(path)
        self.resolved_yaml = resolved_yaml
        self.fingerprint = fingerprint
        self.recipe_name = recipe_name

    def open(self) -> None:
        """Create the folder, or check an existing one holds this same recipe's run."""
        run_json = self.path / "run.json"
        if self.path.exists() and any(self.path.iterdir()):
            if not run_json.exists():
                raise RunDirError(
                    f"{self.path}: folder is not empty and holds no fourreal run; "
                    "choose another --out (nothing was overwritten)"
                )
            info = json.loads(run_json.read_text())
            if info.get("fingerprint") != self.fingerprint:
                raise RunDirError(
                    f"{self.path}: holds a run of a different recipe "
                    f"({info.get('recipe', '?')!r}, fingerprint {info.get('fingerprint')}); "
                    "refusing to overwrite it -- choose another --out or delete the folder"
                )
        (self.path / "stages").mkdir(parents=True, exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        if not (self.path / "recipe.yaml").exists():
            write_text(self.path / "recipe.yaml", self.resolved_yaml)
        if not run_json.exists():
            write_json(run_json, {"recipe": self.recipe_name, "fingerprint": self.fingerprint})

    @property
    def log(self) -> RunLog:
        return RunLog(self.path / "log.jsonl")

    def final_dir(self, index: int, name: str) -> Path:
        return self.path / "stages" / stage_folder_name(index, name)

    def partial_dir(self, index: int, name: str) -> Path:
        return self.path / "stages" / f".{stage_folder_name(index, name)}.partial"

    def checkpoint_dir(self, index: int, name: str) -> Path:
        return self.path / "checkpoints" / stage_folder_name(index, name)

    def is_complete(self, index: int, name: str) -> bool:
        return self.final_dir(index, name).is_dir()

    def finish(self, index: int, name: str) -> Path:
        """Atomically publish a stage's partial folder as complete."""
        final = self.final_dir(index, name)
        os.replace(self.partial_dir(index, name), final)
        shutil.rmtree(self.checkpoint_dir(index, name), ignore_errors=True)
        return final


# ------------------------------------------------------------------------- execution
def resolve_device(name: str) -> "torch.device":
    """``auto`` -> cuda if available, else mps, else cpu; others must be available."""
    import torch

    from .errors import FourRealError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FourRealError("device cuda: no CUDA device is available to PyTorch (use cpu or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise FourRealError("device mps: MPS is not available on this machine (use cpu or auto)")
    return torch.device(name)


def fingerprint_yaml(recipe: "Recipe") -> str:
    """The resolved recipe minus what may change between reruns of one run (the device)."""
    from .recipe import dump_recipe

    text = dump_recipe(recipe)
    return "\n".join(line for line in text.splitlines() if not line.startswith("device:"))


def execute(
    recipe: "Recipe",
    out: Path,
    registry: "Registry",
    device: Optional[str] = None,
    console: Any = None,
) -> Path:
    """Run every stage of ``recipe`` in ``out``; skip stages already complete there."""
    import random

    import numpy as np
    import torch

    from .recipe import dump_recipe

    dev = resolve_device(device or recipe.device)
    run = RunDir(out, dump_recipe(recipe), recipe.name, recipe_fingerprint(fingerprint_yaml(recipe)))
    run.open()
    log = run.log
    log("run_start", recipe=recipe.name, device=str(dev))
    stage_dirs: dict[str, Path] = {}
    for index, spec in enumerate(recipe.stages, start=1):
        name = spec.label
        if run.is_complete(index, name):
            stage_dirs[name] = run.final_dir(index, name)
            log("stage_skip", stage=name, reason="complete")
            if console is not None:
                console.print(f"[dim]stage {index} {name}: already complete, skipped[/dim]")
            continue
        partial = run.partial_dir(index, name)
        shutil.rmtree(partial, ignore_errors=True)  # leftovers of an interrupted attempt
        partial.mkdir(parents=True)
        seed = recipe.seed + index
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)
        stage = spec.build(registry)
        ctx = StageContext(
            name=name,
            index=index,
            run_dir=run.path,
            out_dir=partial,
            recipe_dir=recipe.recipe_dir,
            device=dev,
            seed=seed,
            iterations_scale=recipe.iterations_scale,
            checkpoints=CheckpointStore(run.checkpoint_dir(index, name)),
            log=log,
            registry=registry,
            rasterizer_spec=recipe.rasterizer,
            stage_dirs=dict(stage_dirs),
        )
        if console is not None:
            console.print(f"[bold cyan]stage {index} {name}[/bold cyan]")
        t0 = time.perf_counter()
        log("stage_start", stage=name, index=index)
        stage.run(ctx)
        final = run.finish(index, name)
        stage_dirs[name] = final
        log("stage_end", stage=name, index=index, seconds=round(time.perf_counter() - t0, 3))
    log("run_end", recipe=recipe.name)
    return run.path


def completed_stage_dirs(run_dir: Path) -> dict[str, Path]:
    """``{stage label: folder}`` of a run's finished stages, in order."""
    out: dict[str, Path] = {}
    stages = Path(run_dir) / "stages"
    if stages.is_dir():
        for d in sorted(p for p in stages.iterdir() if p.is_dir() and not p.name.startswith(".")):
            out[d.name.split("_", 1)[1] if "_" in d.name else d.name] = d
    return out


def execute_adhoc(
    run_dir: Path,
    stage: str,
    params: dict,
    out_name: str,
    registry: "Registry",
    device: Optional[str] = None,
    console: Any = None,
) -> Path:
    """Run one stage plugin on a finished run's outputs (``fourreal export/eval/render``).

    The stage sees the run's finished stages as its earlier stages, and writes into
    ``RUN/out_name`` (replaced atomically if it exists).
    """
    import torch

    from .recipe import component_from_plain, load_recipe

    run_dir = Path(run_dir)
    if not (run_dir / "run.json").exists() or not (run_dir / "recipe.yaml").exists():
        raise RunDirError(f"{run_dir}: not a fourreal run folder (no run.json / recipe.yaml)")
    recipe = load_recipe(run_dir / "recipe.yaml", registry=registry, check_files=False)
    spec = component_from_plain("stage", {"name": stage, "params": params}, registry, source=f"fourreal {out_name}")
    dev = resolve_device(device or recipe.device)
    final = run_dir / out_name
    partial = run_dir / f".{out_name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log = RunLog(run_dir / "log.jsonl")
    ctx = StageContext(
        name=out_name, index=0, run_dir=run_dir, out_dir=partial, recipe_dir=Path.cwd(), device=dev,
        seed=recipe.seed, iterations_scale=recipe.iterations_scale,
        checkpoints=CheckpointStore(run_dir / "checkpoints" / out_name), log=log, registry=registry,
        rasterizer_spec=recipe.rasterizer, stage_dirs=completed_stage_dirs(run_dir),
    )
    torch.manual_seed(recipe.seed)
    log("adhoc_start", stage=stage, out=out_name)
    spec.build(registry).run(ctx)
    if final.exists():
        old = run_dir / f".{out_name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)
    log("adhoc_end", stage=stage, out=out_name)
    return final
