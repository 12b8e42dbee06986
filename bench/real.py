"""Real-data benchmarks (docs/benchmarks.md "Real footage"): fox, rig4 and dome27.

    python bench/real.py fox  --height 160 --iterations 1000 3000
    python bench/real.py rig4 --long-side 128 --frames 30 --scale 0.5 1.0
    python bench/real.py dome27 --scale 0.25 [--settings 4real all]

fox (../shared/data/fox, a handheld orbit of a static figure): the canonical stage with every
8th frame held out, once with the known poses of its transforms.json (points triangulated
from them with the poses fixed, fourreal_poses.triangulate) and once with COLMAP's poses
and points (SfM on all frames, so the held-out cameras are in the same frame; training
sees only the other 7/8). Held-out static PSNR at each iteration budget (PSNR vs
iterations); the baseline row is the known-pose run at the smallest budget.

rig4 (../shared/data/rig4, 4 synchronized cameras ~90 degrees apart, one person moving
fast): cameras 0-2 train, camera 3 held out, in both settings of the multicam stage --
recipes/multicam-to-4d.yaml (4Real: freeze-time = cams 0-2 at t_c, reference = cam 0 over
time) and recipes/multicam-all-views.yaml (cams 0-2 at every time) -- scored on camera 3
over time: whole-image PSNR/SSIM and the dynamic-region PSNR/SSIM (pixels that change over
camera 3's own frames). Each ``--scale`` is an iterations_scale of both recipes (PSNR vs
iterations); ratios are against the all-views run at the first scale.

dome27 (../shared/data/dome27, a 27-camera dome, two people and a ball, 75 frames): cameras
6, 1, 22 and 24 (spread around the dome: low, mid, high, mid) are held out and never trained
on, at 256x144 (``--long-side``). Per ``--scale`` and setting (``4real``:
recipes/multicam-to-4d.yaml; ``all``: recipes/multicam-all-views.yaml): the held-out cameras
over time (whole image and inside the people's given masks, ``seg/``), what w_t adds inside
those masks over the scene frozen at t_c (eval's ``motion_gain_db``: near 0 = the people stand
still), the canonical stage's held-out cameras at t_c (both recipes fit the scene at c first),
the reference camera, the stages' times; the difference column is against the first row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


# ==================================================================================== fox
def fox_split(data: Path, out: Path, height: int, poses: str, every: int = 8,
              sfm_height: int | None = 480) -> dict:
    """Write ``train/`` and ``test/`` transforms.json (+ images) and ``points.npz`` for the fox
    capture at ``height``, with the known poses or COLMAP's. Features for COLMAP and for the
    known-pose triangulation come from the frames at ``sfm_height`` (None: at ``height``; at
    96 px COLMAP registers only 28 of 67 frames); COLMAP's intrinsics are then scaled to
    ``height``. Returns a small report."""
    import numpy as np
    import torch

    from fourreal_formats.transforms import load_transforms, write_transforms
    from fourreal_core.types import PosedVideo, Video

    tj = load_transforms(data, height=height)
    n = len(tj)
    test_idx = [i for i in range(n) if i % every == 0]
    train_idx = [i for i in range(n) if i % every != 0]
    rep: dict = {"frames": n, "train": len(train_idx), "test": len(test_idx), "poses": poses}
    t0 = time.perf_counter()
    big = tj.video if sfm_height is None else load_transforms(data, height=max(sfm_height, height)).video
    if poses == "known":
        from fourreal_poses.triangulate import scene_points

        cams = tj.cameras
        feat = cams.scaled(big.height / tj.video.height)
        assert (feat.width, feat.height) == (big.width, big.height)
        pts, prep = scene_points(big.frames[train_idx], feat[train_idx], mode="auto", min_points=500,
                                 fill_points=5000)
        rep["points"] = {**prep, "sfm_size": [big.width, big.height]}
    else:
        from fourreal_poses.colmap import ColmapPoseEstimator
        from fourreal_poses.plugin import ColmapConfig

        from fourreal_core.types import Cameras

        res = ColmapPoseEstimator(ColmapConfig(camera_model="SIMPLE_PINHOLE", max_image_size=640,
                                               num_threads=2)).estimate([big], ["fox"])
        sfm, pts = res.videos[0].cameras, res.points
        Ks = sfm.Ks.clone()
        Ks[:, 0, :] *= tj.video.width / big.width
        Ks[:, 1, :] *= tj.video.height / big.height
        cams = Cameras(sfm.viewmats, Ks, tj.video.width, tj.video.height)
        rep["points"] = {"source": "colmap", "sfm_size": [big.width, big.height],
                         "num_points": 0 if pts is None else len(pts),
                         "registered_fraction": res.report.get("registered_fraction"),
                         "unregistered": res.videos[0].meta.get("interpolated_indices")}
    rep["pose_seconds"] = round(time.perf_counter() - t0, 1)
    for name, idx in (("train", train_idx), ("test", test_idx)):
        pv = PosedVideo(Video(tj.video.frames[idx]), cams[idx], canonical_view=0 if name == "train" else None)
        write_transforms(out / name / "transforms.json", pv)
    np.savez(out / "points.npz", points=pts.points.numpy().astype(np.float32),
             colors=pts.colors.numpy().astype(np.float32))
    return rep


def fox_run(split: Path, out: Path, iterations: int, device: str) -> dict:
    """The canonical stage on ``split/train`` for ``iterations`` (1/4 warm-up, 3/4 with w_mv),
    scored on ``split/test``."""
    import yaml

    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry
    from fourreal_core.run import execute
    from fourreal_stages.canonical import CanonicalConfig

    key = "w_mv" if "w_mv" in {f.name for f in dataclasses.fields(CanonicalConfig)} else "deformer"
    warm = iterations // 4
    recipe = {
        "name": "fox-canonical", "seed": 0, "device": device, "iterations_scale": 1.0, "rasterizer": "auto",
        "stages": [{"name": "canonical", "params": {
            "freeze_time": str(split / "train" / "transforms.json"),
            "eval_views": str(split / "test" / "transforms.json"),
            "init_points": str(split / "points.npz"),
            "refine_cameras": False,
            "representation": {"name": "gaussians", "params": {"densify": {
                "grad_threshold": 0.0004, "max_gaussians": 40000, "start": 100, "stop": int(iterations * 0.8),
                "every": 100, "reset_opacity_every": 0}}},
            key: {"name": "mlp", "params": {"time_input": "frame_code", "predict_scale": False, "width": 64,
                                            "depth": 4, "x_multires": 6}},
            "losses": [{"name": "l1", "params": {}}, {"name": "small_motion", "params": {"weight": 1.0}}],
            "scheduler": {"name": "stagewise", "params": {"phases": [
                {"name": "warmup", "iterations": warm, "losses": ["l1"], "train": ["gaussians"], "deform": False,
                 "densify": True},
                {"name": "deform_grow", "iterations": iterations - warm, "losses": ["l1", "small_motion"],
                 "train": ["gaussians", "deformer"], "deform": True, "densify": True}]}},
        }}],
    }
    out.mkdir(parents=True, exist_ok=True)
    rpath = out / "fox-canonical.yaml"
    rpath.write_text(yaml.safe_dump(recipe))
    t0 = time.perf_counter()
    execute(load_recipe(rpath, [], get_registry()), out / "run", get_registry(), device=device)
    m = json.loads(next((out / "run" / "stages").glob("*_canonical/metrics.json")).read_text())
    return {"heldout_psnr": m.get("heldout_static_psnr"), "train_psnr": m["train_psnr_canonical"],
            "dx_pct": 100 * m["mean_abs_dx"] / m["scene_extent"], "n": m["num_gaussians"],
            "seconds": time.perf_counter() - t0}


def bench_fox(args) -> None:
    data = args.data or DATA / "fox"
    if not (data / "transforms.json").is_file():
        sys.exit(f"{data}: the fox capture is not here (transforms.json missing)")
    rows = []
    for poses in args.poses:
        split = args.out / f"fox-{poses}"
        rep = fox_split(data, split, args.height, poses, sfm_height=args.sfm_height or None)
        print(f"fox {poses}: {rep}")
        for its in args.iterations:
            r = fox_run(split, args.out / f"fox-{poses}-{its}", its, args.device)
            rows.append({"poses": poses, "iterations": its, **r, "points": rep["points"].get("num_points")})
    base = rows[0]
    print(f"\nfox canonical, every 8th frame held out, height {args.height}")
    print(f"{'poses':8} {'its':>6} {'points':>7} {'held-out PSNR':>14} {'train PSNR':>11} {'|dx| %ext':>9} "
          f"{'Gaussians':>9} {'time s':>7} {'vs base dB':>10}")
    for r in rows:
        print(f"{r['poses']:8} {r['iterations']:6d} {r['points'] or 0:7d} {r['heldout_psnr']:14.2f} "
              f"{r['train_psnr']:11.2f} {r['dx_pct']:9.3f} {r['n']:9d} {r['seconds']:7.0f} "
              f"{r['heldout_psnr'] - base['heldout_psnr']:+10.2f}")
    (args.out / "fox.json").write_text(json.dumps(rows, indent=1))


# =================================================================================== rig4
def rig4_run(recipe: str, out: Path, data: Path, long_side: int, frames: int, stride: int, scale: float,
             device: str, extra: list[str]) -> dict:
    p = "stages.multicam.params."
    sets = [f"{p}capture={data}", f"{p}long_side={long_side}", f"{p}max_frames={frames}", f"{p}stride={stride}",
            f'{p}train_cameras=["0", "1", "2"]', f'{p}test_cameras=["3"]', f"{p}test_times=8",
            f"iterations_scale={scale}", "stages.export.params.orbit_frames=8", *extra]
    return capture_run(recipe, out, sets, device)


def capture_run(recipe: str, out: Path, sets: list[str], device: str) -> dict:
    """Run a multi-camera recipe with ``sets`` and read back its scores (eval over time,
    canonical held-out at t_c, reference camera, stage times)."""
    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry
    from fourreal_core.run import execute

    t0 = time.perf_counter()
    execute(load_recipe(ROOT / "recipes" / recipe, sets, get_registry()), out, get_registry(), device=device)
    seconds = time.perf_counter() - t0
    ev = json.loads(next((out / "stages").glob("*_eval/eval.json")).read_text())
    row = {**ev["mean"], "seconds": seconds}
    can = list((out / "stages").glob("*_canonical/metrics.json"))
    if can:
        m = json.loads(can[0].read_text())
        row.update(canonical_psnr=m["train_psnr_canonical"], dx_pct=100 * m["mean_abs_dx"] / m["scene_extent"],
                   static_psnr=m.get("heldout_static_psnr"))
    mo = json.loads(next((out / "stages").glob("*_motion/metrics.json")).read_text())
    row.update(reference_psnr=mo["reference_psnr"], spawned=mo.get("spawned_in_growth", 0), n=mo["num_gaussians"],
               motion_seconds=mo.get("seconds"))
    if can:
        row["canonical_seconds"] = json.loads(can[0].read_text()).get("seconds")
    return row


def bench_rig4(args) -> None:
    data = args.data or DATA / "rig4"
    if not (data / "train_meta.json").is_file():
        sys.exit(f"{data}: the rig4 capture is not here (train_meta.json missing)")
    rows = []
    for scale in args.scale:
        for name, recipe in (("all views", "multicam-all-views.yaml"), ("4Real", "multicam-to-4d.yaml")):
            tag = name.split()[0].lower()
            r = rig4_run(recipe, args.out / f"rig4-{tag}-{scale}", data, args.long_side, args.frames, args.stride,
                         scale, args.device, args.sets)
            rows.append({"setting": name, "scale": scale, **r})
    base = rows[0]
    print(f"\nrig4: cams 0-2 train, cam 3 held out over time; long side {args.long_side}, {args.frames} frames")
    print(f"{'setting':10} {'scale':>5} {'PSNR':>6} {'SSIM':>5} {'dyn PSNR':>8} {'dyn SSIM':>8} {'dyn %':>5} "
          f"{'ref PSNR':>8} {'canon':>6} {'|dx|%':>6} {'time s':>6} {'vs base dB':>10}")
    for r in rows:
        print(f"{r['setting']:10} {r['scale']:5.2f} {r['psnr']:6.2f} {r['ssim']:5.3f} {r.get('dynamic_psnr', float('nan')):8.2f} "
              f"{r.get('dynamic_ssim', float('nan')):8.3f} {100 * r.get('dynamic_fraction', 0):5.1f} "
              f"{r['reference_psnr']:8.2f} {r.get('canonical_psnr', float('nan')):6.2f} "
              f"{r.get('dx_pct', float('nan')):6.2f} {r['seconds']:6.0f} {r['psnr'] - base['psnr']:+10.2f}")
    (args.out / "rig4.json").write_text(json.dumps(rows, indent=1))


# ================================================================================= dome27
DOME27_TEST = ["6", "1", "22", "24"]


def bench_dome27(args) -> None:
    data = args.data or DATA / "dome27"
    if not (data / "train_meta.json").is_file():
        sys.exit(f"{data}: the dome27 capture is not here (train_meta.json missing)")
    recipes = {"4real": "multicam-to-4d.yaml", "all": "multicam-all-views.yaml"}
    p = "stages.multicam.params."
    rows = []
    for scale in args.scale:
        for setting in args.settings:
            sets = [f"{p}capture={data}", f"{p}long_side={args.long_side}",
                    f"{p}test_cameras={json.dumps(DOME27_TEST)}", f"iterations_scale={scale}",
                    "stages.export.params.orbit_frames=8", *args.sets]
            if setting == "all":
                sets.append(f"{p}stride=5")  # 15 of 75 times x 23 cameras fit in memory
            r = capture_run(recipes[setting], args.out / f"dome27-{setting}-{scale}", sets, args.device)
            rows.append({"setting": setting, "scale": scale, **r})
    base = rows[0]
    print(f"\ndome27: cameras {', '.join(DOME27_TEST)} held out (never trained), long side {args.long_side}; "
          "'people' = inside the given person masks")
    print(f"{'setting':8} {'scale':>5} {'PSNR':>6} {'SSIM':>5} {'people':>6} {'gain':>5} {'at t_c':>6} {'ref':>6} "
          f"{'canon s':>7} {'motion s':>8} {'total s':>7} {'vs first dB':>11}")
    for r in rows:
        print(f"{r['setting']:8} {r['scale']:5.2f} {r['psnr']:6.2f} {r['ssim']:5.3f} "
              f"{r.get('dynamic_psnr', float('nan')):6.2f} {r.get('motion_gain_db', float('nan')):+5.2f} "
              f"{r.get('static_psnr') or float('nan'):6.2f} "
              f"{r['reference_psnr']:6.2f} {r.get('canonical_seconds') or float('nan'):7.0f} "
              f"{r.get('motion_seconds') or float('nan'):8.0f} {r['seconds']:7.0f} {r['psnr'] - base['psnr']:+11.2f}")
    (args.out / "dome27.json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["fox", "rig4", "dome27"])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-real")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--height", type=int, default=160, help="fox: frame height")
    ap.add_argument("--iterations", type=int, nargs="+", default=[1000, 3000], help="fox: canonical budgets")
    ap.add_argument("--sfm-height", type=int, default=480,
                    help="fox: frame height for COLMAP / triangulation features (0: --height)")
    ap.add_argument("--poses", nargs="+", default=["known", "colmap"], choices=["known", "colmap"])
    ap.add_argument("--long-side", type=int, default=None, help="rig4 / dome27: frames' longest side (128 / 256)")
    ap.add_argument("--settings", nargs="+", default=["4real"], choices=["4real", "all"], help="dome27: settings")
    ap.add_argument("--frames", type=int, default=30, help="rig4: time steps")
    ap.add_argument("--stride", type=int, default=2, help="rig4: keep every n-th time step")
    ap.add_argument("--scale", type=float, nargs="+", default=None,
                    help="rig4 / dome27: iterations_scale values (0.5 / 0.25)")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="rig4 / dome27: extra recipe overrides")
    args = ap.parse_args()
    args.out = args.out.resolve()  # the recipe written per run resolves its paths from its own folder
    args.out.mkdir(parents=True, exist_ok=True)
    if args.long_side is None:
        args.long_side = 256 if args.which == "dome27" else 128
    if args.scale is None:
        args.scale = [0.25] if args.which == "dome27" else [0.5]
    {"fox": bench_fox, "rig4": bench_rig4, "dome27": bench_dome27}[args.which](args)


if __name__ == "__main__":
    main()
