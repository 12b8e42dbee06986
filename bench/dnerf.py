"""D-NeRF benchmark: fit recipes/dnerf.yaml on a D-NeRF scene and score the test split.

    python bench/dnerf.py --data ../shared/data/dnerf/standup --size 200 --scale 0.25

Runs, in one process, the recipe (static warm-up, then canonical Gaussians + `mlp` deformer
jointly) and a static-3DGS baseline (the same recipe with the deformation off), and prints
test PSNR / SSIM / LPIPS and wall time for both, with the ratio. Train and test images are
both resized to --size (the D-NeRF protocol; `fourreal eval` scores at the training size).
Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(data: Path, out: Path, size: int, scale: float, deform: bool, device: str, extra: list[str]) -> dict:
    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry
    from fourreal_core.run import execute

    sets = [
        f"stages.motion.params.reference={data / 'transforms_train.json'}",
        f"stages.eval.params.against={data / 'transforms_test.json'}",
        f"stages.motion.params.width={size}",
        f"stages.motion.params.height={size}",
        f"iterations_scale={scale}",
        "stages.export.params.orbit_frames=24",
        *extra,
    ]
    if not deform:
        sets.append("stages.motion.params.scheduler.params.phases.joint.deform=false")
    recipe = load_recipe(ROOT / "recipes" / "dnerf.yaml", sets, get_registry())
    t0 = time.perf_counter()
    execute(recipe, out, get_registry(), device=device)
    seconds = time.perf_counter() - t0
    ev = json.loads(next((out / "stages").glob("*_eval/eval.json")).read_text())
    return {**ev["mean"], "seconds": seconds, "notes": ev.get("notes", []), "resolution": ev.get("resolution", {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dnerf" / "standup")
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--scale", type=float, default=0.25, help="iterations_scale (1.0 = 40k iterations)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-dnerf")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    args = ap.parse_args()
    if not (args.data / "transforms_train.json").exists():
        sys.exit(f"{args.data}: no D-NeRF scene here (transforms_train.json missing)")
    rows = {"fourreal dnerf (mlp deformer)": run(args.data, args.out / "deform", args.size, args.scale, True,
                                                 args.device, args.sets)}
    if not args.no_baseline:
        rows["baseline: static 3DGS"] = run(args.data, args.out / "static", args.size, args.scale, False,
                                            args.device, args.sets)
    from rich.console import Console
    from rich.table import Table

    scored = next(iter(rows.values()))["resolution"]
    t = Table(title=f"D-NeRF {args.data.name}, trained at {args.size}x{args.size} and scored at "
                    f"{scored.get('width')}x{scored.get('height')}, iterations_scale {args.scale}")
    for c in ("run", "PSNR", "SSIM", "LPIPS", "wall s"):
        t.add_column(c)
    for name, r in rows.items():
        t.add_row(name, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['lpips']:.4f}" if "lpips" in r else "n/a",
                  f"{r['seconds']:.0f}")
    if len(rows) == 2:
        a, b = rows.values()
        t.add_row("ratio (deform / static)", f"{a['psnr'] / b['psnr']:.3f}", f"{a['ssim'] / b['ssim']:.3f}", "",
                  f"{a['seconds'] / b['seconds']:.2f}")
    Console().print(t)
    for r in rows.values():
        for n in r["notes"]:
            print("note:", n)


if __name__ == "__main__":
    main()
