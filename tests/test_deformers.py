"""Deformers of the fourreal_deformers plugin: `mlp` (Deformable-3DGS), `lbs` and `hexplane`."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from fourreal_core.interfaces import Deformation, Deformer, GaussianParams
from fourreal_core.registry import get_registry
from fourreal_deformers.common import quat_multiply, quat_to_matrix
from fourreal_deformers.configs import LBSDeformerConfig, MLPDeformerConfig
from fourreal_deformers.lbs import LBSDeformer, kmeans
from fourreal_deformers.mlp import MLPDeformer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are small: one intra-op thread is faster than two, and far faster when
    the CPU is shared (thread oversubscription)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build(name: str, **params):
    reg = get_registry()
    return reg.create("deformer", name, reg.get("deformer", name).config(**params))


def points(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g) * 2 - 1
    q = torch.randn(n, 4, generator=g)
    return x, q / q.norm(dim=-1, keepdim=True)


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.1) -> None:
    """Perturb every parameter (heads start at zero) so outputs are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def deform_batch(d, x, times, quats=None) -> Deformation:
    """``d.deform`` at each of ``times`` (ints: frame indices k; floats: times t), stacked:
    ``dx [T,N,3]``, ``dq [T,N,4]``, ``ds [T,N,3]|None``."""
    ts = times.tolist() if torch.is_tensor(times) else list(times)
    outs = [d.deform(x, t, quats=quats) for t in ts]
    return Deformation(dx=torch.stack([o.dx for o in outs]), dq=torch.stack([o.dq for o in outs]),
                       ds=None if outs[0].ds is None else torch.stack([o.ds for o in outs]))


def assert_all_zero(d) -> None:
    for t in (d.dx, d.dq) + (() if d.ds is None else (d.ds,)):
        assert torch.count_nonzero(t) == 0


def variants():
    """(name, params, setup kwargs, a non-canonical time) for every deformer flavour."""
    return [
        ("mlp", {"width": 32}, {}, 0.37),
        ("mlp", {"width": 32, "time_input": "frame_code", "predict_scale": False},
         {"num_frames": 6, "canonical": 2}, 4),
        ("lbs", {"num_bones": 4}, {}, 0.37),
        ("lbs", {"num_bones": 4, "motion": "per_frame"}, {"num_frames": 6, "canonical": 2}, 4),
        ("hexplane", {"resolution": 8, "time_resolution": 5, "features": 4, "width": 16}, {}, 0.37),
        ("motion_bases", {"num_bases": 4}, {"num_frames": 6, "canonical": 0.4}, 0.37),
    ]


def make_variant(name, params, setup, x):
    d = build(name, **params)
    if name in ("lbs", "hexplane", "motion_bases"):
        setup = dict(setup, canonical_means=x)
    d.setup(**setup)
    return d


# ----------------------------------------------------------------------------- structure
def test_registered_with_paper_defaults():
    mlp = build("mlp")
    assert isinstance(mlp, MLPDeformer) and isinstance(mlp, Deformer) and isinstance(mlp, torch.nn.Module)
    cfg = mlp.cfg
    assert (cfg.width, cfg.depth, cfg.x_multires, cfg.t_multires) == (256, 8, 10, 6)
    in_dim = 3 * (1 + 2 * 10) + (1 + 2 * 6)
    assert len(mlp.layers) == 8 and mlp.layers[0].in_features == in_dim
    # the input is concatenated again after the 4th layer (index depth // 2 = 4)
    widths = [layer.in_features for layer in mlp.layers]
    assert widths == [in_dim, 256, 256, 256, 256, 256 + in_dim, 256, 256]
    assert (mlp.head_dx.out_features, mlp.head_dq.out_features, mlp.head_ds.out_features) == (3, 4, 3)
    lbs = build("lbs")
    assert isinstance(lbs, LBSDeformer) and isinstance(lbs, Deformer) and lbs.num_bones == 8
    assert build("mlp", time_input="frame_code", predict_scale=False).head_ds is None


@pytest.mark.parametrize("variant", variants(), ids=lambda v: f"{v[0]}-{v[1].get('time_input', v[1].get('motion', 'time'))}")
def test_zero_deformation_at_initialisation(variant):
    name, params, setup, t = variant
    x, q = points()
    d = make_variant(name, params, setup, x)
    assert_all_zero(d.deform(x, t, quats=q))
    assert_all_zero(d.deform(x, t))
    assert_all_zero(deform_batch(d, x, [t, t]))


# ---------------------------------------------------------------------- canonical frame
@pytest.mark.parametrize("name,params", [
    ("mlp", {"width": 32, "time_input": "frame_code", "predict_scale": False}),
    ("lbs", {"num_bones": 4, "motion": "per_frame"}),
])
def test_per_frame_deformation_exactly_zero_at_canonical_frame_after_training(name, params):
    x, q = points(80)
    d = make_variant(name, params, {"num_frames": 5, "canonical": 3}, x)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    target = 0.1 * torch.randn(80, 3, generator=g)
    for step in range(8):
        for k in range(5):  # train on every frame, the canonical one included
            out = d.deform(x, k, quats=q)
            loss = (out.dx - target).abs().mean() + out.dq.abs().mean()
            if loss.requires_grad:
                opt.zero_grad()
                loss.backward()
                opt.step()
    assert float(d.deform(x, 1, quats=q).dx.detach().abs().mean()) > 1e-3  # it did learn
    assert_all_zero(d.deform(x, 3, quats=q))
    assert_all_zero(d.deform(x, torch.tensor(3), quats=q))
    batch = deform_batch(d, x, [0, 3, 4], quats=q)
    assert torch.count_nonzero(batch.dx[1]) == 0 and torch.count_nonzero(batch.dq[1]) == 0
    assert torch.count_nonzero(batch.dx[0]) > 0
    if name == "mlp":  # per-Gaussian frame indices
        k = torch.tensor([3, 1] * 40)
        mixed = d.deform(x, k)
        assert torch.count_nonzero(mixed.dx[k == 3]) == 0 and torch.count_nonzero(mixed.dx[k == 1]) > 0
        assert torch.allclose(mixed.dx[k == 1], d.deform(x, 1).dx[k == 1], atol=1e-6)


# ------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("variant", variants(), ids=lambda v: f"{v[0]}-{v[1].get('time_input', v[1].get('motion', 'time'))}")
def test_gradients_reach_every_parameter(variant):
    name, params, setup, t = variant
    x, q = points(80)
    d = make_variant(name, params, setup, x)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(2)
    target = 0.2 * torch.randn(80, 3, generator=g)
    qt = torch.randn(80, 4, generator=g)
    # outputs start at zero, so gradients reach deeper layers step by step (LBS: bones must
    # move before the skinning matters, then the skinning MLP's output layer must be nonzero)
    for _ in range(3):
        opt.zero_grad()
        out = d.deform(x, t, quats=q)
        loss = (out.dx - target).square().mean() + (q + out.dq - qt).square().mean()
        if out.ds is not None:
            loss = loss + (out.ds - 0.1).square().mean()
        loss.backward()
        opt.step()
    for pname, p in d.named_parameters():
        if pname == "codes":  # only the codes of the frame used get a gradient
            assert p.grad[t].abs().sum() > 0 and p.grad[setup["canonical"]].abs().sum() == 0
        elif pname == "frame_params":  # a frame index (lbs per_frame) or a time between rows (motion_bases)
            assert (p.grad[t] if isinstance(t, int) else p.grad).abs().sum() > 0
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, pname


# ------------------------------------------------------------------------------- inputs
def test_mlp_time_forms_batches_and_chunks_agree():
    x, _ = points(50)
    d = build("mlp", width=32)
    randomize_(d)
    ref = d.deform(x, 0.3)
    for form in (torch.tensor(0.3), torch.full((50,), 0.3), torch.full((50, 1), 0.3)):
        assert torch.allclose(d.deform(x, form).dx, ref.dx, atol=1e-6)
    per = d.deform(x, torch.linspace(0, 1, 50))
    assert torch.allclose(per.dx[10], d.deform(x[10:11], float(torch.linspace(0, 1, 50)[10])).dx[0], atol=1e-6)
    batch = deform_batch(d, x, torch.tensor([0.1, 0.3, 0.9]))
    assert batch.dx.shape == (3, 50, 3) and batch.ds.shape == (3, 50, 3)
    assert torch.allclose(batch.dx[1], ref.dx, atol=1e-6) and torch.allclose(batch.dq[1], ref.dq, atol=1e-6)
    assert not torch.allclose(batch.dx[0], batch.dx[2])
    # chunked evaluation (activation checkpointing under autograd) gives the same values and grads
    chunked = build("mlp", width=32, chunk=7)
    chunked.load_state_dict(d.state_dict())
    a, b = d.deform(x, 0.6), chunked.deform(x, 0.6)
    assert torch.allclose(a.dx, b.dx, atol=1e-6) and torch.allclose(a.ds, b.ds, atol=1e-6)
    (a.dx.sum() + a.dq.square().sum()).backward()
    (b.dx.sum() + b.dq.square().sum()).backward()
    for (n1, p1), (_, p2) in zip(d.named_parameters(), chunked.named_parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-5), n1
    with torch.no_grad():
        assert torch.allclose(deform_batch(chunked, x, [0.1, 0.9]).dx, deform_batch(d, x, [0.1, 0.9]).dx, atol=1e-6)


def test_input_errors_are_clear():
    x, _ = points(10)
    fc = build("mlp", width=16, time_input="frame_code")
    with pytest.raises(RuntimeError, match="setup"):
        fc.deform(x, 0)
    fc.setup(num_frames=3, canonical=0)
    with pytest.raises(TypeError, match="frame index"):
        fc.deform(x, 0.5)
    with pytest.raises(IndexError):
        fc.deform(x, 3)
    with pytest.raises(IndexError):
        fc.setup(canonical=5)
    with pytest.raises(RuntimeError, match="setup"):
        build("lbs").deform(x, 0.5)
    with pytest.raises(ValueError, match="num_frames"):
        build("lbs", motion="per_frame").setup(canonical_means=x)


# ---------------------------------------------------------------------------------- LBS
def test_lbs_single_bone_is_an_exact_rigid_transform():
    """One bone, per-frame motion: every Gaussian follows x -> R (x - c) + c + t, q -> r q."""
    x, q = points(40)
    d = build("lbs", num_bones=1, motion="per_frame")
    d.setup(canonical_means=x, num_frames=2, canonical=0)
    assert torch.allclose(d.pivots[0], x.mean(0), atol=1e-6)  # k-means with one cluster
    r = torch.tensor([0.9, 0.3, -0.2, 0.25])
    r = r / r.norm()
    t = torch.tensor([0.1, -0.3, 0.2])
    with torch.no_grad():
        d.frame_params[1, 0, :4] = r - torch.tensor([1.0, 0, 0, 0])  # residual: exact r (unit)
        d.frame_params[1, 0, 4:] = t
    out = d.deform(x, 1, quats=q)
    R = quat_to_matrix(r)
    c = d.pivots[0]
    assert torch.allclose(x + out.dx, (x - c) @ R.T + c + t, atol=1e-6)
    assert torch.allclose(q + out.dq, quat_multiply(r.expand_as(q), q), atol=1e-6)
    assert torch.allclose(d.deform(x, 1).dq, (r - torch.tensor([1.0, 0, 0, 0])).expand(40, 4), atol=1e-6)
    # half way in time: linear interpolation of the table
    half = d.deform(x, 0.5, quats=q)
    assert 0 < float(half.dx.detach().norm(dim=-1).mean()) < float(out.dx.detach().norm(dim=-1).mean())


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0, 0], [3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    pts = (centres[:, None] + 0.1 * torch.randn(4, 50, 3, generator=g)).reshape(-1, 3)
    found = kmeans(pts, 4, seed=3)
    dist = torch.cdist(centres, found)
    assert float(dist.min(dim=1).values.max()) < 0.1
    assert torch.equal(kmeans(pts, 4, seed=3), found)  # deterministic


def test_lbs_skinning_weights_follow_bone_distance_at_init():
    x, _ = points(200)
    d = build("lbs", num_bones=5)
    d.setup(canonical_means=x)
    w = d.skinning_weights(x)
    assert w.shape == (200, 5) and torch.allclose(w.sum(-1), torch.ones(200), atol=1e-6)
    nearest = torch.cdist(x, d.pivots).argmin(dim=1)
    assert (w.argmax(dim=1) == nearest).all()


# -------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("variant", variants(), ids=lambda v: f"{v[0]}-{v[1].get('time_input', v[1].get('motion', 'time'))}")
def test_safetensors_round_trip(variant, tmp_path):
    name, params, setup, t = variant
    x, q = points(30)
    d = make_variant(name, params, setup, x)
    randomize_(d, seed=5)
    path = tmp_path / "deformer.safetensors"
    save_file({k: v.contiguous() for k, v in d.state_dict().items()}, str(path))
    fresh = build(name, **params)  # no setup: tables are sized from the file
    fresh.load_state_dict(load_file(str(path)))
    a, b = d.deform(x, t, quats=q), fresh.deform(x, t, quats=q)
    assert torch.equal(a.dx, b.dx) and torch.equal(a.dq, b.dq)
    assert torch.count_nonzero(a.dx) > 0
    if "canonical" in setup:  # the canonical frame survives the round trip
        assert_all_zero(fresh.deform(x, setup["canonical"], quats=q))


# ------------------------------------------------------------- fitting articulated motion
@pytest.fixture(scope="module")
def articulated():
    """Canonical (t=0) Gaussians of the articulated scene -- the 3-segment arm plus a sample
    of the static base and ground -- and their true positions / rotations at 17 times."""
    from fourreal_synthetic.scenes import make_scene

    scene = make_scene("articulated")
    sl = scene.part_slices()
    g = torch.Generator().manual_seed(0)
    sub = torch.cat([
        torch.arange(sl["arm"].start, sl["arm"].stop)[::2],
        torch.arange(sl["base"].start, sl["base"].stop)[torch.randperm(len(range(sl["base"].start, sl["base"].stop)), generator=g)[:60]],
        torch.arange(sl["ground"].start, sl["ground"].stop)[torch.randperm(len(range(sl["ground"].start, sl["ground"].stop)), generator=g)[:60]],
    ])
    times = torch.linspace(0, 1, 17)
    states = [scene.gaussians(float(t)) for t in times]
    X = torch.stack([s.means[sub] for s in states])
    Q = torch.stack([s.quats[sub] for s in states])
    moving = ~scene.static_mask()[sub]
    return {"scene": scene, "sub": sub, "times": times, "X": X, "Q": Q, "moving": moving,
            "x0": X[0], "q0": Q[0]}


def _fit_positions(d, data, steps: int, lr: float, times_per_step: int = 4):
    torch.manual_seed(0)
    x0, q0, X, Q, times = data["x0"], data["q0"], data["X"], data["Q"], data["times"]
    opt = torch.optim.Adam(d.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1 ** (1 / steps))
    for _ in range(steps):
        idx = torch.randperm(len(times))[:times_per_step]
        out = deform_batch(d, x0, times[idx], quats=q0)
        qn = torch.nn.functional.normalize(q0 + out.dq, dim=-1)
        loss = (x0 + out.dx - X[idx]).abs().mean() + 0.1 * (1 - (qn * Q[idx]).sum(-1).abs()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _errors(d, data):
    """(mean position error of moving / static Gaussians, mean rotation error, all relative
    to the true motion) at 33 times -- including times between the training ones."""
    scene, sub = data["scene"], data["sub"]
    x0, q0, moving = data["x0"], data["q0"], data["moving"]
    tt = torch.linspace(0, 1, 33)
    with torch.no_grad():
        Xt = torch.stack([scene.gaussians(float(t)).means[sub] for t in tt])
        Qt = torch.stack([scene.gaussians(float(t)).quats[sub] for t in tt])
        out = deform_batch(d, x0, tt, quats=q0)
    amp = (Xt - x0)[:, moving].norm(dim=-1).mean()
    err = (x0 + out.dx - Xt).norm(dim=-1)
    ang = lambda a, b: 2 * torch.acos((a * b).sum(-1).abs().clamp(max=1))  # noqa: E731
    true_rot = ang(q0.expand_as(Qt), Qt)[:, moving].mean()
    rot_err = ang(torch.nn.functional.normalize(q0 + out.dq, dim=-1), Qt)[:, moving].mean()
    return (float(err[:, moving].mean() / amp), float(err[:, ~moving].mean() / amp), float(rot_err / true_rot))


def test_lbs_fits_articulated_motion(articulated):
    d = build("lbs", num_bones=8)
    d.setup(canonical_means=articulated["x0"])
    before = _errors(d, articulated)
    assert before[0] == pytest.approx(1.0) and before[2] == pytest.approx(1.0)
    _fit_positions(d, articulated, steps=300, lr=1e-2)
    moving, static, rot = _errors(d, articulated)
    assert moving < 0.10 and static < 0.05 and rot < 0.15, (moving, static, rot)


def test_hexplane_fits_articulated_motion(articulated):
    torch.manual_seed(0)
    d = build("hexplane", resolution=16, time_resolution=17, predict_scale=False)
    d.setup(canonical_means=articulated["x0"])
    _fit_positions(d, articulated, steps=400, lr=1e-2)
    moving, static, rot = _errors(d, articulated)
    assert moving < 0.15 and static < 0.05 and rot < 0.5, (moving, static, rot)


def test_mlp_fits_articulated_motion(articulated):
    torch.manual_seed(0)
    d = build("mlp", width=64, predict_scale=False)  # the paper's depth / encodings, narrower
    _fit_positions(d, articulated, steps=1000, lr=2e-3)
    moving, static, rot = _errors(d, articulated)
    assert moving < 0.10 and static < 0.05 and rot < 0.5, (moving, static, rot)


# ------------------------------------------------------------------------ rendered fit
def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(max(float((a - b).square().mean()), 1e-10))


@pytest.mark.parametrize("name,params,steps,lr,floor", [
    ("lbs", {"num_bones": 8}, 150, 1e-2, 25.0),
    ("mlp", {"width": 64, "predict_scale": False}, 250, 3e-3, 23.5),
    ("hexplane", {"resolution": 16, "time_resolution": 9, "predict_scale": False}, 250, 3e-2, 25.0),
])
def test_rendered_fit_of_articulated_motion(name, params, steps, lr, floor):
    """Fit the deformer through the torch rasterizer (32x32, 3 views, 9 times) with the
    canonical Gaussians fixed; the PSNR must rise well above the undeformed render's."""
    from fourreal_synthetic.scenes import default_rasterizer, make_scene

    torch.manual_seed(0)
    scene = make_scene("articulated")
    sl = scene.part_slices()
    idx = torch.arange(sl["base"].start, sl["arm"].stop)  # base + arm (the ground only fills pixels)
    cams = scene.orbit(3, 32, 32, arc_deg=120, radius=2.6, start_azimuth_deg=-150)
    raster = default_rasterizer()
    bg = scene.background.expand(3, 3)
    render = lambda gs: raster.rasterize(gs, cams, background=bg, render_depth=False).rgb  # noqa: E731
    times = torch.linspace(0, 1, 9)
    with torch.no_grad():
        targets = [render(scene.gaussians(float(t)).subset(idx)) for t in times]
    can: GaussianParams = scene.gaussians(0.0).subset(idx)
    d = build(name, **params)
    d.setup(canonical_means=can.means)

    def mean_psnr():  # t = 0 and t = 1 equal the canonical pose: leave them out
        with torch.no_grad():
            return sum(
                _psnr(render(can.deformed(d.deform(can.means, float(t), quats=can.quats))), tg)
                for t, tg in list(zip(times, targets))[1:-1]
            ) / 7

    before = mean_psnr()
    opt = torch.optim.Adam(d.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1 ** (1 / steps))
    for _ in range(steps):
        k = int(torch.randint(len(times), (1,)))
        img = render(can.deformed(d.deform(can.means, float(times[k]), quats=can.quats)))
        loss = (img - targets[k]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    after = mean_psnr()
    assert after > floor and after > before + 3.0, (before, after)


# ------------------------------------------------------------------ canonical time (w_t)
@pytest.mark.parametrize("name,params", [("mlp", {"width": 32}), ("lbs", {"num_bones": 4}),
                                         ("lbs", {"num_bones": 4, "motion": "per_frame"}),
                                         ("hexplane", {"resolution": 8, "time_resolution": 5, "features": 4}),
                                         ("motion_bases", {"num_bases": 4})])
def test_temporal_deformation_exactly_zero_at_canonical_time(name, params):
    """setup(canonical=t_c): w_t(x, t_c) is exactly zero whatever the weights (the Deformer
    contract), elsewhere it is not; the mlp's deform_pair agrees with deform."""
    x, q = points(60)
    t_c = float(torch.tensor(0.4))  # as the motion stage passes it: a float32 frame time
    d = make_variant(name, params, {"num_frames": 6, "canonical": t_c}, x)
    randomize_(d, seed=3)
    assert_all_zero(d.deform(x, t_c, quats=q))
    assert torch.count_nonzero(d.deform(x, 0.9, quats=q).dx) > 0
    batch = deform_batch(d, x, [0.9, t_c], quats=q)
    assert torch.count_nonzero(batch.dx[1]) == 0 and torch.count_nonzero(batch.dq[1]) == 0
    assert torch.allclose(batch.dx[0], d.deform(x, 0.9, quats=q).dx, atol=1e-5)
    if hasattr(d, "deform_pair"):
        a, b = d.deform_pair(x, 0.9, 0.7, quats=q)
        assert torch.allclose(a.dx, d.deform(x, 0.9).dx, atol=1e-5) and torch.allclose(b.dx, d.deform(x, 0.7).dx, atol=1e-5)
        assert a.dx.requires_grad and not b.dx.requires_grad
        a, b = d.deform_pair(x, t_c, 0.9, quats=q)
        assert torch.count_nonzero(a.dx) == 0


# ------------------------------------------------------------------------- motion bases
def test_motion_bases_init_from_tracks_recovers_rigid_motions():
    """Two clusters moving rigidly (one turning and translating, one still): init_from_tracks
    puts each cluster's motion in its basis, so w_t moves every point of a cluster -- tracked
    or not -- to where it truly is, exactly zero at t_c."""
    from fourreal_synthetic.scenes import axis_angle_to_matrix

    g = torch.Generator().manual_seed(0)
    a = torch.randn(80, 3, generator=g) * 0.2 + torch.tensor([2.0, 0.0, 0.0])
    b = torch.randn(80, 3, generator=g) * 0.2 - torch.tensor([2.0, 0.0, 0.0])
    x = torch.cat([a, b])
    T, t_c = 5, 0.25
    times = torch.linspace(0, 1, T)
    truth = []
    for t in times.tolist():
        R = axis_angle_to_matrix((0.0, 0.0, 1.0), 1.2 * (t - t_c)).float()
        moved = (a - a.mean(0)) @ R.T + a.mean(0) + torch.tensor([1.5 * (t - t_c), 0.0, 0.3 * (t - t_c)])
        truth.append(torch.cat([moved, b]))
    truth = torch.stack(truth, 1)  # [N,T,3]
    d = build("motion_bases", num_bases=2, weight_mlp_width=0, weight_sigma=0.1)  # near-hard weights
    d.setup(num_frames=T, canonical=t_c, canonical_means=x)
    tracked = torch.arange(0, 160, 4)  # a quarter of the points carry tracks
    vis = torch.ones(len(tracked), T, dtype=torch.bool)
    vis[::3, 0] = False
    assert d.init_from_tracks(x[tracked], truth[tracked], vis) == 2 * T
    for k, t in enumerate(times.tolist()):
        dx = d.deform(x, t).dx.detach()
        assert float((x + dx - truth[:, k]).norm(dim=-1).max()) < 2e-3, t
    assert_all_zero(d.deform(x, t_c))
    with pytest.raises(TypeError, match="temporal deformer"):
        d.setup(canonical=2)
