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
"""The Twist example of docs/plugins.md: x += a (t - t_c) with a learnable a."""
from dataclasses import dataclass

from fourreal_core import hookimpl


@dataclass
class TwistConfig:
    amount: float = 1.0
    lr: float = 1e-3
    lr_final: float = 1e-5


def make_twist(cfg):
    import torch

    from fourreal_core.interfaces import Deformation, Deformer

    class Twist(torch.nn.Module, Deformer):
        def __init__(self):
            super().__init__()
            self.lr, self.lr_final = cfg.lr, cfg.lr_final
            self.a = torch.nn.Parameter(torch.tensor([cfg.amount, 0.0, 0.0]))
            self.register_buffer("canonical", torch.zeros(()))

        def setup(self, *, num_frames=None, canonical=None, canonical_means=None):
            if canonical is not None:
                self.canonical.fill_(float(canonical))

        def deform(self, means, time, quats=None):
            dx = (float(time) - self.canonical) * self.a.expand_as(means)
            return Deformation(dx=dx, dq=torch.zeros(len(means), 4, device=means.device))

    return Twist()


@hookimpl
def fourreal_register(registry):
    registry.add("deformer", "twist", make_twist, config=TwistConfig,
                 description="third-party test deformer: x += a (t - t_c)")
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


STAGES = """
name: twisted-4d
iterations_scale: 0.002
stages:
  - name: synthetic
    params: {width: 32, height: 24, num_reference_frames: 5, num_freeze_frames: 4, num_test_views: 1,
             num_test_static_views: 1, num_init_points: 400, write_videos: false}
  - name: canonical
    params:
      w_mv: {name: twist, params: {amount: 0.0, lr: 0.01, lr_final: 0.001}}
  - name: motion
    params:
      w_t: {name: twist, params: {amount: 0.0, lr: 0.01, lr_final: 0.001}}
"""


def test_third_party_deformer_runs_through_the_canonical_and_motion_stages(installed_twist, tmp_path):
    """The documented contract is enough: the pip-installed Twist trains as w_mv in the real
    canonical stage and as w_t in the real motion stage, is saved with the scene, reloads,
    and is exactly zero at the canonical view k_c and at the canonical time t_c."""
    import torch

    from fourreal_core.io import load_tensors
    from fourreal_core.registry import Registry
    from fourreal_formats.scene4d import Scene4D

    env = fourreal_env()
    env.pop("FOURREAL_PLUGINS", None)
    (tmp_path / "r.yaml").write_text(STAGES)
    res = run_cli(["run", "r.yaml", "--out", "run"], tmp_path, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    stages = tmp_path / "run" / "stages"
    w_mv, meta = load_tensors(stages / "02_canonical" / "w_mv.safetensors")
    assert int(meta["canonical_view"]) == 0 and float(w_mv["canonical"]) == 0.0
    assert float(w_mv["a"].abs().sum()) > 0  # trained from a = 0 through the engine's optimiser
    reg = Registry()
    reg.load_entry_points()  # the installed package, as a fresh process sees it
    scene = Scene4D.load(stages / "03_motion", reg)
    ref = json.loads((stages / "03_motion" / "scene4d.json").read_text())["reference"]
    t_c = ref["times"][ref["canonical_frame"]]
    assert float(scene.deformer.canonical) == pytest.approx(t_c) and float(scene.deformer.a.abs().sum()) > 0
    x = scene.model.params().means
    assert torch.count_nonzero(scene.deformer.deform(x, t_c).dx) == 0
    assert torch.count_nonzero(scene.deformer.deform(x, 1.0).dx) > 0
