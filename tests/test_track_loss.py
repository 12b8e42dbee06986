"""The motion stage's point-track supervision (plugins/fourreal_stages/tracks.py): Shape of
Motion's track loss moves Gaussians to where the tracks say they went; off without tracks."""

from __future__ import annotations

import pytest
import torch

from fourreal_core.interfaces import GaussianParams, Tracks


@pytest.fixture(scope="module")
def ball():
    from fourreal_synthetic.scenes import default_rasterizer, make_scene

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    sc = make_scene("garden", seed=0)
    next(p for p in sc.parts if p.name == "ball").params["spin"] = 0.0  # a pure translation: the truth is one shift
    cam = sc.reference_camera(96, 54)
    sl = sc.part_slices()["ball"]
    idx = torch.arange(sl.start, sl.stop)
    g = sc.gaussians(0.0)
    g0 = GaussianParams(g.means[idx], g.quats[idx], g.scales[idx], g.opacities[idx], g.colors[idx], None)
    times = [0.0, 0.1]
    tr, vis = sc.point_tracks(cam, times, idx)
    keep = vis[:, 0]
    tracks = Tracks(queries=torch.cat([torch.zeros(int(keep.sum()), 1), tr[keep, 0]], 1), tracks=tr[keep], visible=vis[keep])
    true_shift = sc.gaussians(0.1).means[idx].mean(0) - g0.means.mean(0)
    yield {"g0": g0, "cams": cam.__class__.cat([cam, cam]), "tracks": tracks, "shift": true_shift,
           "ras": default_rasterizer()}
    torch.set_num_threads(n)


def test_track_loss_moves_the_ball_where_the_tracks_say(ball):
    """A translation of the ball trained by the track loss alone (from frame 0 to frame 1,
    where the ball has moved by about its own size -- no photometric gradient reaches that
    far) lands on the true translation; the loss starts near the true motion in pixels and
    ends under half a pixel."""
    from fourreal_stages.tracks import TrackLoss

    g0, cams = ball["g0"], ball["cams"]
    loss_fn = TrackLoss(ball["tracks"], 0, cams, ball["ras"])
    assert len(loss_fn) > 20
    assert loss_fn(g0, g0, 0) is None  # nothing to say at the canonical frame
    shift = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([shift], lr=0.02)
    first = None
    for _ in range(120):
        g = GaussianParams(g0.means + shift, g0.quats, g0.scales, g0.opacities, g0.colors, None)
        loss = loss_fn(g0, g, 1)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved_px = first * 96  # loss units: the image's long side
    assert 8.0 < moved_px < 16.0, moved_px  # the ball moved ~12 px
    assert float(loss.detach()) * 96 < 0.5, float(loss.detach()) * 96
    # the image-plane part of the true translation is recovered (depth is not observable)
    uv_true, _ = cams[1].project((g0.means + ball["shift"]).mean(0, keepdim=True))
    uv_got, _ = cams[1].project((g0.means + shift.detach()).mean(0, keepdim=True))
    assert float((uv_true - uv_got).norm()) < 0.5, (uv_true, uv_got)


def test_invisible_tracks_give_no_loss(ball):
    from fourreal_stages.tracks import TrackLoss

    t = ball["tracks"]
    hidden = Tracks(t.queries, t.tracks, t.visible.clone())
    hidden.visible[:, 1] = False
    assert TrackLoss(hidden, 0, ball["cams"], ball["ras"])(ball["g0"], ball["g0"], 1) is None


def test_tracks_are_off_by_default_and_validated_in_recipes(tmp_path):
    from fourreal_stages.motion import MotionConfig

    assert MotionConfig().tracker is None  # the paper's motion stage
    from fourreal_core.errors import RecipeError
    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry

    p = tmp_path / "r.yaml"
    p.write_text("name: r\nstages:\n  - name: motion\n    params:\n      tracker: {name: opencv, params: {methd: lk}}\n")
    with pytest.raises(RecipeError, match=r"stages\[0\]\.params\.tracker\.params\.methd: unknown param; did you mean 'method'\?"):
        load_recipe(p, [], get_registry())
    p.write_text("name: r\nstages:\n  - name: motion\n    params:\n      tracker: {name: tracks_file, params: {file: nope.npz}}\n")
    with pytest.raises(RecipeError, match=r"tracker\.params\.file"):
        load_recipe(p, [], get_registry(), check_files=True)


def test_motion_stage_with_a_tracker_trains_the_track_loss(tmp_path, registry):
    """A motion stage with ``tracker: opencv`` and the ``motion_bases`` deformer: tracks are made
    at the canonical frame, written to tracks.npz (the tracks_file layout, which reads back),
    and the track loss is part of every reference step's loss."""
    import json

    from fourreal_core.recipe import component_from_plain
    from fourreal_core.run import CheckpointStore, RunLog, StageContext
    from fourreal_synthetic.stage import make_dataset
    from fourreal_trackers.npz import load_tracks_npz

    make_dataset("garden", tmp_path / "data", width=48, height=32, num_reference_frames=4, num_freeze_frames=4,
                 num_test_views=0, num_test_static_views=0, seed=0, write_videos=False)
    data = tmp_path / "data"
    phases = [{"name": "motion", "iterations": 1000, "losses": ["align"], "train": ["deformer"], "frames": "reference"}]
    spec = component_from_plain("stage", {"name": "motion", "params": {
        "reference": str(data / "reference" / "transforms.json"), "init_points": str(data / "init_points.npz"),
        "losses": [{"name": "align"}], "w_t": {"name": "motion_bases", "params": {"num_bases": 4}},
        "tracker": {"name": "opencv"}, "track_points": 50, "track_init_steps": 40,
        "scheduler": {"name": "stagewise", "params": {"phases": phases}}}}, registry)
    out = tmp_path / "motion"
    out.mkdir()
    ctx = StageContext(name="motion", index=2, run_dir=tmp_path, out_dir=out, recipe_dir=tmp_path,
                       device=torch.device("cpu"), seed=0, iterations_scale=0.01,
                       checkpoints=CheckpointStore(tmp_path / "ck"), log=RunLog(tmp_path / "log.jsonl"),
                       registry=registry, rasterizer_spec=component_from_plain("rasterizer", {"name": "torch"}, registry))
    spec.build(registry).run(ctx)
    back = load_tracks_npz(out / "tracks.npz", 4, 32, 48)
    assert 10 <= len(back) <= 50 and bool(back.visible.any(dim=1).all())
    events = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    info = next(e for e in events if e["event"] == "tracks")
    assert info["tracker"] == "opencv" and info["tracks"] == len(back)
    init = next(e for e in events if e["event"] == "track_init")  # w_t initialised from the lifted tracks
    assert init["steps"] == 40 and 0 < init["track_init_tracks"] <= len(back)
    assert init["track_init_loss_last"] <= init["track_init_loss_first"]
    steps = [e for e in events if e["event"] == "train" and e.get("stage") == "motion"]
    assert steps and all("track" in e for e in steps[1:]), steps[-1]


def test_track_init_puts_a_far_moving_ball_where_it_went(registry):
    """w_t initialised from lifted tracks (tracks.track_init): the garden's ball, which rolls
    about 2.4 units -- many times its own size -- over 8 frames, is put within 0.25 of its true
    centre at every frame (the w_t starts at zero: 0.65-2.4 away), while the static garden in
    view stays put (median under half a pixel); a ball the tracks do not see at c stays too."""
    import types

    from fourreal_core.recipe import component_from_plain
    from fourreal_stages.tracks import TrackLoss, track_init
    from fourreal_synthetic.scenes import default_rasterizer, make_scene

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sc = make_scene("garden", seed=0)
        cam = sc.reference_camera(96, 54)
        T = 8
        times = torch.linspace(0, 1, T).tolist()
        sl = sc.part_slices()["ball"]
        ball = torch.arange(sl.start, sl.stop)
        static = torch.nonzero(sc.static_mask()).flatten()
        idx = torch.cat([ball, static])
        g = sc.gaussians(0.0)
        g0 = GaussianParams(g.means[idx], g.quats[idx], g.scales[idx], g.opacities[idx], g.colors[idx], None)
        gen = torch.Generator().manual_seed(0)
        _, vis0 = sc.point_tracks(cam, [0.0], idx)
        seen = idx[vis0[:, 0]]
        on_ball = (seen >= sl.start) & (seen < sl.stop)
        s = seen[~on_ball]
        q = torch.cat([seen[on_ball][:15], s[torch.randperm(len(s), generator=gen)[:60]]])
        tr, vis = sc.point_tracks(cam, times, q)
        tracks = Tracks(queries=torch.cat([torch.zeros(len(q), 1), tr[:, 0]], 1), tracks=tr, visible=vis)
        cams = cam.__class__.cat([cam] * T)
        ras = default_rasterizer()

        def fitted(track_set):
            w_t = component_from_plain("deformer", {"name": "mlp", "params": {
                "time_input": "time", "width": 64, "depth": 4, "x_multires": 4, "t_multires": 4}}, registry).build(registry)
            w_t.setup(num_frames=T, canonical=0.0, canonical_means=g0.means)
            fit = types.SimpleNamespace(track_loss=TrackLoss(track_set, 0, cams, ras), w_t=w_t, rasterizer=ras,
                                        model=types.SimpleNamespace(params=lambda: g0), ref_cams=cams, c=0, T=T,
                                        ref_times=torch.tensor(times))

            class Bar:
                def __enter__(self):
                    return self

                def __exit__(self, *a):
                    return None

                def update(self, **k):
                    return None

            ctx = types.SimpleNamespace(seed=0, progress=lambda n, d: Bar(), log=lambda *a, **k: None, name="motion")
            info = track_init(ctx, fit, 250, 1e-3)
            return w_t, info

        w_t, info = fitted(tracks)
        assert info["track_init_tracks"] >= 70 and info["track_init_loss_last"] < 0.05 * info["track_init_loss_first"]
        nb = len(ball)
        uv0, _ = cam.project(g0.means)
        inview = (uv0[0, :, 0] > 0) & (uv0[0, :, 0] < 96) & (uv0[0, :, 1] > 0) & (uv0[0, :, 1] < 54)
        inview[:nb] = False
        with torch.no_grad():
            for k in range(1, T):
                d = w_t.deform(g0.means, times[k])
                got = (g0.means[:nb] + d.dx[:nb]).mean(0)
                true = sc.gaussians(times[k]).means[ball].mean(0)
                assert float((got - true)[:2].norm()) < 0.25, (k, got, true)
                uv1, _ = cam.project(g0.means + d.dx)
                assert float((uv1[0] - uv0[0]).norm(dim=1)[inview].median()) < 0.5, k
            assert float((true - g0.means[:nb].mean(0)).norm()) > 2.0  # it went far
        # the ball's tracks hidden at c: nothing says it moves, so it stays
        hidden = Tracks(tracks.queries, tracks.tracks, tracks.visible.clone())
        hidden.visible[:15, 0] = False
        w_t2, _ = fitted(hidden)
        with torch.no_grad():
            assert float(w_t2.deform(g0.means, times[-1]).dx[:nb].norm(dim=1).mean()) < 0.3
    finally:
        torch.set_num_threads(n_threads)


def test_track_depth_prior_holds_the_lifted_depth_not_the_image_plane():
    """TrackDepthPrior is zero on the tracks' offsets, unchanged by a shift in the image plane,
    and grows when the Gaussians slide along the camera's viewing axis -- what the 2D track
    loss cannot see; nothing at c, and Gaussians far from every track are left alone."""
    from fourreal_stages.tracks import TrackDepthPrior

    V = torch.eye(4)
    V[2, 3] = 5.0  # camera at z = -5 looking down +z: depth = z + 5
    X = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.1, 0.1, 0.0], [0.05, 0.05, 0.0]])
    T = 3
    disp = torch.zeros(5, T, 3)
    disp[:, 1, 0], disp[:, 2, 0] = 0.3, 0.6  # moving along x, parallel to the image plane
    ok = torch.ones(5, T, dtype=torch.bool)
    prior = TrackDepthPrior(X, disp, ok, 0, V)
    means = torch.cat([X + 0.01, torch.tensor([[30.0, 30.0, 30.0]])])  # five near the tracks, one far away
    D = torch.zeros(6, 3)
    D[:5, 0] = 0.6
    assert float(prior(means, D, 2)) == pytest.approx(0.0, abs=1e-10)
    assert float(prior(means, D + torch.tensor([0.0, 0.4, 0.0]), 2)) == pytest.approx(0.0, abs=1e-10)
    slid = prior(means, D + torch.tensor([0.0, 0.0, 0.5]), 2)
    assert float(slid) == pytest.approx((0.5 / 5.01) ** 2, rel=1e-3)
    far_only = D.clone()
    far_only[5, 2] = 9.0
    assert float(prior(means, far_only, 2)) == pytest.approx(0.0, abs=1e-10)
    assert prior(means, D, 0) is None


def test_rigid_trajectories_turn_a_spinning_neighbourhood():
    """track_init_rigid's targets: tracks on a ball that spins 1.2 rad about z while it moves
    give each Gaussian inside it its true offset and rotation (the Kabsch fit per neighbourhood),
    where the mean offset of its neighbours is off by a third of the radius; a neighbourhood on
    a line (no rotation fixed) keeps the mean offset and the identity; identity at c."""
    import math

    from fourreal_formats.quaternions import quat_to_matrix
    from fourreal_stages.tracks import gaussian_trajectories

    g = torch.Generator().manual_seed(0)
    centre = torch.tensor([1.0, 0.0, 0.0])
    X = torch.nn.functional.normalize(torch.randn(200, 3, generator=g), dim=1) * 0.5 + centre
    T = 5
    Rs = torch.stack([torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0],
                                    [0.0, 0.0, 1.0]]) for a in torch.linspace(0, 1.2, T).tolist()])
    shift = torch.tensor([0.3, 0.0, 0.0])
    moved = lambda p, t: (p - centre) @ Rs[t].T + centre + shift * t  # noqa: E731
    disp = torch.stack([moved(X, t) - X for t in range(T)], 1)
    ok = torch.ones(200, T, dtype=torch.bool)
    means = centre + 0.3 * torch.randn(50, 3, generator=g)
    D, Q = gaussian_trajectories(means, X, disp, ok, 0, rigid=True)
    truth = torch.stack([moved(means, t) - means for t in range(T)], 1)
    assert float((D - truth).norm(dim=-1).max()) < 1e-4
    assert float((gaussian_trajectories(means, X, disp, ok, 0) - truth).norm(dim=-1).max()) > 0.15
    for t in range(T):
        assert float((quat_to_matrix(Q[:, t]) - Rs[t]).abs().max()) < 1e-4, t
    line = torch.zeros(20, 3)
    line[:, 0] = torch.linspace(0, 1, 20)
    dl = torch.zeros(20, T, 3)
    dl[:, :, 1] = torch.arange(T).float()  # the line slides: no rotation can be read off it
    D2, Q2 = gaussian_trajectories(line[:5] + 0.01, line, dl, torch.ones(20, T, dtype=torch.bool), 0, rigid=True)
    assert torch.allclose(D2, gaussian_trajectories(line[:5] + 0.01, line, dl, torch.ones(20, T, dtype=torch.bool), 0))
    assert torch.allclose(Q2, torch.tensor([1.0, 0.0, 0.0, 0.0]).expand_as(Q2))


@pytest.mark.parametrize("backend", ["torch", "numba", "native"])
def test_pixel_weights_reproduce_a_render_at_those_pixels(backend):
    """``Rasterizer.pixel_weights``: sum_n w[q,n] f_n is the render of features f at pixel q (and
    sum_n w[q,n] its alpha), to float32 rounding, on a scene where pixels stop early (T <= 1e-4)
    and Gaussians overlap many tiles; pixels are drawn all over the image."""
    from fourreal_core.types import Cameras
    from fourreal_gaussians import rasterize_native
    from fourreal_gaussians.rasterizers import NativeRasterizer, NumbaRasterizer, TorchRasterizer

    if backend == "numba":
        pytest.importorskip("numba")
    if backend == "native" and not rasterize_native.available():
        pytest.skip(f"native rasterizer unavailable: {rasterize_native.unavailable_reason()}")
    ras = {"torch": TorchRasterizer, "numba": NumbaRasterizer, "native": NativeRasterizer}[backend]()
    gen = torch.Generator().manual_seed(3)
    N, H, W = 3000, 40, 56
    z = torch.rand(N, generator=gen) * 3 + 2
    means = torch.stack([(torch.rand(N, generator=gen) * 2 - 1) * z * 0.5,
                         (torch.rand(N, generator=gen) * 2 - 1) * z * 0.4, z], -1)
    g = GaussianParams(means, torch.randn(N, 4, generator=gen), 0.03 * torch.exp(torch.randn(N, 3, generator=gen) * 0.6),
                       torch.rand(N, generator=gen) * 0.9 + 0.1, torch.rand(N, 3, generator=gen), None)
    cam = Cameras(viewmats=torch.eye(4)[None], Ks=torch.tensor([[[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]]]),
                  width=W, height=H)
    out = ras.rasterize(g, cam, background=torch.zeros(3), render_depth=False)
    pix = torch.stack([torch.randint(0, W, (300,), generator=gen), torch.randint(0, H, (300,), generator=gen)], 1)
    q, n, w = ras.pixel_weights(g, cam, pix)
    got = torch.zeros(300, 3).index_add_(0, q, w[:, None] * g.colors[n])
    alpha = torch.zeros(300).index_add_(0, q, w)
    ref = out.rgb[0, pix[:, 1], pix[:, 0]]
    assert float(out.alpha.min()) < 0.999 < float(out.alpha.max())  # covered and uncovered pixels
    assert torch.allclose(got, ref, atol=2e-6), float((got - ref).abs().max())
    assert torch.allclose(alpha, out.alpha[0, pix[:, 1], pix[:, 0], 0], atol=2e-6)


def test_track_term_is_the_same_with_pixel_weights_or_a_render(ball):
    """The track loss reads the motion render at the track pixels only (pixel weights); with a
    rasterizer that offers none it renders the whole image: same value, same gradient."""
    from fourreal_stages.tracks import TrackLoss

    class RenderOnly:  # a rasterizer without the optional pixel_weights
        def __init__(self, ras):
            self.ras = ras

        def rasterize(self, *a, **k):
            return self.ras.rasterize(*a, **k)

    g0, cams = ball["g0"], ball["cams"]
    vals, grads = [], []
    for ras in (ball["ras"], RenderOnly(ball["ras"])):
        shift = torch.tensor([0.05, -0.02, 0.01], requires_grad=True)
        g = GaussianParams(g0.means + shift, g0.quats, g0.scales, g0.opacities, g0.colors, None)
        loss = TrackLoss(ball["tracks"], 0, cams, ras)(g0, g, 1)
        loss.backward()
        vals.append(float(loss.detach()))
        grads.append(shift.grad.clone())
    assert abs(vals[0] - vals[1]) < 1e-6, vals
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7), grads
