"""Shared fixtures: the toy plugin, CLI runners, and paths to optional real data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(TESTS))

os.environ.setdefault("FOURREAL_NO_PROGRESS", "1")

# `make test` runs the files on pytest-xdist workers (one per core, at most 4): each worker and
# the `fourreal` subprocesses it starts use one thread, so two workers on a 2-core machine do
# not fight over the cores (set before torch / numba are imported by any test module).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "FOURREAL_RASTER_THREADS"):
        os.environ[_var] = "1"


def fourreal_env(extra_modules: str = "_toy_plugin", **env: str) -> dict:
    """Environment for a `fourreal` subprocess that also registers the tests' toy plugin."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if extra_modules:
        e["FOURREAL_PLUGIN_MODULES"] = extra_modules
    e["FOURREAL_NO_PROGRESS"] = "1"
    e.update(env)
    return e


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `fourreal` console script."""
    exe = Path(sys.executable).parent / "fourreal"
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env=env or fourreal_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli(tmp_path):
    def _run(*args: str, env: dict | None = None, timeout: float = 300):
        return run_cli(list(args), tmp_path, env=env, timeout=timeout)

    return _run


@pytest.fixture
def registry():
    """The process registry with the toy plugin registered; restored afterwards."""
    import _toy_plugin

    from fourreal_core.registry import get_registry

    reg = get_registry()
    source = "tests:_toy_plugin"
    reg.register_module(_toy_plugin, source=source)
    try:
        yield reg
    finally:
        reg.unregister_source(source)
