"""The garden's ball with and without point tracks, per deformer (issue 29).

    python bench/tracks.py [--scale 0.02] [--arms mlp,mlp+opencv,mlp+true,motion_bases,...] [--out runs/bench-tracks]

The procedural garden of the SDS ablation (bench/sds_ablation.py, arm A: 128x72, 12 reference
frames, canonical frame 0, freeze-time orbit of 8 frames over 90 degrees with wobble 0.15 /
moving ball 0.08 / flicker 0.03; no SDS). Its ball rolls ~12 px per frame -- about its own
size (15 px) -- across the reference video, and the paper's motion stage loses it from the
third reference frame on. One canonical stage is shared; each arm is a motion stage:

  <deformer>            no tracks (the paper)
  <deformer>+opencv     tracks from the built-in OpenCV tracker (``tracker: {name: opencv}``)
  <deformer>+true       the scene's true tracks written as a tracks_file .npz (what a perfect
                        external tracker -- CoTracker, TAPIR -- would hand over)

with <deformer> ``mlp`` (the bench's 64x4 w_t) or ``motion_bases`` (10 bases). Scored at
the reference camera at the reference frames' own times: PSNR inside the ball's true
silhouette at each frame (``ProceduralScene.moving_mask``), and over the whole image. Also the
OpenCV tracker's error against the true tracks. Results: docs/benchmarks.md, "Point tracks".
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from sds_ablation import HEIGHT, SCENE, T_REF, WIDTH, recipe_text, run_recipe  # noqa: E402

DEFORMERS = {
    "mlp": "{name: mlp, params: {time_input: time, width: 64, depth: 4, x_multires: 4, t_multires: 4}}",
    "motion_bases": "{name: motion_bases, params: {num_bases: 10}}",
}


def motion_recipe(deformer: str, tracks: str, true_npz: Path, weight: float) -> str:
    text = recipe_text(False, None, 8, True)
    mlp = DEFORMERS["mlp"]
    assert mlp in text, "bench/sds_ablation.py's motion deformer changed"
    text = text.replace(mlp, DEFORMERS[deformer])
    if tracks != "none":
        tracker = "{name: opencv}" if tracks == "opencv" else f"{{name: tracks_file, params: {{file: {true_npz}}}}}"
        text = text.rstrip("\n") + f"\n      tracker: {tracker}\n      track_weight: {weight}\n"
    return text


def true_tracks(path: Path, query_frames=(0, 4, 7, 11), n_ball: int = 15, n_static: int = 60) -> None:
    """The true tracks of Gaussians seen at each query frame (ball and static ones), as a
    tracks_file -- as many points as the opencv arms query (300 over 4 frames)."""
    import numpy as np
    import torch

    from fourreal_synthetic.scenes import make_scene

    sc = make_scene(SCENE["scene"], seed=SCENE["seed"])
    cam = sc.reference_camera(WIDTH, HEIGHT)
    times = torch.linspace(0, 1, T_REF).tolist()
    sl = sc.part_slices()
    g = torch.Generator().manual_seed(0)

    def pick(idx, k, f):
        _, vis = sc.point_tracks(cam, [times[f]], idx)
        ok = idx[vis[:, 0]]
        return ok[torch.randperm(len(ok), generator=g)[:k]]

    idx, qf = [], []
    for f in query_frames:
        sel = torch.cat([pick(torch.arange(sl["ball"].start, sl["ball"].stop), n_ball, f),
                         pick(torch.nonzero(sc.static_mask()).flatten(), n_static, f)])
        idx.append(sel)
        qf += [f] * len(sel)
    idx = torch.cat(idx)
    tr, vis = sc.point_tracks(cam, times, idx)
    qf = torch.tensor(qf)
    queries = torch.cat([qf[:, None].float(), tr[torch.arange(len(idx)), qf]], 1)
    np.savez(path, tracks=tr.numpy(), visible=vis.numpy(), queries=queries.numpy(), size=np.array([HEIGHT, WIDTH]))


def score(run: Path) -> dict:
    import torch

    from fourreal_core.registry import get_registry
    from fourreal_formats.scene4d import Scene4D, find_scene
    from fourreal_synthetic.scenes import default_rasterizer, make_scene

    sc = make_scene(SCENE["scene"], seed=SCENE["seed"])
    cam = sc.reference_camera(WIDTH, HEIGHT)
    times = torch.linspace(0, 1, T_REF)
    scene = Scene4D.load(find_scene(run), get_registry(), device="cpu")
    ras = default_rasterizer()
    pred = scene.render_each(ras, cam.__class__.cat([cam] * T_REF), times).clamp(0, 1)
    truth = torch.cat([sc.render(cam, float(t)) for t in times])
    sil = torch.cat([sc.moving_mask(cam, float(t), ras) for t in times])  # [T,H,W]
    se = ((pred - truth) ** 2).mean(-1)
    ball = [float(-10 * torch.log10(se[k][sil[k]].mean().clamp_min(1e-10))) for k in range(T_REF)]
    whole = [float(-10 * torch.log10(se[k].mean().clamp_min(1e-10))) for k in range(T_REF)]
    return {"ball": ball, "image": whole}




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.02)
    ap.add_argument("--arms", default="mlp,mlp+opencv,mlp+true,motion_bases,motion_bases+opencv,motion_bases+true")
    ap.add_argument("--weight", type=float, default=1.0, help="track_weight")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-tracks")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    marker = args.out / "made-by-bench-tracks"
    if args.out.exists() and any(args.out.iterdir()) and not marker.exists():
        raise SystemExit(f"{args.out}: exists and was not made by this bench; choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    marker.touch()
    true_npz = (args.out / "true_tracks.npz").resolve()
    true_tracks(true_npz)
    base = args.out / "canonical"
    if not (base / "stages" / "02_canonical").is_dir():
        shutil.rmtree(base, ignore_errors=True)
    s_base = run_recipe(recipe_text(False, None, 8, False), base, args.scale)
    print(f"canonical: {s_base:.0f} s", flush=True)
    rows = {}
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        deformer, _, tracks = arm.partition("+")
        tracks = tracks or "none"
        if deformer not in DEFORMERS or tracks not in ("none", "opencv", "true"):
            raise SystemExit(f"--arms: unknown arm {arm!r} (deformer {', '.join(DEFORMERS)}; +opencv or +true)")
        run = args.out / f"arm_{arm.replace('+', '_')}_w{args.weight:g}"
        if not (run / "stages" / "03_motion").is_dir():
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(base, run, ignore=shutil.ignore_patterns(".lock", "*.lock"))
        t0 = time.perf_counter()
        run_recipe(motion_recipe(deformer, tracks, true_npz, args.weight), run, args.scale)
        r = score(run)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        rows[arm] = r
        print(f"{arm}: ball " + " ".join(f"{v:.1f}" for v in r["ball"]) + f" | image {sum(r['image']) / T_REF:.2f}"
              f" | {r['seconds']:.0f} s", flush=True)
    (args.out / f"bench-tracks-w{args.weight:g}.json").write_text(json.dumps({"rows": rows, "scale": args.scale,
                                                                             "weight": args.weight}, indent=1))
    print("| arm | " + " | ".join(f"t={k}/{T_REF - 1}" for k in range(T_REF)) + " | ball mean | image mean |")
    print("|---|" + "---:|" * (T_REF + 2))
    for arm, r in rows.items():
        print(f"| {arm} | " + " | ".join(f"{v:.1f}" for v in r["ball"])
              + f" | {sum(r['ball']) / T_REF:.2f} | {sum(r['image']) / T_REF:.2f} |")


if __name__ == "__main__":
    main()
