"""GaussianModel: initialisation, activation, SH schedule, lr schedule, Adam groups,
freezing, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from fourreal_core.interfaces import Representation
from fourreal_core.io import load_tensors, save_tensors
from fourreal_core.types import PointCloud
from fourreal_gaussians.configs import GaussiansConfig
from fourreal_gaussians.model import GROUPS, GaussianModel, knn_mean_sq_dist
from fourreal_gaussians.sh import sh_to_rgb


def make_model(n=200, degree=3, seed=0, **cfg) -> GaussianModel:
    m = GaussianModel(GaussiansConfig(sh_degree=degree, **cfg))
    m.init_random_box(n, extent=1.0, seed=seed)
    return m


def random_loss(m: GaussianModel, g: torch.Generator, step=None) -> torch.Tensor:
    """A loss touching every parameter of every Gaussian with random weights."""
    p = m.params(step)
    loss = 0.0
    for t in (p.means, p.quats, p.scales, p.opacities, p.colors):
        loss = loss + (torch.randn(t.shape, generator=g) * t).sum()
    shN = m.shN if not bool(m.frozen.any()) else torch.where(m.frozen[:, None, None], m.shN.detach(), m.shN)
    return loss + (torch.randn(shN.shape, generator=g) * shN).sum()


def test_is_a_representation_and_registered():
    from fourreal_core.registry import get_registry

    m = get_registry().create("representation", "gaussians", GaussiansConfig(sh_degree=2))
    assert isinstance(m, GaussianModel) and isinstance(m, Representation)
    assert len(m) == 0 and m.shN.shape == (0, 8, 3)


def test_knn_matches_brute_force_and_is_chunk_independent():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(300, 3, generator=g)
    d = torch.cdist(pts.double(), pts.double())
    d.fill_diagonal_(float("inf"))
    ref = d.topk(3, largest=False).values.square().mean(1).float()
    assert torch.allclose(knn_mean_sq_dist(pts, 3), ref, rtol=1e-4, atol=1e-8)
    assert torch.allclose(knn_mean_sq_dist(pts, 3, chunk_elems=1000), ref, rtol=1e-4, atol=1e-8)
    scipy_spatial = pytest.importorskip("scipy.spatial")
    dd, _ = scipy_spatial.cKDTree(pts.numpy()).query(pts.numpy(), k=4)
    assert torch.allclose(knn_mean_sq_dist(pts, 3), torch.from_numpy((dd[:, 1:] ** 2).mean(1)).float(), rtol=1e-4)


def test_init_from_points():
    # points on a grid with spacing 0.1: the 3 nearest neighbours are all at 0.1
    ax = torch.arange(6) * 0.1
    pts = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    cols = torch.rand(len(pts), 3, generator=torch.Generator().manual_seed(1))
    m = GaussianModel(GaussiansConfig(sh_degree=3, init_opacity=0.1, init_scale=2.0))
    m.init_from_points(PointCloud(pts, cols), scene_extent=5.0)
    p = m.params()
    assert len(m) == 216 and m.scene_extent == 5.0
    assert torch.allclose(p.scales, torch.full((216, 3), 0.2), atol=1e-5)
    assert torch.equal(p.means, pts)
    assert torch.allclose(p.quats, torch.tensor([1.0, 0, 0, 0]).expand(216, 4))
    assert torch.allclose(p.opacities, torch.full((216,), 0.1))
    assert torch.allclose(sh_to_rgb(m.sh0[:, 0]), cols, atol=1e-6)
    assert m.shN.shape == (216, 15, 3) and float(m.shN.detach().abs().max()) == 0.0
    assert m.base_lr("means") == pytest.approx(1.6e-4 * 5.0)


def test_init_random_box_is_seeded_and_bounded():
    a, b, c = make_model(500, seed=3), make_model(500, seed=3), make_model(500, seed=4)
    assert torch.equal(a.means, b.means) and not torch.equal(a.means, c.means)
    assert float(a.means.detach().abs().max()) <= 1.0
    assert a.scene_extent == 1.0
    assert bool(torch.isfinite(a.scales).all())


def test_params_are_activated():
    m = make_model(50, degree=1)
    with torch.no_grad():
        m.quats.mul_(3.0)
    m.set_active_sh_degree(1)
    p = m.params()
    assert torch.allclose(p.quats.norm(dim=-1), torch.ones(50))
    assert torch.allclose(p.scales, m.scales.exp())
    assert torch.allclose(p.opacities, torch.sigmoid(m.opacities))
    assert p.colors.shape == (50, 4, 3) and p.sh_degree == 1
    assert torch.equal(p.colors[:, :1], m.sh0) and torch.equal(p.colors[:, 1:], m.shN)
    (p.means.sum() + p.colors.sum()).backward()
    assert m.means.grad is not None and m.shN.grad is not None


def test_sh_degree_raised_progressively():
    m = make_model(20, degree=3, sh_degree_interval=10)
    seen = []
    for step in range(0, 60):
        p = m.params(step)
        assert p.colors.shape[1] == (p.sh_degree + 1) ** 2
        seen.append(m.active_sh_degree)
    assert seen[0] == 0 and seen[9] == 0 and seen[10] == 1 and seen[19] == 1
    assert seen[20] == 2 and seen[30] == 3 and seen[59] == 3
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    # never lowered by an earlier step (as 3DGS's oneupSHdegree)
    assert m.step_sh(0) == 3
    m2 = make_model(5, degree=1, sh_degree_interval=10)
    assert m2.step_sh(1000) == 1  # capped at the stored degree


def test_lr_schedule_and_adam_settings():
    m = GaussianModel(GaussiansConfig())
    m.init_random_box(100, extent=2.5, seed=0)  # scene extent 2.5
    total = 30_000
    assert m.means_lr_at(0, total) == pytest.approx(1.6e-4 * 2.5, rel=1e-12)
    assert m.means_lr_at(total, total) == pytest.approx(1.6e-6 * 2.5, rel=1e-12)
    assert m.means_lr_at(2 * total, total) == pytest.approx(1.6e-6 * 2.5, rel=1e-12)
    # exponential: the midpoint is the geometric mean
    assert m.means_lr_at(total // 2, total) == pytest.approx(math.sqrt(1.6e-4 * 1.6e-6) * 2.5, rel=1e-9)
    lrs = [m.means_lr_at(s, total) for s in range(0, total + 1, 1000)]
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert all(r == pytest.approx(ratios[0], rel=1e-9) for r in ratios) and ratios[0] < 1
    assert m.update_learning_rate(total, total) == pytest.approx(1.6e-6 * 2.5)
    groups = {g["name"]: g for g in m.optimizer.param_groups}
    assert list(groups) == list(GROUPS)
    assert groups["means"]["lr"] == pytest.approx(1.6e-6 * 2.5)
    assert groups["scales"]["lr"] == 1e-3 and groups["quats"]["lr"] == 1e-3
    assert groups["opacities"]["lr"] == 5e-2 and groups["sh0"]["lr"] == 2.5e-3
    assert groups["shN"]["lr"] == pytest.approx(2.5e-3 / 20)
    for g in groups.values():
        assert g["eps"] == 1e-15 and tuple(g["betas"]) == (0.9, 0.999)
        assert len(g["params"]) == 1 and g["params"][0] is m.raw[g["name"]]


def test_frozen_gaussians_never_move():
    m = make_model(300, degree=2)
    g = torch.Generator().manual_seed(0)
    # build up Adam momentum on every row first
    for step in range(5):
        random_loss(m, g).backward()
        m.optimizer_step()
    frozen = torch.zeros(300, dtype=torch.bool)
    frozen[::3] = True
    m.freeze(frozen)
    st = m.optimizer.state[m.means]
    assert float(st["exp_avg"][frozen].abs().min()) > 0  # momentum would move them
    before = {n: m.raw[n].detach().clone() for n in GROUPS}
    moments = {n: m.optimizer.state[m.raw[n]]["exp_avg"].clone() for n in GROUPS}
    for step in range(20):
        loss = random_loss(m, g)
        loss.backward()
        for n in GROUPS:  # no gradient reaches frozen rows
            assert float(m.raw[n].grad[frozen].abs().max()) == 0.0, n
        m.optimizer_step()
    for n in GROUPS:
        now = m.raw[n].detach()
        assert torch.equal(now[frozen], before[n][frozen]), n
        assert torch.equal(m.optimizer.state[m.raw[n]]["exp_avg"][frozen], moments[n][frozen]), n
        moved = (now[~frozen] != before[n][~frozen]).reshape(int((~frozen).sum()), -1).any(dim=1)
        assert bool(moved.all()), n  # every trainable Gaussian moved
    # calling optimizer.step() directly is protected too (hooks on the optimiser)
    random_loss(m, g).backward()
    m.optimizer.step()
    assert torch.equal(m.means.detach()[frozen], before["means"][frozen])
    m.unfreeze()
    assert not bool(m.frozen.any())


def test_optimizer_step_subset_of_groups():
    m = make_model(50)
    g = torch.Generator().manual_seed(1)
    before = {n: m.raw[n].detach().clone() for n in GROUPS}
    m.set_active_sh_degree(3)
    random_loss(m, g).backward()
    m.optimizer_step(groups=["sh0", "opacities"])
    for n in GROUPS:
        changed = not torch.equal(m.raw[n].detach(), before[n])
        assert changed == (n in ("sh0", "opacities")), n
    assert m.means.grad is None  # zeroed
    with pytest.raises(KeyError):
        m.optimizer_step(groups=["colour"])


def test_checkpoint_round_trip_resumes_identically(tmp_path):
    m = make_model(120, degree=2, sh_degree_interval=2)
    g = torch.Generator().manual_seed(2)
    for step in range(4):
        m.update_learning_rate(step, 100)
        random_loss(m, g, step).backward()
        m.optimizer_step()
    m.frozen[:10] = True
    save_tensors(tmp_path / "model.safetensors", m.state_dict())
    save_tensors(tmp_path / "optim.safetensors", m.optimizer_state_dict())

    m2 = GaussianModel(GaussiansConfig(sh_degree=2, sh_degree_interval=2))
    m2.load_state_dict(load_tensors(tmp_path / "model.safetensors")[0])
    m2.load_optimizer_state_dict(load_tensors(tmp_path / "optim.safetensors")[0])
    assert m2.active_sh_degree == m.active_sh_degree == 1
    assert m2.scene_extent == m.scene_extent and torch.equal(m2.frozen, m.frozen)
    for n in GROUPS:
        assert torch.equal(m2.raw[n], m.raw[n])
        assert m2.group(n)["lr"] == m.group(n)["lr"]
    # one more identical step on both: identical results (Adam moments + step restored)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    random_loss(m, g1, 4).backward()
    m.optimizer_step()
    random_loss(m2, g2, 4).backward()
    m2.optimizer_step()
    for n in GROUPS:
        assert torch.equal(m2.raw[n], m.raw[n]), n
    # a fresh optimiser would have produced a different step
    m3 = GaussianModel(GaussiansConfig(sh_degree=2))
    m3.load_state_dict(load_tensors(tmp_path / "model.safetensors")[0])
    random_loss(m3, torch.Generator().manual_seed(9), 4).backward()
    m3.optimizer_step()
    assert not torch.equal(m3.means, m.means)


def test_optimizer_state_shape_mismatch_is_reported():
    m = make_model(10)
    random_loss(m, torch.Generator().manual_seed(0)).backward()
    m.optimizer_step()
    other = make_model(11)
    with pytest.raises(ValueError, match="shape"):
        other.load_optimizer_state_dict(m.optimizer_state_dict())


def test_append_remove_keep_rows_aligned():
    m = make_model(10, degree=1)
    random_loss(m, torch.Generator().manual_seed(0)).backward()
    m.optimizer_step()
    with torch.no_grad():
        m.sh0[:, 0, 0] = torch.arange(10.0)
    for n in GROUPS:
        m.optimizer.state[m.raw[n]]["exp_avg"].view(10, -1)[:, 0] = torch.arange(10.0) + 1
    new = {n: m.raw[n].detach()[:3].clone() for n in GROUPS}
    assert m.append(new) == 3 and len(m) == 13
    rm = torch.zeros(13, dtype=torch.bool)
    rm[[1, 4, 11]] = True
    m.remove(rm)
    assert len(m) == 10 and m.frozen.shape == (10,)
    tags = m.sh0[:, 0, 0].detach()
    for n in GROUPS:
        ea = m.optimizer.state[m.raw[n]]["exp_avg"].reshape(10, -1)[:, 0]
        orig = torch.arange(10) < 8  # rows 0..7 are originals, 8..9 appended copies
        assert torch.equal(ea[orig], tags[orig] + 1), n
        assert float(ea[~orig].abs().max()) == 0.0, n


def test_init_from_config_dispatches():
    pc = PointCloud(torch.rand(30, 3), torch.rand(30, 3))
    m = GaussianModel(GaussiansConfig(init="points"))
    m.init_from_config(pc, scene_extent=2.0)
    assert len(m) == 30 and m.scene_extent == 2.0
    with pytest.raises(ValueError, match="point cloud"):
        GaussianModel(GaussiansConfig(init="points")).init_from_config()
    b = GaussianModel(GaussiansConfig(init="box", init_num_points=40, init_extent=3.0))
    b.init_from_config(seed=1)
    assert len(b) == 40 and b.scene_extent == 3.0
    assert float(b.means.detach().abs().max()) <= 3.0
