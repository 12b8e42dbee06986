"""Procedural 4D scenes and synthetic datasets (plugins/fourreal_synthetic)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from fourreal_formats.cameras import orbit_cameras
from fourreal_formats.transforms import load_transforms
from fourreal_media import read_video
from fourreal_synthetic.scenes import (
    Imperfections,
    make_scene,
    quat_to_matrix,
)
from fourreal_synthetic.stage import load_init_points, make_dataset

W, H = 48, 36
T, K = 5, 6  # reference / freeze-time frames (small: the whole file stays well under a minute)


def _pdist(x: torch.Tensor) -> torch.Tensor:
    """Exact pairwise distances (torch.cdist's matmul path loses ~1e-3 at this scale)."""
    return (x[:, None] - x[None]).norm(dim=-1)


def _azimuths_deg(cams, center) -> np.ndarray:
    c = (cams.centers - torch.as_tensor(center)).double()
    return np.unwrap(torch.atan2(c[:, 1], c[:, 0]).numpy()) * 180 / math.pi


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Garden dataset with every imperfection off."""
    out = tmp_path_factory.mktemp("clean")
    return make_dataset("garden", out, width=W, height=H, num_reference_frames=T, num_freeze_frames=K,
                        canonical_frame=2, canonical_view=1, orbit_arc_deg=150, num_test_views=2,
                        num_test_static_views=2, seed=3, num_init_points=500)


@pytest.fixture(scope="module")
def imperfect(tmp_path_factory):
    """The same dataset with wobble, a moving object and flicker in the freeze-time video."""
    out = tmp_path_factory.mktemp("imperfect")
    return make_dataset("garden", out, width=W, height=H, num_reference_frames=T, num_freeze_frames=K,
                        canonical_frame=2, canonical_view=1, orbit_arc_deg=150, num_test_views=0,
                        num_test_static_views=0, seed=3, wobble=0.15, moving_object=0.3, flicker=0.08,
                        write_videos=False)


# --------------------------------------------------------------------------- the scenes
@pytest.mark.parametrize("name", ["object", "garden", "articulated"])
def test_scene_gaussians_are_valid_and_deterministic(name):
    a, b, other = make_scene(name, seed=5), make_scene(name, seed=5), make_scene(name, seed=6)
    ga, gb, go = a.gaussians(0.37), b.gaussians(0.37), other.gaussians(0.37)
    n = len(a)
    assert 500 < n < 8000  # modest: fast CPU renders
    assert ga.means.shape == (n, 3) and ga.quats.shape == (n, 4) and ga.scales.shape == (n, 3)
    assert ga.opacities.shape == (n,) and ga.colors.shape == (n, 3) and ga.sh_degree is None
    for f in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.equal(getattr(ga, f), getattr(gb, f)), f
        assert torch.isfinite(getattr(ga, f)).all(), f
    assert not torch.equal(ga.colors, go.colors)  # the seed changes the textures
    assert torch.allclose(ga.quats.norm(dim=-1), torch.ones(n), atol=1e-5)
    assert (ga.scales > 0).all() and ((ga.opacities > 0) & (ga.opacities < 1)).all()
    assert (ga.colors >= 0).all() and (ga.colors <= 1).all()
    # everything sits within `extent` of `center`
    assert float((ga.means - a.center).norm(dim=-1).max()) <= a.extent * 1.05


def test_object_scene_is_static_and_renders_deterministically():
    scene = make_scene("object", seed=0)
    assert bool(scene.static_mask().all())
    g0, g1 = scene.gaussians(0.0), scene.gaussians(1.0)
    assert torch.equal(g0.means, g1.means) and torch.equal(g0.quats, g1.quats)
    cams = orbit_cameras(3, 40, 32, scene.ref_radius, 20.0, 360.0, 0.0, scene.center, scene.fov_deg)
    img1, alpha = scene.render(cams, 0.5, return_alpha=True)
    img2 = scene.render(cams, 0.5)
    assert img1.shape == (3, 32, 40, 3) and alpha.shape == (3, 32, 40, 1)
    assert torch.equal(img1, img2)
    # the object is in view and opaque; the background is the scene's white
    cover = alpha[..., 0]
    assert all(0.1 < float((c > 0.5).float().mean()) < 0.9 for c in cover)
    assert float(cover.max()) > 0.95
    bg = img1[cover < 0.01]
    assert torch.allclose(bg, torch.ones_like(bg), atol=0.02)
    # textured: the object's pixels are far from uniform
    assert float(img1[cover > 0.99].std(0).mean()) > 0.1
    # a different background shows through where there is no object
    img_black = scene.render(cams, 0.5, background=torch.zeros(3))
    assert float(img_black[cover < 0.01].max()) < 0.02


def test_garden_motion_moves_only_the_movers():
    scene = make_scene("garden", seed=1)
    sl = scene.part_slices()
    g0, g1 = scene.gaussians(0.1), scene.gaussians(0.6)
    static = scene.static_mask()
    assert torch.equal(g0.means[static], g1.means[static])
    for part in ("column", "ball"):
        moved = (g1.means[sl[part]] - g0.means[sl[part]]).norm(dim=-1)
        assert float(moved.max()) > 0.1, part
    # the column bends (non-rigid): its base stays put while its top moves
    col0, col1 = g0.means[sl["column"]], g1.means[sl["column"]]
    base = col0[:, 2] < 0.1
    top = col0[:, 2] > 1.0
    assert float((col1[base] - col0[base]).norm(dim=-1).max()) < 0.01
    assert float((col1[top] - col0[top]).norm(dim=-1).min()) > 0.05
    # the ball moves rigidly: pairwise distances are preserved
    b0, b1 = g0.means[sl["ball"]], g1.means[sl["ball"]]
    assert torch.allclose(_pdist(b0), _pdist(b1), atol=1e-4)


def test_reference_video_moves_where_movers_are_and_nowhere_else(clean):
    frames = clean.reference.video.frames
    scene = clean.scene
    # pixels covered by a moving part at either time
    movers = replace(scene, parts=[p for p in scene.parts if not p.is_static])
    cam = scene.reference_camera(W, H)
    cover = torch.zeros(H, W, dtype=torch.bool)
    for t in clean.reference.times:
        _, alpha = movers.render(cam, float(t), return_alpha=True)
        cover |= alpha[0, ..., 0] > 1e-3
    diff = (frames[1:] - frames[:-1]).abs().amax(dim=(0, 3))  # [H,W] max change over time
    assert float(diff[cover].max()) > 0.2  # moving content changes
    assert float(diff[~cover].max()) < 1e-5  # static props/background identical across time
    assert float(cover.float().mean()) < 0.5


def test_articulated_bones_reproduce_the_motion():
    scene = make_scene("articulated", seed=2)
    W_ = scene.bone_weights
    assert W_.shape == (len(scene), 4) and torch.equal(W_.sum(-1), torch.ones(len(scene)))
    # bone transforms map the rest layout (the parts' stored means/quats) to time t
    rest_means = torch.cat([p.means for p in scene.parts])
    rest_quats = torch.cat([p.quats for p in scene.parts])
    for t in (0.0, 0.3, 0.8):
        g = scene.gaussians(t)
        B = scene.bone_transforms(t)  # [4,4,4]
        assert torch.allclose(B[0], torch.eye(4))
        M = torch.einsum("nb,bij->nij", W_, B)  # linear blend skinning
        lbs = (M[:, :3, :3] @ rest_means[:, :, None])[:, :, 0] + M[:, :3, 3]
        assert torch.allclose(g.means, lbs, atol=1e-5)
        # rotations follow the bones too
        R = quat_to_matrix(g.quats)
        assert torch.allclose(R, M[:, :3, :3] @ quat_to_matrix(rest_quats), atol=1e-4)
    # the joints really rotate: the tip moves, the base block and ground do not
    g0, g1 = scene.gaussians(0.0), scene.gaussians(0.4)
    still = W_[:, 0] > 0
    assert torch.equal(g0.means[still], g1.means[still])
    assert float((g1.means[~still] - g0.means[~still]).norm(dim=-1).max()) > 0.2
    # segments stay rigid: distances inside the last segment are preserved
    last = W_[:, 3] > 0
    assert torch.allclose(_pdist(g0.means[last]), _pdist(g1.means[last]), atol=1e-4)


@pytest.mark.parametrize("kind", ["wobble", "moving_object", "flicker"])
def test_each_imperfection_differs_from_truth_except_at_the_canonical_view(kind):
    scene = make_scene("garden", seed=0)
    k_c, n = 2, 6
    imp = Imperfections(canonical_view=k_c, num_frames=n, **{kind: {"wobble": 0.2, "moving_object": 0.4,
                                                                "flicker": 0.1}[kind]})
    bad = scene.with_imperfections(imp)
    cams = scene.orbit(n, 40, 30, arc_deg=150, start_azimuth_deg=scene.ref_azimuth_deg - 2 * 30)
    t_c = 0.5
    for k in (k_c, 0, 5):
        truth = scene.render(cams[k], t_c)
        img = bad.render(cams[k], t_c, frame=k)
        d = (img - truth).abs()
        if k == k_c:
            assert torch.equal(img, truth)
        else:
            assert float(d.mean()) > 5e-4 and float(d.max()) > 0.03, (kind, k, float(d.mean()))
    gk = bad.gaussians(t_c, frame=5).means
    g_true = scene.gaussians(t_c).means
    moved = (gk - g_true).norm(dim=-1)
    sl = scene.part_slices()
    if kind == "flicker":
        assert float(moved.max()) == 0.0  # colour only
    elif kind == "moving_object":
        assert float(moved[sl["ball"]].min()) > 0.05  # the mover keeps moving ...
        rest = torch.ones(len(scene), dtype=torch.bool)
        rest[sl["ball"]] = False
        assert float(moved[rest].max()) == 0.0  # ... and nothing else does
    else:
        # a smooth field confined to a region around the sphere
        near = (g_true - scene.wobble_center).norm(dim=-1) < scene.wobble_radius
        far = (g_true - scene.wobble_center).norm(dim=-1) > scene.wobble_radius * 3
        assert float(moved[near].max()) > 0.02
        assert float(moved[far].max()) < 1e-3
        # varies per frame
        g2 = bad.gaussians(t_c, frame=3).means
        assert float((g2 - gk)[near].norm(dim=-1).max()) > 1e-3


# --------------------------------------------------------------------------- the dataset
def test_freeze_time_geometry(clean):
    ref, fz = clean.reference, clean.freeze_time
    assert len(ref) == T and len(fz) == K
    assert clean.t_c == pytest.approx(2 / (T - 1))
    assert torch.allclose(ref.times, torch.linspace(0, 1, T))
    assert torch.all(fz.times == clean.t_c)
    # one world frame: the canonical view's camera IS the reference camera
    k_c = clean.canonical_view
    assert fz.canonical_view == k_c == 1 and ref.canonical_view == clean.canonical_frame == 2
    assert torch.equal(fz.cameras.viewmats[k_c], ref.cameras.viewmats[0])
    assert torch.equal(fz.cameras.Ks[k_c], ref.cameras.Ks[0])
    assert torch.equal(ref.cameras.viewmats, ref.cameras.viewmats[:1].expand(T, 4, 4))
    # the orbit spans >= 120 degrees around the scene, monotonically, at constant distance
    az = _azimuths_deg(fz.cameras, clean.scene.center)
    assert abs(az[-1] - az[0]) >= 120 - 1e-3
    assert np.all(np.diff(az) > 0)
    dist = (fz.cameras.centers - clean.scene.center).norm(dim=-1)
    assert torch.allclose(dist, dist[:1].expand_as(dist), atol=1e-4)
    # and the canonical view shows exactly the reference frame c
    assert torch.equal(fz.video.frames[k_c], ref.video.frames[clean.canonical_frame])


def test_clean_freeze_time_equals_the_true_scene(clean):
    scene, fz = clean.scene, clean.freeze_time
    # (batched vs one-camera rasterization differs by float rounding only)
    truth = scene.render(fz.cameras, clean.t_c)
    assert torch.allclose(fz.video.frames, truth, atol=1e-4)
    st = clean.test_static
    assert torch.allclose(st.video.frames, scene.render(st.cameras, clean.t_c), atol=1e-4)
    # held-out views: new cameras and new times
    te = clean.test
    for i in range(len(te)):
        assert torch.allclose(te.video.frames[i], scene.render(te.cameras[i], float(te.times[i]))[0], atol=1e-4)
    for cams in (te.cameras, st.cameras):
        d = torch.cdist(cams.centers, fz.cameras.centers)
        assert float(d.min()) > 0.05
    assert not any(torch.isclose(t, clean.reference.times).any() for t in te.times)


def test_imperfect_freeze_time_differs_except_at_canonical_view(imperfect, clean):
    k_c = imperfect.canonical_view
    a, b = imperfect.freeze_time.video.frames, clean.freeze_time.video.frames
    assert torch.equal(imperfect.freeze_time.cameras.viewmats, clean.freeze_time.cameras.viewmats)
    for k in range(K):
        d = float((a[k] - b[k]).abs().mean())
        if k == k_c:
            assert d == 0.0
        else:
            assert d > 2e-3, (k, d)
    # the reference video carries no imperfection
    assert torch.equal(imperfect.reference.video.frames, clean.reference.video.frames)


def test_written_files_load_back(clean):
    root = clean.root
    info = json.loads((root / "scene.json").read_text())
    assert info["canonical_frame"] == 2 and info["canonical_view"] == 1
    assert info["orbit_arc_deg"] >= 120 and info["scene"]["name"] == "garden"
    for name in ("reference", "freeze_time", "test", "test_static"):
        mem = clean.split(name)
        disk = load_transforms(root / name / "transforms.json")
        assert torch.allclose(disk.cameras.viewmats, mem.cameras.viewmats, atol=1e-5), name
        assert torch.allclose(disk.cameras.Ks, mem.cameras.Ks, atol=1e-5), name
        assert torch.allclose(disk.times, mem.times), name
        assert disk.canonical_view == mem.canonical_view, name
        extras = disk.meta["fourreal"]
        assert extras["background"] == pytest.approx(clean.scene.background.tolist()), name
        # canonical_view is the video's own (k_c = 1 in the freeze-time video, c = 2 in the reference)
        assert extras["canonical_frame"] == 2 and extras.get("canonical_view") == mem.canonical_view, name
        assert torch.allclose(disk.video.frames, mem.video.frames, atol=1 / 255 + 1e-6), name
        vid = read_video(root / f"{name}.mp4")
        assert vid.frames.shape == (len(mem), H, W, 3), name
        assert float((vid.frames - mem.video.frames).abs().mean()) < 0.05, name
    pts = load_init_points(root / "init_points.npz")
    assert pts.points.shape == (500, 3) and pts.colors.shape == (500, 3)
    # the points lie on the true surface at t_c (they are Gaussian centres of it)
    g = clean.scene.gaussians(clean.t_c)
    nearest = torch.stack([(g.means - p).norm(dim=-1).min() for p in pts.points])
    assert float(nearest.max()) < 1e-6


def test_held_out_views_carry_the_true_moving_region(clean):
    """The test split's moving-region masks (dynamic_mask_path, not mask_path: every pixel
    is still supervised/scored) are where the garden's moving parts are seen: a render of the
    scene without them differs inside the mask and matches outside it; eval scores them."""
    test = load_transforms(clean.root / "test" / "transforms.json")
    assert test.masks is None
    assert test.dynamic_masks is not None and test.dynamic_masks.shape == (len(test), H, W, 1)
    assert clean.split("test").dynamic_masks is not None
    scene = clean.scene
    keep = scene.static_mask()
    for i in range(len(test)):
        m = test.dynamic_masks[i, ..., 0] > 0.5
        assert 0 < int(m.sum()) < m.numel() // 2, i
        t = float(test.times[i])
        full = scene.render(test.cameras[i:i + 1], t)[0]
        g = scene.gaussians(t).subset(keep)
        from fourreal_synthetic.scenes import default_rasterizer

        static = default_rasterizer().rasterize(g, test.cameras[i:i + 1], background=scene.background,
                                                render_depth=False).rgb[0]
        diff = (full - static).abs().amax(-1)
        assert float(diff[m].mean()) > 0.1 and float(diff[~m].mean()) < 0.01, i
    from fourreal_stages.evaluate import dynamic_masks

    dm, src = dynamic_masks(test.video.frames, test.cameras, test.dynamic_masks, per_frame=True)
    assert src == "given" and torch.equal(dm, test.dynamic_masks[..., 0] > 0.5)


def test_stage_runs_from_a_recipe(tmp_path):
    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry
    from fourreal_core.run import execute

    reg = get_registry()
    assert ("stage", "synthetic") in reg
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: synth\nseed: 4\ndevice: cpu\nrasterizer: {name: torch}\nstages:\n"
        "  - name: synthetic\n    params:\n      scene: object\n      width: 32\n      height: 24\n"
        "      num_reference_frames: 3\n      num_freeze_frames: 4\n      num_test_views: 1\n"
        "      num_test_static_views: 1\n      orbit_arc_deg: 120\n"
        "      imperfections: {wobble: 0.1, flicker: 0.05}\n"
    )
    rec = load_recipe(recipe, registry=reg)
    run = execute(rec, tmp_path / "run", reg, device="cpu")
    out = next((run / "stages").glob("01_synthetic"))
    info = json.loads((out / "scene.json").read_text())
    assert info["scene"]["name"] == "object" and info["num_freeze_frames"] == 4
    assert info["imperfections"]["wobble"] == 0.1 and info["imperfections"]["moving_object"] == 0.05
    fz = load_transforms(out / "freeze_time")
    assert len(fz) == 4 and fz.canonical_view == 0 and fz.video.frames.shape == (4, 24, 32, 3)
    assert (out / "reference.mp4").is_file() and (out / "init_points.npz").is_file()
    events = [json.loads(line)["event"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert "synthetic_done" in events
    # a bad value is a recipe error naming the field
    from fourreal_core.errors import RecipeError

    recipe.write_text(recipe.read_text().replace("orbit_arc_deg: 120", "orbit_arc_deg: -5"))
    with pytest.raises(RecipeError, match="orbit_arc_deg"):
        load_recipe(recipe, registry=reg)
