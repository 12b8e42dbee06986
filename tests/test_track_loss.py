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
    from fourreal_stages.configs import MotionConfig

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
        "tracker": {"name": "opencv"}, "track_points": 50,
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
    steps = [e for e in events if e["event"] == "train" and e.get("stage") == "motion"]
    assert steps and all("track" in e for e in steps[1:]), steps[-1]
