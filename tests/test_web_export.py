"""``fourreal export RUN --web OUT/``: a static page that plays the 4D scene from ``file://``.

The scene is built in-process and saved as a run's 4D scene: Gaussians on a wall and a floor
in front of a reference camera, an MLP deformer with perturbed weights restricted (the motion
stage's ``dynamic_region``) to the right half of the reference image -- so the left half is
static and the right half moves. Saved and reloaded through the scene manifest, as ``fourreal
export`` sees it.

* the export's own properties: static Gaussians stored once, moving ones per step, the
  moving ones' centres equal to the deformation at each time; the size options drop what
  they say and the report says it; bad options are one line, exit 2;
* in headless Chromium (Debian's ``chromium``, driven by playwright as tests/test_viewer.py
  does; skipped without it): the page opens from ``file://`` with no server, is not blank,
  starts at the reference camera (it matches ``fourreal render`` of that camera where the
  scene is static), and moving the time slider changes the picture where the scene moves
  and not where it is static.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fourreal_env, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
W, H = 128, 96
TIMES = [i / 7 for i in range(8)]


def _look_at(eye, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    eye, target = torch.tensor(eye, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
    fwd = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, 1.0])), dim=0)
    down = torch.linalg.cross(fwd, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, fwd, eye
    return torch.linalg.inv(c2w)


def _cams(eyes, w=W, h=H):
    from fourreal_core.types import Cameras

    K = torch.tensor([[100.0, 0, w / 2], [0, 100.0, h / 2], [0, 0, 1]])
    return Cameras(torch.stack([_look_at(e) for e in eyes]), K.expand(len(eyes), 3, 3).clone(), w, h)


def make_scene(folder: Path, n: int = 3000, seed: int = 0, amplitude: float = 0.03):
    """A saved 4D scene: a wall (y = 0.6) and a floor (z = -0.6) of coloured Gaussians, seen
    by a reference camera at (0, -4, 0.4); motion only in the right half of its image."""
    from fourreal_core.recipe import component_from_plain
    from fourreal_core.registry import get_registry
    from fourreal_stages.region import RegionDeformer
    from fourreal_stages.scene4d import Scene4D

    reg = get_registry()
    rep = component_from_plain("representation", {"name": "gaussians", "params": {"sh_degree": 1}}, reg,
                               source="test")
    model = rep.build(reg)
    model.init_random_box(n=n, extent=1.0, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        raw = model.raw
        m = raw["means"]
        half = n // 2
        m[:half, 1] = 0.6 + 0.02 * torch.rand(half, generator=g)  # the wall
        m[half:, 2] = -0.6 + 0.02 * torch.rand(n - half, generator=g)  # the floor
        m[half:, 1] = m[half:, 1] * 0.6
        raw["scales"].fill_(math.log(0.05))
        raw["opacities"].fill_(2.0)
        # smooth colour bands so that motion shows as a change of colour
        x, z = m[:, 0], m[:, 2]
        rgb = torch.stack([0.5 + 0.45 * torch.sin(6 * x), 0.5 + 0.45 * torch.sin(5 * z + 1), 0.5 + 0.4 * torch.cos(4 * x * z)], 1)
        raw["sh0"].copy_(((rgb - 0.5) / 0.28209479177387814).reshape(raw["sh0"].shape))
        raw["shN"].normal_(0, 0.05, generator=g)
    dspec = component_from_plain("deformer", {"name": "mlp", "params": {"width": 32, "depth": 2}}, reg, source="test")
    inner = dspec.build(reg)
    inner.setup(num_frames=len(TIMES), canonical=None, canonical_means=model.params().means.detach())
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in inner.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        inner.layers[0].weight[:, -13:].add_(torch.randn(inner.layers[0].weight.shape[0], 13) * 0.8)
        inner.head_dx.weight.add_(torch.randn_like(inner.head_dx.weight) * amplitude)
    ref = _cams([(0.0, -4.0, 0.4)])
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[:, W // 2 + 8:] = True
    deformer = RegionDeformer(inner, ref.viewmats[0], ref.Ks[0], mask)
    s = Scene4D(model, deformer, torch.zeros(3), times=torch.tensor(TIMES), canonical_frame=3,
                reference_camera=ref,
                freeze_cameras=_cams([(4 * math.sin(a), -4 * math.cos(a), 0.4) for a in (-0.5, 0.0, 0.5)]),
                deformer_spec=dspec, representation_spec=rep)
    folder.mkdir(parents=True, exist_ok=True)
    return s.save(folder)


def _load(manifest: Path):
    from fourreal_core.registry import get_registry
    from fourreal_stages.scene4d import Scene4D

    return Scene4D.load(manifest, get_registry(), "cpu")


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="module")
def web(scene_file, tmp_path_factory):
    from fourreal_viewer.web import WebOptions, build_web

    out = tmp_path_factory.mktemp("web") / "page"
    report = build_web(_load(scene_file), out, WebOptions(fps=4.0))
    return out, report
