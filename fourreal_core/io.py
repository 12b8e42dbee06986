"""Atomic file writing and safetensors checkpoints.

Every output is written to a temporary name in the same folder and then renamed, so a
crash or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from .faults import inject


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: os.PathLike | str, suffix: Optional[str] = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    ``suffix`` defaults to ``path``'s own suffix, so writers that pick a format from the
    extension (imageio, plyfile) still do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.tmp.", suffix=suffix if suffix is not None else path.suffix,
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        inject("atomic_write")
        yield tmp_path
        # mkstemp makes 0600 files; outputs follow the umask like any other file the user writes
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
        _journal(path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.errno is not None and not exc.filename:
            exc.filename = str(path)  # a writer's EFBIG/ENOSPC often names no file: this is the one
        raise


#: a run folder's record of the files fourreal wrote in it (one relative path a line), so a
#: rerun removes from a leftover ``.partial`` or checkpoint folder only what fourreal wrote
JOURNAL = ".fourreal-written"


def _journal(path: Path) -> None:
    """Append ``path`` to the journal of the folder above it that keeps one (a run folder)."""
    for parent in list(path.parents)[:8]:
        j = parent / JOURNAL
        if j.is_file():
            try:
                with open(j, "a") as f:
                    f.write(path.relative_to(parent).as_posix() + "\n")
            except OSError:
                pass  # the journal only narrows what a rerun may remove; it never blocks a write
            return


def start_journal(folder: Path) -> None:
    """Make ``folder`` keep a journal of what fourreal writes under it (see :func:`written_files`)."""
    j = Path(folder) / JOURNAL
    if not j.exists():
        j.touch()


def written_files(folder: Path) -> set[str]:
    """Relative paths (posix) fourreal recorded writing under ``folder``'s journal."""
    try:
        return set(filter(None, (Path(folder) / JOURNAL).read_text().splitlines()))
    except (OSError, UnicodeDecodeError):
        return set()


def write_text(path: os.PathLike | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def finite_json(obj: Any, path: str = "", nulled: Optional[list] = None) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN); the dotted
    paths replaced are appended to ``nulled``."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            if nulled is not None:
                nulled.append(path or "<value>")
            return None
        return obj
    if isinstance(obj, dict):
        return {str(k): finite_json(v, f"{path}.{k}" if path else str(k), nulled) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v, f"{path}[{i}]", nulled) for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        return finite_json(obj.item(), path, nulled)
    try:
        return finite_json(float(obj), path, nulled)
    except (TypeError, ValueError):
        return str(obj)


def strict_json_dumps(obj: Any, **kw: Any) -> str:
    """Strict JSON: non-finite numbers become null, listed under ``"non_finite"`` (a dict
    at the top) so a reader knows a value was not a number rather than missing."""
    nulled: list = []
    clean = finite_json(obj, "", nulled)
    if nulled and isinstance(clean, dict):
        clean["non_finite"] = sorted(set(clean.get("non_finite") or []) | set(nulled))
    return json.dumps(clean, allow_nan=False, **kw)


def write_json(path: os.PathLike | str, obj: Any) -> None:
    write_text(path, strict_json_dumps(obj, indent=2, sort_keys=False) + "\n")


def save_tensors(
    path: os.PathLike | str, tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None
) -> None:
    """Save a flat ``name -> tensor`` dict as safetensors, atomically."""
    from safetensors.torch import save_file

    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            inject("save_tensors")
            save_file(flat, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
        except Exception as exc:  # safetensors reports I/O failures as SafetensorError("... No space left ...")
            if type(exc).__name__ == "SafetensorError" and ("No space left" in str(exc) or "StorageFull" in str(exc)):
                raise OSError(errno.ENOSPC, "No space left on device", str(path)) from exc
            raise


def load_tensors(path: os.PathLike | str, device: Any = "cpu", finite: bool = True) -> tuple[dict, dict]:
    """Load safetensors: (tensors, metadata).

    A file that is missing, truncated or not safetensors is an :class:`InputError` naming it;
    with ``finite`` (default) so is a floating-point tensor holding NaN or Inf (weights that
    would otherwise render as nothing, or as NaN, with exit 0)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .errors import InputError

    try:
        tensors = load_file(str(path), device=str(device))
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # SafetensorError (truncated / not safetensors), OSError, ...
        why = (str(exc).splitlines() or [""])[0][:120]
        raise InputError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {why})") from None
    if finite:
        import torch

        for k, v in tensors.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise InputError(f"{path}: tensor {k!r} holds non-finite values (NaN or Inf)")
    return tensors, meta
