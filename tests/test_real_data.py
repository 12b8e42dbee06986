"""Real footage (issue 13): scene points for known cameras, multi-camera captures, the
dynamic-region score.

Always run: frustum points, the dynamic-region mask and masked scores, both capture
layouts on tiny captures written here, and the multicam stage through a recipe.
With ``../shared/data`` (realdata): triangulation with the fox capture's known poses, and
the multicam stage + a toy 4Real fit on rig4 (floors measured, docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fourreal_core.errors import InputError
from fourreal_core.types import Cameras, PosedVideo, Video
from fourreal_formats.cameras import orbit_cameras, points_in_view
from fourreal_poses.triangulate import camera_pairs, depth_range, frustum_points, scene_points

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FOX, RIG4, DOME27 = DATA / "fox", DATA / "rig4", DATA / "dome27"
# fox at 27x48, known poses, 200 its: held-out 18.83 dB (deterministic: two runs equal), |dx| 0.004% of extent.
# Baselines on the same held-out frames: the mean training image 14.05 dB, the neighbouring
# training frame copied 17.54 dB. The floor is 1.0 dB under the measurement, above that copy (a fit
# that only memorised its training frames fails it); yawing the held-out cameras by 3 degrees
# gives 17.22 dB (fails it).
HELDOUT_FLOOR = 17.8
# rig4 4Real toy fit (27x48, 6 times, iterations_scale 0.05 since the recipe's motion stage halved
# its iterations; 25 s on 2 threads): reference camera 24.13 dB, its moving region (32% of the
# pixels) 20.82 dB (the canonical scene frozen at t_c there: 18.29 dB); floors 1.5 dB under
RIG4_REF_FLOOR = 22.6
RIG4_REF_DYNAMIC_FLOOR = 19.3
# dome27 toy (64x36, cams 6 and 22 held out, iterations_scale 0.05, MCMC canonical): held-out
# cameras at t_c 19.69 dB, over time 19.24 dB (inside the person masks 14.37, 8.5% of the
# pixels); floors 1.5 dB under
DOME27_STATIC_FLOOR = 18.2
DOME27_HELDOUT_FLOOR = 17.7


def _project(points, cams):
    V, K = cams.viewmats.double(), cams.Ks.double()
    cam = torch.einsum("cij,pj->cpi", V[:, :3, :3], points.double()) + V[:, None, :3, 3]
    uv = torch.einsum("cij,cpj->cpi", K, cam)
    return uv[..., :2] / cam[..., 2:3], cam[..., 2]


# ============================================================================ frustum points
def test_frustum_points_cover_every_camera_and_the_depth_range():
    cams = orbit_cameras(6, 64, 48, radius=3.0, elevation_deg=10.0, arc_deg=180.0, start_azimuth_deg=0.0,
                         look_at=[0, 0, 0], fov_deg=60.0)
    near, far = depth_range(cams)
    # from the cameras alone: 0.2 and 3 x the distance to what they look at (3 units)
    assert torch.allclose(near, torch.full((6,), 0.6, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(far, torch.full((6,), 9.0, dtype=torch.float64), atol=1e-3)
    pts = frustum_points(cams, 6000, seed=0)
    uv, z = _project(pts.points, cams)
    for c in range(6):  # round robin: camera c's own points land inside its image over [near, far]
        own = torch.arange(6000) % 6 == c
        assert bool(((uv[c, own] >= -1e-6).all(-1) & (uv[c, own, 0] < 64) & (uv[c, own, 1] < 48)).all())
        assert bool(((z[c, own] > 0.6 - 1e-3) & (z[c, own] < 9.0 + 1e-3)).all())
        # the background is covered: a fair share lies beyond the look-at point (depth > 3)
        assert float((z[c, own] > 3.0).float().mean()) > 0.3
    # a cube "seen by all cameras" would leave the image corners empty; frustum points do not
    seen = points_in_view(pts.points, cams)
    assert float((seen == 6).float().mean()) < 0.5
    # with points, the range follows their depths (quantiles, widened by 1.5)
    sparse = torch.randn(500, 3, generator=torch.Generator().manual_seed(0)) * 0.3
    n2, f2 = depth_range(cams, sparse)
    assert bool((n2 > 1.2).all() and (f2 < 6.5).all())


def test_camera_pairs_need_overlap_and_a_baseline():
    cams = orbit_cameras(8, 64, 48, radius=3.0, elevation_deg=0.0, arc_deg=360.0, start_azimuth_deg=0.0,
                         look_at=[0, 0, 0], fov_deg=60.0)  # 45 degrees apart
    pairs = camera_pairs(cams, max_angle_deg=50.0, per_frame=8)
    assert pairs == sorted({(min(i, (i + 1) % 8), max(i, (i + 1) % 8)) for i in range(8)})
    same = Cameras(cams.viewmats[:1].expand(3, 4, 4).clone(), cams.Ks[:1].expand(3, 3, 3).clone(), 64, 48)
    assert camera_pairs(same) == []  # a fixed camera over time: no baseline


def test_scene_points_fall_back_to_the_frusta_when_nothing_triangulates():
    cams = orbit_cameras(4, 48, 32, radius=3.0, elevation_deg=10.0, arc_deg=90.0, start_azimuth_deg=0.0,
                         look_at=[0, 0, 0], fov_deg=60.0)
    pts, rep = scene_points(None, cams, mode="auto", min_points=100, fill_points=800)
    assert len(pts) == 800 and rep["num_frustum_points"] == 800
    assert scene_points(None, cams, mode="none")[0] is None


# ============================================================================ dynamic region
def _moving_square(T=6, H=32, W=40, cams=2):
    g = torch.Generator().manual_seed(0)
    bg = torch.rand(H, W, 3, generator=g) * 0.5
    frames, V = [], []
    for c in range(cams):
        for t in range(T):
            f = bg.clone()
            f[10:16, 4 + 5 * t:10 + 5 * t] = torch.tensor([1.0, 0.9, 0.2])
            frames.append(f)
            v = torch.eye(4)
            v[0, 3] = float(c)
            V.append(v)
    K = Cameras.intrinsics(40.0, 40.0, W / 2, H / 2).expand(len(V), 3, 3).clone()
    return torch.stack(frames), Cameras(torch.stack(V), K, W, H), bg


def test_dynamic_mask_is_where_the_subject_moves_and_dropping_it_scores_badly():
    from fourreal_stages.evaluate import camera_groups, dynamic_masks, masked_scores, psnr_per_frame

    gt, cams, bg = _moving_square()
    assert camera_groups(cams) == [list(range(6)), list(range(6, 12))]
    union, src = dynamic_masks(gt, cams)
    assert src == "frames"
    path = torch.zeros(32, 40, dtype=torch.bool)
    path[10:16, 4:35] = True  # every place the square visits
    assert bool(union[0][path].all())  # the whole path is in, grown by the 3x3 filter + 2 px dilation ...
    assert int(union[0].sum()) <= (6 + 6) * (31 + 6)
    assert not bool(union[0, :6].any()) and not bool(union[0, 20:].any())  # ... and nothing far from it
    # per frame (what eval scores): where the square is in that frame, not its whole path
    mask, _ = dynamic_masks(gt, cams, per_frame=True)
    for i in range(6):
        here = (gt[i] - bg).abs().amax(-1) > 0.3  # the square's pixels in frame i
        assert bool(mask[i][here].all()), i
        assert int(mask[i].sum()) < int(union[i].sum()) // 2, i
        assert bool(torch.equal(mask[i], mask[i + 6])) == bool(torch.equal(gt[i], gt[i + 6]))
    # a render that drops the subject: fine overall, bad inside the mask
    dropped = bg.expand_as(gt).clone()
    whole = psnr_per_frame(dropped, gt).mean()
    dyn, ssim = masked_scores(dropped, gt, mask)
    assert float(whole) > float(dyn.mean()) + 4.0  # measured 20.2 vs 15.6 dB (the square is 2.8% of the image)
    from fourreal_stages.evaluate import ssim_per_frame

    assert float(ssim.mean()) < float(ssim_per_frame(dropped, gt).mean()) - 0.05  # measured 0.854 vs 0.949
    exact, ssim1 = masked_scores(gt, gt, mask)
    assert float(exact.min()) > 100 and float(ssim1.min()) > 0.999
    # given masks win; a camera seen once has none
    given = torch.zeros(12, 32, 40, 1)
    given[:, 0:2, 0:2] = 1
    m2, src2 = dynamic_masks(gt, cams, given)
    assert src2 == "given" and int(m2[0].sum()) == 4
    m3, _ = dynamic_masks(gt[:1], cams[:1])
    assert not bool(m3.any())


# ============================================================================ captures
def _write_dg3(root: Path, cams=4, T=5, W=20, H=16, test=(3,)):
    from fourreal_media import write_image

    root.mkdir(parents=True, exist_ok=True)
    orbit = orbit_cameras(cams, W, H, radius=3.0, elevation_deg=10.0, arc_deg=120.0, start_azimuth_deg=0.0,
                          look_at=[0, 0, 0], fov_deg=60.0)
    g = torch.Generator().manual_seed(1)
    for split, ids in (("train", [c for c in range(cams) if c not in test]), ("test", list(test))):
        meta = {"w": W, "h": H, "k": [], "w2c": [], "fn": [], "cam_id": []}
        for t in range(T):
            meta["k"].append([orbit.Ks[c].tolist() for c in ids])
            meta["w2c"].append([orbit.viewmats[c].tolist() for c in ids])
            meta["fn"].append([f"{c}/{t:06d}.jpg" for c in ids])
            meta["cam_id"].append(ids)
            for c in ids:
                img = torch.full((H, W, 3), 0.1 * c)
                img[2:6, t:t + 4] = torch.rand(3, generator=g)
                write_image(root / "ims" / str(c) / f"{t:06d}.jpg", img)
        (root / f"{split}_meta.json").write_text(json.dumps(meta))
    return orbit


def _run_stage(tmp_path, params: dict, name="mc"):
    import yaml

    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry
    from fourreal_core.run import execute

    r = tmp_path / f"{name}.yaml"
    r.write_text(yaml.safe_dump({"name": name, "seed": 0, "device": "cpu",
                                 "stages": [{"name": "multicam", "params": params}]}))
    out = tmp_path / f"run-{name}"
    execute(load_recipe(r, [], get_registry()), out, get_registry(), device="cpu")
    return out / "stages" / "01_multicam"


def test_dynamic3dgs_capture_forms_the_4real_setting(tmp_path):
    from fourreal_formats.transforms import load_transforms
    from fourreal_poses.capture import read_capture

    orbit = _write_dg3(tmp_path / "cap")
    cap = read_capture(tmp_path / "cap")
    assert cap.layout == "dynamic3dgs" and cap.cameras == ["0", "1", "2", "3"] and cap.num_times == 5
    assert cap.splits == {"0": "train", "1": "train", "2": "train", "3": "test"}
    st = _run_stage(tmp_path, {"capture": str(tmp_path / "cap"), "long_side": 40, "points": "frustum",
                               "fill_points": 500, "reference_camera": "1", "test_times": 3})
    info = json.loads((st / "capture.json").read_text())
    assert info["canonical_frame"] == 2 and info["train_cameras"] == ["0", "1", "2"] and info["size"] == [40, 32]
    frz = load_transforms(st / "freeze_time")
    ref = load_transforms(st / "reference")
    test = load_transforms(st / "test")
    assert len(frz) == 3 and frz.canonical_view == 1 and torch.allclose(frz.times, torch.full((3,), 0.5))
    assert torch.allclose(frz.cameras.viewmats, orbit.viewmats[:3], atol=1e-5)
    assert torch.allclose(frz.cameras.Ks[0], orbit.scaled(2.0).Ks[0], atol=1e-4)
    assert len(ref) == 5 and ref.canonical_view == 2 and torch.allclose(ref.times, torch.linspace(0, 1, 5))
    assert torch.allclose(ref.cameras.viewmats, orbit.viewmats[1].expand(5, 4, 4), atol=1e-5)
    # the reference video's frame c is the freeze-time canonical view k_c (same instant, same camera)
    assert torch.allclose(ref.video.frames[2], frz.video.frames[1], atol=2 / 255)
    assert len(test) == 3 and torch.allclose(test.times, torch.tensor([0.0, 0.5, 1.0]))
    assert len(load_transforms(st / "test_static")) == 1
    assert (st / "points.ply").is_file() and info["points"]["num_points"] == 500
    # the near plane every later stage renders with: 0.15 x the cameras' distance to what they look at
    dist = (orbit.centers[:4] - torch.zeros(3)).norm(dim=-1).median()
    assert info["near_plane"] == pytest.approx(0.15 * float(dist), rel=0.02)
    for tj in (frz, ref, test):
        assert tj.meta["fourreal"]["near_plane"] == info["near_plane"]
    # the all-views setting: every training camera at every time, time-major
    st2 = _run_stage(tmp_path, {"capture": str(tmp_path / "cap"), "long_side": 40, "points": "none",
                                "setting": "all"}, name="all")
    allv = load_transforms(st2 / "reference")
    assert len(allv) == 15 and allv.canonical_view == 2 * 3 + 0
    assert torch.allclose(allv.times[:3], torch.zeros(3))
    # ... and the same freeze-time video (the training cameras at t_c) for a canonical stage
    frz2 = load_transforms(st2 / "freeze_time")
    assert torch.equal(frz2.video.frames, frz.video.frames) and frz2.canonical_view == 0  # camera 0 here
    assert torch.allclose(allv.video.frames[allv.canonical_view], frz2.video.frames[frz2.canonical_view])
    with pytest.raises(InputError, match="camera '9' is not in the capture"):
        _run_stage(tmp_path, {"capture": str(tmp_path / "cap"), "test_cameras": ["9"]}, name="bad")


def test_per_camera_videos_and_a_cameras_file(tmp_path):
    from fourreal_formats.transforms import load_transforms
    from fourreal_media import write_video
    from fourreal_poses.capture import read_capture

    cams = orbit_cameras(3, 32, 24, radius=3.0, elevation_deg=10.0, arc_deg=90.0, start_azimuth_deg=0.0,
                         look_at=[0, 0, 0], fov_deg=60.0)
    c2w = cams.to_c2w_opengl()
    frames = []
    for i in range(3):
        v = torch.rand(6, 24, 32, 3, generator=torch.Generator().manual_seed(i))
        write_video(tmp_path / "videos" / f"cam{i}.mp4", v, fps=10)
        frames.append({"file_path": f"videos/cam{i}.mp4", "transform_matrix": c2w[i].tolist(),
                       **({"split": "test"} if i == 2 else {})})
    K = cams.Ks[0]
    (tmp_path / "cameras.json").write_text(json.dumps({"w": 32, "h": 24, "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]),
                                                       "cx": float(K[0, 2]), "cy": float(K[1, 2]), "frames": frames}))
    cap = read_capture(tmp_path)
    assert cap.layout == "videos" and cap.cameras == ["cam0", "cam1", "cam2"] and cap.num_times == 6
    assert torch.allclose(cap.viewmats["cam1"][0].float(), cams.viewmats[1], atol=1e-5)
    st = _run_stage(tmp_path, {"capture": str(tmp_path / "cameras.json"), "long_side": 32, "points": "none"})
    assert len(load_transforms(st / "freeze_time")) == 2 and len(load_transforms(st / "reference")) == 6
    assert len(load_transforms(st / "test")) == 6
    bad = json.loads((tmp_path / "cameras.json").read_text())
    bad["frames"][1]["file_path"] = "videos/missing.mp4"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"frames\[1\]: file_path 'videos/missing.mp4': no such video"):
        read_capture(tmp_path / "bad.json")
    # the moving subject's mask of the held-out camera: a video under dynamic_mask_path, written
    # into test/ as the moving region (dynamic_mask_path), never as pixels to supervise
    m = torch.zeros(6, 24, 32, 3)
    m[:, 6:18, 8:20] = 1.0
    write_video(tmp_path / "videos" / "mask2.mp4", m, fps=10)
    good = json.loads((tmp_path / "cameras.json").read_text())
    good["frames"][2]["dynamic_mask_path"] = "videos/mask2.mp4"
    (tmp_path / "masked.json").write_text(json.dumps(good))
    st = _run_stage(tmp_path, {"capture": str(tmp_path / "masked.json"), "long_side": 32, "points": "none"},
                    name="masked")
    test = load_transforms(st / "test")
    assert test.masks is None and test.dynamic_masks is not None
    assert float(test.dynamic_masks[0, 12, 14, 0]) > 0.5 and float(test.dynamic_masks[0, 2, 2, 0]) < 0.5
    good["frames"][2]["mask_path"] = good["frames"][2].pop("dynamic_mask_path")
    (tmp_path / "old.json").write_text(json.dumps(good))
    with pytest.raises(InputError, match=r"frames\[2\]: mask_path means pixels to supervise, which a capture "
                                         r"does not take; a mask of the moving subject is dynamic_mask_path"):
        read_capture(tmp_path / "old.json")


# ============================================================================ real data
@pytest.mark.realdata
@pytest.mark.skipif(not (FOX / "transforms.json").is_file(), reason=f"real data not found at {FOX}")
def test_triangulation_from_the_fox_captures_known_poses():
    pytest.importorskip("pycolmap")
    from fourreal_formats.transforms import load_transforms
    from fourreal_poses.triangulate import triangulate_known

    tj = load_transforms(FOX, height=320, stride=4)  # 17 frames, 180x320
    pts, rep = triangulate_known(tj.video.frames, tj.cameras, num_threads=2)
    # measured: 78 pairs, ~690 SIFT features per frame, 820 points (7-8 s on 2 shared cores)
    assert rep["num_pairs"] >= 60 and rep["num_points"] >= 500, rep
    uv, z = _project(pts.points, tj.cameras)
    inside = (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < 180) & (uv[..., 1] >= 0) & (uv[..., 1] < 320)
    assert float(inside.sum(0).ge(2).float().mean()) > 0.95  # the poses were held fixed: points sit in the views
    # the points' colours are the fox's, not random: the mean is far from grey noise's 0.5 spread
    assert float(pts.colors.std(0).mean()) < 0.3


@pytest.mark.realdata
@pytest.mark.skipif(not (RIG4 / "train_meta.json").is_file(), reason=f"real data not found at {RIG4}")
def test_rig4_multicam_reads_the_capture_and_falls_back_to_frustum_points(tmp_path):
    from fourreal_formats.transforms import load_transforms

    st = _run_stage(tmp_path, {"capture": str(RIG4), "long_side": 64, "max_frames": 6, "stride": 10,
                               "test_times": 3, "fill_points": 2000, "points": "frustum"})
    info = json.loads((st / "capture.json").read_text())
    assert info["train_cameras"] == ["0", "1", "2"] and info["test_cameras"] == ["3"] and info["size"] == [36, 64]
    frz = load_transforms(st / "freeze_time")
    # rig4's cameras are wide apart (optical axes 45-120 degrees from each other)
    c2w = torch.linalg.inv(frz.cameras.viewmats.double())
    f = torch.nn.functional.normalize(c2w[:, :3, 2], dim=-1)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert 40 < math.degrees(math.acos(float(f[i] @ f[j]))) < 140  # measured 49, 89, 132
    assert info["points"]["num_points"] == 2000


def _bench_real():
    """bench/real.py as a module (the benchmark's fox split and canonical run, reused here)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fourreal_bench_real", ROOT / "bench" / "real.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.realdata
@pytest.mark.skipif(not (FOX / "transforms.json").is_file(), reason=f"real data not found at {FOX}")
def test_fox_known_pose_canonical_fit_scores_the_held_out_frames(tmp_path):
    """bench/real.py fox at toy size: known poses, every 8th frame held out, 200 iterations."""
    pytest.importorskip("pycolmap")
    real = _bench_real()
    rep = real.fox_split(FOX, tmp_path / "split", 48, "known", sfm_height=None)
    assert (rep["frames"], rep["train"], rep["test"]) == (67, 58, 9)
    r = real.fox_run(tmp_path / "split", tmp_path / "fit", 200, "cpu")
    print(rep["points"], r)
    assert r["heldout_psnr"] >= HELDOUT_FLOOR, r
    assert r["dx_pct"] < 1.0, r  # w_mv does not stand in for the canonical scene on calibrated views


@pytest.mark.realdata
@pytest.mark.skipif(not (RIG4 / "train_meta.json").is_file(), reason=f"real data not found at {RIG4}")
def test_rig4_4real_toy_fit_keeps_the_moving_subject(tmp_path):
    """recipes/multicam-to-4d.yaml on rig4 at toy size (27x48, 6 times, iterations_scale 0.05):
    the reference re-render scored inside the reference camera's own moving region, the held-out
    camera scored over time, and w_mv not standing in for the canonical scene."""
    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry
    from fourreal_core.run import execute

    p = "stages.multicam.params."
    sets = [f"{p}capture={RIG4}", f"{p}long_side=48", f"{p}max_frames=6", f"{p}stride=12", f"{p}canonical_frame=0",
            f"{p}test_times=3", f"{p}fill_points=3000", "iterations_scale=0.05", "stages.export.params.orbit_frames=4",
            "stages.export.params.grid_times=2", "stages.export.params.grid_views=2"]
    reg = get_registry()
    execute(load_recipe(ROOT / "recipes" / "multicam-to-4d.yaml", sets, reg), tmp_path / "run", reg, device="cpu")
    st = tmp_path / "run" / "stages"
    can = json.loads(next(st.glob("*_canonical/metrics.json")).read_text())
    mo = json.loads(next(st.glob("*_motion/metrics.json")).read_text())
    ev = json.loads(next(st.glob("*_eval/eval.json")).read_text())["mean"]
    assert 100 * can["mean_abs_dx"] / can["scene_extent"] < 1.0, can
    assert mo["reference_dynamic_fraction"] > 0.1  # the subject moves in the reference camera
    assert mo["reference_dynamic_psnr"] >= RIG4_REF_DYNAMIC_FLOOR, mo
    assert mo["reference_psnr"] >= RIG4_REF_FLOOR, mo
    # cam 3 (held out, wide apart from cams 0-2) scored over time in its moving region: measured
    # 11.24 dB (two runs equal, 2026-12-07, MCMC canonical); the same scene frozen at t_c 11.17,
    # the frames' own mean colour 14.67, a black render 6.20 -- a floor 1.5 dB under the
    # measurement fails an empty or flown-away scene, not a poor one (the rig's baselines are wide)
    assert ev["dynamic_fraction"] > 0.1 and ev["dynamic_psnr"] >= 11.24 - 1.5, ev
    # the subject moves with w_t: frozen at t_c (the canonical scene at every time) scores far worse there
    from fourreal_core.recipe import component_from_plain
    from fourreal_formats.transforms import load_transforms
    from fourreal_stages.evaluate import dynamic_masks, pooled_dynamic_scores
    from fourreal_formats.scene4d import Scene4D

    scene = Scene4D.load(next(st.glob("*_motion/scene4d.json")), reg, "cpu")
    ras = component_from_plain("rasterizer", {"name": "auto", "params": {}}, reg, source="test").build(reg)
    ref = load_transforms(next(st.glob("*_multicam")) / "reference" / "transforms.json")
    frozen = scene.render_each(ras, ref.cameras, torch.zeros(len(ref)))
    dmask, _ = dynamic_masks(ref.video.frames, ref.cameras)
    still = pooled_dynamic_scores(frozen, ref.video.frames, dmask)["dynamic_psnr"]
    # measured 20.82 vs 18.29 with the 3DGS canonical stage; 20.31 vs 19.39 with the MCMC + D-SSIM
    # one (a better canonical scene also scores better frozen)
    assert mo["reference_dynamic_psnr"] > still + 0.5, (mo["reference_dynamic_psnr"], still)


@pytest.mark.realdata
@pytest.mark.skipif(not (DOME27 / "train_meta.json").is_file(), reason=f"real data not found at {DOME27}")
def test_dome27_4real_toy_fit_scores_unseen_cameras(tmp_path):
    """recipes/multicam-to-4d.yaml on dome27 at toy size (64x36, 4 times, iterations_scale 0.05),
    cameras 6 and 22 held out: the canonical stage's held-out cameras at t_c above a floor (the
    near plane and the plane-sweep fill; without them one of these cameras renders black), and
    the held-out cameras scored over time inside the capture's person masks."""
    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry
    from fourreal_core.run import execute

    p = "stages.multicam.params."
    sets = [f"{p}capture={DOME27}", f"{p}long_side=64", f"{p}max_frames=4", f"{p}stride=20",
            f"{p}test_cameras=[\"6\", \"22\"]", f"{p}test_times=2", f"{p}fill_points=3000",
            f"{p}triangulate_long_side=320", "iterations_scale=0.05",
            "stages.canonical.params.representation.params.densify.max_gaussians=5000",
            "stages.motion.params.representation.params.densify.max_gaussians=6000",
            "stages.export.params.orbit_frames=4", "stages.export.params.grid_times=2",
            "stages.export.params.grid_views=2"]
    reg = get_registry()
    execute(load_recipe(ROOT / "recipes" / "multicam-to-4d.yaml", sets, reg), tmp_path / "run", reg, device="cpu")
    st = tmp_path / "run" / "stages"
    info = json.loads(next(st.glob("*_multicam/capture.json")).read_text())
    assert info["test_masks"] == "given" and info["points"]["num_sweep_points"] > 0
    can = json.loads(next(st.glob("*_canonical/metrics.json")).read_text())
    ev = json.loads(next(st.glob("*_eval/eval.json")).read_text())
    print(can["heldout_static_psnr"], ev["mean"])
    assert can["heldout_static_psnr"] >= DOME27_STATIC_FLOOR, can
    assert ev["dynamic_mask"] == "given" and 0.01 < ev["mean"]["dynamic_fraction"] < 0.3, ev
    assert ev["mean"]["psnr"] >= DOME27_HELDOUT_FLOOR, ev["mean"]


def test_near_plane_from_the_data_lets_a_camera_mounted_in_the_wall_see_the_scene(tmp_path):
    """A dome camera sits in the wall the other cameras see: the wall's Gaussians around it
    cover its whole view unless the near plane (fourreal.near_plane, written by the multicam
    stage) culls them; Scene4D keeps the near plane through save / load."""
    from fourreal_core.interfaces import GaussianParams
    from fourreal_core.registry import get_registry
    from fourreal_core.types import Cameras
    from fourreal_stages.common import near_plane_for
    from fourreal_formats.scene4d import with_near_plane
    from fourreal_formats.scene4d import Scene4D

    g = torch.Generator().manual_seed(0)
    wall = torch.rand(400, 3, generator=g) * torch.tensor([1.0, 1.0, 0.1]) - torch.tensor([0.5, 0.5, 0.05])
    far = torch.rand(400, 3, generator=g) * torch.tensor([3.0, 3.0, 0.1]) + torch.tensor([-1.5, -1.5, 2.0])
    means = torch.cat([wall, far])
    colors = torch.cat([torch.zeros(400, 3), torch.tensor([[1.0, 0.5, 0.0]]).expand(400, 3)])
    gs = GaussianParams(means, torch.tensor([[1.0, 0, 0, 0]]).expand(800, 4).clone(), torch.full((800, 3), 0.08),
                        torch.full((800,), 0.9), colors, sh_degree=None)
    cam = Cameras(torch.eye(4)[None], Cameras.intrinsics(30.0, 30.0, 16.0, 12.0)[None], 32, 24)
    reg = get_registry()
    base = reg.create("rasterizer", "auto", reg.get("rasterizer", "auto").config())
    assert with_near_plane(base, None) is base
    near = near_plane_for(None, type("P", (), {"meta": {"fourreal": {"near_plane": 0.3}}})())
    assert near == 0.3 and with_near_plane(base, near) is with_near_plane(base, near)  # cached
    blocked = base.rasterize(gs, cam, background=torch.ones(3)).rgb[0]
    seen = with_near_plane(base, near).rasterize(gs, cam, background=torch.ones(3)).rgb[0]
    assert float(blocked.mean()) < 0.1  # the wall's dark Gaussians fill the view
    assert float((seen - torch.tensor([1.0, 0.5, 0.0])).abs().mean()) < 0.1  # the orange far wall
    with pytest.raises(InputError, match="near_plane must be a distance >= 0"):
        near_plane_for(-1.0, None)
    # a 4D scene carries it to render / export / eval
    from fourreal_core.recipe import component_from_plain

    rep = component_from_plain("representation", {"name": "gaussians", "params": {}}, reg)
    model = rep.build(reg)
    from fourreal_core.types import PointCloud

    model.init_from_points(PointCloud(means, colors), 3.0)
    scene = Scene4D(model, None, torch.ones(3), near_plane=0.3, representation_spec=rep)
    scene.save(tmp_path)
    again = Scene4D.load(tmp_path, reg)
    assert again.near_plane == 0.3
    assert float(again.render(base, cam, 0.0).rgb.mean()) > 0.3


def test_sweep_points_lie_on_the_surfaces_the_views_agree_on():
    """sweep_points on 8 views of the procedural garden (known cameras): the kept points lie
    near the true surface (Gaussian centres of the scene), far closer than random frustum points."""
    from fourreal_poses.triangulate import frustum_points, sweep_points
    from fourreal_synthetic.scenes import make_scene

    scene = make_scene("garden")
    cams = scene.orbit(8, 64, 48, arc_deg=150, radius=scene.ref_radius, start_azimuth_deg=-75)
    frames = scene.render(cams, 0.0)
    truth = scene.gaussians(0.0).means
    pts, rep = sweep_points(frames, cams, 1500, seed=0)
    assert rep["kept"] == len(pts) > 300, rep
    rnd = frustum_points(cams, 1500, seed=0)

    def dist(p):
        return torch.cdist(p.points.float(), truth.float()).min(dim=1).values.median()

    extent = float((truth - truth.mean(0)).norm(dim=-1).median())
    d_sweep, d_rand = float(dist(pts)), float(dist(rnd))
    # measured: median distance 0.24 (sweep) vs 1.06 (frustum), extent 3.9
    assert d_sweep < 0.1 * extent and d_sweep < d_rand / 3, (d_sweep, d_rand, extent)
    # colours are the pixels': the points' colours match what the views see there
    assert pts.colors.min() >= 0 and pts.colors.max() <= 1
