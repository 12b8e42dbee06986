"""Exclusive, crash-safe locks on run folders (one writer at a time, readers never wait).

A writer (``fourreal run``, or ``export``/``eval``/``render`` writing into a run) holds an
``flock`` on a small lock file for as long as it writes. The lock belongs to the open file,
so the operating system drops it when the process ends for any reason (Ctrl-C, SIGKILL, a
crashed node): a rerun after a crash proceeds without anyone deleting a stale pid file.
The lock file also records who holds it (pid, host, command), which is what the second
writer is told. Readers (a viewer, a progress display, ``fourreal eval`` of a finished
stage) never take it.

``fcntl.flock`` is used rather than a library (``filelock`` and ``portalocker`` wrap the
same call) because the holder's pid and host must be written into, and read back from, the
very file that is locked, which those libraries do not offer.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from .errors import RunDirError

try:  # POSIX (Linux, macOS); on Windows runs are unlocked (documented in docs/runs.md)
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms CI runs
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".fourreal.lock"


class FolderLock:
    """``with FolderLock(run_dir, what=...)``: exclusive lock or :class:`RunDirError`.

    ``FOURREAL_NO_LOCK=1`` skips locking (for filesystems without working ``flock``; see
    docs/runs.md)."""

    def __init__(self, folder: Path, name: str = LOCK_FILE, what: Optional[str] = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what or str(self.folder)
        self._fh = None

    def acquire(self) -> "FolderLock":
        if fcntl is None or os.environ.get("FOURREAL_NO_LOCK", "") not in ("", "0"):
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = _parse(fh.read())
            fh.close()
            since = ""
            if isinstance(holder.get("started"), (int, float)):
                since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(holder["started"]))
            raise RunDirError(
                f"{self.what} is in use by pid {holder.get('pid', '?')} on {holder.get('host', '?')}{since}"
                " (another fourreal command is writing to it); wait for it to finish or stop it"
            ) from None
        except OSError as exc:
            fh.close()
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise RunDirError(
                    f"{self.what}: this filesystem does not support file locks ({exc.strerror}); "
                    "set FOURREAL_NO_LOCK=1 to run without the run-folder lock (see docs/runs.md)"
                ) from None
            raise
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3),
                             "command": " ".join(sys.argv[:3])}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            # the file stays: unlinking a lock file races with a second writer opening it
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _parse(text: str) -> dict:
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else {}
    except ValueError:
        return {}
