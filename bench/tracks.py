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
  ceiling               no motion stage: the canonical stage's Gaussians moved by the scene's
                        true motion (each as its nearest true Gaussian at c: offset and
                        rotation) -- what a perfect w_t would score with this canonical scene

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

MOVER = {"mover": None, "speed": None}  # set by --mover / --speed: the garden's subject and its sizes per frame


def scene_options() -> dict:
    if MOVER["mover"] is None and MOVER["speed"] is None:
        return {}
    from fourreal_synthetic.scenes import MOVER_SIZE

    m = MOVER["mover"] or "ball"
    travel = None if MOVER["speed"] is None else MOVER["speed"] * MOVER_SIZE[m] * (T_REF - 1)
    return {"mover": m, "travel": travel}


def with_mover(text: str) -> str:
    """The recipe's synthetic stage with the chosen mover and speed."""
    if not scene_options():
        return text
    line = f"      scene: {SCENE['scene']}\n"
    assert line in text, "bench/sds_ablation.py's synthetic stage changed"
    extra = f"      mover: {MOVER['mover'] or 'ball'}\n"
    if MOVER["speed"] is not None:
        extra += f"      mover_speed: {MOVER['speed']}\n"
    return text.replace(line, line + extra, 1)


DEFORMERS = {
    "mlp": "{name: mlp, params: {time_input: time, width: 64, depth: 4, x_multires: 4, t_multires: 4}}",
    "motion_bases": "{name: motion_bases, params: {num_bases: 10}}",
}


def motion_recipe(deformer: str, tracks: str, true_npz: Path, weight: float, init_steps: int | None = None,
                  depth_weight: float | None = None, rigid: bool = False) -> str:
    text = with_mover(recipe_text(False, None, 8, True))
    mlp = DEFORMERS["mlp"]
    assert mlp in text, "bench/sds_ablation.py's motion deformer changed"
    text = text.replace(mlp, DEFORMERS[deformer])
    if tracks != "none":
        tracker = "{name: opencv}" if tracks == "opencv" else f"{{name: tracks_file, params: {{file: {true_npz}}}}}"
        text = text.rstrip("\n") + f"\n      tracker: {tracker}\n      track_weight: {weight}\n"
        if init_steps is not None:
            text += f"      track_init_steps: {init_steps}\n"
        if depth_weight is not None:
            text += f"      track_depth_weight: {depth_weight}\n"
        if rigid:
            text += "      track_init_rigid: true\n"
    return text


def true_tracks(path: Path, query_frames=(0, 4, 7, 11), n_ball: int = 15, n_static: int = 60,
                n_other: int = 15) -> None:
    """The true tracks of Gaussians seen at each query frame, as a tracks_file: ``n_ball`` on
    the mover, ``n_other`` on the other moving parts (the garden's bending column: a perfect
    tracker tracks everything it sees; runs measured before 2026-12-07's fourth session had
    none there, which left the column to be pinned by the track loss) and ``n_static`` on
    static ones."""
    import numpy as np
    import torch

    from fourreal_synthetic.scenes import make_scene

    sc = make_scene(SCENE["scene"], seed=SCENE["seed"], **scene_options())
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
        mover = torch.arange(sl[sc.mover].start, sl[sc.mover].stop)
        moving = torch.nonzero(~sc.static_mask()).flatten()
        other = moving[(moving < sl[sc.mover].start) | (moving >= sl[sc.mover].stop)]
        parts = [pick(mover, n_ball, f), pick(torch.nonzero(sc.static_mask()).flatten(), n_static, f)]
        if n_other and len(other):
            parts.append(pick(other, n_other, f))
        sel = torch.cat(parts)
        idx.append(sel)
        qf += [f] * len(sel)
    idx = torch.cat(idx)
    tr, vis = sc.point_tracks(cam, times, idx)
    qf = torch.tensor(qf)
    queries = torch.cat([qf[:, None].float(), tr[torch.arange(len(idx)), qf]], 1)
    np.savez(path, tracks=tr.numpy(), visible=vis.numpy(), queries=queries.numpy(), size=np.array([HEIGHT, WIDTH]))


def score(run: Path, scene=None) -> dict:
    import torch

    from fourreal_core.registry import get_registry
    from fourreal_formats.scene4d import Scene4D, find_scene
    from fourreal_synthetic.scenes import default_rasterizer, make_scene

    sc = make_scene(SCENE["scene"], seed=SCENE["seed"], **scene_options())
    cam = sc.reference_camera(WIDTH, HEIGHT)
    times = torch.linspace(0, 1, T_REF)
    scene = scene or Scene4D.load(find_scene(run), get_registry(), device="cpu")
    ras = default_rasterizer()
    pred = scene.render_each(ras, cam.__class__.cat([cam] * T_REF), times).clamp(0, 1)
    truth = torch.cat([sc.render(cam, float(t)) for t in times])
    sil = torch.cat([sc.moving_mask(cam, float(t), ras) for t in times])  # [T,H,W]
    se = ((pred - truth) ** 2).mean(-1)
    ball = [float(-10 * torch.log10(se[k][sil[k]].mean().clamp_min(1e-10))) for k in range(T_REF)]
    whole = [float(-10 * torch.log10(se[k].mean().clamp_min(1e-10))) for k in range(T_REF)]
    # the mover alone (the moving mask above also holds the bending column)
    own = torch.cat([sc.moving_mask(cam, float(t), ras, part=sc.mover) for t in times])
    mover = [float(-10 * torch.log10(se[k][own[k]].mean().clamp_min(1e-10))) for k in range(T_REF)]
    return {"ball": ball, "image": whole, "mover": mover}





class TrueMotion:
    """The scene's true motion as a w_t for the canonical stage's Gaussians: each moves and turns
    as the true Gaussian nearest to it at c does (offset and rotation; q_t = r q, so dq = r q - q).
    The ``ceiling`` arm: what a perfect motion stage would score with this canonical scene."""

    def __init__(self, means, times, c: int) -> None:
        import torch

        from fourreal_formats.quaternions import quat_conjugate, quat_multiply
        from fourreal_synthetic.scenes import make_scene

        sc = make_scene(SCENE["scene"], seed=SCENE["seed"], **scene_options())
        g0 = sc.gaussians(float(times[c]))
        nn = torch.cdist(means, g0.means).argmin(1)
        self.times = [float(t) for t in times]
        at = [sc.gaussians(t) for t in self.times]
        self.dx = [g.means[nn] - g0.means[nn] for g in at]
        self.r = [quat_multiply(g.quats[nn], quat_conjugate(g0.quats[nn])) for g in at]
        self.quat_multiply = quat_multiply

    def deform(self, means, t: float, quats=None):
        from fourreal_core.interfaces import Deformation

        k = min(range(len(self.times)), key=lambda i: abs(self.times[i] - t))
        dq = self.quat_multiply(self.r[k], quats) - quats
        return Deformation(self.dx[k], dq)


def ceiling(base: Path) -> dict:
    """The ``ceiling`` arm: the canonical stage's Gaussians moved by the scene's true motion
    (:class:`TrueMotion`), scored as the other arms are."""
    import torch

    from fourreal_core.registry import get_registry
    from fourreal_formats.scene4d import Scene4D, find_scene

    scene = Scene4D.load(find_scene(base / "stages" / "02_canonical"), get_registry(), device="cpu")
    means = scene.model.params().means.detach()
    scene.deformer = TrueMotion(means, torch.linspace(0, 1, T_REF), 0)
    return score(base, scene)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.02)
    ap.add_argument("--arms", default="mlp,mlp+opencv,mlp+true,motion_bases,motion_bases+opencv,motion_bases+true")
    ap.add_argument("--weight", type=float, default=1.0, help="track_weight")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-tracks")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init-steps", type=int, default=None,
                    help="track_init_steps of the arms with tracks (default: the stage's; 0: no track initialisation of w_t)")
    ap.add_argument("--depth-weight", type=float, default=None,
                    help="track_depth_weight of the arms with tracks (default: the stage's)")
    ap.add_argument("--rigid", action="store_true",
                    help="track_init_rigid: the initialisation's targets as rigid neighbourhood motions (offset + rotation)")
    ap.add_argument("--mover", choices=["ball", "cart"], default=None, help="the garden's moving subject")
    ap.add_argument("--speed", type=float, default=None,
                    help="its displacement per reference frame in its own sizes (zig-zag path); default the garden's sweep")
    args = ap.parse_args()
    MOVER.update(mover=args.mover, speed=args.speed)
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
    s_base = run_recipe(with_mover(recipe_text(False, None, 8, False)), base, args.scale)
    print(f"canonical: {s_base:.0f} s", flush=True)
    rows = {}
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        if arm == "ceiling":
            t0 = time.perf_counter()
            r = rows[arm] = {**ceiling(base), "seconds": round(time.perf_counter() - t0, 1)}
            print(f"ceiling: mover " + " ".join(f"{v:.1f}" for v in r["mover"]), flush=True)
            continue
        deformer, _, tracks = arm.partition("+")
        tracks = tracks or "none"
        if deformer not in DEFORMERS or tracks not in ("none", "opencv", "true"):
            raise SystemExit(f"--arms: unknown arm {arm!r} (deformer {', '.join(DEFORMERS)}; +opencv or +true)")
        run = args.out / (f"arm_{arm.replace('+', '_')}_w{args.weight:g}"
                          + ("" if args.init_steps is None or tracks == "none" else f"_init{args.init_steps}")
                          + ("" if args.depth_weight is None or tracks == "none" else f"_d{args.depth_weight:g}")
                          + ("_rigid" if args.rigid and tracks != "none" else ""))
        if not (run / "stages" / "03_motion").is_dir():
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(base, run, ignore=shutil.ignore_patterns(".lock", "*.lock"))
        t0 = time.perf_counter()
        run_recipe(motion_recipe(deformer, tracks, true_npz, args.weight, args.init_steps, args.depth_weight,
                                 args.rigid), run, args.scale)
        r = score(run)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        rows[arm] = r
        print(f"{arm}: ball " + " ".join(f"{v:.1f}" for v in r["ball"]) + f" | image {sum(r['image']) / T_REF:.2f}"
              + f" | mover {sum(r['mover']) / T_REF:.2f} (frames 1+: {sum(r['mover'][1:]) / (T_REF - 1):.2f}, min {min(r['mover']):.1f})"
              f" | {r['seconds']:.0f} s", flush=True)
    tag = "" if not scene_options() else f"-{args.mover or 'ball'}{'' if args.speed is None else f'{args.speed:g}x'}"
    (args.out / f"bench-tracks-w{args.weight:g}{'' if args.init_steps is None else f'-init{args.init_steps}'}"
                f"{'' if args.depth_weight is None else f'-d{args.depth_weight:g}'}{'-rigid' if args.rigid else ''}{tag}.json").write_text(json.dumps({"rows": rows, "scale": args.scale,
                                                                             "weight": args.weight}, indent=1))
    print("| arm | " + " | ".join(f"t={k}/{T_REF - 1}" for k in range(T_REF)) + " | ball mean | image mean |")
    print("|---|" + "---:|" * (T_REF + 2))
    for arm, r in rows.items():
        print(f"| {arm} | " + " | ".join(f"{v:.1f}" for v in r["ball"])
              + f" | {sum(r['ball']) / T_REF:.2f} | {sum(r['image']) / T_REF:.2f} |")
    print("\nthe mover's own silhouette:")
    print("| arm | " + " | ".join(f"t={k}/{T_REF - 1}" for k in range(T_REF)) + " | mean | frames 1+ | min |")
    print("|---|" + "---:|" * (T_REF + 3))
    for arm, r in rows.items():
        m = r["mover"]
        print(f"| {arm} | " + " | ".join(f"{v:.1f}" for v in m)
              + f" | {sum(m) / T_REF:.2f} | {sum(m[1:]) / (T_REF - 1):.2f} | {min(m):.1f} |")


if __name__ == "__main__":
    main()
