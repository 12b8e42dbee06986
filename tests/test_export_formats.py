"""The 4D export in formats other viewers play: the PLY sequence in Brush's layout (a folder
and a zip holding only ``.ply`` files whose names sort in time order) and a Rerun recording
read back through rerun's own Python API. The scene is built in-process (random Gaussians,
an MLP deformer with perturbed weights so that every Gaussian moves), saved and reloaded
through the scene manifest, as ``fourreal export`` sees it."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
import torch

from fourreal_core.types import Cameras

TIMES = [0.0, 0.25, 0.5, 0.75, 1.0]
STANDARD = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]


def _look_at(eye, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """World-to-camera (OpenCV axes) of a camera at ``eye`` looking at ``target``, z up."""
    eye, target = torch.tensor(eye, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
    fwd = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, 1.0])), dim=0)
    down = torch.linalg.cross(fwd, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, fwd, eye
    return torch.linalg.inv(c2w)


def _cams(eyes, w=32, h=24) -> Cameras:
    K = torch.tensor([[30.0, 0, w / 2], [0, 30.0, h / 2], [0, 0, 1]])
    return Cameras(torch.stack([_look_at(e) for e in eyes]), K.expand(len(eyes), 3, 3).clone(), w, h)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from fourreal_core.recipe import component_from_plain
    from fourreal_core.registry import get_registry
    from fourreal_formats.scene4d import Scene4D

    reg = get_registry()
    rep = component_from_plain("representation", {"name": "gaussians", "params": {}}, reg, source="test")
    model = rep.build(reg)
    model.init_random_box(n=400, extent=1.0, seed=0)
    dspec = component_from_plain("deformer", {"name": "mlp", "params": {"width": 32, "depth": 2}}, reg, source="test")
    deformer = dspec.build(reg)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in deformer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    s = Scene4D(model, deformer, torch.zeros(3), times=torch.tensor(TIMES),
                reference_camera=_cams([(0.0, -4.0, 1.0)]),
                freeze_cameras=_cams([(4 * math.sin(a), -4 * math.cos(a), 1.0) for a in (-0.6, 0.0, 0.6)]),
                deformer_spec=dspec, representation_spec=rep)
    folder = tmp_path_factory.mktemp("scene")
    s.save(folder)
    return Scene4D.load(folder, reg, "cpu")


@pytest.fixture(scope="module")
def exported(scene, tmp_path_factory):
    from fourreal_core.recipe import component_from_plain
    from fourreal_core.registry import get_registry
    from fourreal_stages.export import ExportOptions
    from fourreal_stages.export import export_scene

    reg = get_registry()
    rast = component_from_plain("rasterizer", {"name": "torch", "params": {}}, reg, source="test").build(reg)
    out = tmp_path_factory.mktemp("export")
    files = export_scene(scene, rast, out, ExportOptions(orbit_frames=2, grid_views=1, grid_times=1))
    return out, files


def _expected(scene, t: float):
    """Deformed means and unit quaternions at time t, straight from the scene's deformer."""
    raw = scene.model.raw
    q = torch.nn.functional.normalize(raw["quats"].detach(), dim=-1)
    with torch.no_grad():
        d = scene.deformer.deform(raw["means"].detach(), float(t), quats=q)
    return (raw["means"].detach() + d.dx).numpy(), torch.nn.functional.normalize(q + d.dq, dim=-1).numpy()


def test_ply_sequence_is_brushs_layout_and_round_trips(scene, exported):
    from plyfile import PlyData

    from fourreal_gaussians.ply import read_ply
    from fourreal_stages.export import BRUSH_FPS, PLY_ZIP

    out, files = exported
    folder = out / "ply"
    names = sorted(p.name for p in folder.iterdir())
    # Brush plays a source as a sequence only when every file in it is a .ply; one per time
    assert names == [f"t_{i:03d}.ply" for i in range(len(TIMES))]
    assert files["ply"] == [f"ply/{n}" for n in names]
    with zipfile.ZipFile(out / PLY_ZIP) as z:
        assert z.namelist() == names  # at the zip's root, nothing else, in time order
        for n in names:
            assert z.read(n) == (folder / n).read_bytes()
    meta = json.loads((out / "export.json").read_text())["ply_sequence"]
    assert meta["times"] == pytest.approx(TIMES) and meta["brush_fps"] == BRUSH_FPS == 24
    moved = 0.0
    first = None
    for n, t in zip(names, TIMES):
        props = [p.name for p in PlyData.read(str(folder / n))["vertex"].properties]
        assert props[:9] == STANDARD and props[-8:] == ["opacity", "scale_0", "scale_1", "scale_2",
                                                        "rot_0", "rot_1", "rot_2", "rot_3"]
        g = read_ply(folder / n)
        means, quats = _expected(scene, t)
        np.testing.assert_allclose(g.means, means, atol=1e-5)
        gq = g.quats / np.linalg.norm(g.quats, axis=1, keepdims=True)
        np.testing.assert_allclose(np.abs((gq * quats).sum(1)), 1.0, atol=1e-5)  # same rotation (q ~ -q)
        first = g.means if first is None else first
        moved = max(moved, float(np.abs(g.means - first).max()))
    assert moved > 0.01  # the Gaussians really move between the files


def test_sequence_names_sort_in_time_order_past_999():
    from fourreal_stages.export import ply_sequence_names

    names = ply_sequence_names(1001)
    assert names[0] == "t_0000.ply" and names[-1] == "t_1000.ply" and sorted(names) == names
    assert ply_sequence_names(3) == ["t_000.ply", "t_001.ply", "t_002.ply"]


def test_rerun_recording_reads_back_one_splat_set_per_time(scene, exported):
    pytest.importorskip("rerun", reason="rerun-sdk not installed (pip install -e .[view])")
    from rerun.chunk import RrdReader

    from fourreal_stages.export import RRD

    out, files = exported
    assert files["rerun"]["file"] == RRD
    chunks = RrdReader(out / RRD).stream().to_chunks()
    entities = {c.entity_path for c in chunks}
    assert {"/world/cameras/reference", "/world/cameras/freeze_time/000", "/world/cameras/freeze_time/002"} <= entities
    rows = []
    for c in chunks:
        if c.entity_path != "/world/gaussians":
            continue
        assert {"time", "frame"} <= set(c.timeline_names)
        rb = c.to_record_batch()
        cols = [rb.column(k).to_pylist() for k in ("frame", "GaussianSplats3D:centers", "GaussianSplats3D:quaternions")]
        rows += list(zip(*cols))
    rows.sort(key=lambda r: r[0])
    assert [r[0] for r in rows] == list(range(len(TIMES)))  # one splat set per time step
    for (_, centers, quats), t in zip(rows, TIMES):
        means, q = _expected(scene, t)
        np.testing.assert_allclose(np.asarray(centers, dtype=np.float32), means, atol=1e-5)
        xyzw = np.asarray(quats, dtype=np.float32)
        np.testing.assert_allclose(np.abs((xyzw[:, [3, 0, 1, 2]] * q).sum(1)), 1.0, atol=1e-5)
