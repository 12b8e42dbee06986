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


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from fourreal_synthetic.stage import make_dataset

    root = tmp_path_factory.mktemp("canon")
    torch.set_num_threads(1)
    make_dataset("garden", root / "data", width=64, height=48, num_reference_frames=8, num_freeze_frames=12,
                 freeze_anchor_index=6, num_test_views=1, num_test_static_views=4, wobble=0.5, moving_object=0.3,
                 flicker=0.0, seed=0, write_videos=False)
    return root


def _run(root, name: str, deformer, losses) -> dict:
    reg = get_registry()
    data = root / "data"
    params = {
        "freeze_time": str(data / "freeze_time" / "transforms.json"),
        "init_points": str(data / "init_points.npz"),
        "eval_views": str(data / "test_static" / "transforms.json"),
        "deformer": deformer,
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
def runs(dataset):
    torch.set_num_threads(1)
    l1 = {"name": "l1"}
    small = {"name": "small_motion", "params": {"weight": 0.01}}
    return {
        "per_frame": _run(dataset, "per_frame", DEFORMER, [l1, small]),
        "no_deformation": _run(dataset, "no_deformation", None, [l1]),
        "no_small_motion": _run(dataset, "no_small_motion", DEFORMER, [l1]),
    }


def test_per_frame_deformation_absorbs_inconsistency(runs):
    on, off = runs["per_frame"], runs["no_deformation"]
    # w_mv explains the per-frame wobble / moving ball on the training frames ...
    assert on["train_psnr_deformed"] > off["train_psnr_deformed"] + 0.3, (on, off)
    # ... so the canonical render alone no longer fits every frame (it is not the blurred average)
    assert on["train_psnr_canonical"] < on["train_psnr_deformed"] - 1.0, on
    # ... and the canonical scene is no worse on held-out views of the true scene. At this CPU
    # size the held-out gain is small and noisy (+0.05 to +0.9 dB measured; the issue asks for
    # 1.5 dB at paper scale -- see docs/benchmarks.md).
    assert on["heldout_static_psnr"] > off["heldout_static_psnr"] - 0.3, (on, off)


def test_small_motion_loss_keeps_deformation_small(runs):
    """Bound: 2% of the scene extent for the mean |dx|_1 over Gaussians and frames. The injected
    inconsistency is local (a wobble region at most 0.5 of its radius, one moving ball), so its
    mean over all Gaussians is far below that; without Eq. 3 nothing ties the split between
    canonical and deformation and the deformation drifts well past it (paper Fig. 9)."""
    on, off = runs["per_frame"], runs["no_small_motion"]
    bound = 0.02 * on["scene_extent"]
    assert 0.0 < on["mean_abs_dx"] < bound, on
    assert off["mean_abs_dx"] > bound and off["mean_abs_dx"] > 3 * on["mean_abs_dx"], off
    assert off["heldout_static_psnr"] < on["heldout_static_psnr"]


def test_anchor_frame_has_no_deformation(runs, dataset):
    """w_mv(x, c) = 0: the canonical render at the anchor equals the deformed one."""
    from fourreal_core.io import load_tensors

    tensors, meta = load_tensors(dataset / "per_frame" / "per_frame_deformer.safetensors")
    assert int(meta["canonical_index"]) == 6
    info = json.loads((dataset / "per_frame" / "per_frame_deformer.json").read_text())
    spec = component_from_plain("deformer", {"name": info["name"], "params": info["params"]}, get_registry())
    d = spec.build(get_registry())
    d.setup(num_frames=12, canonical_index=6)
    d.load_state_dict(tensors)
    x = torch.randn(100, 3)
    assert torch.count_nonzero(d.deform(x, 6).dx) == 0
    assert d.deform(x, 3).dx.abs().sum() > 0
