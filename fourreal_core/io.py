"""Atomic file writing and safetensors checkpoints.

Every output is written to a temporary name in the same folder and then renamed, so a
crash or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional


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
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text(path: os.PathLike | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: os.PathLike | str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_tensors(
    path: os.PathLike | str, tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None
) -> None:
    """Save a flat ``name -> tensor`` dict as safetensors, atomically."""
    from safetensors.torch import save_file

    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_tensors(path: os.PathLike | str, device: Any = "cpu") -> tuple[dict, dict]:
    """Load safetensors: (tensors, metadata)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path), device=str(device))
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    return tensors, meta
