"""Pose estimators (plugins/fourreal_poses): `known`, `colmap`, similarity alignment.

Default run: unit tests of the alignment / interpolation / pairing / assembly code, the
`known` estimator, COLMAP on a procedural two-video scene (~15-30 s) and on the real fox
capture when ``../shared/data/fox`` exists (~25 s of CPU at 180x320). ``-m slow`` adds a second fox run
with one camera per video.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fourreal_core.errors import FourRealError, InputError, PluginError
from fourreal_core.types import Cameras, PosedVideo, Video
from fourreal_poses.align import (
    align_cameras,
    alignment_report,
    apply_similarity,
    interpolate_missing_poses,
    matrix_to_quat,
    path_extent,
    quat_to_matrix,
    rotation_angle_deg,
    slerp,
    transform_cameras,
    umeyama,
)
from fourreal_poses.colmap import assemble_result, fail_hint, make_pairs, normalization_similarity
from fourreal_formats.cameras import orbit_cameras, points_in_view
from fourreal_poses.known import KnownPoseEstimator
from fourreal_poses.plugin import ColmapConfig, KnownConfig

FOX = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fox"


def _random_rotation(g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _project(cams: Cameras, pts: torch.Tensor) -> torch.Tensor:
    """``[C,P,2]`` pixel coordinates of world points ``[P,3]``."""
    V, K = cams.viewmats.double(), cams.Ks.double()
    pc = torch.einsum("cij,pj->cpi", V[:, :3, :3], pts.double()) + V[:, None, :3, 3]
    uv = torch.einsum("cij,cpj->cpi", K, pc)
    return uv[..., :2] / uv[..., 2:3]


def _orbit(n=12, W=64, H=48, arc=120.0, **kw) -> Cameras:
    p = dict(radius=3.0, elevation_deg=25.0, arc_deg=arc, start_azimuth_deg=-90.0,
             look_at=[0.1, -0.2, 0.4], fov_deg=50.0, up="+z")
    p.update(kw)
    return orbit_cameras(n, W, H, **p)


# ====================================================================== plugin module
def test_plugin_module_is_torch_free_and_registers_both():
    code = (
        "import sys, fourreal_poses.plugin as p; assert 'torch' not in sys.modules, 'torch imported';"
        "assert 'pycolmap' not in sys.modules;"
        "from fourreal_core.registry import Registry; r = Registry(); r.register_module(p);"
        "print(r.names('pose_estimator'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['colmap', 'known']"


def test_registry_builds_known_estimator():
    from fourreal_core.registry import get_registry

    est = get_registry().create("pose_estimator", "known", KnownConfig(radius=2.0))
    assert isinstance(est, KnownPoseEstimator) and est.cfg.radius == 2.0


def test_missing_pycolmap_is_a_plugin_error(monkeypatch):
    from fourreal_poses import colmap

    monkeypatch.setitem(sys.modules, "pycolmap", None)  # makes `import pycolmap` fail
    with pytest.raises(PluginError, match=r"pose estimator 'colmap' needs pycolmap: pip install fourreal\[colmap\]"):
        colmap.ColmapPoseEstimator(ColmapConfig())


# ========================================================================= alignment
def test_umeyama_recovers_a_known_similarity():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(50, 3, generator=g, dtype=torch.float64)
    R = _random_rotation(g)
    s, t = 2.7, torch.tensor([1.0, -3.0, 0.5], dtype=torch.float64)
    dst = apply_similarity(src, s, R, t)
    s2, R2, t2 = umeyama(src, dst)
    assert abs(s2 - s) < 1e-10
    assert torch.allclose(R2, R, atol=1e-10) and torch.allclose(t2, t, atol=1e-10)
    assert abs(float(torch.det(R2)) - 1) < 1e-10
    # noisy correspondences: still close, and better than the identity by far
    noisy = dst + 0.01 * torch.randn(dst.shape, generator=g, dtype=torch.float64)
    s3, R3, t3 = umeyama(src, noisy)
    assert abs(s3 - s) < 0.01 and float(rotation_angle_deg(R3, R)) < 0.5
    # rigid: scale fixed to 1 even though the data is scaled
    s4, R4, _ = umeyama(src, dst, with_scale=False)
    assert s4 == 1.0 and float(rotation_angle_deg(R4, R)) < 1e-6


def test_umeyama_never_returns_a_reflection():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(20, 3, generator=g, dtype=torch.float64)
    mirrored = src * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # best fit: a reflection
    _, R, _ = umeyama(src, mirrored)
    assert abs(float(torch.det(R)) - 1.0) < 1e-10
    with pytest.raises(ValueError):
        umeyama(src[:2], src[:2])


def test_transform_cameras_keeps_every_pixel():
    g = torch.Generator().manual_seed(2)
    cams = _orbit(8)
    pts = torch.randn(30, 3, generator=g, dtype=torch.float64) * 0.3
    s, R, t = 0.37, _random_rotation(g), torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64)
    moved = transform_cameras(cams, s, R, t)
    assert torch.allclose(_project(moved, apply_similarity(pts, s, R, t)), _project(cams, pts), atol=1e-3)
    assert torch.allclose(moved.centers.double(), apply_similarity(cams.centers, s, R, t).double(), atol=1e-4)
    assert torch.equal(moved.Ks, cams.Ks)


def test_align_cameras_and_report_undo_a_similarity():
    g = torch.Generator().manual_seed(3)
    ref = _orbit(10)
    est = transform_cameras(ref, 0.2, _random_rotation(g), torch.tensor([5.0, 1.0, 2.0]))
    aligned, err = align_cameras(est, ref)
    assert aligned.shape == (10, 3) and float(err.max()) < 1e-4
    rep = alignment_report(est, ref)
    assert rep["max_pct"] < 1e-3 and rep["rot_max_deg"] < 0.05 and abs(rep["scale"] - 5.0) < 1e-3
    # a perturbed camera shows up in the report, in percent of the path's extent
    vm = ref.viewmats.clone()
    vm[3, :3, 3] += torch.tensor([0.3, 0.0, 0.0])
    rep2 = alignment_report(Cameras(vm, ref.Ks, ref.width, ref.height), ref)
    assert rep2["max_pct"] > 1.0
    assert rep2["extent_max_pairwise"] == pytest.approx(path_extent(ref.centers))


def test_quaternion_round_trip_and_slerp():
    g = torch.Generator().manual_seed(4)
    Rs = torch.stack([_random_rotation(g) for _ in range(64)])
    # include rotations by ~180 degrees, where naive conversions break down
    Rs[0] = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    Rs[1] = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))
    q = matrix_to_quat(Rs)
    assert torch.allclose(quat_to_matrix(q), Rs, atol=1e-12)
    assert bool((q[:, 0] >= 0).all())
    # slerp halfway between rotations by 0 and 90 degrees about z: 45 degrees
    qa = matrix_to_quat(torch.eye(3, dtype=torch.float64))
    Rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    mid = quat_to_matrix(slerp(qa, matrix_to_quat(Rz), 0.5))
    c = math.cos(math.pi / 4)
    assert torch.allclose(mid, torch.tensor([[c, -c, 0], [c, c, 0], [0, 0, 1.0]], dtype=torch.float64), atol=1e-12)


def test_interpolate_missing_poses_fills_between_neighbours():
    true = _orbit(12, arc=110.0)
    valid = torch.ones(12, dtype=torch.bool)
    valid[[0, 1, 5, 7, 8, 11]] = False
    garbage = true.viewmats.clone()
    garbage[~valid] = torch.eye(4) * 7.0  # must not leak into the result
    out = interpolate_missing_poses(garbage, valid)
    assert torch.equal(out[valid], true.viewmats[valid])  # registered frames untouched
    c2w_true = torch.linalg.inv(true.viewmats.double())
    c2w = torch.linalg.inv(out.double())
    # a constant-elevation orbit turns about one axis: slerp between two of its rotations is
    # exactly the rotation at the interpolated azimuth; the centre is on the chord
    for i, (a, b) in {5: (4, 6), 7: (6, 9), 8: (6, 9)}.items():
        w = (i - a) / (b - a)
        assert float(rotation_angle_deg(c2w[i, :3, :3], c2w_true[i, :3, :3])) < 1e-3
        chord = (1 - w) * c2w_true[a, :3, 3] + w * c2w_true[b, :3, 3]
        assert torch.allclose(c2w[i, :3, 3], chord, atol=1e-5)
    # ends are copied from the nearest registered frame
    assert torch.allclose(out[0], true.viewmats[2]) and torch.allclose(out[1], true.viewmats[2])
    assert torch.allclose(out[11], true.viewmats[10])
    with pytest.raises(ValueError):
        interpolate_missing_poses(true.viewmats, torch.zeros(12, dtype=torch.bool))


# ========================================================================== pairs
def test_make_pairs_sequential_quadratic_and_cross_video():
    pairs = make_pairs([20, 6], overlap=3, quadratic=True, cross_video_pairs=16)
    assert len(pairs) == len(set(pairs)) and all(a < b for a, b in pairs)
    within0 = {(a[1], b[1]) for a, b in pairs if a[0] == b[0] == 0}
    assert {(0, 1), (0, 2), (0, 3), (0, 4), (10, 13), (15, 19)} <= within0
    assert (0, 8) not in within0  # 2^3 needs overlap > 3
    assert all(b - a in (1, 2, 3, 4) for a, b in within0)
    cross = [(a, b) for a, b in pairs if a[0] != b[0]]
    assert 9 <= len(cross) <= 16
    assert {a[1] for a, _ in cross} >= {0, 19} and {b[1] for _, b in cross} >= {0, 5}
    assert not [p for p in make_pairs([5, 5], overlap=2, cross_video_pairs=0) if p[0][0] != p[1][0]]


# ======================================================================= assembly
def _fake_sfm(n_per_video=(10, 4), missing=((3,), ())):
    """Per-video (viewmats, Ks, registered) as SfM would give, from a known orbit."""
    vids, names, per_video = [], [], []
    for vi, (n, miss) in enumerate(zip(n_per_video, missing)):
        cams = _orbit(n, arc=90.0 + 10 * vi)
        frames = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 48, 64, 3) / 100
        vids.append(Video(frames.contiguous()))
        names.append(f"video{vi}.mp4")
        ok = torch.ones(n, dtype=torch.bool)
        ok[list(miss)] = False
        vm, Ks = cams.viewmats.clone(), cams.Ks.clone()
        vm[~ok], Ks[~ok] = torch.eye(4), 0.0
        per_video.append((vm, Ks, ok))
    return vids, names, per_video


def test_assemble_interpolate_keeps_every_frame():
    vids, names, per_video = _fake_sfm()
    cfg = ColmapConfig(on_unregistered="interpolate", normalize=False)
    res = assemble_result(vids, names, per_video, None, None, cfg)
    assert [len(p) for p in res.videos] == [10, 4]
    assert res.videos[0].meta["interpolated_indices"] == [3]
    assert torch.equal(res.videos[0].cameras.Ks[3], per_video[0][1][0])
    true = _orbit(10, arc=90.0)
    assert float(rotation_angle_deg(true.camtoworlds[3, :3, :3], res.videos[0].cameras.camtoworlds[3, :3, :3])) < 1e-3
    assert res.report["registered_fraction"] == pytest.approx(13 / 14)
    assert res.report["videos"][0]["unregistered"] == [3] and res.points is None


def test_assemble_drop_removes_frames_and_records_indices():
    vids, names, per_video = _fake_sfm(missing=((0, 3, 9), (2,)))
    res = assemble_result(vids, names, per_video, None, None, ColmapConfig(on_unregistered="drop", normalize=False))
    v0, v1 = res.videos
    assert v0.meta["kept_indices"] == [1, 2, 4, 5, 6, 7, 8] and v0.meta["dropped_indices"] == [0, 3, 9]
    # the frames kept are the right ones (frame k is filled with k/100)
    assert torch.allclose(v0.video.frames[:, 0, 0, 0] * 100, torch.tensor([1.0, 2, 4, 5, 6, 7, 8]))
    assert torch.equal(v0.cameras.viewmats, per_video[0][0][[1, 2, 4, 5, 6, 7, 8]])
    assert v1.meta["kept_indices"] == [0, 1, 3] and len(v1) == 3


def test_assemble_error_and_failure_messages_are_one_line():
    vids, names, per_video = _fake_sfm(missing=((3, 4), (1,)))
    with pytest.raises(InputError) as e:
        assemble_result(vids, names, per_video, None, None, ColmapConfig(on_unregistered="error"))
    msg = str(e.value)
    assert "\n" not in msg and "'video0.mp4': frames [3, 4]" in msg and "'video1.mp4': frames [1]" in msg
    # below the minimum fraction
    vids, names, per_video = _fake_sfm(missing=(tuple(range(8)), ()))
    with pytest.raises(FourRealError) as e:
        assemble_result(vids, names, per_video, None, None, ColmapConfig(min_registered_fraction=0.5))
    assert "\n" not in str(e.value) and "6 of 14 frames" in str(e.value) and "`known`" in str(e.value)
    # one video not registered at all: no place in the shared frame
    vids, names, per_video = _fake_sfm(missing=((), (0, 1, 2, 3)))
    with pytest.raises(FourRealError, match="none of the 4 frames of 'video1.mp4'"):
        assemble_result(vids, names, per_video, None, None, ColmapConfig(min_registered_fraction=0.1))


def test_assemble_normalize_is_a_similarity_with_documented_frame():
    vids, names, per_video = _fake_sfm(missing=((), ()))
    g = torch.Generator().manual_seed(5)
    # an arbitrary SfM world: scaled, rotated, shifted copy of the orbit's world
    s0, R0, t0 = 7.0, _random_rotation(g), torch.tensor([3.0, -2.0, 10.0], dtype=torch.float64)
    moved = []
    for vm, Ks, ok in per_video:
        c = transform_cameras(Cameras(vm, Ks, 64, 48), s0, R0, t0)
        moved.append((c.viewmats, c.Ks, ok))
    pts = torch.tensor([0.1, -0.2, 0.4], dtype=torch.float64)
    pts = pts + 0.3 * torch.randn(200, 3, generator=g, dtype=torch.float64)
    pts_sfm = apply_similarity(pts, s0, R0, t0)
    cols = torch.rand(200, 3, generator=g, dtype=torch.float64)
    res = assemble_result(vids, names, moved, pts_sfm, cols, ColmapConfig(normalize=True))
    cams = Cameras.cat([p.cameras for p in res.videos])
    P = res.points.points.double()
    # centre: the points' per-axis median (in the SfM frame) goes to the origin; median
    # camera distance 1; mean camera up is +z
    n = res.report["normalization"]
    sim = (n["scale"], torch.tensor(n["rotation"]), torch.tensor(n["translation"]))
    assert float(apply_similarity(pts_sfm.median(0).values, *sim).norm()) < 1e-6
    assert float(cams.centers.double().norm(dim=-1).median()) == pytest.approx(1.0, abs=1e-4)
    ups = -cams.camtoworlds.double()[:, :3, 1]
    mean_up = torch.nn.functional.normalize(ups.mean(0), dim=0)
    assert float(mean_up[2]) == pytest.approx(1.0, abs=1e-6)
    # the normalised points project where the SfM points projected in the SfM cameras
    sfm_cams = Cameras.cat([Cameras(vm, Ks, 64, 48) for vm, Ks, _ in moved])
    assert torch.allclose(_project(cams, P), _project(sfm_cams, pts_sfm), atol=2e-3)
    assert torch.allclose(res.points.colors.double(), cols, atol=1e-6)
    # the similarity in the report maps SfM points onto the normalised ones
    mapped = apply_similarity(pts_sfm, *sim)
    assert torch.allclose(mapped.double(), P, atol=1e-4)


def test_normalization_without_points_centres_on_cameras():
    cams = _orbit(8, arc=360.0)
    c2w = cams.camtoworlds.double()
    s, R, t = normalization_similarity(c2w[:, :3, 3], -c2w[:, :3, 1], None)
    C = apply_similarity(cams.centers, s, R, t).double()
    assert torch.allclose(C.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(C.norm(dim=-1), torch.ones(8, dtype=torch.float64), atol=1e-5)


# ======================================================================== known
def test_known_orbit_matches_the_synthetic_scenes_convention():
    """The estimator's orbit is the synthetic scenes' camera convention (z up, azimuth from +x
    toward +y, the end of a full orbit left out): the same cameras as ``cameras_at`` at the
    azimuths written out by hand."""
    from fourreal_formats.cameras import cameras_at

    for n, arc, az in ((12, 360.0, [-70.0 + 30.0 * i for i in range(12)]),
                       (9, 140.0, [-70.0 + 17.5 * i for i in range(9)]), (1, 90.0, [-70.0])):
        cfg = KnownConfig(source="orbit", radius=3.3, elevation_deg=17.0, arc_deg=arc, start_azimuth_deg=-70.0,
                          look_at=[0.2, 0.1, 0.5], fov_deg=48.0, up="+z")
        res = KnownPoseEstimator(cfg).estimate([Video(torch.zeros(n, 36, 48, 3))], ["orbit"])
        ref = cameras_at(az, 17.0, 3.3, [0.2, 0.1, 0.5], 48, 36, 48.0)
        got = res.videos[0].cameras
        assert torch.allclose(got.viewmats, ref.viewmats, atol=1e-6)
        assert torch.allclose(got.Ks, ref.Ks, atol=1e-5)
        assert res.points is None


@pytest.mark.parametrize("up", ["+z", "-y", "+x"])
def test_known_orbit_geometry(up):
    look_at = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    cams = orbit_cameras(16, 80, 60, radius=2.5, elevation_deg=30.0, arc_deg=360.0, start_azimuth_deg=10.0,
                         look_at=look_at.tolist(), fov_deg=60.0, up=up)
    u = torch.zeros(3, dtype=torch.float64)
    u["xyz".index(up[1])] = 1.0 if up[0] == "+" else -1.0
    d = cams.centers.double() - look_at
    assert torch.allclose(d.norm(dim=-1), torch.full((16,), 2.5, dtype=torch.float64), atol=1e-5)
    elev = torch.rad2deg(torch.asin((d @ u) / d.norm(dim=-1)))
    assert torch.allclose(elev, torch.full((16,), 30.0, dtype=torch.float64), atol=1e-3)
    # the look-at point projects to the image centre; image up (-y) leans toward world up
    uv = _project(cams, look_at[None])[:, 0]
    assert torch.allclose(uv, torch.tensor([40.0, 30.0], dtype=torch.float64), atol=1e-3)
    assert bool(((-cams.camtoworlds.double()[:, :3, 1]) @ u > 0).all())
    # full orbit: equal steps, no duplicated end point
    assert float(torch.cdist(cams.centers[:1], cams.centers[-1:])) > 0.5
    assert cams.Ks[0, 0, 0].item() == pytest.approx(40.0 / math.tan(math.radians(30.0)), rel=1e-6)


def test_known_fixed_reference_video_sits_at_the_canonical_view():
    freeze, ref = Video(torch.zeros(10, 36, 48, 3)), Video(torch.zeros(5, 72, 96, 3))
    cfg = KnownConfig(radius=2.0, arc_deg=120.0, canonical_view=4, random_points=300, seed=1)
    res = KnownPoseEstimator(cfg).estimate([freeze, ref], ["freeze.mp4", "ref.mp4"])
    orbit, fixed = res.videos
    assert orbit.canonical_view == 4 and fixed.canonical_view is None
    assert fixed.meta["trajectory"] == "fixed" and orbit.meta["trajectory"] == "orbit"
    assert torch.allclose(fixed.cameras.viewmats, orbit.cameras.viewmats[4].expand(5, 4, 4))
    assert (fixed.cameras.width, fixed.cameras.height) == (96, 72)
    assert torch.allclose(fixed.cameras.Ks[0], orbit.cameras.scaled(2.0).Ks[0])
    # random init points: as many as asked, every one seen by every camera
    pts = res.points
    assert len(pts) == 300 and bool(((pts.colors >= 0) & (pts.colors <= 1)).all())
    seen = points_in_view(pts.points, Cameras.cat([orbit.cameras, fixed.cameras.scaled(0.5)]))
    assert bool((seen == 15).all())
    with pytest.raises(InputError, match="canonical_view 12"):
        KnownPoseEstimator(KnownConfig(canonical_view=12)).estimate([freeze, ref], ["a", "b"])
    with pytest.raises(InputError, match="trajectories"):
        KnownPoseEstimator(KnownConfig(trajectories=["orbit"])).estimate([freeze, ref], ["a", "b"])


def test_known_from_transforms_json(tmp_path):
    from fourreal_formats.transforms import write_transforms

    cams = _orbit(6, W=64, H=48)
    posed = PosedVideo(Video(torch.rand(6, 48, 64, 3)), cams, times=torch.linspace(0, 1, 6), canonical_view=2)
    path = write_transforms(tmp_path / "a" / "transforms.json", posed)
    # the video was resized to 128x96: intrinsics follow, poses do not change
    video = Video(torch.zeros(6, 96, 128, 3))
    res = KnownPoseEstimator(KnownConfig(source="transforms", transforms=[str(path)])).estimate([video], ["a"])
    got = res.videos[0]
    assert torch.allclose(got.cameras.viewmats, cams.viewmats, atol=1e-5)
    assert torch.allclose(got.cameras.Ks, cams.scaled(2.0).Ks, atol=1e-4)
    assert got.canonical_view == 2 and torch.allclose(got.times, torch.linspace(0, 1, 6))
    assert got.video is video
    # source: auto with no list reads the transforms.json named by each video (a stage can
    # pass the input paths as names)
    auto = KnownPoseEstimator(KnownConfig()).estimate([video], [str(path.parent)])
    assert auto.report["source"] == "transforms"
    assert torch.allclose(auto.videos[0].cameras.viewmats, cams.viewmats, atol=1e-5)
    with pytest.raises(InputError, match="not transforms.json paths"):
        KnownPoseEstimator(KnownConfig(source="transforms")).estimate([video], ["clip.mp4"])
    with pytest.raises(InputError, match="6 frames but video 'b' has 4"):
        KnownPoseEstimator(KnownConfig(source="transforms", transforms=[str(path)])).estimate(
            [Video(torch.zeros(4, 48, 64, 3))], ["b"])
    with pytest.raises(InputError, match="one per video"):
        KnownPoseEstimator(KnownConfig(source="transforms", transforms=[str(path)])).estimate(
            [video, video], ["a", "b"])


# ========================================================================= colmap
def test_colmap_featureless_input_fails_with_one_line():
    pytest.importorskip("pycolmap")
    from fourreal_poses.colmap import ColmapPoseEstimator

    flat = Video(torch.full((8, 64, 96, 3), 0.4))
    with pytest.raises(FourRealError) as e:
        ColmapPoseEstimator(ColmapConfig()).estimate([flat], ["flat.mp4"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("COLMAP found no reconstruction for 8 frames of 'flat.mp4'")
    assert "0 features per frame" in msg and "`known` pose estimator" in msg
    # the frames are smaller than max_image_size: the advice names the knob that gives COLMAP
    # more pixels (the poses stage's sfm_long_side), not max_image_size (issue 32)
    assert "larger frames (these are 96 px on the long side, under max_image_size 1024" in msg
    assert "sfm_long_side" in msg and "a higher resolution (max_image_size" not in msg
    assert "a higher resolution (max_image_size, now 64" in fail_hint(ColmapConfig(max_image_size=64), [flat])


def test_colmap_input_errors():
    pytest.importorskip("pycolmap")
    from fourreal_poses.colmap import ColmapPoseEstimator

    est = ColmapPoseEstimator(ColmapConfig())
    with pytest.raises(InputError, match="share_intrinsics"):
        est.estimate([Video(torch.zeros(3, 32, 32, 3)), Video(torch.zeros(3, 16, 32, 3))], ["a", "b"])
    with pytest.raises(InputError, match="2 videos but 1 names"):
        est.estimate([Video(torch.zeros(3, 32, 32, 3))] * 2, ["a"])


@pytest.fixture(scope="module")
def garden_sfm():
    """COLMAP on a procedural garden: a 16-frame 90-degree orbit ("freeze-time") whose
    frame 6 is blanked (so it cannot register), plus a 3-frame fixed-camera reference video
    filmed from the orbit's first camera while things move."""
    pytest.importorskip("pycolmap")
    scenes = pytest.importorskip("fourreal_synthetic.scenes")
    from fourreal_poses.colmap import ColmapPoseEstimator

    W, H = 160, 120
    scene = scenes.make_scene("garden")
    orbit = scene.orbit(16, W, H, arc_deg=90.0)
    ref = scene.reference_camera(W, H)  # == orbit frame 0
    freeze = scene.render(orbit, 0.0)
    freeze[6] = 0.5
    reference = torch.cat([scene.render(ref, t) for t in (0.0, 0.5, 1.0)])
    cfg = ColmapConfig(camera_model="SIMPLE_PINHOLE", on_unregistered="interpolate")
    t0 = time.perf_counter()
    res = ColmapPoseEstimator(cfg).estimate([Video(freeze), Video(reference)], ["freeze", "reference"])
    return res, orbit, ref, time.perf_counter() - t0


def test_colmap_procedural_two_videos_share_one_world(garden_sfm):
    res, orbit, ref, seconds = garden_sfm
    rep = res.report
    assert rep["matching"] == "exhaustive" and rep["num_frames"] == 19
    assert rep["num_registered"] == 18 and rep["videos"][0]["unregistered"] == [6]
    freeze, reference = res.videos
    assert len(freeze) == 16 and freeze.meta["interpolated_indices"] == [6]
    # align the registered cameras of BOTH videos with one similarity
    est = Cameras.cat([freeze.cameras, reference.cameras])
    true = Cameras.cat([orbit, Cameras(ref.viewmats.expand(3, 4, 4), ref.Ks.expand(3, 3, 3), 160, 120)])
    keep = [i for i in range(19) if i != 6]
    s, R, t = umeyama(est.centers[keep], true.centers[keep])
    err = (apply_similarity(est.centers.double(), s, R, t) - true.centers.double()).norm(dim=-1)
    extent = path_extent(true.centers)
    assert float(err[keep].max()) < 0.05 * extent, (err / extent).tolist()
    # the reference video's cameras sit at the orbit's first camera, in the same world
    assert float(err[16:].max()) < 0.05 * extent
    # the blanked frame was interpolated between its neighbours, close to the truth
    assert float(err[6]) < 0.05 * extent
    # intrinsics: one shared pinhole camera, focal length in the right range
    fx = freeze.cameras.Ks[:, 0, 0]
    assert torch.allclose(fx, fx[0].expand_as(fx)) and torch.allclose(reference.cameras.Ks[:, 0, 0], fx[:3])
    assert 0.75 < float(fx[0] / orbit.Ks[0, 0, 0]) < 1.25
    assert rep["cameras"][0]["model"] == "SIMPLE_PINHOLE" and rep["warnings"] == []
    # sparse points: normalised world (the points around the origin), colours in [0,1]
    pts = res.points
    assert len(pts) > 100 and bool(((pts.colors >= 0) & (pts.colors <= 1)).all())
    assert float(pts.points.median(0).values.norm()) < 0.2
    # scale: the median distance of the REGISTERED cameras to the centre is 1 (interpolated
    # frames are not part of the normalisation)
    assert float(est.centers[keep].norm(dim=-1).median()) == pytest.approx(1.0, abs=1e-3)
    json.dumps(rep)  # the report is JSON-serialisable as it is


def _load_fox(stride: int = 1, div: int = 4):
    """Fox frames at 1/div resolution (JPEG draft decoding: fast) and the reference cameras
    from transforms.json (instant-ngp, camera-to-world OpenGL) in the same order."""
    from PIL import Image

    from fourreal_formats.transforms import load_transforms

    gt = load_transforms(FOX, stride=stride, load_images=False)
    W, H = round(1080 / div), round(1920 / div)
    frames = []
    for f in gt.meta["file_paths"]:
        with Image.open(f) as im:
            im.draft("RGB", (W, H))
            im = im.convert("RGB")
            if im.size != (W, H):
                im = im.resize((W, H), Image.BILINEAR)
            frames.append(np.asarray(im))
    return Video(torch.from_numpy(np.stack(frames)).float() / 255.0), gt.cameras


@pytest.mark.realdata
@pytest.mark.skipif(not (FOX / "transforms.json").is_file(), reason=f"real data not found at {FOX}")
def test_colmap_fox_registers_and_matches_instant_ngp_poses():
    """Acceptance: >= 90% of the 67 fox frames register and, after a similarity alignment,
    every camera centre is within 5% of the path's extent (max distance between two
    reference centres) of the transforms.json centre."""
    pytest.importorskip("pycolmap")
    from fourreal_poses.colmap import ColmapPoseEstimator

    video, gt = _load_fox(stride=1, div=6)  # 67 frames, 180x320 (~25 s of CPU; 270x480: ~40 s)
    assert len(video) == 67
    t0 = time.perf_counter()
    res = ColmapPoseEstimator(ColmapConfig()).estimate([video], ["fox"])
    seconds = time.perf_counter() - t0
    rep = res.report
    assert rep["matching"] == "sequential"
    assert rep["registered_fraction"] >= 0.9, rep["videos"]
    reg = [i for i in range(67) if i not in rep["videos"][0]["unregistered"]]
    a = alignment_report(res.videos[0].cameras[reg], gt[reg])
    print(f"\nfox: {100 * rep['registered_fraction']:.1f}% registered, max centre error "
          f"{a['max_pct']:.2f}% (mean {a['mean_pct']:.2f}%) of extent {a['extent_max_pairwise']:.2f}, "
          f"rotation error max {a['rot_max_deg']:.2f} deg, {seconds:.0f} s")
    assert a["max_pct"] < 5.0
    assert a["rot_max_deg"] < 3.0
    # the focal length agrees with instant-ngp's (fl_x 1375.5 px at 1080 wide)
    assert float(res.videos[0].cameras.Ks[0, 0, 0]) == pytest.approx(1375.52 / 6, rel=0.05)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not (FOX / "transforms.json").is_file(), reason=f"real data not found at {FOX}")
def test_colmap_fox_two_videos_per_video_cameras():
    """The fox capture cut into two overlapping "videos" with one camera each; both land
    in one world frame that matches transforms.json."""
    pytest.importorskip("pycolmap")
    from fourreal_poses.colmap import ColmapPoseEstimator

    video, gt = _load_fox(stride=2, div=4)  # 34 frames
    a, b = Video(video.frames[:20]), Video(video.frames[16:])
    res = ColmapPoseEstimator(ColmapConfig(share_intrinsics=False, matching="sequential")).estimate(
        [a, b], ["first", "second"])
    assert res.report["registered_fraction"] >= 0.9 and len(res.report["cameras"]) == 2
    est = Cameras.cat([p.cameras for p in res.videos])
    ref = Cameras.cat([gt[:20], gt[16:]])
    rep = alignment_report(est, ref)
    assert rep["max_pct"] < 5.0
