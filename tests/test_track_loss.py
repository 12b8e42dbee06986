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
