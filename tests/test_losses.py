"""Losses of the fourreal_losses plugin: image losses, SSIM, deformation regularisers, kNN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fourreal_core.config import Ramp
from fourreal_core.interfaces import Deformation, GaussianParams, RenderOutput
from fourreal_core.registry import get_registry
from fourreal_losses.knn import KNNCache, knn
from fourreal_losses.regularizers import quat_multiply, quat_to_matrix
from fourreal_losses.ssim import C1, C2, gaussian_window, ssim, ssim_map

REGULARISERS = ("small_motion", "norm", "diff", "rigid", "rot")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one intra-op thread avoids oversubscribing a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(name: str, **params):
    reg = get_registry()
    entry = reg.get("loss", name)
    return reg.create("loss", name, entry.config(**params))


# ----------------------------------------------------------------------------- fixtures
def random_rotation(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.randn(4, generator=gen, dtype=torch.float64)
    q = q / q.norm()
    return q, quat_to_matrix(q)


def canonical(n: int = 300, seed: int = 0) -> GaussianParams:
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    quats = quats / quats.norm(dim=-1, keepdim=True) * (0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64))
    return GaussianParams(
        means=means, quats=quats, scales=torch.full((n, 3), 0.02, dtype=torch.float64),
        opacities=torch.full((n,), 0.5, dtype=torch.float64), colors=torch.rand(n, 3, generator=g, dtype=torch.float64),
    )


def rigid_deformation(can: GaussianParams, q: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> Deformation:
    """The Deformation that rotates every Gaussian by R (about the origin) and translates by t."""
    dx = can.means @ R.T + t - can.means
    dq = quat_multiply(q.expand_as(can.quats), can.quats) - can.quats
    return Deformation(dx=dx, dq=dq, ds=None)


def zero_deformation(n: int, dtype=torch.float64) -> Deformation:
    return Deformation(torch.zeros(n, 3, dtype=dtype), torch.zeros(n, 4, dtype=dtype), torch.zeros(n, 3, dtype=dtype))


def reg_inputs(can, d, dp, version: int = 0) -> dict:
    return {"canonical": can, "deformation": d, "deformation_prev": dp, "gaussians_version": version, "step": 0}


# ------------------------------------------------------------------------------ weights
def test_default_weights_follow_the_paper():
    for name in ("l1", "ssim", "align"):
        loss = make(name)
        assert isinstance(loss.weight, Ramp) and loss.weight.at(0) == 1.0 and loss.weight.at(10**6) == 1.0
    for name in REGULARISERS:
        loss = make(name)
        assert isinstance(loss.weight, Ramp) and loss.weight.at(0) == 0.01
    assert make("align").cfg.ssim_lambda == 1.0
    assert make("rigid").cfg.k == 20 and make("rot").cfg.k == 20
    ramped = make("rigid", weight=Ramp([100, 0.0, 0.01, 200]))
    assert ramped.weight.at(150) == pytest.approx(0.005)


def test_requires_lists_input_keys_and_missing_keys_are_named():
    assert make("l1").requires == ("render", "target")
    assert set(make("rigid").requires) == {"deformation", "deformation_prev", "canonical", "gaussians_version"}
    assert make("diff").requires == ("deformation", "deformation_prev")
    with pytest.raises(KeyError, match="deformation_prev"):
        make("diff")({"deformation": zero_deformation(3)})


# -------------------------------------------------------------------------- regularisers
def test_regularisers_are_zero_for_zero_motion():
    can = canonical(120)
    for name in REGULARISERS:
        d = zero_deformation(len(can))
        d.dx.requires_grad_(True)
        d.dq.requires_grad_(True)
        value = make(name)(reg_inputs(can, d, zero_deformation(len(can))))
        if name in ("rigid", "rot"):  # a rotation composed with its inverse: rounding only
            assert 0.0 <= float(value.detach()) < 1e-12, name
        else:
            assert float(value.detach()) == 0.0, name
        value.backward()
        for grad in (d.dx.grad, d.dq.grad):  # no NaN from a norm at zero
            assert grad is None or torch.isfinite(grad).all(), name
        assert d.dx.grad is not None or d.dq.grad is not None, name


def test_magnitude_losses_known_values():
    n = 4
    d = Deformation(
        dx=torch.tensor([[3.0, 4.0, 0.0]]).repeat(n, 1),
        dq=torch.tensor([[0.0, -1.0, 2.0, 2.0]]).repeat(n, 1),
        ds=torch.tensor([[0.0, 0.0, -2.0]]).repeat(n, 1),
    )
    assert float(make("small_motion")({"deformation": d})) == pytest.approx(7 + 5)  # L1: |dx|_1 + |dq|_1
    assert float(make("norm")({"deformation": d})) == pytest.approx(5 + 3 + 2)  # L2 norms
    d.ds = None
    assert float(make("norm")({"deformation": d})) == pytest.approx(5 + 3)


def test_opacity_and_scale_regularisers_values_and_gradients():
    """3DGS-MCMC's regularisers: the mean opacity and the mean L1 scale of the canonical
    Gaussians, with gradients that shrink both."""
    assert make("opacity").weight.at(0) == 0.01 and make("scale").weight.at(0) == 0.01
    assert make("opacity").requires == ("canonical",) and make("scale").requires == ("canonical",)
    can = canonical(5)
    logits = torch.tensor([-2.0, 0.0, 1.0, 3.0, 0.5], dtype=torch.float64, requires_grad=True)
    log_s = torch.log(torch.tensor([[0.1, 0.2, 0.3]] * 5, dtype=torch.float64)).requires_grad_(True)
    g = GaussianParams(means=can.means, quats=can.quats, scales=torch.exp(log_s),
                       opacities=torch.sigmoid(logits), colors=can.colors)
    op = make("opacity")({"canonical": g})
    assert float(op) == pytest.approx(float(torch.sigmoid(logits).detach().mean()))
    sc = make("scale")({"canonical": g})
    assert float(sc) == pytest.approx(0.6)
    (op + sc).backward()
    assert (logits.grad > 0).all() and (log_s.grad > 0).all()  # descent lowers both
    with pytest.raises(KeyError, match="canonical"):
        make("opacity")({"deformation": zero_deformation(3)})


def test_diff_zero_for_constant_offsets_positive_otherwise():
    can = canonical(50)
    g = torch.Generator().manual_seed(1)
    offset = torch.randn(50, 3, generator=g, dtype=torch.float64)
    d = Deformation(offset.clone(), torch.randn(50, 4, generator=g, dtype=torch.float64))
    dp = Deformation(offset.clone(), torch.randn(50, 4, generator=g, dtype=torch.float64))
    loss = make("diff")
    assert float(loss(reg_inputs(can, d, dp))) == 0.0
    step = torch.tensor([0.3, 0.0, -0.4], dtype=torch.float64)
    d2 = Deformation(offset + step, d.dq)
    assert float(loss(reg_inputs(can, d2, dp))) == pytest.approx(0.5)


@pytest.mark.parametrize("name", ["rigid", "rot"])
def test_rigid_and_rot_vanish_for_a_global_rigid_motion(name):
    can = canonical(300)
    g = torch.Generator().manual_seed(2)
    q1, R1 = random_rotation(g)
    q2, R2 = random_rotation(g)
    d_prev = rigid_deformation(can, q1, R1, torch.randn(3, generator=g, dtype=torch.float64))
    d = rigid_deformation(can, q2, R2, torch.randn(3, generator=g, dtype=torch.float64))
    loss = make(name)
    value = float(loss(reg_inputs(can, d, d_prev)))
    assert 0.0 <= value < 1e-6
    # float32 inputs too (what stages pass)
    can32 = GaussianParams(*(getattr(can, f).float() for f in ("means", "quats", "scales", "opacities", "colors")))
    d32 = Deformation(d.dx.float(), d.dq.float())
    dp32 = Deformation(d_prev.dx.float(), d_prev.dq.float())
    assert float(make(name)(reg_inputs(can32, d32, dp32))) < 1e-6


def test_rigid_and_rot_positive_for_non_rigid_motion():
    can = canonical(300)
    g = torch.Generator().manual_seed(3)
    q1, R1 = random_rotation(g)
    d_prev = rigid_deformation(can, q1, R1, torch.zeros(3, dtype=torch.float64))
    d = rigid_deformation(can, q1, R1, torch.zeros(3, dtype=torch.float64))
    # position noise breaks local rigidity (not rotation consistency)
    noisy = Deformation(d.dx + 0.05 * torch.randn(d.dx.shape, generator=g, dtype=torch.float64), d.dq)
    assert float(make("rigid")(reg_inputs(can, noisy, d_prev))) > 1e-3
    assert float(make("rot")(reg_inputs(can, noisy, d_prev))) < 1e-6
    # per-Gaussian random rotations break rotation consistency
    qr = torch.randn(len(can), 4, generator=g, dtype=torch.float64)
    qr = qr / qr.norm(dim=-1, keepdim=True)
    twisted = Deformation(d.dx, quat_multiply(qr, can.quats + d.dq) - can.quats)
    assert float(make("rot")(reg_inputs(can, twisted, d_prev))) > 1e-2
    # positions rotated rigidly but the Gaussians' own rotations left behind: not rigid
    _, R2 = random_rotation(g)
    moved = Deformation(can.means @ R2.T - can.means, torch.zeros(len(can), 4, dtype=torch.float64))
    assert float(make("rigid")(reg_inputs(can, moved, zero_deformation(len(can))))) > 1e-2


def test_rigid_matches_a_direct_evaluation_of_eq_10():
    can = canonical(40, seed=5)
    g = torch.Generator().manual_seed(6)
    d = Deformation(0.1 * torch.randn(40, 3, generator=g, dtype=torch.float64),
                    0.1 * torch.randn(40, 4, generator=g, dtype=torch.float64))
    dp = Deformation(0.1 * torch.randn(40, 3, generator=g, dtype=torch.float64),
                     0.1 * torch.randn(40, 4, generator=g, dtype=torch.float64))
    loss = make("rigid", k=5, lambda_w=3.0)
    value = float(loss(reg_inputs(can, d, dp)))
    x0 = can.means
    xt, xp = x0 + d.dx, x0 + dp.dx
    Rt, Rp = quat_to_matrix(can.quats + d.dq), quat_to_matrix(can.quats + dp.dq)
    total = 0.0
    for i in range(40):
        dist = ((x0 - x0[i]) ** 2).sum(-1)
        dist[i] = math.inf
        for j in dist.argsort()[:5].tolist():
            w = math.exp(-3.0 * float(dist[j]))
            r = (xp[j] - xp[i]) - Rp[i] @ Rt[i].T @ (xt[j] - xt[i])
            total += w * float(r.norm())
    assert value == pytest.approx(total / (5 * 40), rel=1e-6)


def test_lambda_w_adapts_to_scene_scale():
    """Scaling the whole scene (and its motion) by s scales rigid by s: the adaptive
    lambda_w keeps the neighbour weights unchanged."""
    can = canonical(200)
    g = torch.Generator().manual_seed(4)
    d = Deformation(0.05 * torch.randn(200, 3, generator=g, dtype=torch.float64), torch.zeros(200, 4, dtype=torch.float64))
    base = float(make("rigid")(reg_inputs(can, d, zero_deformation(200))))
    s = 100.0
    big = GaussianParams(can.means * s, can.quats, can.scales * s, can.opacities, can.colors)
    scaled = float(make("rigid")(reg_inputs(big, Deformation(d.dx * s, d.dq), zero_deformation(200))))
    assert scaled == pytest.approx(s * base, rel=1e-6)


# ---------------------------------------------------------------------------------- kNN
def test_knn_matches_brute_force_and_excludes_self():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(257, 3, generator=g)
    res = knn(pts, 6, block_elements=1000)  # forces many chunks
    d = torch.cdist(pts.double(), pts.double())
    d.fill_diagonal_(math.inf)
    ref = d.topk(6, dim=1, largest=False)
    assert res.index.shape == (257, 6)
    assert not (res.index == torch.arange(257)[:, None]).any()
    assert torch.allclose(res.dist2.double(), ref.values**2, atol=1e-6)
    assert (res.index == ref.indices).float().mean() > 0.999  # ties aside
    assert knn(pts[:4], 20).k == 3  # clipped to N-1


def test_knn_recomputed_only_when_gaussians_version_changes():
    calls = []

    def counting_knn(points, k):
        calls.append(points.shape[0])
        return knn(points, k)

    loss = make("rigid", k=4)
    loss.cache = KNNCache(4, counting_knn)
    rot = make("rot", k=4)
    can = canonical(60)
    d0 = zero_deformation(60)
    for _ in range(3):
        loss(reg_inputs(can, d0, d0, version=0))
    assert len(calls) == 1 and loss.cache.computations == 1
    loss(reg_inputs(can, d0, d0, version=1))
    loss(reg_inputs(can, d0, d0, version=1))
    assert len(calls) == 2
    # densification changed N: the stage bumps the version, kNN follows the new Gaussians
    can2 = canonical(80, seed=9)
    loss(reg_inputs(can2, zero_deformation(80), zero_deformation(80), version=2))
    assert calls == [60, 60, 80]
    for _ in range(2):
        rot(reg_inputs(can, d0, d0, version=0))
    assert rot.cache.computations == 1


# --------------------------------------------------------------------------------- SSIM
def reference_ssim(a: np.ndarray, b: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Direct per-pixel evaluation with an explicit 2D window and zero padding."""
    x = np.arange(size) - (size - 1) / 2
    g1 = np.exp(-(x**2) / (2 * sigma**2))
    win = np.outer(g1, g1)
    win /= win.sum()
    H, W, C = a.shape
    r = size // 2
    pa = np.pad(a, ((r, r), (r, r), (0, 0)))
    pb = np.pad(b, ((r, r), (r, r), (0, 0)))
    vals = []
    for c in range(C):
        for i in range(H):
            for j in range(W):
                pa_ = pa[i : i + size, j : j + size, c]
                pb_ = pb[i : i + size, j : j + size, c]
                mx, my = (win * pa_).sum(), (win * pb_).sum()
                vx = (win * pa_ * pa_).sum() - mx * mx
                vy = (win * pb_ * pb_).sum() - my * my
                cxy = (win * pa_ * pb_).sum() - mx * my
                vals.append(((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2)))
    return float(np.mean(vals))


def test_ssim_identical_images_is_one():
    img = torch.rand(2, 20, 24, 3, generator=torch.Generator().manual_seed(0))
    assert float(ssim(img, img)) == pytest.approx(1.0, abs=1e-6)
    assert float(make("ssim")({"render": _render(img), "target": img})) == pytest.approx(0.0, abs=1e-6)


def test_ssim_matches_a_direct_reference():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 16, 18, 3, generator=g, dtype=torch.float64)
    b = (a + 0.2 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref = reference_ssim(a[0].numpy(), b[0].numpy())
    assert float(ssim(a, b)) == pytest.approx(ref, rel=1e-6)
    assert 0.2 < ref < 0.95  # a non-trivial value


def test_ssim_valid_window_on_constant_images_has_closed_form():
    a = torch.full((1, 15, 15, 1), 0.3, dtype=torch.float64)
    b = torch.full((1, 15, 15, 1), 0.7, dtype=torch.float64)
    m = ssim_map(a, b, padding="valid")
    assert m.shape == (1, 5, 5, 1)
    expected = (2 * 0.3 * 0.7 + C1) / (0.3**2 + 0.7**2 + C1)
    assert torch.allclose(m, torch.full_like(m, expected), atol=1e-10)
    assert gaussian_window().sum().item() == pytest.approx(1.0)


# -------------------------------------------------------------------------- image losses
def _render(rgb: torch.Tensor) -> RenderOutput:
    c, h, w, _ = rgb.shape
    return RenderOutput(rgb=rgb, alpha=torch.ones(c, h, w, 1), depth=None,
                        means2d=torch.zeros(c, 0, 2), radii=torch.zeros(c, 0, dtype=torch.int32))


def test_l1_and_align_values_and_gradients():
    g = torch.Generator().manual_seed(2)
    target = torch.rand(2, 16, 16, 3, generator=g)
    pred = (target + 0.1).clamp(0, 1).requires_grad_(True)
    inputs = {"render": _render(pred), "target": target}
    with torch.no_grad():
        l1 = float(make("l1")(inputs))
        assert l1 == pytest.approx(float((pred - target).abs().mean()))
        assert float(make("align", ssim_lambda=0.0)(inputs)) == pytest.approx(l1)
        expected = l1 + 1.0 - float(ssim(pred, target))
    align = make("align")(inputs)
    assert float(align.detach()) == pytest.approx(expected, rel=1e-5)
    align.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_mask_restricts_recon_losses():
    g = torch.Generator().manual_seed(3)
    target = torch.rand(1, 16, 16, 3, generator=g)
    pred = target.clone()
    pred[:, :, 8:] = 1 - pred[:, :, 8:]  # wrong only in the right half
    mask = torch.zeros(1, 16, 16, 1)
    mask[:, :, :8] = 1
    inputs = {"render": _render(pred), "target": target, "mask": mask}
    assert float(make("l1")(inputs)) == 0.0
    assert float(make("l1", use_mask=False)(inputs)) > 0.1
    assert float(make("ssim")(inputs)) < float(make("ssim", use_mask=False)(inputs))
