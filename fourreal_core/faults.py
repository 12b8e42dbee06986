"""Test-only fault injection for conditions a test cannot create on its own machine.

Out of memory, a full disk or a read-only disk (the tests run as root) are raised at the
very point where the real error would come from, when ``FOURREAL_FAULT`` names that point::

    FOURREAL_FAULT=train_step:cuda_oom@3     # the 4th training step runs out of CUDA memory
    FOURREAL_FAULT=save_tensors:no_space     # safetensors fails writing: disk full
    FOURREAL_FAULT=atomic_write:read_only    # any output file: read-only filesystem

Unset (always, outside tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
from typing import Optional


def inject(point: str, step: Optional[int] = None) -> None:
    spec = os.environ.get("FOURREAL_FAULT")
    if not spec:
        return
    where, _, kind = spec.partition(":")
    kind, _, at = kind.partition("@")
    if where != point or (at and step is not None and int(at) != step) or (at and step is None):
        return
    if kind == "cuda_oom":
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by FOURREAL_FAULT)")
    if kind == "cpu_oom":
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 8589934592 bytes (injected by FOURREAL_FAULT)")
    if kind == "no_space":
        from safetensors import SafetensorError

        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" }) (injected by FOURREAL_FAULT)')
    if kind == "read_only":
        raise OSError(errno.EROFS, "Read-only file system (injected by FOURREAL_FAULT)")
    raise ValueError(f"FOURREAL_FAULT={spec!r}: unknown fault {kind!r}")
