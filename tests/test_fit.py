"""The fitting engine's contracts: every step count scaled once by iterations_scale, kNN by
KD-tree equal to brute force and shared by the losses, losses refused by `requires`, the
Deformer contract checked where a stage sets a deformer up, renamed recipe keys."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import typing

import pytest
import torch

from fourreal_core.config import ComponentSpec, Ramp, scale_steps, step_count_marker
from fourreal_core.errors import FourRealError
from fourreal_core.recipe import component_from_plain
from fourreal_core.registry import get_registry
from fourreal_core.run import CheckpointStore, RunLog, StageContext

# int fields that count iterations of a fit must be typed Steps; these count something else
NOT_FIT_STEPS = {
    "num_inference_steps",  # diffusion sampling steps of a prior's generate()
    "kmeans_iters",  # k-means iterations when placing LBS bones
    "steps", "warmup_steps", "save_every", "log_every",  # train-prior's own loop (no iterations_scale)
}
STEP_NAME = re.compile(r"(^|_)(iterations|iters|steps|every|start|stop|interval)$")


def _config_classes():
    """The configs of what a fit builds: the canonical and motion stages and every registered
    component kind they take."""
    reg = get_registry()
    seen = {f"stage:{n}": reg.get("stage", n).config for n in ("canonical", "motion")}
    for kind in ("representation", "deformer", "loss", "scheduler", "rasterizer"):
        for name in reg.names(kind):
            cls = reg.get(kind, name).config
            if cls is not None:
                seen[f"{kind}:{name}"] = cls
    return seen


def _walk(cls, prefix=""):
    """(path, annotation) of every field of a config dataclass, nested ones included."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        ann = hints.get(f.name)
        yield f"{prefix}{f.name}", ann
        base = ann
        for _ in range(3):  # Optional[...] / list[...] of a dataclass
            args = [a for a in typing.get_args(base) if dataclasses.is_dataclass(a)]
            if args:
                base = args[0]
                break
            inner = [a for a in typing.get_args(base) if a is not type(None)]
            base = inner[0] if len(inner) == 1 else base
        if dataclasses.is_dataclass(base) and isinstance(base, type):
            yield from _walk(base, f"{prefix}{f.name}.")


def test_every_iteration_count_is_a_steps_field():
    """A test that finds every step count: an int field named like one is typed Steps."""
    untyped = []
    found = 0
    for where, cls in _config_classes().items():
        for path, ann in _walk(cls):
            leaf = path.rsplit(".", 1)[-1]
            if step_count_marker(ann) is not None:
                found += 1
            elif ann in (int, typing.Optional[int]) and STEP_NAME.search(leaf) and leaf not in NOT_FIT_STEPS:
                untyped.append(f"{where}: {path}")
    assert not untyped, f"step counts not typed Steps (iterations_scale would miss them): {untyped}"
    assert found >= 8  # phases, densify start/stop/every/reset, SH interval, checkpoint_every x2


def test_scale_steps_reaches_every_count_once():
    """The motion stage's default config under iterations_scale 0.1: phases, densification
    window and interval (with its floor), SH-degree interval, checkpoint interval, ramps."""
    reg = get_registry()
    spec = component_from_plain("stage", {"name": "motion", "params": {
        "losses": [{"name": "align", "params": {"weight": [1000, 0.0, 1.0, 3000]}}],
        "representation": {"name": "gaussians", "params": {"densify": {"every": 40}}},
    }}, reg)
    cfg = scale_steps(spec.params, 0.1)
    assert [p.iterations for p in cfg.scheduler.params.phases] == [1000, 500, 2000, 500]
    d = cfg.representation.params.densify
    assert (d.start, d.stop, d.reset_opacity_every) == (50, 1500, 300)
    assert d.every == 10  # 40 * 0.1 = 4, floored at MIN_DENSIFY_EVERY = 10 (the declared reason)
    assert cfg.representation.params.sh_degree_interval == 100
    assert cfg.checkpoint_every == 50
    w = cfg.losses[0].params.weight
    assert isinstance(w, Ramp) and (w.start, w.end) == (100, 300)
    # the original is untouched (scaling happens once, on a copy), and scale 1 is the identity
    assert spec.params.scheduler.params.phases[0].iterations == 10000
    assert scale_steps(spec.params, 1.0) is spec.params
    # the scheduler built from the scaled config does not scale again
    sched = cfg.scheduler.build(reg)
    assert sched.total_steps == 4000 and sched.phase_named("growth").start == 1000
    assert isinstance(cfg.scheduler, ComponentSpec)


# ------------------------------------------------------------------------------- kNN
@pytest.mark.parametrize("n,k,dup", [(500, 8, False), (3000, 20, False), (300, 5, True)])
def test_kdtree_knn_equals_brute_force(n, k, dup):
    from fourreal_losses.knn import knn, knn_brute_force

    g = torch.Generator().manual_seed(n)
    pts = torch.randn(n, 3, generator=g) * torch.tensor([3.0, 1.0, 0.2])
    if dup:  # duplicated points (clones sit exactly on their source)
        pts[n // 2:] = pts[: n - n // 2]
    a, b = knn(pts, k), knn_brute_force(pts, k)
    assert a.index.shape == b.index.shape == (n, k)
    assert torch.allclose(a.dist2, b.dist2, rtol=1e-5, atol=1e-6)
    assert not bool((a.index == torch.arange(n)[:, None]).any())  # self excluded
    exact = ((pts[a.index] - pts[:, None]) ** 2).sum(-1)  # the indices give the distances
    assert torch.allclose(exact, a.dist2, rtol=1e-5, atol=1e-6)
    if not dup:  # no ties: the same neighbours
        assert torch.equal(a.index, b.index)


def test_shared_knn_computes_once_per_set_for_all_losses():
    from fourreal_core.interfaces import Deformation, GaussianParams
    from fourreal_losses.knn import SharedKNN, knn

    calls = []

    def counting(points, k):
        calls.append(k)
        return knn(points, k)

    reg = get_registry()
    rigid = component_from_plain("loss", {"name": "rigid", "params": {"k": 8}}, reg).build(reg)
    rot = component_from_plain("loss", {"name": "rot", "params": {"k": 6}}, reg).build(reg)
    shared = SharedKNN(counting)
    n = 400
    x0 = torch.randn(n, 3)
    can = GaussianParams(x0, torch.nn.functional.normalize(torch.randn(n, 4), dim=-1), torch.ones(n, 3),
                         torch.ones(n), torch.ones(n, 3))
    d = Deformation(torch.randn(n, 3) * 0.01, torch.randn(n, 4) * 0.01)
    dp = Deformation(torch.zeros(n, 3), torch.zeros(n, 4))
    for step, version in ((0, 0), (1, 0), (2, 0), (3, 1)):
        inputs = {"deformation": d, "deformation_prev": dp, "canonical": can, "gaussians_version": version,
                  "step": step, "knn": shared}
        a, b = rigid(inputs), rot(inputs)
        own = {k: v for k, v in inputs.items() if k != "knn"}
        assert torch.allclose(a, rigid.__class__(rigid.cfg)(own)) and torch.allclose(b, rot.__class__(rot.cfg)(own))
    assert calls == [8, 8]  # one search per Gaussian set (versions 0 and 1), for both losses


# ------------------------------------------------------------- engine: contracts
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from fourreal_synthetic.stage import make_dataset

    root = tmp_path_factory.mktemp("fit")
    make_dataset("garden", root / "data", width=32, height=24, num_reference_frames=4, num_freeze_frames=4,
                 num_test_views=1, num_test_static_views=1, seed=0, write_videos=False)
    return root


def _canonical(root, registry, name, **params):
    data = root / "data"
    base = {"freeze_time": str(data / "freeze_time" / "transforms.json"),
            "init_points": str(data / "init_points.npz"), "refine_cameras": False}
    spec = component_from_plain("stage", {"name": "canonical", "params": {**base, **params}}, registry)
    out = root / name
    out.mkdir()
    spec.build(registry).run(_ctx(root, registry, "canonical", 1, out, 0.001, root / f"ck_{name}"))
    return out


def _ctx(root, registry, stage, index, out, scale, checkpoints):
    """A stage context on the CPU with the torch rasterizer, writing into ``out``."""
    return StageContext(name=stage, index=index, run_dir=root, out_dir=out, recipe_dir=root,
                        device=torch.device("cpu"), seed=0, iterations_scale=scale,
                        checkpoints=CheckpointStore(checkpoints), log=RunLog(root / "log.jsonl"),
                        registry=registry, rasterizer_spec=component_from_plain("rasterizer", {"name": "torch"}, registry))


def test_a_deformer_breaking_the_contract_is_refused_in_one_line(tiny, registry):
    """The toy plugin's `shift` deformer (x += amount * t, a plain Deformer) is no nn.Module."""
    with pytest.raises(FourRealError) as e:
        _canonical(tiny, registry, "bad_deformer", w_mv={"name": "shift", "params": {}})
    msg = str(e.value)
    assert "\n" not in msg and "params.w_mv" in msg and "'shift' is not a torch.nn.Module" in msg, msg


@contextlib.contextmanager
def _test_loss(registry, name, cls):
    """Register the L1-configured loss class ``cls`` as ``name`` (as a plugin would) for a block."""
    import types

    from fourreal_core import hookimpl
    from fourreal_losses.plugin import L1Config

    @hookimpl
    def fourreal_register(registry):
        registry.add("loss", name, lambda cfg: cls(cfg), config=L1Config, description="test")

    mod = types.ModuleType(f"{name}_plugin")
    mod.fourreal_register = fourreal_register
    registry.register_module(mod, source=f"tests:{name}")
    try:
        yield
    finally:
        registry.unregister_source(f"tests:{name}")


def test_a_loss_the_stage_cannot_feed_is_refused_by_requires(tiny, registry):
    from fourreal_losses.recon import L1Loss

    class DepthLoss(L1Loss):
        requires = ("render", "target", "depth_prior")

    with _test_loss(registry, "depth_test", DepthLoss):
        phases = [{"name": "a", "iterations": 1000, "losses": ["l1", "depth_test"], "train": ["gaussians"],
                   "deform": False}]
        with pytest.raises(FourRealError) as e:
            _canonical(tiny, registry, "bad_loss", losses=[{"name": "l1"}, {"name": "depth_test"}],
                       scheduler={"name": "stagewise", "params": {"phases": phases}})
    assert "loss 'depth_test' needs depth_prior, which stage 'canonical' does not provide" in str(e.value)


def test_a_downscale_phase_renders_and_supervises_at_the_smaller_size(tiny, registry):
    """Coarse-to-fine: a `downscale: 2` phase renders with cameras scaled to half the frame
    size against area-averaged frames; the next phase is back at full size."""
    from fourreal_losses.recon import L1Loss

    seen = []

    class Probe(L1Loss):
        def __call__(self, inputs):
            seen.append((tuple(inputs["render"].rgb.shape), tuple(inputs["target"].shape)))
            return super().__call__(inputs)

    with _test_loss(registry, "probe_test", Probe):
        phases = [{"name": "coarse", "iterations": 2000, "losses": ["probe_test"], "train": ["gaussians"],
                   "deform": False, "downscale": 2},
                  {"name": "fine", "iterations": 2000, "losses": ["probe_test"], "train": ["gaussians"],
                   "deform": False}]
        _canonical(tiny, registry, "downscale", losses=[{"name": "probe_test"}],
                   scheduler={"name": "stagewise", "params": {"phases": phases}})
    (rc, tc), (rf, tf) = seen[0], seen[-1]
    assert rc == tc and rf == tf, seen
    assert rf[1] % 2 == 0 and rf[2] % 2 == 0, rf
    assert rc[1:3] == (rf[1] // 2, rf[2] // 2), (rc, rf)
    assert len(seen) == 4, seen
    from fourreal_stages.fit import downscaled

    x = torch.arange(16.0).reshape(1, 4, 4, 1)
    assert downscaled(x, 2, 2)[0, :, :, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]
    m = torch.zeros(1, 4, 4, 1, dtype=torch.bool)
    m[0, :2, :2] = True
    m[0, 2, 2] = True
    assert downscaled(m, 2, 2)[0, :, :, 0].tolist() == [[True, False], [False, False]]


def test_random_training_background_is_a_new_colour_every_step(tiny, registry):
    """`train_background: random` renders each training step over a fresh colour (the
    render's uncovered pixels show it); `fixed` keeps the data's background."""
    from fourreal_losses.recon import L1Loss

    seen = []

    class Probe(L1Loss):
        def __call__(self, inputs):
            seen.append(inputs["background"].clone())
            return super().__call__(inputs)

    phases = [{"name": "a", "iterations": 4000, "losses": ["probe_bg"], "train": ["gaussians"], "deform": False}]
    with _test_loss(registry, "probe_bg", Probe):
        _canonical(tiny, registry, "bg_random", losses=[{"name": "probe_bg"}], train_background="random",
                   scheduler={"name": "stagewise", "params": {"phases": phases}})
        random_bgs = list(seen)
        seen.clear()
        _canonical(tiny, registry, "bg_fixed", losses=[{"name": "probe_bg"}],
                   scheduler={"name": "stagewise", "params": {"phases": phases}})
    assert len(random_bgs) == 4 and len(seen) == 4
    assert len({tuple(b.tolist()) for b in random_bgs}) == 4  # a new colour each step
    assert all(bool(((b >= 0) & (b <= 1)).all()) for b in random_bgs)
    assert len({tuple(b.tolist()) for b in seen}) == 1  # fixed: the data's colour throughout


def test_supervision_masks_reach_the_losses_and_moving_region_masks_do_not(tiny, registry):
    """A freeze-time video with mask_path gives every training view its ``mask`` input (recon
    losses average over it); dynamic_mask_path (the moving region) is for scores only."""
    from fourreal_core.types import PosedVideo
    from fourreal_losses.recon import L1Loss
    from fourreal_formats.transforms import load_transforms, write_transforms

    src = load_transforms(tiny / "data" / "freeze_time" / "transforms.json")
    n, h, w = len(src), src.video.height, src.video.width
    sup = torch.zeros(n, h, w, 1)
    sup[:, : h // 2] = 1.0
    posed = PosedVideo(src.video, src.cameras, times=src.times, canonical_view=src.canonical_view, masks=sup,
                       dynamic_masks=torch.ones(n, h, w, 1))
    write_transforms(tiny / "masked" / "transforms.json", posed)
    seen = []

    class Probe(L1Loss):
        def __call__(self, inputs):
            seen.append(inputs.get("mask"))
            return super().__call__(inputs)

    phases = [{"name": "a", "iterations": 3000, "losses": ["probe_mask"], "train": ["gaussians"], "deform": False}]
    with _test_loss(registry, "probe_mask", Probe):
        _canonical(tiny, registry, "masked_run", losses=[{"name": "probe_mask"}],
                   freeze_time=str(tiny / "masked" / "transforms.json"),
                   scheduler={"name": "stagewise", "params": {"phases": phases}})
    assert len(seen) == 3 and all(m is not None and tuple(m.shape) == (1, h, w, 1) for m in seen)
    assert all(float(m[0, : h // 2].min()) == 1.0 and float(m[0, h // 2:].max()) == 0.0 for m in seen)


def test_a_phase_downscale_below_one_is_refused(tmp_path):
    from fourreal_stages.scheduler import PhaseConfig

    with pytest.raises(ValueError, match="downscale must be an integer >= 1, got 0"):
        PhaseConfig(name="a", iterations=10, downscale=0)


def test_a_loss_no_phase_activates_is_refused_instead_of_silently_never_training(tiny, registry):
    """Phases name their losses; a loss added to `losses` but to no phase would never act."""
    phases = [{"name": "warmup", "iterations": 1000, "losses": ["l1"], "train": ["gaussians"], "deform": False}]
    with pytest.raises(FourRealError) as e:
        _canonical(tiny, registry, "unused_loss", losses=[{"name": "l1"}, {"name": "ssim"}],
                   scheduler={"name": "stagewise", "params": {"phases": phases}})
    msg = str(e.value)
    assert "\n" not in msg and "loss 'ssim' is active in no phase of stage 'canonical'" in msg, msg
    assert "phases: warmup" in msg, msg


def test_renamed_recipe_keys_fail_in_one_line(tmp_path):
    from fourreal_core.recipe import load_recipe

    (tmp_path / "r.yaml").write_text("name: old\nstages:\n  - name: canonical\n    params:\n"
                                     "      deformer: {name: mlp, params: {}}\n")
    with pytest.raises(FourRealError) as e:
        load_recipe(tmp_path / "r.yaml", [], get_registry())
    assert "'deformer' was renamed 'w_mv'" in str(e.value) and "\n" not in str(e.value)


def test_neighbourhood_losses_on_a_random_subset_are_unbiased():
    """rigid/rot with `sample: 0.25` average over a fresh random quarter of the Gaussians each
    step: different steps differ, and their mean over steps is the full loss."""
    from fourreal_core.interfaces import Deformation, GaussianParams

    reg = get_registry()
    n = 600
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, 3, generator=g)
    can = GaussianParams(x0, torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
                         torch.ones(n, 3), torch.ones(n), torch.ones(n, 3))
    d = Deformation(torch.randn(n, 3, generator=g) * 0.05, torch.randn(n, 4, generator=g) * 0.05)
    dp = Deformation(torch.zeros(n, 3), torch.zeros(n, 4))
    for name in ("rigid", "rot"):
        full = component_from_plain("loss", {"name": name, "params": {"k": 6}}, reg).build(reg)
        part = component_from_plain("loss", {"name": name, "params": {"k": 6, "sample": 0.25}}, reg).build(reg)
        base = {"deformation": d, "deformation_prev": dp, "canonical": can, "gaussians_version": 0}
        ref = float(full({**base, "step": 0}))
        vals = [float(part({**base, "step": s})) for s in range(200)]
        assert len(set(vals)) > 100  # a fresh subset every step
        assert abs(sum(vals) / len(vals) - ref) < 0.03 * ref, (name, ref, sum(vals) / len(vals))
    with pytest.raises(FourRealError, match="sample must be in"):
        component_from_plain("loss", {"name": "rigid", "params": {"sample": 0.0}}, reg)


def test_growth_budget_caps_the_growth_phase_relative_to_the_canonical_count(tiny, registry):
    """``growth_budget``: the growth phase adds at most that fraction of the canonical count;
    with every Gaussian above the threshold (threshold 0) it would otherwise add one per
    canonical Gaussian and keep densifying them."""
    from fourreal_gaussians.ply import read_ply

    canon = _canonical(tiny, registry, "for_growth")
    n_c = len(read_ply(canon / "canonical.ply").means)
    data = tiny / "data"
    phases = [{"name": "motion", "iterations": 3000, "losses": ["align"], "train": ["deformer"], "frames": "reference"},
              {"name": "growth", "iterations": 3000, "losses": ["align"], "train": ["new_gaussians", "deformer"],
               "densify": True, "frames": "reference"}]
    counts = {}
    for budget in (None, 0.1):
        spec = component_from_plain("stage", {"name": "motion", "params": {
            "reference": str(data / "reference" / "transforms.json"), "freeze_time": str(data / "freeze_time" / "transforms.json"),
            "canonical": str(canon / "canonical.ply"), "growth_grad_threshold": 0.0, "growth_budget": budget,
            "losses": [{"name": "align"}], "scheduler": {"name": "stagewise", "params": {"phases": phases}}}}, registry)
        out = tiny / f"motion_{budget}"
        out.mkdir()
        spec.build(registry).run(_ctx(tiny, registry, "motion", 2, out, 0.01, tiny / f"ck_motion_{budget}"))
        counts[budget] = json.loads((out / "metrics.json").read_text())["num_gaussians"]
    assert counts[0.1] <= int(n_c * 1.1), (counts, n_c)
    assert counts[None] > int(n_c * 1.1), (counts, n_c)


def test_region_deformer_moves_only_what_projects_into_the_mask():
    """``dynamic_region``'s RegionDeformer: w_t on the Gaussians whose centre projects into the
    mask, exactly zero elsewhere (outside the image, behind the camera, static pixels), and
    gradients reach w_t only through the selected ones."""
    from fourreal_core.types import Cameras
    from fourreal_deformers.configs import MLPDeformerConfig
    from fourreal_deformers.mlp import MLPDeformer
    from fourreal_formats.region import RegionDeformer, region_mask

    torch.manual_seed(0)
    inner = MLPDeformer(MLPDeformerConfig(time_input="time", width=16, depth=2))
    inner.setup(canonical=0.0)
    for p in inner.parameters():  # the zero-initialised heads would hide a wrong scatter
        torch.nn.init.normal_(p, std=0.3)
    vm = Cameras.look_at(torch.tensor([[0.0, -4.0, 0.0]]), torch.zeros(1, 3))[0]
    K = Cameras.intrinsics(20.0, 20.0, 10.0, 8.0)
    H, W = 16, 20
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[:, :10] = True  # the left half of the image changes
    region = RegionDeformer(inner, vm, K, mask)
    cam = Cameras(vm[None], K[None], W, H)
    pts = torch.randn(400, 3) * 1.5
    pts[:50, 1] = -6.0  # behind the camera
    xc = torch.cat([pts, torch.ones(400, 1)], 1) @ cam.viewmats[0].T
    u = 20.0 * xc[:, 0] / xc[:, 2] + 10.0
    v = 20.0 * xc[:, 1] / xc[:, 2] + 8.0
    want = (xc[:, 2] > 0) & (u >= 0) & (u < 10) & (v >= 0) & (v < H)
    sel = region.selected(pts)
    assert torch.equal(sel, want) and 20 < int(sel.sum()) < 350
    d = region.deform(pts, 0.7)
    full = inner.deform(pts, 0.7)
    assert torch.allclose(d.dx[sel], full.dx[sel]) and torch.allclose(d.dq[sel], full.dq[sel])
    assert bool((d.dx[~sel] == 0).all()) and bool((d.dq[~sel] == 0).all()) and float(d.dx[sel].detach().abs().sum()) > 0
    dd, dp = region.deform_pair(pts, 0.7, 0.6)
    assert torch.allclose(dd.dx, d.dx, atol=1e-6) and torch.allclose(dp.dx, region.deform(pts, 0.6).dx, atol=1e-6)
    d.dx[~sel].sum().backward()  # only unselected rows: no path to w_t
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in inner.parameters())
    region.deform(pts, 0.7).dx.sum().backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in inner.parameters())
    assert list(region.parameters()) == list(inner.parameters())
    # the mask is the union over frames, dilated by a fraction of the long side
    dyn = torch.zeros(3, 10, 20, dtype=torch.bool)
    dyn[1, 5, 5] = True
    assert int(region_mask(dyn, 0.0).sum()) == 1 and int(region_mask(dyn, 0.1).sum()) == 25


def test_dynamic_region_keeps_the_static_gaussians_still_and_survives_save_and_load(tiny, registry):
    """The motion stage with ``dynamic_region``: Gaussians outside the reference camera's dynamic
    region do not move at any time, those inside do, and the saved scene (``fourreal
    render/export/eval``) applies the same split."""
    from fourreal_formats.region import RegionDeformer
    from fourreal_formats.scene4d import Scene4D

    canon = _canonical(tiny, registry, "for_region")
    data = tiny / "data"
    phases = [{"name": "motion", "iterations": 4000, "losses": ["align"], "train": ["deformer"], "frames": "reference"}]
    spec = component_from_plain("stage", {"name": "motion", "params": {
        "reference": str(data / "reference" / "transforms.json"), "freeze_time": str(data / "freeze_time" / "transforms.json"),
        "canonical": str(canon / "canonical.ply"), "dynamic_region": 0.0, "losses": [{"name": "align"}],
        "scheduler": {"name": "stagewise", "params": {"phases": phases}}}}, registry)
    out = tiny / "motion_region"
    out.mkdir()
    ctx = StageContext(name="motion", index=2, run_dir=tiny, out_dir=out, recipe_dir=tiny,
                       device=torch.device("cpu"), seed=0, iterations_scale=0.01,
                       checkpoints=CheckpointStore(tiny / "ck_motion_region"), log=RunLog(tiny / "log.jsonl"),
                       registry=registry, rasterizer_spec=component_from_plain("rasterizer", {"name": "torch"}, registry))
    spec.build(registry).run(ctx)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 < metrics["dynamic_region_gaussians"] < 1.0 and 0.0 < metrics["dynamic_region_pixels"] < 1.0, metrics
    scene = Scene4D.load(out, registry)
    assert isinstance(scene.deformer, RegionDeformer) and (out / "motion_region.safetensors").exists()
    g = scene.model.params()
    sel = scene.deformer.selected(g.means)
    for t in (0.0, 1.0):
        d = scene.deformer.deform(g.means, t, quats=g.quats)
        assert bool((d.dx[~sel] == 0).all()) and bool((d.dq[~sel] == 0).all())
        assert float(d.dx[sel].abs().max()) > 0  # the moving ones were trained


# ------------------------------------------------------------------- typed phases (issue 30)
def test_the_growth_phase_is_the_flagged_one_else_the_one_named_growth():
    """``grow: true`` marks the growth phase whatever its name; a recipe written before the
    flag keeps growing in its phase named ``growth``; without either nothing grows."""
    from fourreal_core.interfaces import Phase
    from fourreal_stages.motion import growth_phase

    a, b = Phase("motion", 0, 10), Phase("spawn", 10, 20, grow=True)
    named = Phase("growth", 20, 30)
    assert growth_phase([a, b]) is b
    assert growth_phase([a, named]) is named
    assert growth_phase([a, named, b]) is b
    assert growth_phase([a, Phase("joint", 10, 20)]) is None
    # the scheduler carries the flag and the other phase fields (no options dict)
    reg = get_registry()
    sched = component_from_plain("scheduler", {"name": "stagewise", "params": {"phases": [
        {"name": "spawn", "iterations": 5, "losses": ["align"], "train": ["new_gaussians"], "grow": True,
         "frames": "reference", "deform": False, "downscale": 2}]}}, reg).build(reg)
    p = sched.phases[0]
    assert (p.grow, p.frames, p.deform, p.downscale) == (True, "reference", False, 2)


@pytest.mark.parametrize("grow", [True, False])
def test_a_phase_with_grow_true_grows_under_any_name(tiny, registry, grow):
    """The motion stage grows new Gaussians in the phase flagged ``grow`` (here named
    ``spawn``, no densify): the count rises above the canonical one, within the budget; the
    same phase without the flag adds none."""
    from fourreal_gaussians.ply import read_ply

    canon = tiny / "for_flag"
    if not canon.exists():
        _canonical(tiny, registry, "for_flag")
    n_c = len(read_ply(canon / "canonical.ply").means)
    data = tiny / "data"
    phases = [{"name": "motion", "iterations": 2000, "losses": ["align"], "train": ["deformer"], "frames": "reference"},
              {"name": "spawn", "iterations": 3000, "losses": ["align"], "train": ["new_gaussians", "deformer"],
               "grow": grow, "frames": "reference"}]
    spec = component_from_plain("stage", {"name": "motion", "params": {
        "reference": str(data / "reference" / "transforms.json"), "freeze_time": str(data / "freeze_time" / "transforms.json"),
        "canonical": str(canon / "canonical.ply"), "growth_grad_threshold": 0.0, "growth_budget": 0.1,
        "losses": [{"name": "align"}], "scheduler": {"name": "stagewise", "params": {"phases": phases}}}}, registry)
    out = tiny / f"spawn_{grow}"
    out.mkdir()
    spec.build(registry).run(_ctx(tiny, registry, "motion", 2, out, 0.01, tiny / f"ck_spawn_{grow}"))
    n = json.loads((out / "metrics.json").read_text())["num_gaussians"]
    if grow:
        assert n_c < n <= int(n_c * 1.1), (n, n_c)
    else:
        assert n == n_c, (n, n_c)


def test_the_canonical_stages_camera_lr_is_the_one_used(tiny, registry):
    """``camera_lr`` lives in the canonical stage's params and is what the camera corrections
    train with (the value the stage used to pass was ignored): at 0 the refined freeze-time
    cameras are the input ones exactly; at 1e-2 they move."""
    from fourreal_formats.transforms import load_transforms

    data = tiny / "data"
    before = load_transforms(data / "freeze_time" / "transforms.json").cameras.viewmats
    moved = {}
    for lr in (0.0, 1e-2):
        out = _canonical(tiny, registry, f"camera_lr_{lr}", refine_cameras=True, camera_lr=lr, camera_lr_final=1e-6)
        after = load_transforms(out / "freeze_time" / "transforms.json").cameras.viewmats
        moved[lr] = float((after - before).abs().max())
    assert moved[0.0] < 1e-5, moved
    assert moved[1e-2] > 1e-3, moved
