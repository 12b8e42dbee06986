"""The gaussians rasterizers: tile-based torch vs the dense reference, gsplat parity on CUDA.

The dense reference (every Gaussian x every pixel, autograd through everything) is written
independently of the tile-based rasterizer; they must agree on images (MAE < 1e-4 in
float32) and on gradients w.r.t. every Gaussian parameter (relative error < 1e-3).
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fourreal_core.errors import PluginError
from fourreal_core.interfaces import GaussianParams, RenderOutput
from fourreal_core.types import Cameras
from fourreal_gaussians import rasterize_torch as RT
from fourreal_gaussians import sh as SH
from fourreal_gaussians.configs import AutoRasterizerConfig, GsplatRasterizerConfig, TorchRasterizerConfig
from fourreal_gaussians.dense_reference import rasterize_dense
from fourreal_gaussians.rasterize_torch import rasterize
from fourreal_gaussians.rasterizers import GsplatRasterizer, TorchRasterizer, make_auto_rasterizer

PARAMS = ("means", "quats", "scales", "opacities", "colors")


@pytest.fixture(autouse=True)
def _one_thread():
    """Small ops: one intra-op thread is fastest, and stable on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_scene(n, width, height, n_cams=1, seed=0, sh_degree=None, scale=(0.02, 0.2), behind=0.1,
               opacity=(0.05, 0.95), spread=1.2, dtype=torch.float32):
    """Random Gaussians in a cube seen by cameras on a circle (radius 3, looking at 0).

    A fraction ``behind`` is moved behind camera 0, and ``spread`` > 1 puts some outside every
    frustum. Principal points are off-centre and focal lengths differ per camera.
    """
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * spread
    quats = torch.randn(n, 4, generator=g)
    lo, hi = math.log(scale[0]), math.log(scale[1])
    scales = torch.exp(torch.rand(n, 3, generator=g) * (hi - lo) + lo)
    opac = torch.rand(n, generator=g) * (opacity[1] - opacity[0]) + opacity[0]
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.4
    eyes = [[3.0 * math.cos(0.3 + 2.1 * c), 3.0 * math.sin(0.3 + 2.1 * c), 0.4 + 0.3 * c] for c in range(n_cams)]
    viewmats = Cameras.look_at(torch.tensor(eyes), torch.zeros(3))
    Ks = torch.stack([
        Cameras.intrinsics(0.9 * width * (1 + 0.1 * c), 0.95 * width, width * (0.5 + 0.03 * c), height * 0.47)
        for c in range(n_cams)
    ])
    nb = int(behind * n)
    if nb:
        c2w = torch.linalg.inv(viewmats[0])
        back = c2w[:3, :3] @ torch.tensor([0.0, 0.0, -0.7]) + c2w[:3, 3]
        means[:nb] = back + 0.4 * torch.randn(nb, 3, generator=g)
    to = lambda t: t.to(dtype)  # noqa: E731
    return dict(means=to(means), quats=to(quats), scales=to(scales), opacities=to(opac), colors=to(colors),
                viewmats=to(viewmats), Ks=to(Ks), width=width, height=height, sh_degree=sh_degree)


def render_and_grads(fn, scene, backgrounds=None, **kw):
    """Render, backprop a fixed random-weighted loss of rgb, alpha and depth; return outputs+grads."""
    leaves = {k: scene[k].detach().clone().requires_grad_(True) for k in PARAMS}
    args = dict(scene)
    args.update(leaves)
    rgb, alpha, depth, meta = fn(**args, backgrounds=backgrounds, **kw)
    g = torch.Generator().manual_seed(123)
    wr = torch.rand(rgb.shape, generator=g).to(rgb.dtype)
    wa = torch.rand(alpha.shape, generator=g).to(rgb.dtype)
    wd = torch.rand(depth.shape, generator=g).to(rgb.dtype)
    loss = (rgb * wr).sum() + (alpha * wa).sum() + 0.1 * (depth * wd).sum()
    loss.backward()
    return rgb.detach(), alpha.detach(), depth.detach(), {k: v.grad for k, v in leaves.items()}, meta


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


SCENES = {
    # name: (make_scene kwargs, backgrounds, rasterize kwargs)
    "rgb_2cams_bg": (dict(n=200, width=56, height=40, n_cams=2, seed=1), True, {}),
    "sh3_odd_size": (dict(n=160, width=45, height=37, n_cams=1, seed=2, sh_degree=3), True, {}),
    "sh0_3cams": (dict(n=100, width=36, height=28, n_cams=3, seed=3, sh_degree=0), False, {}),
    "opaque_early_stop_small_slices": (
        dict(n=250, width=32, height=32, n_cams=1, seed=4, scale=(0.1, 0.4), opacity=(0.8, 1.0)),
        True, dict(slice_len=8, budget=4096)),
    "large_footprints_tile8": (
        dict(n=60, width=50, height=30, n_cams=2, seed=5, scale=(0.2, 0.8)), True, dict(tile_size=8)),
}


@pytest.mark.parametrize("name", list(SCENES))
def test_parity_with_dense_reference(name, monkeypatch):
    kw_scene, use_bg, kw = SCENES[name]
    stops = []  # slices in which some pixel hit the early stop (T would go <= 1e-4)
    original = RT._transmittance

    def spy(alpha, T0, alive0):
        out = original(alpha, T0, alive0)
        stops.append(out[2] is not None)
        return out

    monkeypatch.setattr(RT, "_transmittance", spy)
    results = {}
    for dtype in (torch.float32, torch.float64):
        scene = make_scene(**kw_scene, dtype=dtype)
        C = scene["viewmats"].shape[0]
        bg = torch.rand(C, 3, generator=torch.Generator().manual_seed(9)).to(dtype) if use_bg else None
        tile = kw.get("tile_size", 16)
        t = render_and_grads(rasterize, scene, bg, **kw)
        d = render_and_grads(rasterize_dense, scene, bg, tile_size=tile)
        results[dtype] = (t, d)
    (t, d) = results[torch.float32]
    # the scene exercises what it should
    radii = t[4]["radii"]
    assert (radii == 0).any() and (radii > 0).sum() > 10, "scene should mix culled and visible Gaussians"
    assert torch.equal(radii, d[4]["radii"])
    # images, float32
    assert (t[0] - d[0]).abs().mean() < 1e-4
    assert (t[1] - d[1]).abs().mean() < 1e-4
    assert (t[2] - d[2]).abs().mean() < 1e-4 * max(1.0, float(d[2].abs().max()))
    assert (t[0] - d[0]).abs().max() < 1e-3
    # gradients: float32 and float64 (the float64 check isolates the maths from rounding)
    for dtype, tol in ((torch.float32, 1e-3), (torch.float64, 1e-5)):
        (t, d) = results[dtype]
        for k in PARAMS:
            assert d[3][k].norm() > 0, k
            assert rel(t[3][k], d[3][k]) < tol, (dtype, k, rel(t[3][k], d[3][k]))
    if name.startswith("opaque"):
        assert sum(stops) > 4, "early stop not exercised"
        assert float((results[torch.float32][1][1] > 0.99).float().mean()) > 0.2


def test_means2d_grad_matches_dense_and_is_populated():
    scene = make_scene(150, 48, 40, n_cams=2, seed=7, dtype=torch.float64)
    t = render_and_grads(rasterize, scene)
    d = render_and_grads(rasterize_dense, scene)
    m2d = t[4]["means2d"]
    assert m2d.shape == (2, 150, 2) and m2d.grad is not None
    dense_grad = torch.stack([m.grad for m in d[4]["means2d_list"]])
    assert rel(m2d.grad, dense_grad) < 1e-6
    visible = t[4]["radii"] > 0
    assert (m2d.grad[~visible] == 0).all()
    assert (m2d.grad[visible].norm(dim=-1) > 0).float().mean() > 0.5


def test_culled_gaussians_have_zero_radius_and_no_gradient():
    W, H = 32, 24
    vm = Cameras.look_at(torch.tensor([[0.0, -3.0, 0.0]]), torch.zeros(3))  # looks along +y
    K = Cameras.intrinsics(30.0, 30.0, W / 2, H / 2)[None]
    means = torch.tensor([
        [0.0, 0.0, 0.0],  # visible, centred
        [0.0, -4.0, 0.0],  # behind the camera
        [0.0, -2.995, 0.0],  # in front, but closer than the near plane (0.01)
        [40.0, 0.0, 0.0],  # far outside the frustum
        [0.0, 30.0, 0.0],  # beyond the far plane (set to 20 below)
        [0.3, 0.0, 0.2],  # visible
    ])
    n = len(means)
    scene = dict(means=means, quats=torch.tensor([[0.9, 0.2, -0.1, 0.3]]).repeat(n, 1),
                 scales=torch.tensor([[0.1, 0.05, 0.15]]).repeat(n, 1),
                 opacities=torch.full((n,), 0.8), colors=torch.rand(n, 3), viewmats=vm, Ks=K, width=W, height=H)
    t = render_and_grads(rasterize, scene, far_plane=20.0)
    radii = t[4]["radii"][0]
    assert radii.dtype == torch.int32
    assert radii[0] > 0 and radii[5] > 0
    assert (radii[1:5] == 0).all()
    for k in PARAMS:
        assert (t[3][k][1:5] == 0).all(), k
        assert t[3][k][0].abs().sum() > 0, k


def _tile_rects(means2d, radii, ts, W, H):
    """gsplat's tile rectangle of every Gaussian, written out here independently."""
    tw, th = math.ceil(W / ts), math.ceil(H / ts)
    r = radii.double()
    x, y = means2d[..., 0].double(), means2d[..., 1].double()
    x0 = torch.floor(x / ts - r / ts).clamp(0, tw)
    x1 = torch.ceil(x / ts + r / ts).clamp(0, tw)
    y0 = torch.floor(y / ts - r / ts).clamp(0, th)
    y1 = torch.ceil(y / ts + r / ts).clamp(0, th)
    return ((x1 - x0) * (y1 - y0) * (radii > 0)).long()


class _MaxNumel(TorchDispatchMode):
    """Records the largest tensor produced by any op."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.max_numel = max(self.max_numel, o.numel())
        return out


def test_work_is_tile_bounded_not_dense():
    """A trained-like scene (small Gaussians): the work follows the footprints, and no
    intermediate tensor is anywhere near N x H x W."""
    N, W, H, ts = 4000, 128, 96, 16
    g = torch.Generator().manual_seed(0)
    z = torch.rand(N, generator=g) * 3 + 2
    means = torch.stack([(torch.rand(N, generator=g) * 2 - 1) * z * 0.5,
                         (torch.rand(N, generator=g) * 2 - 1) * z * 0.4, z], -1)
    scene = dict(means=means, quats=torch.randn(N, 4, generator=g), scales=torch.rand(N, 3, generator=g) * 0.02 + 0.005,
                 opacities=torch.rand(N, generator=g), colors=torch.rand(N, 3, generator=g),
                 viewmats=torch.eye(4)[None], Ks=Cameras.intrinsics(100.0, 100.0, W / 2, H / 2)[None],
                 width=W, height=H)
    leaves = {k: scene[k].clone().requires_grad_(True) for k in PARAMS}
    scene.update(leaves)
    with _MaxNumel() as probe:
        rgb, alpha, depth, meta = rasterize(**scene)
        (rgb.sum() + depth.sum()).backward()
    n_tiles = math.ceil(W / ts) * math.ceil(H / ts)
    expected = _tile_rects(meta["means2d"].detach(), meta["radii"], ts, W, H)
    assert torch.equal(meta["tiles_per_gauss"].long(), expected)
    assert meta["n_isects"] == int(expected.sum())
    assert meta["n_isects"] < 0.05 * N * n_tiles  # each Gaussian touches a handful of tiles
    # block pairs never leave the tile rectangles, and the evaluated work is tiny vs dense
    assert meta["n_pairs"] * meta["block"] ** 2 <= meta["n_isects"] * ts * ts
    assert meta["n_evals"] < 0.03 * N * W * H
    assert probe.max_numel < 0.01 * N * W * H


def test_batched_cameras_equal_single_camera_renders():
    scene = make_scene(200, 40, 30, n_cams=3, seed=11, sh_degree=1)
    bg = torch.rand(3, 3)
    t = render_and_grads(rasterize, scene, bg)
    grads = {k: torch.zeros_like(scene[k]) for k in PARAMS}
    for c in range(3):
        one = dict(scene, viewmats=scene["viewmats"][c:c + 1], Ks=scene["Ks"][c:c + 1])
        leaves = {k: scene[k].clone().requires_grad_(True) for k in PARAMS}
        one.update(leaves)
        rgb, alpha, depth, meta = rasterize(**one, backgrounds=bg[c:c + 1])
        assert torch.allclose(rgb[0], t[0][c], atol=1e-6)
        assert torch.allclose(alpha[0], t[1][c], atol=1e-6)
        assert torch.allclose(depth[0], t[2][c], atol=1e-5)
        assert torch.equal(meta["radii"][0], t[4]["radii"][c])
        gen = torch.Generator().manual_seed(123)
        w = torch.rand(t[0].shape, generator=gen)  # the same weights render_and_grads used
        wa = torch.rand(t[1].shape, generator=gen)
        wd = torch.rand(t[2].shape, generator=gen)
        ((rgb[0] * w[c]).sum() + (alpha[0] * wa[c]).sum() + 0.1 * (depth[0] * wd[c]).sum()).backward()
        for k in PARAMS:
            grads[k] += leaves[k].grad
    for k in PARAMS:
        assert rel(grads[k], t[3][k]) < 1e-5, k


def test_finite_difference_gradients():
    """Central differences of a weighted loss w.r.t. every parameter of a tiny float64 scene."""
    W, H = 20, 16
    means = torch.tensor([[0.0, 0.0, 0.0], [0.15, 0.1, -0.1], [-0.1, -0.12, 0.2]], dtype=torch.float64)
    quats = torch.tensor([[0.9, 0.1, -0.2, 0.3], [0.5, 0.5, 0.1, -0.4], [1.0, 0.0, 0.2, 0.0]], dtype=torch.float64)
    scales = torch.tensor([[0.12, 0.07, 0.09], [0.05, 0.1, 0.08], [0.09, 0.09, 0.04]], dtype=torch.float64)
    opac = torch.tensor([0.7, 0.5, 0.9], dtype=torch.float64)
    sh = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3
    vm = Cameras.look_at(torch.tensor([[0.3, -2.0, 0.4]]), torch.zeros(3)).double()
    K = Cameras.intrinsics(25.0, 25.0, W / 2, H / 2)[None].double()
    bg = torch.tensor([[0.2, 0.5, 0.1]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    wr = torch.rand(1, H, W, 3, generator=gen, dtype=torch.float64)
    wa = torch.rand(1, H, W, 1, generator=gen, dtype=torch.float64)
    wd = torch.rand(1, H, W, 1, generator=gen, dtype=torch.float64)
    params = dict(means=means, quats=quats, scales=scales, opacities=opac, colors=sh)

    def loss(p):
        rgb, a, d, _ = rasterize(p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], vm, K, W, H,
                                 sh_degree=1, backgrounds=bg)
        return (rgb * wr).sum() + (a * wa).sum() + 0.1 * (d * wd).sum()

    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss(leaves).backward()
    eps = 1e-6
    for k, v in params.items():
        num = torch.zeros_like(v)
        for i in range(v.numel()):
            plus, minus = dict(params), dict(params)
            vp, vm_ = v.clone(), v.clone()
            vp.view(-1)[i] += eps
            vm_.view(-1)[i] -= eps
            plus[k], minus[k] = vp, vm_
            num.view(-1)[i] = (loss(plus) - loss(minus)) / (2 * eps)
        assert rel(leaves[k].grad, num) < 1e-4, (k, leaves[k].grad, num)


def test_expected_depth_and_background_compositing():
    """One opaque Gaussian in front of another: depth is the weighted mean of the two z,
    alpha-weighted background where the coverage is partial, 0 depth where nothing is hit."""
    W = H = 24
    vm = torch.eye(4)[None]
    K = Cameras.intrinsics(40.0, 40.0, W / 2, H / 2)[None]
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    scene = dict(means=means, quats=torch.tensor([[1.0, 0, 0, 0]] * 2), scales=torch.full((2, 3), 0.05),
                 opacities=torch.tensor([0.6, 0.9]), colors=torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]),
                 viewmats=vm, Ks=K, width=W, height=H)
    bg = torch.tensor([[0.0, 0.0, 1.0]])
    rgb, alpha, depth, meta = rasterize(**scene, backgrounds=bg)
    c = rgb[0, H // 2, W // 2]  # pixel centre (12.5, 12.5); both means project to (12, 12)
    # isotropic: 2D variance (f s / z)^2 + eps2d; d = (0.5, 0.5) -> sigma = 0.5 |d|^2 / var
    a1 = 0.6 * math.exp(-0.5 * 0.5 / ((40 * 0.05 / 2.0) ** 2 + 0.3))
    a2 = 0.9 * math.exp(-0.5 * 0.5 / ((40 * 0.05 / 3.0) ** 2 + 0.3))
    w1, w2 = a1, a2 * (1 - a1)
    T = (1 - a1) * (1 - a2)
    assert torch.allclose(c, torch.tensor([w1, w2, T]), atol=1e-5)
    assert abs(float(alpha[0, H // 2, W // 2]) - (1 - T)) < 1e-5
    assert abs(float(depth[0, H // 2, W // 2]) - (w1 * 2.0 + w2 * 3.0) / (w1 + w2)) < 1e-5
    assert float(alpha[0, 0, 0]) == 0.0 and float(depth[0, 0, 0]) == 0.0
    assert torch.equal(rgb[0, 0, 0], bg[0])


def test_thread_override_is_restored(monkeypatch):
    """FOURREAL_RASTER_THREADS changes the intra-op threads only inside the rasterizer."""
    seen = []
    original = RT._transmittance

    def spy(*a):
        seen.append(torch.get_num_threads())
        return original(*a)

    monkeypatch.setattr(RT, "_transmittance", spy)
    monkeypatch.setenv("FOURREAL_RASTER_THREADS", "1")
    torch.set_num_threads(2)
    scene = make_scene(50, 24, 16, seed=0)
    render_and_grads(rasterize, scene)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2


# -------------------------------------------------------------------------------- SH
def test_sh_constants_orthonormal_and_signs():
    # Fibonacci sphere quadrature of the basis: orthonormal up to quadrature error
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    phi = torch.acos(1 - 2 * i / n)
    theta = math.pi * (1 + 5**0.5) * i
    d = torch.stack([torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], -1)
    Y = SH.sh_basis(3, d)
    gram = (Y.T @ Y) * (4 * math.pi / n)
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=2e-3)
    # 3DGS sign convention at a few directions
    z = SH.sh_basis(3, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))[0]
    expected = torch.tensor([SH.C0, SH.C1, 2 * SH.C2[2], 2 * SH.C3[3]], dtype=torch.float64)
    assert torch.allclose(z[[0, 2, 6, 12]], expected)
    assert z[[1, 3, 4, 5, 7, 8, 9, 10, 11, 13, 14, 15]].abs().max() < 1e-12
    x = SH.sh_basis(1, torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))[0]
    assert torch.allclose(x, torch.tensor([SH.C0, 0, 0, -SH.C1], dtype=torch.float64))
    assert SH.num_sh_bases(0) == 1 and SH.num_sh_bases(3) == 16


def test_eval_sh_dc_roundtrip_clamp_and_normalisation():
    rgb = torch.rand(10, 3)
    coeffs = torch.zeros(10, 16, 3)
    coeffs[:, 0] = SH.rgb_to_sh(rgb)
    dirs = torch.randn(10, 3) * 5  # not unit: eval_sh normalises
    assert torch.allclose(SH.eval_sh(3, coeffs, dirs), rgb, atol=1e-6)
    assert torch.allclose(SH.sh_to_rgb(SH.rgb_to_sh(rgb)), rgb, atol=1e-6)
    coeffs[:, 1] = torch.randn(10, 3)
    out = SH.eval_sh(1, coeffs, dirs)
    manual = SH.C0 * coeffs[:, 0] - SH.C1 * (dirs / dirs.norm(dim=-1, keepdim=True))[:, 1:2] * coeffs[:, 1] + 0.5
    assert torch.allclose(out, manual.clamp_min(0), atol=1e-6)
    assert torch.allclose(SH.eval_sh(0, coeffs, dirs), rgb, atol=1e-6)  # degree 0 ignores the rest
    assert (SH.eval_sh(0, torch.full((1, 1, 3), -10.0), dirs[:1]) == 0).all()


# ------------------------------------------------------------------------- plugin layer
def _params_and_cams(sh_degree=2, n=80, C=2, W=32, H=24, device="cpu"):
    s = make_scene(n, W, H, n_cams=C, seed=21, sh_degree=sh_degree)
    g = GaussianParams(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], sh_degree=sh_degree)
    return g, Cameras(s["viewmats"], s["Ks"], W, H), s


def test_torch_rasterizer_plugin_output():
    g, cams, s = _params_and_cams()
    g.means.requires_grad_(True)
    r = TorchRasterizer(TorchRasterizerConfig())
    out = r.rasterize(g, cams, background=torch.tensor([0.1, 0.2, 0.3]))
    assert isinstance(out, RenderOutput)
    assert out.rgb.shape == (2, 24, 32, 3) and out.alpha.shape == (2, 24, 32, 1) and out.depth.shape == (2, 24, 32, 1)
    assert out.means2d.shape == (2, 80, 2) and out.radii.shape == (2, 80) and out.radii.dtype == torch.int32
    ref = rasterize_dense(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], s["Ks"],
                          32, 24, sh_degree=2, backgrounds=torch.tensor([0.1, 0.2, 0.3]))
    assert (out.rgb - ref[0]).abs().mean() < 1e-4
    out.rgb.sum().backward()
    assert out.means2d.grad is not None and out.means2d.grad.abs().sum() > 0
    assert r.rasterize(g, cams, render_depth=False).depth is None


def test_auto_uses_the_compiled_path_on_cpu_and_gsplat_fails_clearly_without_cuda():
    from fourreal_gaussians import rasterize_native

    g, cams, _ = _params_and_cams()
    auto = make_auto_rasterizer(AutoRasterizerConfig())
    assert auto.rasterize(g, cams).extras["backend"] == ("native" if rasterize_native.available() else "numba")
    if not torch.cuda.is_available():
        with pytest.raises(PluginError) as exc:
            GsplatRasterizer(GsplatRasterizerConfig())
        msg = str(exc.value)
        assert "\n" not in msg and "CUDA" in msg and "rasterizer: torch" in msg


def _gsplat_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("gsplat parity needs a CUDA GPU (none here)")
    try:
        import gsplat  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"gsplat is not importable ({exc}); pip install fourreal[cuda]")


@pytest.mark.gpu
@pytest.mark.parametrize("sh_degree", [None, 3])
def test_cuda_parity_with_gsplat(sh_degree):
    _gsplat_or_skip()
    g, cams, _ = _params_and_cams(sh_degree=sh_degree, n=500, C=2, W=96, H=64)
    dev = torch.device("cuda")
    leaves = {k: getattr(g, k).detach().to(dev).requires_grad_(True) for k in PARAMS}
    gc = GaussianParams(**leaves, sh_degree=sh_degree)
    cams = cams.to(dev)
    bg = torch.tensor([0.3, 0.2, 0.1], device=dev)
    outs = {}
    for name, r in (("torch", TorchRasterizer(TorchRasterizerConfig())),
                    ("gsplat", GsplatRasterizer(GsplatRasterizerConfig()))):
        for v in leaves.values():
            v.grad = None
        out = r.rasterize(gc, cams, background=bg)
        (out.rgb.sum() + out.depth.sum() * 0.01).backward()
        outs[name] = (out, {k: v.grad.clone() for k, v in leaves.items()})
    (t, tg), (s, sg) = outs["torch"], outs["gsplat"]
    assert (t.rgb - s.rgb).abs().mean() < 1e-3
    assert (t.alpha - s.alpha).abs().mean() < 1e-3
    for k in PARAMS:
        assert rel(tg[k], sg[k]) < 5e-2, k  # gsplat >= 1.5 bounds footprints slightly differently


# ------------------------------------------------------------ compiled (numba, native C) paths
def _compiled_or_skip(compositor: str):
    if compositor == "numba":
        pytest.importorskip("numba")
    else:
        from fourreal_gaussians import rasterize_native

        if not rasterize_native.available():
            pytest.skip(f"native rasterizer unavailable: {rasterize_native.unavailable_reason()}")
    return lambda **kw: rasterize(**kw, compositor=compositor)


@pytest.mark.parametrize("compositor", ["numba", "native"])
@pytest.mark.parametrize("name", list(SCENES))
def test_compiled_parity_with_dense_reference(name, compositor):
    """The compiled compositing against the dense reference: images within 1e-5 MAE and every
    parameter gradient within 1e-4 relative (float32), 1e-5 in float64."""
    kw_scene, use_bg, kw = SCENES[name]
    tile = kw.get("tile_size", 16)
    if compositor == "native" and tile != 16:
        pytest.skip("the native kernels use 16x16 tiles")
    render = _compiled_or_skip(compositor)
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-5)):
        scene = make_scene(**kw_scene, dtype=dtype)
        C = scene["viewmats"].shape[0]
        bg = torch.rand(C, 3, generator=torch.Generator().manual_seed(9)).to(dtype) if use_bg else None
        t = render_and_grads(render, scene, bg, tile_size=tile)
        d = render_and_grads(rasterize_dense, scene, bg, tile_size=tile)
        assert torch.equal(t[4]["radii"], d[4]["radii"])
        assert t[4]["n_pairs"] > 0
        assert (t[0] - d[0]).abs().mean() < 1e-5
        assert (t[1] - d[1]).abs().mean() < 1e-5
        assert (t[2] - d[2]).abs().mean() < 1e-5 * max(1.0, float(d[2].abs().max()))
        for k in PARAMS:
            assert d[3][k].norm() > 0, k
            assert rel(t[3][k], d[3][k]) < tol, (dtype, k, rel(t[3][k], d[3][k]))


@pytest.mark.parametrize("compositor", ["numba", "native"])
def test_compiled_matches_torch_path_on_a_real_size_scene(compositor):
    """20k Gaussians at 256x144 with SH degree 3 (the canonical stage's size on a capture): the
    compiled and torch compositing agree on images, depth, means2d gradients (what densification
    reads) and every parameter gradient."""
    render = _compiled_or_skip(compositor)
    scene = make_scene(n=20000, width=256, height=144, n_cams=1, seed=11, sh_degree=3, scale=(0.005, 0.05),
                       behind=0.05, spread=1.0, opacity=(0.05, 1.0))  # up to 1: alpha clamped at 0.99
    assert int((scene["opacities"] > 0.99).sum()) > 100
    bg = torch.tensor([[0.2, 0.3, 0.4]])
    t = render_and_grads(render, scene, bg)
    r = render_and_grads(rasterize, scene, bg)
    assert torch.equal(t[4]["radii"], r[4]["radii"]) and int((t[4]["radii"] > 0).sum()) > 10000
    assert (t[0] - r[0]).abs().mean() < 1e-5
    assert (t[1] - r[1]).abs().mean() < 1e-5
    assert (t[2] - r[2]).abs().mean() < 1e-5 * float(r[2].abs().max())
    assert rel(t[4]["means2d"].grad, r[4]["means2d"].grad) < 1e-4
    for k in PARAMS:
        assert rel(t[3][k], r[3][k]) < 1e-4, (k, rel(t[3][k], r[3][k]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_set_up_is_the_torch_set_up(dtype):
    """The C projection (no gradient) gives the torch code's radii exactly and its floats to a
    rounding (5e-4 of each Gaussian's largest entry in float32, 1e-11 in float64), and from the same projection the C tile lists are the torch lists bit for bit
    (order, boxes, tiles per Gaussian) -- on three cameras with Gaussians behind and outside
    them, and opacities from 0 to 1. A different clamp, cull or an unstable sort breaks it."""
    _compiled_or_skip("native")
    from fourreal_gaussians.rasterize_native import KERNELS
    from fourreal_gaussians.rasterize_torch import bin_tiles, project_gaussians

    sc = make_scene(n=6000, width=200, height=120, n_cams=3, seed=5, scale=(0.004, 0.3), behind=0.1, spread=1.6,
                    opacity=(0.0, 1.0), dtype=dtype)
    sc["means"][:40] = sc["means"][40:80]  # equal depths: the stable sort keeps index order
    W, H = sc["width"], sc["height"]
    ref = project_gaussians(sc["means"], sc["quats"], sc["scales"], sc["viewmats"], sc["Ks"], W, H)
    for c in range(3):  # one camera at a time (torch's batched einsum rounds differently for several)
        one = project_gaussians(sc["means"], sc["quats"], sc["scales"], sc["viewmats"][c:c + 1], sc["Ks"][c:c + 1],
                                W, H)
        got = KERNELS.project(sc["means"], sc["quats"], sc["scales"], sc["viewmats"][c], sc["Ks"][c], W, H,
                              0.3, 0.01, 1e10)
        assert torch.equal(got["radii"], one["radii"]), c
        # to a rounding: torch's vectorised sums round differently from C's on some CPUs (an Intel
        # Xeon: conics 8e-5 of their row's largest entry in float32 -- the inverse of a nearly
        # singular cov2d amplifies it -- and 1e-13 in float64), so each row is compared to its own scale
        tol = 5e-4 if dtype == torch.float32 else 1e-11
        for k in ("means2d", "conics", "cov2d", "depths"):
            a, b = got[k], one[k].detach()
            row = b.abs().amax(-1, keepdim=True) if b.dim() == 3 else b.abs()
            assert bool(((a - b).abs() <= tol * row.clamp_min(1e-30)).all()), (c, k, float(((a - b).abs() / row).max()))
    assert int((ref["radii"] == 0).sum()) > 500 and int((ref["radii"] > 0).sum()) > 5000
    op = sc["opacities"][None].expand(3, -1)
    args = (ref["means2d"].detach(), ref["cov2d"].detach(), op, ref["radii"], ref["depths"].detach(), W, H, 16)
    a, b = bin_tiles(*args), KERNELS.bin_tiles(*args)
    assert a.n_pairs > 10000 and a.n_pairs == b.n_pairs and a.n_isects == b.n_isects
    for k in ("pair_gid", "tile_off", "box", "tiles_per_gauss"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_projection_gradients_are_autograds(dtype):
    """The C projection's backward against torch's autograd of project_gaussians: the gradients
    of means, quats (unnormalised), scales and viewmats from random weights on means2d, conics and depths
    (three cameras; Gaussians behind, beside and outside them: the clamped and culled branches).
    float64 to 1e-12, float32 to 1e-4 relative; and the cameras' (viewmats) gradient, which a
    camera-optimising phase trains."""
    _compiled_or_skip("native")
    from fourreal_gaussians.rasterize_native import KERNELS
    from fourreal_gaussians.rasterize_torch import project_gaussians

    sc = make_scene(n=4000, width=200, height=120, n_cams=3, seed=5, scale=(0.004, 0.3), behind=0.1, spread=1.6,
                    dtype=dtype)
    sc["quats"] = sc["quats"] * 3.0  # the normalisation's gradient too
    # non-contiguous cameras, as a stage's slices of its camera batch are (the C call gets copies)
    sc["viewmats"] = sc["viewmats"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not sc["viewmats"].is_contiguous()
    g = torch.Generator().manual_seed(1)
    wm, wc, wd = (torch.randn(3, 4000, k, generator=g).to(dtype) for k in (2, 3, 1))
    grads = []
    for native in (False, True):
        m, q, s_, vm = (sc[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "viewmats"))
        if native:
            p = KERNELS.project_all(m, q, s_, vm, sc["Ks"], 200, 120, 0.3, 0.01, 1e10, False)
        else:
            p = project_gaussians(m, q, s_, vm, sc["Ks"], 200, 120)
        ((p["means2d"] * wm).sum() + (p["conics"] * wc).sum() + (p["depths"] * wd[..., 0]).sum()).backward()
        grads.append((m.grad, q.grad, s_.grad, vm.grad))
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    for name, a, b in zip(("means", "quats", "scales", "viewmats"), *grads):
        assert a.norm() > 0 and rel(b, a) < tol, (name, rel(b, a))


@pytest.mark.parametrize("compositor", ["numba", "native"])
def test_compiled_rasterizer_plugin_refuses_other_devices_in_one_line(compositor):
    from fourreal_gaussians.rasterizers import NativeRasterizer, NumbaRasterizer

    _compiled_or_skip(compositor)
    g, cams, _ = _params_and_cams()
    r = NumbaRasterizer() if compositor == "numba" else NativeRasterizer()
    out = r.rasterize(g, cams)
    assert out.extras["backend"] == compositor and out.rgb.shape[-1] == 3
    meta_g = GaussianParams(**{f: getattr(g, f).to("meta") for f in ("means", "quats", "scales", "opacities",
                                                                     "colors")}, sh_degree=g.sh_degree)
    with pytest.raises(PluginError) as exc:
        r.rasterize(meta_g, cams)
    assert "\n" not in str(exc.value) and "CPU only" in str(exc.value)


# ------------------------------------------------------------------ antialiased (Mip-Splatting 2D filter)
@pytest.mark.parametrize("compositor", ["torch", "numba", "native"])
def test_antialiased_parity_with_dense_reference(compositor):
    """``antialiased=True`` (gsplat's rasterize_mode="antialiased") against the dense reference
    doing the same compensation: images and every parameter gradient, with Gaussians small
    enough (scales 0.005-0.05 seen from 3 units) that the factor is far from 1."""
    if compositor != "torch":
        _compiled_or_skip(compositor)
    for dtype, tol in ((torch.float32, 1e-3), (torch.float64, 1e-5)):
        scene = make_scene(n=180, width=48, height=36, n_cams=2, seed=11, scale=(0.005, 0.05), dtype=dtype)
        t = render_and_grads(rasterize, scene, None, antialiased=True, compositor=compositor)
        d = render_and_grads(rasterize_dense, scene, None, antialiased=True)
        classic = render_and_grads(rasterize_dense, scene, None)
        proj = RT.project_gaussians(scene["means"], scene["quats"] / scene["quats"].norm(dim=-1, keepdim=True),
                                    scene["scales"], scene["viewmats"], scene["Ks"], 48, 36)
        comp = RT.antialias_compensation(proj["cov2d"], 0.3)
        visible = t[4]["radii"] > 0
        assert float(comp[visible].median()) < 0.6  # the scene exercises the filter
        assert (classic[1] - d[1]).abs().mean() > 10 * (t[1] - d[1]).abs().mean() + 1e-4
        assert (t[0] - d[0]).abs().mean() < 1e-5
        assert (t[1] - d[1]).abs().mean() < 1e-5
        for k in PARAMS:
            assert rel(t[3][k], d[3][k]) < tol, (dtype, k, rel(t[3][k], d[3][k]))


def test_antialiased_keeps_a_small_gaussians_weight_whatever_eps2d():
    """The point of the 2D filter: the low-pass eps2d widens a sub-pixel Gaussian, and in the
    classic mode that adds weight (its summed alpha grows with eps2d); antialiased, the summed
    alpha stays o * 2 pi sqrt(det Sigma2d) whatever eps2d is."""
    W = H = 33
    f = 40.0
    viewmats = Cameras.look_at(torch.tensor([[4.0, 0.0, 0.0]]), torch.zeros(3))
    Ks = Cameras.intrinsics(f, f, W / 2, H / 2)[None]
    s = 0.5 * 4.0 / f  # a 2D standard deviation of 0.5 px
    kw = dict(means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]), scales=torch.full((1, 3), s),
              opacities=torch.tensor([0.9]), colors=torch.ones(1, 3), viewmats=viewmats, Ks=Ks, width=W, height=H)
    sums = {}
    for aa in (False, True):
        for eps in (0.3, 1.0):
            _, alpha, _, _ = rasterize(**kw, eps2d=eps, antialiased=aa)
            sums[aa, eps] = float(alpha.sum())
    expected = 0.9 * 2 * math.pi * 0.25  # o * 2 pi sqrt(det), det = 0.25^2
    assert sums[True, 0.3] == pytest.approx(expected, rel=0.04)
    assert sums[True, 1.0] == pytest.approx(expected, rel=0.04)
    assert sums[False, 1.0] > 1.8 * sums[False, 0.3] > 3.0 * expected


def test_native_without_a_compiler_says_why_and_auto_falls_back_to_numba(tmp_path):
    """No working C compiler (``CC`` pointing nowhere, an empty cache): the native path is
    unavailable with the reason, its plugin refuses in one line, and ``auto`` runs numba."""
    import subprocess
    import sys

    code = """
import torch
from fourreal_core.errors import PluginError
from fourreal_gaussians import rasterize_native
from fourreal_gaussians.configs import AutoRasterizerConfig
from fourreal_gaussians.rasterizers import NativeRasterizer, make_auto_rasterizer
assert not rasterize_native.available()
print("REASON", rasterize_native.unavailable_reason())
try:
    NativeRasterizer()
except PluginError as exc:
    print("REFUSED", exc)
print("AUTO", make_auto_rasterizer(AutoRasterizerConfig())._numba.name)
"""
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "FOURREAL_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = dict(line.split(" ", 1) for line in res.stdout.strip().splitlines())
    assert lines["REASON"].startswith("no C compiler (") and "set CC or install one" in lines["REASON"]
    assert lines["REFUSED"].startswith("rasterizer native: no C compiler") and "`rasterizer: numba`" in lines["REFUSED"]
    assert lines["AUTO"] == "numba"
