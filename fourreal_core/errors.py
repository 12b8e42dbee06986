"""Errors that end a command with one clear line (exit code 2) instead of a traceback."""

from __future__ import annotations


class FourRealError(Exception):
    """A user-facing error: the CLI prints ``error: <message>`` and exits with 2."""

    exit_code = 2


class PluginError(FourRealError):
    """A plugin is missing, duplicated, or failed to load."""


class RecipeError(FourRealError):
    """A recipe is malformed; the message starts with ``FILE: yaml.path:``."""


class InputError(FourRealError):
    """An input file is missing or unreadable; the message names the file."""


class RunDirError(FourRealError):
    """The output folder cannot be used for this run."""


#: errno -> what to tell the user, for failures of the machine rather than of fourreal
_ERRNO_ADVICE = {
    "ENOSPC": "no space left on the disk; free some space or choose another --out "
              "(finished stages and checkpoints are kept; rerun to resume)",
    "EDQUOT": "disk quota exceeded; free some space or choose another --out "
              "(finished stages and checkpoints are kept; rerun to resume)",
    "EFBIG": "file too large for this filesystem or the file-size limit (ulimit -f); raise the limit or "
             "choose another --out (finished stages and checkpoints are kept; rerun to resume)",
    "EMFILE": "too many open files for this process (ulimit -n); raise the limit and rerun",
    "ENFILE": "too many open files on this machine; close some programs and rerun",
    "ENOMEM": "out of memory; lower the resolution (height/width), densify.max_gaussians, or the frames per "
              "SDS video (num_frames), or raise the memory limit (ulimit -v); finished stages and checkpoints are kept",
    "EIO": "input/output error from the disk; check the disk and rerun",
    "EROFS": "the filesystem is read-only; choose a writable --out",
    "EACCES": "permission denied; choose a folder you can write to",
    "EPERM": "operation not permitted; choose a folder you can write to",
    "ENOTDIR": "a part of this path is a file, not a folder; choose another --out",
    "EISDIR": "is a folder where a file was expected",
    "ENOENT": "no such file or folder",
    "EEXIST": "already exists",
}

_OUT_OF_MEMORY = ("out of memory; lower the resolution (height/width), densify.max_gaussians, or the frames per "
                  "SDS video (num_frames), or raise the memory limit (ulimit -v); finished stages and checkpoints "
                  "are kept")


def environment_error(exc: BaseException) -> "str | None":
    """One line for a failure of the machine rather than of fourreal -- a disk that is full,
    read-only or over a size limit, too many open files, out of memory or address space, a
    shared library that could not be mapped -- naming the path when the error knows it.
    None for anything else (a bug, to be reported as an internal error)."""
    import errno as _errno

    import re

    text = str(exc)
    if isinstance(exc, (ImportError, OSError)) and ("failed to map segment" in text or
                                                   "cannot allocate memory" in text.lower() and "shared object" in text):
        found = re.findall(r"([^\s:/]+\.so[\w.]*)\s*:\s*(?:failed to map|cannot allocate)", text, flags=re.I)
        lib = found[-1] if found else "a shared library"
        return (f"cannot load the shared library {lib}: out of memory or address space (ulimit -v); "
                "raise the limit or free memory and rerun")
    if isinstance(exc, SystemError) and "_find_and_load" in text:  # a MemoryError lost inside the import system
        return ("out of memory or address space while loading Python modules (ulimit -v); raise the limit or "
                "free memory and rerun")
    if isinstance(exc, OSError) and exc.errno is not None:
        where = exc.filename or ""
        if exc.filename2:
            where = f"{where} -> {exc.filename2}"
        name = _errno.errorcode.get(exc.errno, "")
        advice = _ERRNO_ADVICE.get(name) or (exc.strerror or str(exc)).splitlines()[0][:160]
        return f"{where}: {advice}" if where else advice
    if isinstance(exc, MemoryError):
        return _OUT_OF_MEMORY
    if isinstance(exc, RuntimeError) and any(m in text for m in ("out of memory", "can't allocate memory",
                                                                "not enough memory")):
        return _OUT_OF_MEMORY
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA)
        return _OUT_OF_MEMORY
    return None
