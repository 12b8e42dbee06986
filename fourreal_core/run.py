"""Run folders, the stage runner and what a stage sees (:class:`StageContext`).

Layout of a run folder::

    RUN/
      recipe.yaml          the fully resolved recipe (runnable again as it is)
      run.json             fingerprint of the recipe + which stages finished (and, per finished
                           stage, its files and their sizes: a rerun refuses to reuse a stage
                           whose outputs went missing or changed)
      log.jsonl            one JSON object per event (stage start/end, losses, metrics)
      stages/01_NAME/      each finished stage's outputs (moved into place atomically)
      checkpoints/01_NAME/ mid-stage checkpoints (safetensors) of the running stage

A stage writes into ``ctx.out_dir`` (``stages/.01_NAME.partial``); when its ``run``
returns, the runner renames it to ``stages/01_NAME`` -- a stage is complete exactly when
its folder exists. Rerunning the same recipe on the same folder skips complete stages
and a training stage resumes from its last checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from .errors import RunDirError
from .io import load_tensors, save_tensors, start_journal, strict_json_dumps, write_json, write_text, written_files
from .lock import LOCK_FILE, FolderLock

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
            f.write(strict_json_dumps(rec) + "\n")


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

    def candidates(self, device: Any = "cpu"):
        """``(step, tensors, meta, path)`` of every readable checkpoint, newest first.

        A file that does not load (truncated by a crash) or holds a non-finite tensor is
        skipped, and so recorded in :attr:`rejected` (``[(file name, why)]``)."""
        import torch

        self.rejected: list[tuple[str, str]] = []
        files = sorted(self.folder.glob("step_*.safetensors")) if self.folder.exists() else []
        for path in reversed(files):
            try:
                tensors, meta = load_tensors(path, device=device, finite=False)
                step = int(meta.get("step", 0))
                extra = json.loads(meta.get("meta", "{}"))
            except Exception as exc:  # a truncated file from a crash: fall back to the previous one
                self.rejected.append((path.name, f"unreadable ({type(exc).__name__})"))
                continue
            bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
            if bad:
                self.rejected.append((path.name, f"non-finite tensor {bad[0]!r}"))
                continue
            yield step, tensors, extra, path

    def latest(self, device: Any = "cpu") -> Optional[tuple[int, dict, dict]]:
        for step, tensors, meta, _ in self.candidates(device):
            return step, tensors, meta
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
        stage_dirs: ``{label: folder}`` of the earlier (finished) stages, in order.
        stage_writes: ``{label: file names or globs}`` those stages declare writing
            (:func:`declared_writes`); a stage absent from it declared nothing.
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
    stage_writes: dict = field(default_factory=dict)
    _rasterizer: Any = None

    def notice(self, message: str) -> None:
        """One line the user should see (a discarded checkpoint, a restart from step 0):
        printed to stderr and logged as a ``notice`` event."""
        import sys

        self.log("notice", stage=self.name, message=message)
        print(f"note: {self.name}: {message}", file=sys.stderr, flush=True)

    def find_output(self, filename: str) -> Optional[Path]:
        """An earlier stage's ``filename`` (e.g. ``canonical.ply``), or None: the newest stage
        that declares writing it and holds it, else (stages that declare nothing) the newest
        stage holding it."""
        earlier = list(self.stage_dirs.items())[::-1]
        for declared in (True, False):
            for label, d in earlier:
                if (not declared or declares(self.stage_writes.get(label, ()), filename)) and (d / filename).exists():
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


# -------------------------------------------------------------------- declared files
def declared_writes(stage: Any) -> tuple[str, ...]:
    """The files a stage (an instance or its class) declares writing: ``writes`` and
    ``may_write`` (:class:`~fourreal_core.interfaces.Stage`); () when it declares none."""
    return tuple(getattr(stage, "writes", ()) or ()) + tuple(getattr(stage, "may_write", ()) or ())


def declares(patterns: tuple[str, ...], filename: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(filename, p) for p in patterns)


def stage_class(spec: Any, registry: "Registry") -> Any:
    """The class a stage component builds, when the registry names one (a class, or a lazy
    target naming a class), without building it; None for a factory function or a target
    that does not import (a stage that declares nothing, then)."""
    from .errors import PluginError
    from .registry import LazyTarget

    try:
        factory = registry.get(spec.kind, spec.name).factory
        if isinstance(factory, LazyTarget):
            factory = factory.resolve()
    except (PluginError, ImportError):
        return None
    return factory if isinstance(factory, type) else None


def check_declared_writes(stage: Any, folder: Path, where: str) -> None:
    """A :class:`~fourreal_core.errors.PluginError` naming the first file ``stage`` declares in
    ``writes`` that its output ``folder`` lacks (a bug of the stage)."""
    from .errors import PluginError

    for pattern in tuple(getattr(stage, "writes", ()) or ()):
        if not any(Path(folder).glob(pattern)):
            raise PluginError(f"{where}: finished without writing {pattern}, which it declares (writes); "
                              "the stage was not published")


# ------------------------------------------------------------------------------ runner
def recipe_fingerprint(resolved_yaml: str) -> str:
    return hashlib.sha256(resolved_yaml.encode()).hexdigest()[:16]


def stage_folder_name(index: int, name: str) -> str:
    return f"{index:02d}_{name}"


def ensure_inside(path: Path, root: Path, what: str = "output") -> Path:
    """``path`` if it resolves inside ``root``; else :class:`RunDirError` (a name from a
    recipe or a command line must never make a run write outside its folder)."""
    p, r = Path(path).resolve(), Path(root).resolve()
    if p != r and r not in p.parents:
        raise RunDirError(f"{path}: {what} would be written outside {root}; refusing")
    return Path(path)


def plain_for_fingerprint(recipe_plain: dict) -> dict:
    """The parts of a resolved recipe that decide what its stages compute (not the device)."""
    return {k: v for k, v in recipe_plain.items() if k != "device"}


def stage_fingerprints(recipe_plain: dict) -> list[dict]:
    """``[{label, fingerprint}]``: stage k's fingerprint covers the top-level settings and
    stages 1..k, so changing a stage's params changes it and every later stage's, never an
    earlier one's."""
    plain = plain_for_fingerprint(recipe_plain)
    top = {k: v for k, v in plain.items() if k != "stages"}
    stages = plain.get("stages") or []
    out = []
    for k, st in enumerate(stages):
        text = json.dumps([top, stages[: k + 1]], sort_keys=True, default=str)
        out.append({"label": st.get("id") or st.get("name"), "fingerprint": recipe_fingerprint(text)})
    return out


def recipe_differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted ``--set``-style paths where two resolved recipes differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in list(old) + [k for k in new if k not in old]:
            out += recipe_differences(old.get(k, "<absent>"), new.get(k, "<absent>"), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(old, list) and isinstance(new, list) and all(isinstance(x, dict) for x in old + new) and path == "stages":
        def key(x):
            return str(x.get("id") or x.get("name"))
        om, nm = {key(x): x for x in old}, {key(x): x for x in new}
        if list(om) != list(nm):
            return [f"stages: {' -> '.join(om)} became {' -> '.join(nm)}"]
        return [d for k in om for d in recipe_differences(om[k], nm[k], f"stages.{k}")]
    if old != new:
        return [f"{path}: {_short(old)} -> {_short(new)}"]
    return []


def added_keys(old: Any, new: Any, path: str = "", written: frozenset = frozenset()) -> Optional[list[str]]:
    """Dotted paths of the keys ``new`` has and ``old`` lacks, if that is ALL that differs
    between the two resolved recipes (else None): the parameters a newer fourreal or plugin
    added, at their defaults. A key the recipe file or a --set wrote now (in ``written``, or
    with a written path under it) is a change, not an addition: None."""
    if isinstance(old, dict) and isinstance(new, dict):
        if any(k not in new for k in old):
            return None
        out: list[str] = []
        for k, v in new.items():
            sub = f"{path}.{k}" if path else str(k)
            if k not in old:
                if sub in written or any(w.startswith(sub + ".") for w in written):
                    return None
                out.append(sub)
                continue
            more = added_keys(old[k], v, sub, written)
            if more is None:
                return None
            out += more
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return None
        from .recipe import item_label

        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            more = added_keys(a, b, f"{path}.{item_label(b, i)}", written)
            if more is None:
                return None
            out += more
        return out
    return [] if old == new else None


def _prefix(plain: dict, k: int) -> dict:
    """The recipe up to stage ``k`` (top-level settings + stages 0..k): what stage k's
    fingerprint covers."""
    return {**plain, "stages": list(plain.get("stages") or [])[: k + 1]}


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 60 else s[:57] + "..."


#: run.json key: ``{stage folder name: {relative file path: size in bytes}}`` of finished stages
OUTPUTS_KEY = "outputs"
#: run.json key: ``{stage folder name: {param path: digest}}`` of the input files a finished
#: stage read (its InputPath params), so a rerun notices a fixed input
INPUTS_KEY = "inputs"


def input_paths(obj: Any, prefix: str = "") -> dict[str, str]:
    """``{param path: path}`` of every ``InputPath`` / ``InputFile`` value set in a config
    dataclass (nested configs and components included)."""
    import dataclasses
    import typing

    from .config import ComponentSpec

    out: dict[str, str] = {}
    if isinstance(obj, ComponentSpec):
        return input_paths(obj.params, f"{prefix}.params" if prefix else "params")
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(input_paths(v, f"{prefix}[{i}]"))
        return out
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return out
    try:
        hints = typing.get_type_hints(type(obj), include_extras=True)
    except Exception:  # noqa: BLE001 - a plugin's annotations that do not resolve: nothing to fingerprint
        return out
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name, None)
        sub = f"{prefix}.{f.name}" if prefix else f.name
        if isinstance(value, str) and value and "_InputPathMarker" in repr(hints.get(f.name)):
            out[sub] = value
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            out.update(input_paths(value, sub))
    return out


def input_digest(path: str | os.PathLike) -> str:
    """A fingerprint of an input: a file's sha256 (size and mtime above 512 MB); a folder's
    JSON files (capture metadata, transforms) by content and every file below it by relative
    path and size (an image replaced by one of the same size is not noticed); ``missing``."""
    p = Path(path)
    h = hashlib.sha256()

    def add_file(f: Path) -> None:
        st = f.stat()
        if st.st_size > 512 * 2**20:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            return
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)

    try:
        if p.is_file():
            add_file(p)
        elif p.is_dir():
            for i, f in enumerate(sorted(p.rglob("*"))):
                if i > 200_000:
                    break
                if f.is_file():
                    rel = f.relative_to(p).as_posix()
                    h.update(f"{rel}:{f.stat().st_size}\n".encode())
                    if f.suffix == ".json" and f.parent == p:
                        add_file(f)
        else:
            return "missing"
    except OSError:
        return "unreadable"
    return h.hexdigest()[:16]


def stage_inputs(spec: Any) -> dict[str, str]:
    """``{param path: digest}`` of a stage's input files (see :func:`input_digest`)."""
    return {k: input_digest(v) for k, v in sorted(input_paths(spec).items())}


def output_sizes(folder: Path) -> dict[str, int]:
    """``{relative path: size}`` of every file under ``folder``."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file()}


def output_problem(folder: Path, run_info: Mapping) -> Optional[str]:
    """What is wrong with a finished stage folder against the files ``run.json`` recorded
    when it finished (``its output canonical.ply is gone``), or None (also for a run made
    before fourreal recorded them). Files added since are not a problem."""
    outputs = run_info.get(OUTPUTS_KEY) if isinstance(run_info, Mapping) else None
    recorded = outputs.get(Path(folder).name) if isinstance(outputs, dict) else None
    if not isinstance(recorded, dict):
        return None
    missing, changed = [], []
    for rel, size in recorded.items():
        f = Path(folder) / rel
        if not f.is_file():
            missing.append(rel)
        elif isinstance(size, int) and f.stat().st_size != size:
            changed.append(f"{rel} ({f.stat().st_size} bytes, was {size})")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"its output{'s' if len(missing) > 1 else ''} {', '.join(missing[:3])}{more} " \
               f"{'are' if len(missing) > 1 else 'is'} gone"
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return f"its output {', '.join(changed[:3])}{more} changed size since"
    return None


def files_not_written(folder: Path, run_dir: Path, since: float) -> list[str]:
    """Files under ``folder`` that fourreal did not write: not in the run's journal
    (:data:`~fourreal_core.io.JOURNAL`) and modified after ``since`` (the time the previous
    attempt last logged; older files are its own, written by a plugin outside
    ``fourreal_core.io``, or by a run made before the journal). Relative to the run folder."""
    folder, run_dir = Path(folder), Path(run_dir)
    if not folder.is_dir():
        return []
    ours = written_files(run_dir)
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_dir() and not p.is_symlink():
            continue
        rel = p.relative_to(run_dir).as_posix()
        try:
            mtime = p.lstat().st_mtime
        except OSError:
            continue
        if rel not in ours and mtime > since:
            out.append(rel)
    return out


def last_logged(run_dir: Path, **match: Any) -> float:
    """Time of the last ``log.jsonl`` event whose fields include ``match`` (``stage="canonical"``),
    0 when none: files an interrupted attempt of that stage left are no newer than this (or
    are in the journal); a file newer than it and not in the journal was put there since."""
    last = 0.0
    try:
        with open(Path(run_dir) / "log.jsonl") as f:
            for line in f:
                if not all(f'"{v}"' in line for v in match.values()):
                    continue  # most lines are about something else: skip the JSON parse
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and all(rec.get(k) == v for k, v in match.items()):
                    t = rec.get("time")
                    last = max(last, float(t)) if isinstance(t, (int, float)) else last
    except OSError:
        pass
    return last


def remove_own(folder: Path, run_dir: Path, since: float, what: str) -> None:
    """Remove ``folder`` (a leftover of an interrupted attempt), or, when it holds files fourreal
    did not write, stop with a :class:`RunDirError` naming them and touch nothing."""
    foreign = files_not_written(folder, run_dir, since)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise RunDirError(
            f"{Path(run_dir) / Path(folder).relative_to(run_dir)}: {what} holds files fourreal did not write "
            f"({', '.join(foreign[:3])}{more}); a rerun would remove them -- move them out of the run folder and "
            "rerun (nothing was removed)")
    shutil.rmtree(folder, ignore_errors=True)


def read_run_info(run_json: Path) -> dict:
    """The JSON object of a run's ``run.json``; :class:`RunDirError` naming the file when it is
    unreadable, not JSON, or not an object (a list, a string: a run record edited or replaced
    by something else, which a rerun must not trust)."""
    try:
        info = json.loads(Path(run_json).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:80]
        raise RunDirError(f"{run_json}: unreadable ({why}); restore it or choose another --out") from None
    if not isinstance(info, dict):
        raise RunDirError(f"{run_json}: not a fourreal run record (a JSON {_json_kind(info)}, expected an object); "
                          "restore it or choose another --out")
    return info


def _json_kind(v: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(v), "null")


class RunDir:
    """A run folder bound to one resolved recipe (:meth:`for_recipe`), or, to read a finished
    run, to none (``RunDir(path)``)."""

    def __init__(self, path: Path, resolved_yaml: str = "", recipe_name: str = "", fingerprint: str = "",
                 stages: Optional[list[dict]] = None, written: frozenset = frozenset()) -> None:
        self.path = Path(path)
        self.written = written  # paths the recipe file / --set wrote (Recipe.written)
        self.resolved_yaml = resolved_yaml
        self.fingerprint = fingerprint
        self.recipe_name = recipe_name
        self.stages = stages if stages is not None else []
        self.since: dict[str, float] = {}  # stage label -> when its previous attempt last logged

    @classmethod
    def for_recipe(cls, path: Path, recipe: "Recipe") -> "RunDir":
        """The run folder ``path`` bound to a validated recipe."""
        from .recipe import dump_recipe, to_plain

        return cls(path, dump_recipe(recipe), recipe.name, recipe_fingerprint(fingerprint_yaml(recipe)),
                   stage_fingerprints(to_plain(recipe)), written=recipe.written)

    def is_finished(self) -> bool:
        """The folder holds this recipe's run (its fingerprint in ``run.json``) with every stage
        finished."""
        return self._run_info().get("fingerprint") == self.fingerprint and all(
            self.is_complete(i, str(st.get("label"))) for i, st in enumerate(self.stages, start=1))

    def finished_stage_dirs(self, check: bool = True) -> dict[str, Path]:
        """``{stage label: folder}`` of the finished stages, in order. With ``check``, a finished
        stage whose output files (as ``run.json`` recorded them) are gone or changed size is
        refused with a :class:`RunDirError`."""
        stages = self.path / "stages"
        info = read_run_info(self.path / "run.json") if check else {}
        out: dict[str, Path] = {}
        for d in sorted(p for p in stages.iterdir() if p.is_dir() and not p.name.startswith(".")) \
                if stages.is_dir() else []:
            problem = output_problem(d, info) if check else None
            if problem:
                raise RunDirError(f"{self.path}: stage {d.name} finished, but {problem}; restore it, or rerun the "
                                  f"recipe after deleting stages/{d.name} (and the later stages' folders)")
            out[d.name.split("_", 1)[1] if "_" in d.name else d.name] = d
        return out

    def check_usable(self) -> None:
        """Refuse (writing nothing) a path that is a file or a non-empty folder that is not a
        fourreal run."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path}: is a file, not a folder; choose another --out")
        if (self.path.is_dir() and any(p.name != LOCK_FILE for p in self.path.iterdir())
                and not (self.path / "run.json").exists()):
            raise RunDirError(
                f"{self.path}: folder is not empty and holds no fourreal run; "
                "choose another --out (nothing was overwritten)"
            )

    def open(self) -> list[str]:
        """Create the folder, or check an existing one holds this same recipe's run (call with
        the run lock held). A recipe that differs only in stages that have not finished (a
        stage failed on bad input and the input was corrected) is accepted: those stages'
        checkpoints are discarded. Returns the lines to tell the user."""
        self.check_usable()
        run_json = self.path / "run.json"
        notices: list[str] = []

        if run_json.exists():
            info = read_run_info(run_json)
            if info.get("fingerprint") != self.fingerprint:
                notices = self._accept_changed_recipe(info)
        (self.path / "stages").mkdir(parents=True, exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        start_journal(self.path)
        if notices or not (self.path / "recipe.yaml").exists():
            write_text(self.path / "recipe.yaml", self.resolved_yaml)
        if notices or not run_json.exists():
            old = self._run_info()  # the finished stages' files and inputs (kept stages stay checked)
            kept = {k: old[k] for k in (OUTPUTS_KEY, INPUTS_KEY) if isinstance(old.get(k), dict)}
            write_json(run_json, {"recipe": self.recipe_name, "fingerprint": self.fingerprint, "stages": self.stages,
                                  **kept})
        return notices

    def _run_info(self) -> dict:
        try:
            info = json.loads((self.path / "run.json").read_text())
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def _accept_changed_recipe(self, info: dict) -> list[str]:
        import yaml

        try:
            old_plain = yaml.safe_load((self.path / "recipe.yaml").read_text())
        except Exception:
            old_plain = {}
        old_p = plain_for_fingerprint(old_plain or {})
        new_p = plain_for_fingerprint(yaml.safe_load(self.resolved_yaml) or {})
        diffs = recipe_differences(old_p, new_p)
        what = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        old_stages = info.get("stages")
        first = None
        if isinstance(old_stages, list):
            for k in range(max(len(old_stages), len(self.stages))):
                if k >= len(old_stages) or k >= len(self.stages) or (
                        old_stages[k] != self.stages[k]
                        and added_keys(_prefix(old_p, k), _prefix(new_p, k), written=self.written) is None):
                    first = k  # the first stage that really changed (not only by added parameters)
                    break
        finished = [
            (k, st["label"]) for k, st in enumerate(old_stages or [])
            if isinstance(st, dict) and self.is_complete(k + 1, str(st.get("label")))
        ]
        blocking = [f"{k + 1} {label}" for k, label in finished if first is None or k >= first]
        # no stage really changed: only parameters were added (else some prefix above differs)
        added = added_keys(old_p, new_p, written=self.written) if first is None else None
        if old_plain and added and isinstance(old_stages, list) and len(old_stages) == len(self.stages):
            # only parameters that did not exist when this run started (an upgrade of fourreal or
            # a plugin): what finished was computed without them, as their defaults keep it
            shown = ", ".join(added[:3]) + (f" and {len(added) - 3} more" if len(added) > 3 else "")
            return [f"parameters added since this run started ({shown}) take their current values; "
                    "finished stages are kept"]
        if not isinstance(old_stages, list) or blocking or first is None:
            stage_note = f"; finished stage(s) {', '.join(blocking)} used the old values" if blocking else ""
            raise RunDirError(
                f"{self.path}: holds a run of a different recipe ({what or 'recipe ' + repr(info.get('recipe', '?'))}"
                f"{stage_note}); refusing to overwrite it -- rerun with the old values, choose another --out, "
                "or delete the folder to start fresh"
            )
        # only stages from `first` on changed, and none of them has finished: restart them
        for k in range(first, max(len(old_stages), len(self.stages))):
            for st in (old_stages[k] if k < len(old_stages) else None, self.stages[k] if k < len(self.stages) else None):
                if isinstance(st, dict):
                    ck = self.checkpoint_dir(k + 1, str(st.get("label")))
                    if ck.exists():
                        remove_own(ck, self.path, last_logged(self.path, stage=str(st.get("label"))),
                                   "the checkpoint folder of a changed stage")
        label = self.stages[first]["label"] if first < len(self.stages) else "?"
        return [
            f"recipe changed since the last attempt ({what}); finished stages before stage {first + 1} are kept, "
            f"stage {first + 1} {label} and later start from step 0 (their checkpoints were discarded)"
        ]

    @property
    def log(self) -> RunLog:
        return RunLog(self.path / "log.jsonl")

    def final_dir(self, index: int, name: str) -> Path:
        return ensure_inside(self.path / "stages" / stage_folder_name(index, name), self.path, "stage folder")

    def partial_dir(self, index: int, name: str) -> Path:
        return ensure_inside(self.path / "stages" / f".{stage_folder_name(index, name)}.partial", self.path,
                             "stage folder")

    def checkpoint_dir(self, index: int, name: str) -> Path:
        return ensure_inside(self.path / "checkpoints" / stage_folder_name(index, name), self.path,
                             "checkpoint folder")

    def is_complete(self, index: int, name: str) -> bool:
        return self.final_dir(index, name).is_dir()

    def finish(self, index: int, name: str, inputs: Optional[dict] = None) -> Path:
        """Atomically publish a stage's partial folder as complete, after recording its files
        and their sizes in ``run.json`` (what :meth:`check_outputs` compares a rerun against),
        and the fingerprints of the input files it read (``inputs``, :func:`stage_inputs`)."""
        final = self.final_dir(index, name)
        partial = self.partial_dir(index, name)
        info = self._run_info()
        if info:
            outputs = info.get(OUTPUTS_KEY) if isinstance(info.get(OUTPUTS_KEY), dict) else {}
            outputs[final.name] = output_sizes(partial)
            recorded = info.get(INPUTS_KEY) if isinstance(info.get(INPUTS_KEY), dict) else {}
            if inputs:
                recorded[final.name] = inputs
            write_json(self.path / "run.json", {**info, OUTPUTS_KEY: outputs,
                                                **({INPUTS_KEY: recorded} if recorded else {})})
        os.replace(partial, final)
        ck = self.checkpoint_dir(index, name)
        since = self.since.get(name, 0.0)
        if not files_not_written(ck, self.path, since):
            shutil.rmtree(ck, ignore_errors=True)
        else:  # only fourreal's own checkpoints go; the folder stays with what someone else put there
            ours = written_files(self.path)
            for p in ck.glob("step_*.safetensors"):
                if p.relative_to(self.path).as_posix() in ours or p.stat().st_mtime <= since:
                    p.unlink(missing_ok=True)
        return final

    def changed_inputs(self, index: int, name: str, spec: Any) -> list[str]:
        """Param paths of a finished stage whose input files changed since it finished (empty
        for a run made before fourreal recorded them)."""
        info = self._run_info()
        rec = info.get(INPUTS_KEY, {}).get(self.final_dir(index, name).name) if isinstance(
            info.get(INPUTS_KEY), dict) else None
        if not isinstance(rec, dict):
            return []
        now = stage_inputs(spec)
        return [k for k in sorted(set(rec) | set(now)) if rec.get(k) != now.get(k)]

    def unpublish(self, labels: list[tuple[int, str]]) -> None:
        """Remove finished stages (their folders and run.json records) so they run again --
        only when each folder holds exactly the files fourreal recorded there; a file added
        since stops it with a :class:`RunDirError`, nothing removed."""
        info = self._run_info()
        outputs = info.get(OUTPUTS_KEY) if isinstance(info.get(OUTPUTS_KEY), dict) else {}
        for index, name in labels:
            folder = self.final_dir(index, name)
            recorded = outputs.get(folder.name)
            extra = sorted(set(output_sizes(folder)) - set(recorded)) if isinstance(recorded, dict) else ["?"]
            if extra:
                shown = "its files were not recorded" if extra == ["?"] else \
                    f"it holds files fourreal did not write ({', '.join(extra[:3])})"
                raise RunDirError(f"{self.path}: stage {index} {name} must run again (its input changed), but {shown}; "
                                  f"move them out of {folder.relative_to(self.path).as_posix()} or delete the folder, "
                                  "and rerun (nothing was removed)")
        for index, name in labels:
            folder = self.final_dir(index, name)
            shutil.rmtree(folder)
            outputs.pop(folder.name, None)
            if isinstance(info.get(INPUTS_KEY), dict):
                info[INPUTS_KEY].pop(folder.name, None)
        write_json(self.path / "run.json", {**info, OUTPUTS_KEY: outputs})

    def check_outputs(self, index: int, name: str) -> None:
        """Refuse to reuse a finished stage whose recorded output files are gone or changed size
        (deleted, truncated, replaced by hand): a later stage would quietly start from something
        else (a motion stage from the initial points when ``canonical.ply`` is gone)."""
        problem = output_problem(self.final_dir(index, name), self._run_info())
        if problem:
            folder = self.final_dir(index, name).relative_to(self.path).as_posix()
            raise RunDirError(
                f"{self.path}: stage {index} {name} finished, but {problem}; restore it, or delete {folder} "
                "(and the later stages' folders) to run the stage again"
            )


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
    """Run every stage of ``recipe`` in ``out``; skip stages already complete there.

    The run folder is locked for the whole run (:class:`~fourreal_core.lock.FolderLock`):
    a second writer gets a :class:`RunDirError` naming the holder."""
    dev = resolve_device(device or recipe.device)
    run = RunDir.for_recipe(out, recipe)
    run.check_usable()
    with FolderLock(run.path, what=str(out)):
        return _execute_locked(recipe, run, registry, dev, console)


def _execute_locked(recipe: "Recipe", run: RunDir, registry: "Registry", dev: "torch.device", console: Any) -> Path:
    import random

    import numpy as np
    import torch

    notices = run.open()
    log = run.log
    log("run_start", recipe=recipe.name, device=str(dev))
    for line in notices:
        log("notice", message=line)
        _say(console, f"note: {line}")
    stage_dirs: dict[str, Path] = {}
    stage_writes: dict[str, tuple[str, ...]] = {}
    for index, spec in enumerate(recipe.stages, start=1):  # a fixed input re-runs its stage and the later ones
        changed = run.changed_inputs(index, spec.label, spec) if run.is_complete(index, spec.label) else []
        if changed:
            later = [(k, s.label) for k, s in enumerate(recipe.stages, start=1) if k >= index and run.is_complete(k, s.label)]
            run.unpublish(later)
            line = (f"input changed since stage {index} {spec.label} finished ({', '.join(changed[:3])}); stage "
                    f"{index} {spec.label} and the later finished stages run again")
            log("notice", message=line)
            _say(console, f"note: {line}")
            break
    for index, spec in enumerate(recipe.stages, start=1):
        name = spec.label
        if run.is_complete(index, name):
            run.check_outputs(index, name)
            stage_dirs[name] = run.final_dir(index, name)
            stage_writes[name] = declared_writes(stage_class(spec, registry))
            log("stage_skip", stage=name, reason="complete")
            if console is not None:
                console.print(f"[dim]stage {index} {name}: already complete, skipped[/dim]")
            continue
        partial = run.partial_dir(index, name)
        # leftovers of an interrupted attempt (we hold the lock); anyone else's files stop the run
        run.since[name] = last_logged(run.path, stage=name)
        remove_own(partial, run.path, run.since[name], "the unfinished stage folder")
        partial.mkdir(parents=True)
        seed = recipe.seed + index
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)
        inputs = stage_inputs(spec)  # as the stage reads them (recorded when it finishes)
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
            stage_writes=dict(stage_writes),
        )
        if console is not None:
            console.print(f"[bold cyan]stage {index} {name}[/bold cyan]")
        t0 = time.perf_counter()
        log("stage_start", stage=name, index=index)
        with stage_errors(f"stage {index} {name}", dev, partial):
            stage.run(ctx)
        check_declared_writes(stage, partial, f"stage {index} {name}")
        final = run.finish(index, name, inputs)
        stage_dirs[name] = final
        stage_writes[name] = declared_writes(stage)
        log("stage_end", stage=name, index=index, seconds=round(time.perf_counter() - t0, 3))
    log("run_end", recipe=recipe.name)
    return run.path


def _say(console: Any, line: str) -> None:
    import sys

    if console is not None:
        from rich.markup import escape

        console.print(f"[yellow]{escape(line)}[/yellow]", soft_wrap=True)
    else:
        print(line, file=sys.stderr)


class stage_errors:
    """Turn failures of the machine inside a stage into one line naming the stage: out of
    memory (and what to lower), and OS errors -- a full disk, a file-size limit, too many open
    files, a shared library that could not be mapped -- with the path (or, when the error names
    none, the stage's output folder ``folder``)."""

    def __init__(self, where: str, device: Any, folder: Optional[Path] = None) -> None:
        self.where = where
        self.device = device
        self.folder = folder

    def __enter__(self) -> "stage_errors":
        return self

    def __exit__(self, typ, exc, tb) -> bool:
        from .errors import FourRealError, environment_error

        if exc is None or isinstance(exc, FourRealError) or not isinstance(exc, Exception):
            return False
        if is_out_of_memory(exc):
            kind = "CUDA" if "cuda" in str(self.device) or "CUDA" in str(exc) else str(self.device).upper()
            raise FourRealError(
                f"{self.where}: out of {kind} memory; lower the resolution (height/width), "
                "densify.max_gaussians, or the frames per SDS video (num_frames); finished stages and "
                "checkpoints are kept"
            ) from exc
        if not isinstance(exc, (OSError, ImportError)):
            return False
        line = environment_error(exc)
        if line is None:
            return False
        if isinstance(exc, OSError) and not exc.filename and self.folder is not None:
            line = f"writing into {self.folder}: {line}"
        raise FourRealError(f"{self.where}: {line}") from exc


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, MemoryError) or isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )
