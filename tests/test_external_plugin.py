"""A third-party package adds a deformer through the `fourreal` entry-point group, with no
change to fourreal: after `pip install` it is listed and usable by name from a recipe."""

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import run_cli, fourreal_env

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "fourreal-twist"
version = "0.0.1"

[project.entry-points.fourreal]
twist = "fourreal_twist"
"""

MODULE = '''
"""A deformer that shifts every Gaussian along x by amount * t."""
from dataclasses import dataclass

from fourreal_core import hookimpl


@dataclass
class TwistConfig:
    amount: float = 1.0


def make_twist(cfg):
    import torch

    from fourreal_core.interfaces import Deformation, Deformer

    class Twist(Deformer):
        def deform(self, means, time):
            dx = torch.zeros_like(means)
            dx[:, 0] = cfg.amount * float(time)
            return Deformation(dx=dx, dq=torch.zeros(means.shape[0], 4))

    return Twist()


@hookimpl
def fourreal_register(registry):
    registry.add("deformer", "twist", make_twist, config=TwistConfig,
                 description="third-party test deformer: x += amount * t")
'''


@pytest.fixture
def installed_twist(tmp_path_factory):
    pkg = tmp_path_factory.mktemp("twistpkg")
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "fourreal_twist.py").write_text(MODULE)
    pip = [sys.executable, "-m", "pip"]
    res = subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(pkg)],
        capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    try:
        yield
    finally:
        subprocess.run([*pip, "uninstall", "-y", "-q", "fourreal-twist"], capture_output=True)


def test_third_party_deformer_is_listed_and_usable(installed_twist, tmp_path):
    env = fourreal_env()
    env.pop("FOURREAL_PLUGINS", None)
    res = run_cli(["plugins"], tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    row = [ln for ln in res.stdout.splitlines() if " twist " in ln]
    assert row and "deformer" in row[0] and "fourreal-twist" in row[0], res.stdout
    (tmp_path / "r.yaml").write_text(textwrap.dedent("""
        name: twisted
        stages:
          - name: count
            params:
              steps: 1
              trace: trace.txt
              deformer: {name: twist, params: {amount: 2.0}}
    """))
    assert run_cli(["validate", "r.yaml"], tmp_path, env=env).returncode == 0
    res = run_cli(["run", "r.yaml", "--out", "run"], tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "run" / "stages" / "01_count" / "result.json").read_text())
    assert result["deformed_dx"] == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]  # 2.0 * t=0.5
    bad = run_cli(["validate", "r.yaml", "--set", "stages.count.params.deformer.params.amont=1"], tmp_path, env=env)
    assert bad.returncode == 2 and "deformer.params.amont: unknown param; did you mean 'amount'?" in bad.stderr
