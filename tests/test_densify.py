"""3DGS adaptive density control: statistics, clone/split/prune, opacity reset, Adam rows,
frozen Gaussians and the motion-stage spawn (paper D.2)."""

from __future__ import annotations

import math

import pytest
import torch

from fourreal_core.interfaces import RenderOutput
from fourreal_gaussians.configs import DensifyConfig, GaussiansConfig
from fourreal_gaussians.densify import DensifyStrategy, spawn_from
from fourreal_gaussians.model import GROUPS, GaussianModel


def fake_render(grads_px: torch.Tensor, radii: torch.Tensor, width=64, height=32) -> RenderOutput:
    """A render whose means2d.grad is ``grads_px`` ``[C,N,2]`` (pixels)."""
    c, n, _ = grads_px.shape
    means2d = torch.zeros(c, n, 2, requires_grad=True)
    means2d.grad = grads_px.clone()
    return RenderOutput(
        rgb=torch.zeros(c, height, width, 3), alpha=torch.zeros(c, height, width, 1), depth=None,
        means2d=means2d, radii=radii.to(torch.int32),
    )


def logit(p):
    return math.log(p / (1 - p))


def eight_gaussians() -> GaussianModel:
    """Rows (scene extent 1, grow_scale3d 0.01, prune_scale3d 0.1):
    0 small+high grad (clone) | 1 small+low grad | 2 large+high grad (split) | 3 large+low grad
    4 low opacity (prune) | 5 frozen small+high grad | 6 frozen low opacity | 7 huge."""
    m = GaussianModel(GaussiansConfig(sh_degree=1))
    n = 8
    scale = torch.tensor([0.005, 0.005, 0.05, 0.05, 0.005, 0.005, 0.005, 0.5])
    opac = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.001, 0.5, 0.001, 0.5])
    g = torch.Generator().manual_seed(0)
    m.set_raw(
        {
            "means": torch.randn(n, 3, generator=g),
            "quats": torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
            "scales": torch.log(scale)[:, None].repeat(1, 3) + torch.tensor([0.0, -0.1, -0.2]),
            "opacities": torch.logit(opac),
            "sh0": torch.zeros(n, 1, 3),
            "shN": torch.randn(n, 3, 3, generator=g),
        }
    )
    m.scene_extent = 1.0
    with torch.no_grad():
        m.sh0[:, 0, 0] = torch.arange(n, dtype=torch.float32)  # row tags
    # give every row Adam moments, then tag them: exp_avg[..., first] = tag + 1
    loss = sum((p * torch.randn(p.shape, generator=g)).sum() for p in m.parameters())
    loss.backward()
    m.optimizer_step(groups=[x for x in GROUPS if x != "sh0"])
    m.sh0.grad = torch.ones_like(m.sh0)
    m.optimizer_step(groups=["sh0"])
    with torch.no_grad():
        m.sh0[:, 0, 0] = torch.arange(n, dtype=torch.float32)
    for name in GROUPS:
        st = m.optimizer.state[m.raw[name]]
        st["exp_avg"].view(n, -1)[:, 0] = torch.arange(n, dtype=torch.float32) + 1
        st["exp_avg_sq"].view(n, -1)[:, 0] = torch.arange(n, dtype=torch.float32) + 101
    m.frozen[5] = True
    m.frozen[6] = True
    return m


CFG = DensifyConfig(
    grad_threshold=2e-4, prune_opacity=5e-3, grow_scale3d=0.01, prune_scale3d=0.1,
    start=0, stop=1000, every=10, reset_opacity_every=100, split_into=2,
)


def high_grad_state(n=8):
    grad = torch.zeros(n)
    grad[[0, 2, 5]] = 1e-3  # above threshold
    grad[[1, 3, 4, 6, 7]] = 1e-5
    return {"grad2d": grad * 4, "count": torch.full((n,), 4.0), "radii": torch.zeros(n)}


def test_gradient_statistics_are_ndc_normalised():
    strat = DensifyStrategy(DensifyConfig())
    m = GaussianModel(GaussiansConfig(sh_degree=0))
    m.init_random_box(3, 1.0)
    grads = torch.zeros(2, 3, 2)
    grads[0, 0] = torch.tensor([1.0, 0.0])
    grads[1, 0] = torch.tensor([0.0, 1.0])
    grads[0, 1] = torch.tensor([3.0, 4.0])
    grads[1, 1] = torch.tensor([100.0, 100.0])  # culled in camera 1: ignored
    radii = torch.tensor([[5, 7, 0], [10, 0, 0]])
    state = strat.initialize_state(3)
    strat.update_state(state, m, fake_render(grads, radii, width=64, height=32))
    # x * W/2 * C, y * H/2 * C with C=2
    assert torch.allclose(state["grad2d"], torch.tensor([64.0 + 32.0, math.hypot(192.0, 128.0), 0.0]))
    assert torch.equal(state["count"], torch.tensor([2.0, 1.0, 0.0]))
    assert torch.allclose(state["radii"], torch.tensor([10 / 64, 7 / 64, 0.0]))
    strat.update_state(state, m, fake_render(grads, radii, width=64, height=32))
    assert torch.equal(state["count"], torch.tensor([4.0, 2.0, 0.0]))
    assert torch.allclose(strat.average_grads(state)[:2], torch.tensor([48.0, math.hypot(192.0, 128.0)]))
    with pytest.raises(RuntimeError, match="means2d.grad"):
        r = fake_render(grads, radii)
        r.means2d.grad = None
        strat.update_state(state, m, r)


def _survivor_checks(m: GaussianModel):
    """Every row with nonzero moments is an original row whose moments carry its own tag;
    rows with zero moments are new. Returns (tags, is_new)."""
    tags = m.sh0[:, 0, 0].detach()
    n = len(m)
    is_new = None
    for name in GROUPS:
        st = m.optimizer.state[m.raw[name]]
        ea = st["exp_avg"].reshape(n, -1)[:, 0]
        eq = st["exp_avg_sq"].reshape(n, -1)[:, 0]
        new = (ea == 0) & (eq == 0)
        if is_new is None:
            is_new = new
        assert torch.equal(new, is_new), name  # all groups agree row by row
        assert torch.equal(ea[~new], tags[~new] + 1), name
        assert torch.equal(eq[~new], tags[~new] + 101), name
        assert float(st["exp_avg"][new].abs().sum()) == 0.0
    return tags, is_new


def test_clone_split_prune_keep_optimizer_rows_aligned():
    m = eight_gaussians()
    before = {n: m.raw[n].detach().clone() for n in GROUPS}
    strat = DensifyStrategy(CFG, seed=0)
    state = high_grad_state()
    rep = strat.refine(m, state, step=50)  # before the first reset: no size pruning
    assert rep == {"cloned": 1, "split": 1, "pruned": 1}
    assert len(m) == 8 + 1 + 2 - 1 - 1
    tags, is_new = _survivor_checks(m)
    # survivors: every original except the split (2) and pruned (4) rows, in order
    assert tags[~is_new].tolist() == [0.0, 1.0, 3.0, 5.0, 6.0, 7.0]
    assert sorted(tags[is_new].tolist()) == [0.0, 2.0, 2.0]
    # survivors unchanged, frozen flags kept; new rows trainable
    for i, t in zip(torch.nonzero(~is_new)[:, 0].tolist(), tags[~is_new].long().tolist()):
        for n in GROUPS:
            assert torch.equal(m.raw[n][i], before[n][t]), (n, t)
        assert bool(m.frozen[i]) == (t in (5, 6))
    assert not bool(m.frozen[is_new].any())
    # the clone is an exact copy of row 0
    ci = torch.nonzero(is_new & (tags == 0))[0, 0]
    for n in GROUPS:
        assert torch.equal(m.raw[n][ci], before[n][0]), n
    # split children: sampled from the parent, scale / (0.8 * 2)
    kids = torch.nonzero(is_new & (tags == 2))[:, 0]
    for k in kids:
        assert torch.allclose(m.scales[k], before["scales"][2] - math.log(1.6), atol=1e-6)
        assert torch.equal(m.quats[k], before["quats"][2])
        assert torch.equal(m.shN[k], before["shN"][2])
        assert torch.equal(m.opacities[k], before["opacities"][2])
        d = (m.means.detach()[k] - before["means"][2]).norm()
        assert 0 < float(d) < 6 * 0.05
    assert not torch.equal(m.means[kids[0]], m.means[kids[1]])
    # statistics restart at the new size
    assert all(state[k].shape == (len(m),) and float(state[k].abs().sum()) == 0 for k in state)


def test_too_large_gaussians_pruned_after_first_reset_but_never_frozen():
    m = eight_gaussians()
    strat = DensifyStrategy(CFG)
    state = strat.initialize_state(8)  # no gradients: prune only
    rep = strat.refine(m, state, step=150)
    tags, _ = _survivor_checks(m)
    assert rep["pruned"] == 2 and tags.tolist() == [0.0, 1.0, 2.0, 3.0, 5.0, 6.0]
    # frozen rows survive even when they qualify
    m = eight_gaussians()
    m.frozen[7] = True
    with torch.no_grad():
        m.opacities[5] = logit(1e-4)
    strat.refine(m, strat.initialize_state(8), step=150)
    assert m.sh0[:, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 5.0, 6.0, 7.0]
    # screen-size pruning (optional)
    m = eight_gaussians()
    cfg = DensifyConfig(**{**CFG.__dict__, "prune_screen_radius": 0.25})
    st = strat.initialize_state(8)
    st["radii"][1] = 0.3
    DensifyStrategy(cfg).refine(m, st, step=150)
    assert m.sh0[:, 0, 0].tolist() == [0.0, 2.0, 3.0, 5.0, 6.0]


def test_opacity_reset_and_schedule():
    m = eight_gaussians()
    strat = DensifyStrategy(CFG)
    state = strat.initialize_state(8)
    zero = torch.zeros(1, 8, 2)
    vis = torch.ones(1, 8)
    op_before = torch.sigmoid(m.opacities.detach()).clone()
    # off-schedule steps only accumulate
    for step in (0, 5, 11):
        rep = strat.step_post_backward(m, state, fake_render(zero, vis), step)
        assert rep["cloned"] == rep["split"] == rep["pruned"] == 0 and not rep["reset"]
    assert torch.equal(state["count"], torch.full((8,), 3.0))
    rep = strat.step_post_backward(m, state, fake_render(zero, vis), 100)
    assert rep["reset"] and rep["pruned"] == 1  # row 4 (low opacity) pruned at the refine
    op = torch.sigmoid(m.opacities.detach())
    tags = m.sh0[:, 0, 0].long()
    for i, t in enumerate(tags.tolist()):
        if t in (5, 6):  # frozen: untouched
            assert op[i] == pytest.approx(float(op_before[t]), rel=1e-6)
            assert float(m.optimizer.state[m.opacities]["exp_avg"][i]) == t + 1
        else:
            assert float(op[i]) == pytest.approx(min(float(op_before[t]), 0.01), rel=1e-5)
            assert float(m.optimizer.state[m.opacities]["exp_avg"][i]) == 0.0
    # past stop: nothing at all, not even statistics
    n = len(m)
    state = strat.initialize_state(n)
    rep = strat.step_post_backward(m, state, fake_render(torch.ones(1, n, 2), torch.ones(1, n)), 1000)
    assert rep["n"] == n and float(state["count"].sum()) == 0


def test_max_gaussians_caps_growth_by_gradient():
    m = eight_gaussians()
    cfg = DensifyConfig(**{**CFG.__dict__, "max_gaussians": 9})
    state = high_grad_state()
    state["grad2d"][2] = 1e-2  # the split candidate has the highest gradient
    rep = DensifyStrategy(cfg).refine(m, state, step=50)
    assert rep["split"] == 1 and rep["cloned"] == 0  # budget 1: one split (+1 net)
    assert len(m) <= 9


def test_spawn_from_adds_trainable_copies_and_leaves_sources():
    m = eight_gaussians()
    m.freeze()
    before = {n: m.raw[n].detach().clone() for n in GROUPS}
    mask = torch.zeros(8, dtype=torch.bool)
    mask[[1, 3]] = True
    assert spawn_from(m, mask, opacity=0.2) == 2
    assert len(m) == 10 and m.frozen.tolist() == [True] * 8 + [False] * 2
    for n in GROUPS:
        assert torch.equal(m.raw[n][:8], before[n])
    assert m.sh0[8:, 0, 0].tolist() == [1.0, 3.0]
    assert torch.allclose(m.scales[8:], before["scales"][[1, 3]] - math.log(1.6), atol=1e-6)
    assert torch.allclose(torch.sigmoid(m.opacities[8:]), torch.tensor([0.2, 0.2]))
    assert float(m.optimizer.state[m.means]["exp_avg"][8:].abs().max()) == 0.0
    # by gradient through the strategy (frozen sources count)
    strat = DensifyStrategy(CFG)
    st = strat.initialize_state(10)
    st["grad2d"][[0, 2]] = 1.0
    st["count"][:] = 1
    assert strat.spawn_from_gradients(m, st) == 2
    assert len(m) == 12 and m.sh0[10:, 0, 0].tolist() == [0.0, 2.0]
    assert st["grad2d"].shape == (12,)


def test_frozen_unchanged_through_training_with_densification():
    """Paper D.2 growth: canonical Gaussians frozen, new ones spawned, trained and densified
    with a real rasterizer; the canonical ones stay bitwise identical."""
    from fourreal_core.types import Cameras
    from fourreal_gaussians.configs import TorchRasterizerConfig
    from fourreal_gaussians.rasterizers import TorchRasterizer

    torch.manual_seed(0)
    rast = TorchRasterizer(TorchRasterizerConfig())
    eyes = torch.tensor([[2.5, 0.0, 0.8], [0.0, 2.5, 0.8], [-2.5, 0.3, 0.8], [0.3, -2.5, 0.8]])
    cams = Cameras(Cameras.look_at(eyes, torch.zeros(3)), Cameras.intrinsics(40.0, 40.0, 16.0, 16.0), 32, 32)
    # target: a different random blob
    tgt = GaussianModel(GaussiansConfig(sh_degree=0))
    tgt.init_random_box(150, extent=0.6, seed=1)
    with torch.no_grad():
        tgt.opacities.fill_(2.0)
        target = rast.rasterize(tgt.params(), cams, torch.zeros(3)).rgb

    m = GaussianModel(GaussiansConfig(sh_degree=1, sh_degree_interval=5))
    m.init_random_box(120, extent=0.6, seed=2)
    m.freeze()
    canon = {n: m.raw[n].detach().clone() for n in GROUPS}
    cfg = DensifyConfig(grad_threshold=1e-5, start=2, stop=40, every=6, reset_opacity_every=30,
                        prune_opacity=0.005)
    strat = DensifyStrategy(cfg)
    state = strat.initialize_state(len(m))

    def render_loss(step):
        out = rast.rasterize(m.params(step), cams, torch.zeros(3))
        loss = (out.rgb - target).abs().mean()
        loss.backward()
        losses.append(float(loss.detach()))
        return out

    losses: list[float] = []
    # accumulate the canonical Gaussians' gradients, then spawn from them
    for step in range(3):
        out = render_loss(step)
        strat.update_state(state, m, out)
        m.zero_grad()
    assert float(state["count"].sum()) > 0
    added = strat.spawn_from_gradients(m, state, threshold=float(strat.average_grads(state).median()))
    assert added > 0
    spawned = {n: m.raw[n].detach()[~m.frozen].clone() for n in GROUPS}
    losses.clear()
    reports = []
    for step in range(40):
        out = render_loss(step)
        reports.append(strat.step_post_backward(m, state, out, step))
        m.optimizer_step()
    assert sum(r["cloned"] + r["split"] for r in reports) > 0  # densification did run
    assert any(r["reset"] for r in reports)
    assert int(m.frozen.sum()) == 120
    for n in GROUPS:  # canonical rows: same order, bitwise identical
        assert torch.equal(m.raw[n].detach()[m.frozen], canon[n]), n
    # the trainable ones were optimised: they changed and the fit improved
    trainable_now = m.sh0.detach()[~m.frozen]
    assert trainable_now.shape != spawned["sh0"].shape or not torch.equal(trainable_now, spawned["sh0"])
    assert losses[29] < 0.95 * losses[0]  # (step 30 resets the opacities)


# ------------------------------------------------------------------------------ 3DGS-MCMC
def test_relocation_keeps_the_rendered_gaussian():
    """N copies with the relocated opacity and scale render like the one Gaussian did
    (3DGS-MCMC Eq. 9): same opacity at the centre, total within a few percent."""
    from fourreal_gaussians.dense_reference import rasterize_dense
    from fourreal_gaussians.densify import relocation

    K = torch.tensor([[[60.0, 0, 24], [0, 60.0, 24], [0, 0, 1]]])
    V = torch.eye(4)[None]
    m, q = torch.tensor([[0.0, 0, 3]]), torch.tensor([[1.0, 0, 0, 0]])
    s, c = torch.tensor([[0.2, 0.1, 0.15]]), torch.ones(1, 3)
    for o in (0.1, 0.5, 0.9):
        one = rasterize_dense(m, q, s, torch.tensor([o]), c, V, K, 48, 48)
        for n in (2, 3, 5):
            no, ns = relocation(torch.tensor([o]), s, torch.tensor([n]))
            assert 1 - (1 - float(no)) ** n == pytest.approx(o, rel=1e-5)
            many = rasterize_dense(m.repeat(n, 1), q.repeat(n, 1), ns.repeat(n, 1), no.repeat(n), c.repeat(n, 1),
                                   V, K, 48, 48)
            assert float(many[1][0, 24, 24, 0]) == pytest.approx(float(one[1][0, 24, 24, 0]), abs=0.02)
            if o >= 0.5:  # (faint copies lose more of their tails to the 1/255 alpha cut-off)
                assert float(many[0].sum()) == pytest.approx(float(one[0].sum()), rel=0.08)
    # a single copy (ratio 1) is the identity
    no, ns = relocation(torch.tensor([0.3]), s, torch.tensor([1]))
    assert float(no) == pytest.approx(0.3) and torch.allclose(ns, s)


def mcmc_model(n=40, dead=10, frozen=5, seed=0) -> GaussianModel:
    m = GaussianModel(GaussiansConfig(sh_degree=0))
    g = torch.Generator().manual_seed(seed)
    opac = torch.full((n,), 0.6)
    opac[:dead] = 0.001
    m.set_raw({
        "means": torch.randn(n, 3, generator=g),
        "quats": torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        "scales": torch.full((n, 3), math.log(0.05)),
        "opacities": torch.logit(opac),
        "sh0": torch.arange(n, dtype=torch.float32)[:, None, None].repeat(1, 1, 3),  # row tags
        "shN": torch.zeros(n, 0, 3),
    })
    m.scene_extent = 1.0
    if frozen:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[:2] = True  # two dead frozen rows
        mask[n - frozen + 2:] = True
        m.freeze(mask)
    return m


def test_mcmc_relocates_dead_gaussians_onto_live_ones_and_grows_to_the_cap():
    from fourreal_gaussians.densify import MCMCStrategy

    m = mcmc_model()
    frozen0 = {k: v.detach().clone() for k, v in m.state_dict().items()}
    st = MCMCStrategy(DensifyConfig(strategy="mcmc", max_gaussians=43, start=0, stop=100, every=10), seed=1)
    state = st.initialize_state(len(m))
    rep = st.step_post_backward(m, state, None, 10)
    assert rep["relocated"] == 8  # 10 dead, 2 of them frozen
    assert rep["added"] == 2 and len(m) == 42  # int(1.05 * 40) = 42 <= the cap
    op = torch.sigmoid(m.opacities.data)
    assert int((op <= 0.005).sum()) == 2 and bool((op[:2] <= 0.005).all())  # only the frozen dead stay
    tags = m.sh0.data[:, 0, 0]
    assert torch.equal(tags[:2], torch.tensor([0.0, 1.0]))  # frozen rows untouched
    assert torch.equal(m.means.data[:2], frozen0["means"][:2])
    moved = tags[2:10]
    assert bool((moved >= 10).all()) and bool((moved < 40 - 3).all())  # copies of live, unfrozen rows
    for i in range(2, 10):  # a relocated row sits exactly on its source
        src = int(moved[i - 2])
        assert torch.equal(m.means.data[i], m.means.data[src])
    assert bool((op[2:] < 0.6 + 1e-6).all())  # sources share their opacity with their copies
    rep = st.step_post_backward(m, state, None, 20)
    assert len(m) == 43  # the hard cap
    rep = st.step_post_backward(m, state, None, 30)
    assert rep["added"] == 0 and len(m) == 43


def test_mcmc_noise_moves_only_transparent_unfrozen_gaussians_and_needs_a_cap():
    from fourreal_gaussians.densify import MCMCStrategy

    m = mcmc_model(frozen=0)
    m.update_learning_rate(0, 100)
    before = m.means.data.clone()
    st = MCMCStrategy(DensifyConfig(strategy="mcmc", max_gaussians=100, start=50, stop=100), seed=0)
    st.step_post_backward(m, st.initialize_state(len(m)), None, 1)  # no refinement at step 1
    d = (m.means.data - before).norm(dim=-1)
    assert bool((d[:10] > 0).all()) and float(d[10:].max()) < 1e-12
    with pytest.raises(ValueError, match="strategy mcmc needs a hard cap: set max_gaussians > 0"):
        DensifyConfig(strategy="mcmc")
