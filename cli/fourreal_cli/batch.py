"""``fourreal batch SPEC.yaml``: many runs of one recipe as Ray tasks, on one machine or a cluster.

A spec names a recipe and its jobs::

    recipe: ../recipes/4real.yaml        # relative to this spec file
    set: [iterations_scale=0.5]          # overrides for every job (list of a.b=c, or a mapping)
    jobs:                                # each job: one set of overrides (and an optional name)
      - {name: fox, set: {stages.generate.params.prompt: "a fox running", seed: 1}}
      - set: [seed=2, "stages.generate.params.prompt=a cat jumping"]
    prompts: {file: prompts.txt, key: stages.generate.params.prompt}   # one job per line
    cpus_per_job: 1      # Ray CPUs per job; torch's threads are pinned to it
    gpus_per_job: 1      # Ray GPUs per GPU job (device cuda, or auto on a cluster with GPUs)
    retries: 3           # a job whose worker dies (or crashes) is retried this many times
    max_parallel: null   # at most this many jobs at once (default: as many as Ray fits)

Each job is one run folder ``BATCH/NNN_slug`` (NNN its index, the slug from its name, its
prompt or its override values), so ``fourreal run/export/eval/render`` all work on it.
Every job's recipe is resolved and validated before anything starts; the resolved recipe is
written to ``BATCH/jobs/NNN_slug.yaml`` and that is what the job's worker runs (``fourreal
run BATCH/jobs/NNN_slug.yaml --out BATCH/NNN_slug`` runs it by hand).

Failures: bad input (a :class:`~fourreal_core.errors.FourRealError`: a missing or damaged
input, a run folder in use or holding another recipe) is not retried and is reported with
its one-line error; a worker that dies (SIGKILL, out of host memory, a node that leaves) or
a crash (any other exception) is retried by Ray up to ``retries`` times, and the retry
resumes from the job's checkpoints (the run-folder lock is an ``flock``, released by the
operating system when its holder dies). Rerunning the same batch skips finished jobs.

Ray is an optional dependency (``pip install -e .[batch]``); only :func:`run_batch` imports it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import typer

from fourreal_core import hookimpl
from fourreal_core.config import ConfigValueError
from fourreal_core.errors import FourRealError, RecipeError, RunDirError

DEFAULT_PROMPT_KEY = "stages.generate.params.prompt"
SUMMARY = "batch.json"
JOBS_DIR = "jobs"
INSTALL_HINT = "fourreal batch needs Ray: pip install 'fourreal[batch]' (or pip install 'ray>=2.9')"
LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2  # jobs pass file paths, not arrays: a small store is plenty
MAX_TABLE_ROWS = 25

# job states shown in the table and written to batch.json
QUEUED, RUNNING, RETRYING = "queued", "running", "retrying"
DONE, SKIPPED = "done", "skipped"  # skipped: finished by an earlier run of the batch
BAD_INPUT, REFUSED, FAILED, CANCELLED = "bad_input", "refused", "failed", "cancelled"
FINISHED_OK = (DONE, SKIPPED)


class BatchInvalid(FourRealError):
    """Some jobs of a batch are invalid; ``lines`` holds one line per bad job."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


# ---------------------------------------------------------------------------------- spec
@dataclass
class Job:
    index: int
    folder: str  # NNN_slug: the run folder's name under the batch folder
    where: str  # where the job was defined: "spec.yaml: jobs[2]" or "prompts.txt:7"
    overrides: list[str]
    resolved: str = ""  # the resolved recipe (YAML)
    recipe: Any = None  # the validated Recipe (driver side)
    stages: list[str] = field(default_factory=list)
    device: str = "auto"
    gpus: float = 0.0
    # driver-side progress
    state: str = QUEUED
    error: Optional[str] = None
    attempts: int = 0
    started: Optional[float] = None
    finished: Optional[float] = None
    result: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)


@dataclass
class Spec:
    path: Path
    recipe: Path
    jobs: list[Job]
    cpus_per_job: float = 1.0
    gpus_per_job: float = 1.0
    retries: int = 3
    max_parallel: Optional[int] = None


def _fail(spec: Path, where: str, msg: str) -> RecipeError:
    return RecipeError(f"{spec}: {where}: {msg}" if where else f"{spec}: {msg}")


@dataclass
class JobEntry:
    """One item of ``jobs:``."""

    name: Optional[Union[str, int]] = None
    set: Any = None  # a list of KEY=VALUE or a mapping (:func:`_override_list`)


@dataclass
class PromptsEntry:
    """``prompts: {file, key}`` (or just the file)."""

    file: str
    key: str = DEFAULT_PROMPT_KEY


@dataclass
class SpecFile:
    """A batch spec as written, validated by the recipe validator (``fourreal_core.recipe``)."""

    recipe: str
    set: Any = None
    jobs: Optional[list[JobEntry]] = None
    prompts: Any = None  # a file name or a PromptsEntry mapping
    cpus_per_job: float = 1.0
    gpus_per_job: float = 1.0
    retries: int = 3
    max_parallel: Optional[int] = None

    def __post_init__(self) -> None:
        for key, minimum in (("cpus_per_job", 0.01), ("gpus_per_job", 0.01), ("retries", 0), ("max_parallel", 1)):
            v = getattr(self, key)
            if v is not None and v < minimum:
                whole = "whole " if key in ("retries", "max_parallel") else ""
                raise ConfigValueError(key, f"expected a {whole}number >= {minimum:g}, got {v:g}")


def _override_list(spec: Path, where: str, value: Any) -> list[str]:
    """``set:`` as a list of ``a.b=c`` strings or a mapping ``{a.b: c}`` -> ``["a.b=c"]``."""
    if value is None:
        return []
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            text = v if isinstance(v, str) else json.dumps(v)  # JSON is YAML: numbers, lists, mappings
            out.append(f"{k}={text}")
        return out
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str) or "=" not in item:
                raise _fail(spec, f"{where}[{i}]", f"expected KEY=VALUE (e.g. seed=3), got {item!r}")
        return list(value)
    raise _fail(spec, where, f"expected a list of KEY=VALUE or a mapping, got {type(value).__name__}")


def slugify(text: str, maxlen: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return s[:maxlen].strip("-") or "job"


def _slug_for(name: Optional[str], overrides: list[str], prompt_key: str) -> str:
    if name:
        return slugify(name)
    for o in overrides:
        key, _, value = o.partition("=")
        if key.strip() == prompt_key:
            return slugify(value)
    parts = []
    for o in overrides:
        key, _, value = o.partition("=")
        parts.append(f"{key.strip().rsplit('.', 1)[-1]}-{value}")
    return slugify("-".join(parts)) if parts else "job"


def load_spec(path: Path | str) -> Spec:
    """Read and check a batch spec (not yet the jobs' recipes): one line per mistake."""
    from fourreal_core.recipe import load_yaml, validate_config

    path = Path(path)
    raw = validate_config(SpecFile, load_yaml(path, "batch spec"), path)
    base = path.resolve().parent
    recipe = (base / raw.recipe).expanduser().resolve()
    if not recipe.is_file():
        raise _fail(path, "recipe", f"recipe not found: {recipe}")
    common = _override_list(path, "set", raw.set)

    entries: list[tuple[str, Optional[str], list[str]]] = []  # (where, name, overrides)
    for i, job in enumerate(raw.jobs or []):
        entries.append((f"{path}: jobs[{i}]", None if job.name is None else str(job.name),
                        _override_list(path, f"jobs[{i}].set", job.set)))
    prompt_key = DEFAULT_PROMPT_KEY
    if raw.prompts is not None:
        prompts = validate_config(PromptsEntry, {"file": raw.prompts} if isinstance(raw.prompts, str) else raw.prompts,
                                  path, "prompts")
        prompt_key = prompts.key or DEFAULT_PROMPT_KEY
        pfile = (base / prompts.file).expanduser()
        if not pfile.is_file():
            raise _fail(path, "prompts.file", f"prompts file not found: {pfile}")
        try:
            lines = pfile.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(path, "prompts.file", f"cannot read {pfile} ({exc})") from None
        for n, line in enumerate(lines, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                entries.append((f"{pfile}:{n}", None, [f"{prompt_key}={text}"]))
    if not entries:
        raise _fail(path, "jobs", "no jobs: give jobs: [...] and/or prompts: {file: ...}")

    width = max(3, len(str(len(entries) - 1)))
    out = [
        Job(index=k, folder=f"{k:0{width}d}_{_slug_for(name, ovr, prompt_key)}", where=where,
            overrides=common + ovr)
        for k, (where, name, ovr) in enumerate(entries)
    ]
    return Spec(path=path, recipe=recipe, jobs=out, cpus_per_job=raw.cpus_per_job, gpus_per_job=raw.gpus_per_job,
                retries=raw.retries, max_parallel=raw.max_parallel)


class _chdir:
    """Paths in a spec's ``set`` values are relative to the spec file (like a recipe's are to
    the recipe): ``--set`` paths resolve against the current directory, so load there."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.old = os.getcwd()
        os.chdir(self.path)

    def __exit__(self, *exc) -> None:
        os.chdir(self.old)


def resolve_jobs(spec: Spec, registry=None) -> None:
    """Resolve and validate every job's recipe (``fourreal validate`` rules) before anything
    starts; :class:`BatchInvalid` with one line per bad job."""
    from fourreal_core.recipe import dump_recipe, load_recipe
    from fourreal_core.registry import get_registry

    registry = registry or get_registry()
    bad = []
    with _chdir(spec.path.resolve().parent):
        for job in spec.jobs:
            try:
                rec = load_recipe(spec.recipe, job.overrides, registry)
            except FourRealError as exc:
                bad.append(f"{job.where} ({job.folder}): {exc}")
                continue
            job.resolved, job.recipe = dump_recipe(rec), rec
            job.stages = [s.label for s in rec.stages]
            job.device = rec.device
    if bad:
        raise BatchInvalid([f"{len(bad)} of {len(spec.jobs)} jobs are invalid; nothing was started"] + bad)


# ------------------------------------------------------------------------------ batch dir
def check_batch_dir(out: Path) -> None:
    """Refuse (touching nothing) a file, or a non-empty folder that is not a fourreal batch."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: is a file, not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / SUMMARY).is_file():
        raise RunDirError(f"{out}: folder is not empty and holds no fourreal batch ({SUMMARY}); "
                          "choose another --out (nothing was touched)")


def job_is_finished(run_dir: Path, job: Job) -> bool:
    """The job's run folder holds this very recipe's run with every stage finished."""
    from fourreal_core.run import RunDir

    return RunDir.for_recipe(run_dir, job.recipe).is_finished()


def job_scores(run_dir: Path) -> dict:
    """``{stage folder: mean scores}`` of every eval output of a finished run."""
    from fourreal_core.run import RunDir

    out = {}
    for d in RunDir(run_dir).finished_stage_dirs(check=False).values():
        try:
            mean = json.loads((d / "eval.json").read_text()).get("mean", {})
        except (OSError, ValueError):
            continue
        out[d.name] = {k: v for k, v in mean.items() if isinstance(v, (int, float))}
    return out


def read_attempts(path: Path, batch_id: str) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("batch_run") == batch_id:
            out.append(rec)
    return out


# --------------------------------------------------------------------------------- worker
def run_job(task: dict) -> dict:
    """One job, in a Ray worker process: pin threads, pick the device, ``execute`` the run.

    Bad input is returned (``status: bad_input``/``refused`` and the one-line error), so Ray
    does not retry it; any other exception propagates and Ray retries the task, as it does
    when this process dies. A retry resumes from the run's checkpoints."""
    t0 = time.time()
    cpus = max(1, int(task["cpus"]))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(cpus)
    os.environ["FOURREAL_NO_PROGRESS"] = "1"  # the driver shows one table for every job
    attempt = {"batch_run": task["batch_run"], "pid": os.getpid(), "host": socket.gethostname(), "time": t0}
    gpu_ids: list = []
    try:
        import ray

        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        attempt["node"] = ray.get_runtime_context().get_node_id()
    except Exception:  # run outside Ray (tests, debugging)
        pass
    attempt["gpus"] = gpu_ids
    with open(task["attempts_file"], "a") as f:  # one short line per attempt: O_APPEND keeps it whole
        f.write(json.dumps(attempt) + "\n")

    import torch

    torch.set_num_threads(cpus)
    from fourreal_core.io import write_text
    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry
    from fourreal_core.run import execute, resolve_device

    recipe_file = Path(task["recipe_file"])
    try:
        if not recipe_file.is_file() or recipe_file.read_text() != task["resolved"]:
            write_text(recipe_file, task["resolved"])
        registry = get_registry()
        rec = load_recipe(recipe_file, registry=registry)  # checks the inputs exist on this node
        # auto without an assigned GPU runs on the CPU: a GPU Ray did not give this task is
        # another job's (Ray leaves CUDA_VISIBLE_DEVICES alone for tasks with num_gpus=0)
        device = "cpu" if rec.device == "auto" and not gpu_ids else None
        dev = str(resolve_device(device or rec.device))
        execute(rec, Path(task["run_dir"]), registry, device=device, console=None)
    except RunDirError as exc:
        return {"status": REFUSED, "error": _one_line(exc), "seconds": round(time.time() - t0, 3)}
    except FourRealError as exc:
        return {"status": BAD_INPUT, "error": _one_line(exc), "seconds": round(time.time() - t0, 3)}
    return {"status": DONE, "seconds": round(time.time() - t0, 3), "device": dev, "host": attempt["host"],
            "threads": torch.get_num_threads()}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------- progress
class LogTail:
    """What a job is doing, read incrementally from its run's ``log.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.buf = ""
        self.stage: Optional[str] = None
        self.stage_index: Optional[int] = None
        self.step: Optional[int] = None
        self.rate: Optional[float] = None
        self.resumed: Optional[int] = None
        self._last: Optional[tuple[float, int]] = None

    def poll(self) -> None:
        try:
            with open(self.path) as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except OSError:
            return
        self.buf += chunk
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            self._event(ev)

    def _event(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "stage_start":
            self.stage, self.stage_index = ev.get("stage"), ev.get("index")
            self.step, self.rate, self._last, self.resumed = None, None, None, None
        elif kind == "resume" and ev.get("stage") == self.stage:
            self.resumed = self.step = ev.get("step")
            self._last = (ev.get("time", 0.0), int(ev.get("step") or 0))
        elif kind == "train" and ev.get("stage") == self.stage:
            t, step = ev.get("time", 0.0), int(ev.get("step") or 0)
            if self._last is not None and t > self._last[0] and step > self._last[1]:
                self.rate = (step - self._last[1]) / (t - self._last[0])
            self._last, self.step = (t, step), step
        elif kind == "stage_end" and ev.get("stage") == self.stage:
            self.rate = None


STATE_STYLE = {QUEUED: "dim", RUNNING: "cyan", RETRYING: "yellow", DONE: "green", SKIPPED: "green",
               BAD_INPUT: "red", REFUSED: "red", FAILED: "bold red", CANCELLED: "yellow"}


def progress_table(jobs: list[Job], tails: dict[int, LogTail], title: str):
    from rich.markup import escape
    from rich.table import Table

    order = {RUNNING: 0, RETRYING: 0, FAILED: 1, BAD_INPUT: 1, REFUSED: 1, QUEUED: 2, CANCELLED: 2, DONE: 3,
             SKIPPED: 3}
    shown = jobs if len(jobs) <= MAX_TABLE_ROWS else sorted(jobs, key=lambda j: (order[j.state], j.index))[
        :MAX_TABLE_ROWS]
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.state] = counts.get(j.state, 0) + 1
    caption = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items())
    score_keys = sorted({k for j in jobs for m in j.scores.values() for k in m if k in ("psnr", "ssim", "lpips")})
    table = Table(title=title, caption=caption)
    for col in ("job", "stage", "step", "its/s", "state", "time", *score_keys):
        table.add_column(col, overflow="fold")
    for j in sorted(shown, key=lambda j: j.index):
        tail = tails.get(j.index)
        stage = step = rate = ""
        if tail is not None and tail.stage is not None:
            stage = f"{tail.stage_index}/{len(j.stages)} {tail.stage}"
            if tail.step is not None:
                step = str(tail.step) + (f" (resumed @ {tail.resumed})" if tail.resumed else "")
            rate = f"{tail.rate:.1f}" if tail.rate is not None and j.state in (RUNNING, RETRYING) else ""
        state = j.state.replace("_", " ")
        if j.attempts > 1 and j.state in (RUNNING, RETRYING, DONE, FAILED):
            state += f" (attempt {j.attempts})"
        if j.error:  # the whole line is in batch.json and printed when the job ends
            state += f": {j.error if len(j.error) <= 90 else j.error[:87] + '...'}"
        wall = ""
        if j.started is not None:
            wall = f"{(j.finished or time.time()) - j.started:.0f} s"
        last = list(j.scores.values())[-1] if j.scores else {}
        table.add_row(escape(j.folder), escape(stage), step, rate,
                      f"[{STATE_STYLE.get(j.state, '')}]{escape(state)}[/]", wall,
                      *[f"{last[k]:.3f}" if k in last else "" for k in score_keys])
    return table


# ---------------------------------------------------------------------------------- driver
def gpus_for(device: str, cluster_gpus: float, gpus_per_job: float) -> float:
    """Ray GPUs for a job whose recipe asks for ``device``: ``gpus_per_job`` for ``cuda``, and
    for ``auto`` on a cluster that has GPUs (the worker then resolves ``auto`` to the GPU Ray
    gave it); none for ``cpu``/``mps``, or ``auto`` on a CPU-only cluster."""
    if device == "cuda" or (device == "auto" and cluster_gpus > 0):
        return float(gpus_per_job)
    return 0.0


def summary(spec: Spec, out: Path, jobs: list[Job], batch_id: str, t0: float, state: str, address: str) -> dict:
    return {
        "spec": str(spec.path.resolve()),
        "recipe": str(spec.recipe),
        "batch_run": batch_id,
        "state": state,
        "address": address,
        "started": round(t0, 3),
        "wall_seconds": round(time.time() - t0, 3),
        "cpus_per_job": spec.cpus_per_job,
        "gpus_per_job": spec.gpus_per_job,  # of the jobs that run on a GPU (each job's "gpus")
        "counts": {s: sum(j.state == s for j in jobs) for s in sorted({j.state for j in jobs})},
        "jobs": [
            {
                "index": j.index,
                "name": j.folder,
                "run": str(out / j.folder),
                "defined_at": j.where,
                "overrides": j.overrides,
                "status": j.state,
                "attempts": j.attempts,
                "wall_seconds": None if j.started is None else round((j.finished or time.time()) - j.started, 3),
                "device": j.result.get("device"),
                "host": j.result.get("host"),
                "gpus": j.gpus,
                "error": j.error,
                "scores": j.scores,
            }
            for j in jobs
        ],
    }


def _import_ray():
    try:
        import ray
    except ImportError:
        raise FourRealError(INSTALL_HINT) from None
    return ray


def run_batch(
    spec_path: Path,
    out: Optional[Path] = None,
    address: Optional[str] = None,
    max_parallel: Optional[int] = None,
    cpus_per_job: Optional[float] = None,
    gpus_per_job: Optional[float] = None,
    retries: Optional[int] = None,
    num_cpus: Optional[int] = None,
    console: Any = None,
) -> tuple[int, dict]:
    """Validate, then run every unfinished job of a batch spec on Ray.

    Returns ``(exit code, summary)``: 0 when every job finished, 1 when a job crashed (after
    its retries), else 2 when a job failed on bad input. Writes ``OUT/batch.json`` as jobs
    finish and at the end."""
    from fourreal_core.io import write_json, write_text
    from fourreal_core.run import RunDir

    ray = _import_ray()
    if address and num_cpus:
        raise FourRealError("--num-cpus sizes the local Ray instance; with --address the cluster's nodes "
                            "set their CPUs (ray start --num-cpus)")
    spec = load_spec(spec_path)
    for key, value in (("max_parallel", max_parallel), ("cpus_per_job", cpus_per_job),
                       ("gpus_per_job", gpus_per_job), ("retries", retries)):
        if value is not None:
            setattr(spec, key, value)
    resolve_jobs(spec)
    out = Path(out) if out is not None else Path("runs") / spec.path.stem
    check_batch_dir(out)
    out = out.resolve()
    jobs_dir = out / JOBS_DIR
    batch_id = uuid.uuid4().hex[:12]
    t0 = time.time()

    todo = []
    for job in spec.jobs:
        if job_is_finished(out / job.folder, job):
            job.state, job.scores = SKIPPED, job_scores(out / job.folder)
        else:
            todo.append(job)

    jobs_dir.mkdir(parents=True, exist_ok=True)
    for job in spec.jobs:
        write_text(jobs_dir / f"{job.folder}.yaml", job.resolved)
    address = address or os.environ.get("RAY_ADDRESS") or None  # as ray.init itself would
    where = address or "local"
    write_json(out / SUMMARY, summary(spec, out, spec.jobs, batch_id, t0, "running", where))
    _say(console, f"batch [green]{len(spec.jobs)}[/green] jobs of {_esc(spec.recipe.name)} -> {_esc(str(out))}"
                  + (f" ({len(spec.jobs) - len(todo)} finished earlier, skipped)" if len(todo) < len(spec.jobs) else ""))
    if not todo:
        return _finish(spec, out, batch_id, t0, where, console, {})

    import logging

    init: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING, "include_dashboard": False}
    if address:
        init["address"] = address
    else:
        init["num_cpus"] = num_cpus or os.cpu_count() or 1
        init["object_store_memory"] = LOCAL_OBJECT_STORE_BYTES
    if address and address.startswith("ray://"):  # Ray Client takes fewer options
        init = {"address": address}
    try:
        ray.init(**init)
    except Exception as exc:
        raise FourRealError(f"ray: cannot start or reach a Ray cluster at {where}: {_one_line(exc)}") from None
    tails: dict[int, LogTail] = {}
    inflight: dict[Any, Job] = {}
    try:
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        bad = []
        for job in todo:
            job.gpus = gpus_for(job.device, cluster_gpus, spec.gpus_per_job)
            if job.device == "cuda" and cluster_gpus == 0:
                bad.append(f"{job.where} ({job.folder}): device cuda, but the Ray cluster at {where} has no GPU "
                           "(set device=auto or cpu in the job's overrides)")
        if bad:
            raise BatchInvalid([f"{len(bad)} of {len(spec.jobs)} jobs cannot run here; nothing was started"] + bad)
        remote = ray.remote(max_calls=1)(run_job)  # a fresh process per attempt, as `fourreal run`
        queue = list(todo)
        live = _live(console, spec, out, tails)
        with live:
            while queue or inflight:
                while queue and (spec.max_parallel is None or len(inflight) < spec.max_parallel):
                    job = queue.pop(0)
                    task = {"batch_run": batch_id, "cpus": spec.cpus_per_job, "resolved": job.resolved,
                            "recipe_file": str(jobs_dir / f"{job.folder}.yaml"), "run_dir": str(out / job.folder),
                            "attempts_file": str(jobs_dir / f"{job.folder}.attempts.jsonl")}
                    ref = remote.options(num_cpus=spec.cpus_per_job, num_gpus=job.gpus, max_retries=spec.retries,
                                         retry_exceptions=True, name=f"fourreal-{job.folder}").remote(task)
                    inflight[ref] = job
                    tails[job.index] = LogTail(RunDir(out / job.folder).log.path)
                ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0.5)
                for ref in ready:
                    job = inflight.pop(ref)
                    _collect(ray, ref, job, out, jobs_dir, batch_id)
                    _say_job(console, live, job)
                    write_json(out / SUMMARY, summary(spec, out, spec.jobs, batch_id, t0, "running", where))
                for job in inflight.values():
                    _refresh(job, jobs_dir, batch_id)
                for tail in tails.values():
                    tail.poll()
                live.update(progress_table(spec.jobs, tails, f"fourreal batch {out.name}"))
    except KeyboardInterrupt:
        for ref, job in inflight.items():
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
            job.state, job.finished = CANCELLED, time.time()
        write_json(out / SUMMARY, summary(spec, out, spec.jobs, batch_id, t0, "interrupted", where))
        raise
    finally:
        ray.shutdown()
    return _finish(spec, out, batch_id, t0, where, console, tails)


def _refresh(job: Job, jobs_dir: Path, batch_id: str) -> None:
    att = read_attempts(jobs_dir / f"{job.folder}.attempts.jsonl", batch_id)
    if att:
        job.attempts = len(att)
        job.started = job.started or att[0]["time"]
        job.state = RUNNING if len(att) == 1 else RETRYING


def _collect(ray, ref, job: Job, out: Path, jobs_dir: Path, batch_id: str) -> None:
    job.finished = time.time()
    try:
        res = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # crashed on every attempt
        cause = getattr(exc, "cause", None) or exc
        res = {"status": FAILED, "error": f"{type(cause).__name__}: {_one_line(cause)}"}
    except ray.exceptions.RayError as exc:  # the worker / node died on every attempt
        res = {"status": FAILED, "error": f"{type(exc).__name__}: {_one_line(exc)}"}
    _refresh(job, jobs_dir, batch_id)
    job.result = res
    job.state = res.get("status", FAILED)
    job.error = res.get("error")
    if job.state == FAILED and job.attempts:
        job.error = f"{job.error} (after {job.attempts} attempts)"
    if job.state == DONE:
        job.scores = job_scores(out / job.folder)


def _finish(spec: Spec, out: Path, batch_id: str, t0: float, where: str, console: Any,
            tails: dict[int, LogTail]) -> tuple[int, dict]:
    from fourreal_core.io import write_json

    jobs = spec.jobs
    for tail in tails.values():
        tail.poll()
    ok = all(j.state in FINISHED_OK for j in jobs)
    data = summary(spec, out, jobs, batch_id, t0, "complete" if ok else "incomplete", where)
    write_json(out / SUMMARY, data)
    if console is not None:
        console.print(progress_table(jobs, tails, f"fourreal batch {out.name}"))
    code = 0 if ok else (1 if any(j.state == FAILED for j in jobs) else 2)
    return code, data


class _NoLive:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *a, **k):
        pass


def _live(console: Any, spec: Spec, out: Path, tails: dict):
    if console is None or os.environ.get("FOURREAL_NO_PROGRESS"):
        return _NoLive()
    from rich.live import Live

    return Live(progress_table(spec.jobs, tails, f"fourreal batch {out.name}"), console=console,
                refresh_per_second=2, transient=True)


def _say(console: Any, text: str) -> None:
    if console is not None:
        console.print(text, soft_wrap=True)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _say_job(console: Any, live: Any, job: Job) -> None:
    """One line per finished job (above the live table, or alone without one)."""
    if console is None:
        return
    from rich.markup import escape

    style = STATE_STYLE.get(job.state, "")
    took = f" in {job.finished - job.started:.1f} s" if job.started and job.finished else ""
    tries = f" after {job.attempts} attempts" if job.attempts > 1 else ""
    err = f": {job.error}" if job.error else ""
    console.print(f"[{style}]{escape(job.folder)}: {job.state.replace('_', ' ')}{tries}{took}{escape(err)}[/]",
                  soft_wrap=True)


# ------------------------------------------------------------------------------- command
DEBUG_HELP = "Show Python tracebacks instead of one-line errors."


def batch_command(
    spec: Path = typer.Argument(..., help="Batch spec YAML: a recipe and its jobs (docs/batch.md)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Batch folder (default: runs/<spec name>)."),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster to use: auto, HOST:PORT or ray://HOST:10001 (default: a local Ray)."),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", min=1, help="At most N jobs at once."),
    cpus_per_job: Optional[float] = typer.Option(None, "--cpus-per-job", min=0.01,
                                                 help="Ray CPUs per job; torch threads are pinned to it (default 1)."),
    gpus_per_job: Optional[float] = typer.Option(None, "--gpus-per-job", min=0.01,
                                                 help="Ray GPUs per GPU job (default 1)."),
    retries: Optional[int] = typer.Option(None, "--retries", min=0,
                                          help="Retries of a job whose worker dies or crashes (default 3)."),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1,
                                           help="CPUs of the local Ray instance (default: all; not with --address)."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Run many jobs of one recipe (prompts, videos, seeds) as Ray tasks; rerun to resume."""
    from rich.console import Console
    from rich.markup import escape

    console, err_console = Console(stderr=False), Console(stderr=True)
    try:
        code, _ = run_batch(spec, out=out, address=address, max_parallel=max_parallel, cpus_per_job=cpus_per_job,
                            gpus_per_job=gpus_per_job, retries=retries, num_cpus=num_cpus, console=console)
    except BatchInvalid as exc:
        if debug:
            raise
        for line in exc.lines:
            err_console.print(f"[bold red]error:[/bold red] {escape(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if code:
        raise typer.Exit(code)


@hookimpl
def fourreal_register_commands(app):
    app.command(name="batch")(batch_command)
