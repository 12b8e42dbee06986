"""Stage `canonical` on a procedural freeze-time video with the imperfections of a generated
one (non-rigid wobble + an object that keeps moving): the paper's ablations (Figs. 8, 9)
measured on held-out views of the true static scene."""

from __future__ import annotations

import json

import pytest
import torch

from fourreal_core.recipe import component_from_plain
from fourreal_core.registry import get_registry
from fourreal_core.run import CheckpointStore, RunLog, StageContext

SCALE = 0.03  # of the paper's 23,000 canonical iterations
DEFORMER = {"name": "mlp", "params": {"time_input": "frame_code", "predict_scale": False, "width": 128,
                                      "depth": 6, "x_multires": 6, "lr": 0.005, "lr_final": 5e-5}}


# The injected inconsistency: a smooth non-rigid wobble over the whole scene (peak 0.2 x 2.0 =
# 0.4 world units, a few pixels at 64x48, like a video model's drift) plus the ball that keeps
# moving (0.08 of the reference video's time over the orbit). Both stay within the capture
# range of photometric optimisation; a local wobble larger than the object it moves (e.g.
# 0.5 x 0.6 around the 0.35-radius sphere) cannot be absorbed by any gradient-based fit from a
# static start and costs the held-out views with or without w_mv (docs/benchmarks.md).
IMPERFECTIONS = {"wobble": 0.2, "wobble_radius": 2.0, "moving_object": 0.08}
NUM_FREEZE, K_C = 12, 6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread for this module (deterministic float order: the runs below are repeatable
    to the bit), the caller's count restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, one_thread):
    from fourreal_synthetic.stage import make_dataset

    root = tmp_path_factory.mktemp("canon")
    ds = make_dataset("garden", root / "data", width=64, height=48, num_reference_frames=8,
                      num_freeze_frames=NUM_FREEZE, canonical_view=K_C, num_test_views=1,
                      num_test_static_views=4, flicker=0.0, seed=0, write_videos=False, **IMPERFECTIONS)
    return root, ds


def _injected_mean_abs_dx(ds) -> float:
    """Mean |dx|_1 of the injected inconsistency over the true Gaussians and freeze frames."""
    from fourreal_synthetic.scenes import Imperfections

    imp = Imperfections(canonical_view=K_C, num_frames=NUM_FREEZE, seed=0, **IMPERFECTIONS)
    truth = ds.scene.gaussians(ds.t_c).means
    imperfect = ds.scene.with_imperfections(imp)
    return float(torch.stack([(imperfect.gaussians(ds.t_c, frame=k).means - truth).abs().sum(-1)
                              for k in range(NUM_FREEZE)]).mean())


def _run(root, name: str, deformer, losses) -> dict:
    reg = get_registry()
    data = root / "data"
    params = {
        "freeze_time": str(data / "freeze_time" / "transforms.json"),
        "init_points": str(data / "init_points.npz"),
        "eval_views": str(data / "test_static" / "transforms.json"),
        "w_mv": deformer,
        "losses": losses,
        "refine_cameras": False,
        "representation": {"name": "gaussians", "params": {"densify": {"max_gaussians": 6000}}},
    }
    spec = component_from_plain("stage", {"name": "canonical", "params": params}, reg)
    out = root / name
    out.mkdir()
    ctx = StageContext(name="canonical", index=1, run_dir=root, out_dir=out, recipe_dir=root,
                       device=torch.device("cpu"), seed=0, iterations_scale=SCALE,
                       checkpoints=CheckpointStore(root / f"ck_{name}"), log=RunLog(root / "log.jsonl"),
                       registry=reg, rasterizer_spec=component_from_plain("rasterizer", {"name": "torch"}, reg))
    spec.build(reg).run(ctx)
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(dataset, one_thread):
    root, _ = dataset
    l1 = {"name": "l1"}
    small = {"name": "small_motion", "params": {"weight": 0.01}}
    return {
        "per_frame": _run(root, "per_frame", DEFORMER, [l1, small]),
        "no_deformation": _run(root, "no_deformation", None, [l1]),
        "no_small_motion": _run(root, "no_small_motion", DEFORMER, [l1]),
    }


def test_per_frame_deformation_absorbs_inconsistency(runs):
    on, off = runs["per_frame"], runs["no_deformation"]
    # w_mv explains the per-frame wobble / moving ball on the training frames ...
    assert on["train_psnr_deformed"] > off["train_psnr_deformed"] + 3.0, (on, off)
    # ... so the canonical render alone no longer fits every frame (it is not the blurred average)
    assert on["train_psnr_canonical"] < on["train_psnr_deformed"] - 3.0, on
    # ... and the canonical scene is sharper on held-out views of the true static scene (paper
    # Fig. 8). Measured (2026-12-07, one thread, scene seed 0, 4 runs of w_mv / 2 without):
    # with w_mv 26.22, 27.23, 26.86, 27.00 dB (a 1.0 dB run-to-run spread even on one thread and
    # a fixed PYTHONHASHSEED), without 23.83 twice (repeatable) -- gains +2.40 to +3.40 dB (earlier:
    # +2.4 to +3.5 over scene seeds 0-2). The bound sits halfway between no gain (what a w_mv that
    # absorbs nothing gives) and the smallest measured gain: 1.2 dB from each, more than the spread.
    assert on["heldout_static_psnr"] >= off["heldout_static_psnr"] + 1.2, (on, off)


def test_small_motion_loss_keeps_deformation_small(runs, dataset):
    """Bound: twice the mean |dx|_1 of the injected inconsistency itself (over the true
    Gaussians and the freeze-time frames). A deformation that explains the inconsistency and
    nothing else has about that mean; Eq. 3 keeps it there. Without Eq. 3 nothing ties the split
    between canonical scene and deformation, and the deformation drifts past the bound (paper
    Fig. 9), with rotations as well."""
    _, ds = dataset
    on, off = runs["per_frame"], runs["no_small_motion"]
    bound = 2.0 * _injected_mean_abs_dx(ds)
    assert 0.05 < bound < 0.05 * on["scene_extent"], bound  # the injected inconsistency is small
    assert 0.0 < on["mean_abs_dx"] < bound, (on, bound)
    assert off["mean_abs_dx"] > bound and off["mean_abs_dx"] > 2 * on["mean_abs_dx"], (off, bound)
    assert off["mean_abs_dq"] > 10 * max(on["mean_abs_dq"], 1e-3), (on, off)
    # the small-motion loss must not cost held-out quality beyond the runs' noise. Measured
    # (2026-12-07, one thread): with Eq. 3 26.22 / 27.23 dB, without 26.81 / 26.69 -- a cost of
    # +0.59 and -0.54 dB (two earlier multi-threaded CI runs: +0.52, +1.41); the run with Eq. 3
    # alone spreads 1.0 dB over 4 runs. Bound: the largest cost measured here plus that spread.
    assert off["heldout_static_psnr"] < on["heldout_static_psnr"] + 1.6, (on, off)


def test_canonical_view_has_no_deformation(runs, dataset):
    """w_mv(x, k_c) = 0: the canonical render at the canonical view equals the deformed one."""
    from fourreal_core.io import load_tensors

    root, _ = dataset
    tensors, meta = load_tensors(root / "per_frame" / "w_mv.safetensors")
    assert int(meta["canonical_view"]) == 6
    info = json.loads((root / "per_frame" / "w_mv.json").read_text())
    spec = component_from_plain("deformer", {"name": info["name"], "params": info["params"]}, get_registry())
    d = spec.build(get_registry())
    d.setup(num_frames=12, canonical=6)
    d.load_state_dict(tensors)
    x = torch.randn(100, 3)
    assert torch.count_nonzero(d.deform(x, 6).dx) == 0
    assert d.deform(x, 3).dx.abs().sum() > 0
