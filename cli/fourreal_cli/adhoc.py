"""``fourreal export / eval / render``: run one stage plugin on a finished run's outputs.

The stage writes into ``RUN/<out>``, a sub-folder this command owns: it is created, or replaced
atomically when an earlier command of the same kind wrote it (a ``.fourreal-output.json``
marker lists the files it wrote), and anything else is refused untouched. The run itself is
only read. Built on the core's run-folder pieces (:class:`~fourreal_core.run.StageContext`,
:class:`~fourreal_core.lock.FolderLock`); the core does not depend on it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from fourreal_core.errors import RunDirError
from fourreal_core.io import write_json
from fourreal_core.lock import FolderLock
from fourreal_core.run import (
    CheckpointStore, RunDir, RunLog, StageContext, check_declared_writes, declared_writes, ensure_inside,
    last_logged, remove_own, resolve_device, stage_class, stage_errors,
)

if TYPE_CHECKING:
    from fourreal_core.registry import Registry


OUTPUT_MARKER = ".fourreal-output.json"
RESERVED_OUTPUT_NAMES = {"stages", "checkpoints", "recipe.yaml", "run.json", "log.jsonl"}


def check_output_name(out_name: str) -> str:
    """A sub-folder name for ``fourreal export/eval/render --out``: one plain path component."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", out_name or "") or ".." in out_name:
        raise RunDirError(
            f"--out {out_name!r}: must be a plain sub-folder name of the run (letters, digits, '_', '-', '.'; "
            "no '/' or '..')"
        )
    if out_name in RESERVED_OUTPUT_NAMES:
        raise RunDirError(f"--out {out_name!r}: is part of the run folder itself; choose another name")
    return out_name


def _written_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != OUTPUT_MARKER)


def check_replaceable_output(folder: Path, kind: str) -> None:
    """Refuse (touching nothing) to replace ``folder`` unless it is a fourreal output of the
    same kind holding only the files fourreal wrote there."""
    if not folder.exists():
        return
    marker = folder / OUTPUT_MARKER
    info: dict = {}
    if folder.is_dir() and marker.exists():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
    if not folder.is_dir() or info.get("kind") != kind:
        what = f"a fourreal {info['kind']} output" if info.get("kind") else "not a fourreal output folder"
        raise RunDirError(
            f"{folder}: already exists and is {what}, not a {kind} output; choose another --out (nothing was touched)"
        )
    extra = sorted(set(_written_files(folder)) - set(info.get("files", [])))
    if extra:
        raise RunDirError(
            f"{folder}: holds files fourreal did not write ({', '.join(extra[:3])}"
            f"{', ...' if len(extra) > 3 else ''}); move them or choose another --out (nothing was touched)"
        )


def _remove_own(folder: Path, kind: str, run_dir: Path, out_name: str) -> None:
    """Remove a leftover folder of an earlier ``kind`` command; refuse one fourreal did not make,
    or one holding files it did not write (put there after the command was interrupted)."""
    if not folder.exists():
        return
    try:
        info = json.loads((folder / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        info = {}
    if info.get("kind") != kind:
        raise RunDirError(f"{folder}: exists and was not made by fourreal {kind}; move it away (nothing was touched)")
    remove_own(folder, run_dir, last_logged(run_dir, out=out_name), f"the leftover of an interrupted {kind}")


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
    ``RUN/out_name``: a folder this command creates, or one an earlier ``fourreal`` command of
    the same kind wrote (which it replaces atomically). Anything else is refused untouched.
    Two writers of one output folder exclude each other; the run itself is only read, so
    this works while another process is still running later stages.
    """
    import torch

    from fourreal_core.recipe import component_from_plain, load_recipe

    run_dir = Path(run_dir)
    if not (run_dir / "run.json").exists() or not (run_dir / "recipe.yaml").exists():
        raise RunDirError(f"{run_dir}: not a fourreal run folder (no run.json / recipe.yaml)")
    check_output_name(out_name)
    final = ensure_inside(run_dir / out_name, run_dir)
    partial = ensure_inside(run_dir / f".{out_name}.partial", run_dir)
    check_replaceable_output(final, stage)
    recipe = load_recipe(run_dir / "recipe.yaml", registry=registry, check_files=False)
    spec = component_from_plain("stage", {"name": stage, "params": params}, registry, source=f"fourreal {out_name}")
    dev = resolve_device(device or recipe.device)
    stage_dirs = RunDir(run_dir).finished_stage_dirs()  # checked before anything is written
    with FolderLock(run_dir, name=f".{out_name}.lock", what=str(final)):
        check_replaceable_output(final, stage)  # again, now that no other writer can change it
        _remove_own(partial, stage, run_dir, out_name)  # leftovers of an interrupted attempt of this command
        partial.mkdir(parents=True)
        write_json(partial / OUTPUT_MARKER, {"kind": stage, "partial": True, "files": []})
        log = RunLog(run_dir / "log.jsonl")
        ctx = StageContext(
            name=out_name, index=0, run_dir=run_dir, out_dir=partial, recipe_dir=Path.cwd(), device=dev,
            seed=recipe.seed, iterations_scale=recipe.iterations_scale,
            checkpoints=CheckpointStore(run_dir / "checkpoints" / out_name), log=log, registry=registry,
            rasterizer_spec=recipe.rasterizer, stage_dirs=stage_dirs,
            stage_writes={s.label: declared_writes(stage_class(s, registry)) for s in recipe.stages},
        )
        torch.manual_seed(recipe.seed)
        log("adhoc_start", stage=stage, out=out_name)
        with stage_errors(f"fourreal {stage}", dev, partial):
            built = spec.build(registry)
            built.run(ctx)
        check_declared_writes(built, partial, f"fourreal {stage}")
        write_json(partial / OUTPUT_MARKER, {"kind": stage, "files": _written_files(partial)})
        if final.exists():
            old = run_dir / f".{out_name}.old"
            _remove_own(old, stage, run_dir, out_name)
            os.replace(final, old)  # checked above: a same-kind output holding only fourreal's files
            os.replace(partial, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, final)
        log("adhoc_end", stage=stage, out=out_name)
    return final
