"""Per-phase time per step of the canonical and motion stages.

    python bench/stages.py                       # demo scene + 256x144 capture-sized scene
    python bench/stages.py --scenes demo --json runs/bench-stages/now.json
    python bench/stages.py --baseline /tmp/before   # also run another checkout, print ratios
    python bench/stages.py --baseline /tmp/before --baseline-after   # the same, the other order
    python bench/stages.py --scenes demo --scale 0.03 --baseline /tmp/before   # the demo's own schedule

Each scene runs `synthetic -> canonical -> motion` from ``recipes/demo.yaml`` (its own
checkout's), with phases shortened by ``--scale`` (iterations_scale); every training step is
timed by wrapping the step function the stages hand to ``fourreal_core.trainer.train`` (so
the same script times any version of the stages), and steps are grouped by the phase
boundaries of the recipe's schedule. Scenes:

* ``demo``: the demo's scene and settings (96x72, 12 reference / 16 freeze-time frames,
  <= 12k / 16k Gaussians);
* ``capture``: a real-capture-sized procedural scene -- 256x144, 20k initial points asked
  for, <= 24k Gaussians (the image size of the 27-camera capture in the engine issue; the
  synthetic scene's surface sampling gives only ~5k canonical Gaussians, see the table).

Per scene the table gives ms/step per phase, the mean Gaussian count, the motion stage's
``growth / joint`` ratio (within one run, so machine load cancels) and the motion stage's
mean ms/step -- wall-clock and CPU time (``time.process_time`` of the bench process, all its
threads: with ``OMP_NUM_THREADS=1`` it is the step's own work, which other processes on a
shared machine slow down far less than the wall clock; ``wall / CPU`` shows the contention). With ``--baseline PATH`` the same bench first runs in a subprocess on the
checkout at PATH (same interpreter, ``PYTHONPATH`` pointed at it), then here, back to back,
and prints both with the ratio now / baseline. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
os.environ.setdefault("FOURREAL_NO_PROGRESS", "1")

SCENES = {
    "demo": {"scale": 0.01, "sets": []},
    "capture": {"scale": 0.004, "sets": [
        "stages.synthetic.params.width=256", "stages.synthetic.params.height=144",
        "stages.synthetic.params.num_init_points=20000",
        "stages.canonical.params.representation.params.densify.max_gaussians=24000",
        "stages.motion.params.representation.params.densify.max_gaussians=24000",
    ]},
}


def _phases(spec, scale: float) -> list[tuple[str, int, int]]:
    """(name, start, end) of a stage's phases under ``scale`` (the rule every version uses:
    a phase of n > 0 iterations runs max(1, round(n * scale)))."""
    out, start = [], 0
    for p in spec.params.scheduler.params.phases:
        n = 0 if p.iterations <= 0 else max(1, int(round(p.iterations * scale)))
        if n:
            out.append((p.name, start, start + n))
            start += n
    return out


def run_scene(root: Path, scene: str, out: Path, device: str) -> dict:
    import fourreal_core.trainer as trainer
    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry
    from fourreal_core.run import execute

    reg = get_registry()
    cfg = SCENES[scene]
    recipe = load_recipe(root / "recipes" / "demo.yaml", [f"iterations_scale={cfg['scale']}", *cfg["sets"]], reg)
    recipe.stages = [s for s in recipe.stages if s.name in ("synthetic", "canonical", "motion")]
    phases = {s.name: _phases(s, cfg["scale"]) for s in recipe.stages if s.name in ("canonical", "motion")}
    records: dict[str, list[tuple[int, float, int, float]]] = {}
    original = trainer.train

    def timed_train(ctx, total, step, *args, **kwargs):
        rec = records.setdefault(ctx.name, [])

        def timed_step(i):
            t0, c0 = time.perf_counter(), time.process_time()
            metrics = step(i)
            rec.append((i, time.perf_counter() - t0, int(metrics.get("n", 0)), time.process_time() - c0))
            return metrics

        return original(ctx, total, timed_step, *args, **kwargs)

    import importlib

    for name in ("fourreal_stages.canonical", "fourreal_stages.motion", "fourreal_stages.fit"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    patched = [m for n, m in list(sys.modules.items()) if n.startswith("fourreal_stages.")
               and getattr(m, "train", None) is original]
    for m in patched:
        m.train = timed_train
    try:
        execute(recipe, out, reg, device=device)
    finally:
        for m in patched:
            m.train = original
    result = {"scene": scene, "scale": cfg["scale"], "stages": {}}
    for stage, plist in phases.items():
        rec = records.get(stage, [])[1:]  # the very first step carries one-off setup
        rows = []
        for name, s, e in plist:
            sel = [(dt, n, cpu) for i, dt, n, cpu in rec if s <= i < e]
            if sel:
                rows.append({"phase": name, "steps": len(sel), "ms": 1000 * statistics.fmean(d for d, _, _ in sel),
                             "cpu_ms": 1000 * statistics.fmean(c for _, _, c in sel),
                             "n": statistics.fmean(n for _, n, _ in sel)})
        total = [dt for _, dt, _, _ in rec]
        cpu = [c for _, _, _, c in rec]
        result["stages"][stage] = {"phases": rows, "ms": 1000 * statistics.fmean(total) if total else 0.0,
                                   "cpu_ms": 1000 * statistics.fmean(cpu) if cpu else 0.0}
    mot = {r["phase"]: r for r in result["stages"].get("motion", {}).get("phases", [])}
    both = "growth" in mot and "joint" in mot
    result["growth_over_joint"] = mot["growth"]["ms"] / mot["joint"]["ms"] if both else None
    result["growth_over_joint_cpu"] = mot["growth"]["cpu_ms"] / mot["joint"]["cpu_ms"] if both else None
    ev = next(iter(sorted((out / "stages").glob("*_motion/metrics.json"))), None)
    if ev is not None:
        result["heldout_psnr"] = json.loads(ev.read_text()).get("heldout_psnr")
    return result


def bench(root: Path, scenes: list[str], device: str) -> dict:
    import fourreal_stages

    torch_threads = os.environ.get("OMP_NUM_THREADS", "")
    out = {"root": str(root), "code": str(Path(fourreal_stages.__file__).parent), "omp_threads": torch_threads,
           "commit": _commit(root), "scenes": []}
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        for scene in scenes:
            out["scenes"].append(run_scene(root, scene, Path(tmp) / scene, device))
    return out


def _commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _table(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    label = [f"{r['commit']}" for r in results]
    two = len(results) == 2
    t = Table(title="canonical / motion stages: ms per step by phase, wall and CPU (" + " vs ".join(label) + ")")
    for col in ("scene", "stage", "phase", "steps"):
        t.add_column(col, justify="right" if col == "steps" else "left")
    for r in results:
        t.add_column(f"wall {r['commit']}", justify="right")
        t.add_column(f"CPU {r['commit']}", justify="right")
        t.add_column(f"N {r['commit']}", justify="right")
    if two:
        t.add_column("wall ratio", justify="right")
        t.add_column("CPU ratio", justify="right")

    def ratio(vals: list) -> list[str]:
        return [f"{v[1] / v[0]:.2f}" if v[0] else "n/a" for v in vals] if two else []

    def cpu_of(row: dict) -> float:
        return row.get("cpu_ms", 0.0)  # absent in JSON written before the CPU column

    base = results[0]
    for si, sc in enumerate(base["scenes"]):
        for stage in ("canonical", "motion"):
            for pi, row in enumerate(sc["stages"].get(stage, {}).get("phases", [])):
                cells = [sc["scene"], stage, row["phase"], str(row["steps"])]
                wall, cpu = [], []
                for r in results:
                    other = r["scenes"][si]["stages"][stage]["phases"][pi]
                    wall.append(other["ms"])
                    cpu.append(cpu_of(other))
                    cells += [f"{other['ms']:.0f}", f"{cpu_of(other):.0f}", f"{other['n']:.0f}"]
                t.add_row(*cells, *ratio([wall, cpu]))
            cells = [sc["scene"], stage, "all", ""]
            wall, cpu = [], []
            for r in results:
                st = r["scenes"][si]["stages"][stage]
                wall.append(st["ms"])
                cpu.append(cpu_of(st))
                cells += [f"{st['ms']:.0f}", f"{cpu_of(st):.0f}", ""]
            t.add_row(*cells, *ratio([wall, cpu]), style="bold")
        cells = [sc["scene"], "motion", "growth / joint", ""]
        for r in results:
            g, gc = r["scenes"][si]["growth_over_joint"], r["scenes"][si].get("growth_over_joint_cpu")
            cells += [f"{g:.2f}" if g else "n/a", f"{gc:.2f}" if gc else "n/a", ""]
        t.add_row(*cells, *([""] * 2 * two), style="italic")
        cells = [sc["scene"], "motion", "held-out PSNR", ""]
        for r in results:
            p = r["scenes"][si].get("heldout_psnr")
            cells += [f"{p:.2f}" if p else "n/a", "", ""]
        t.add_row(*cells, *([""] * 2 * two), style="italic")
    Console(width=200).print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", default="demo,capture")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--root", type=Path, default=HERE, help="checkout whose recipes to use (default: this one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--scale", type=float, default=None,
                    help="iterations_scale for every scene (default: each scene's own; the demo recipe runs 0.03)")
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to run first, for ratios")
    ap.add_argument("--baseline-after", action="store_true",
                    help="run the baseline after this checkout (a second pass in the other order cancels load drift)")
    args = ap.parse_args()
    scenes = [s for s in args.scenes.split(",") if s]
    if args.scale is not None:
        if args.scale <= 0:
            sys.exit(f"--scale must be > 0, got {args.scale}")
        for s in SCENES.values():
            s["scale"] = args.scale
    unknown = [s for s in scenes if s not in SCENES]
    if unknown:
        sys.exit(f"unknown scene(s) {unknown}; choose from {sorted(SCENES)}")
    results = []

    def baseline() -> dict:
        b = args.baseline.resolve()
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            bjson = Path(f.name)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(b), str(b / "plugins"), str(b / "cli")])
        cmd = [sys.executable, str(Path(__file__).resolve()), "--scenes", args.scenes, "--device", args.device,
               "--root", str(b), "--json", str(bjson)] + ([] if args.scale is None else ["--scale", str(args.scale)])
        subprocess.run(cmd, env=env, check=True, cwd=str(b))
        out = json.loads(bjson.read_text())
        bjson.unlink()
        return out

    if args.baseline is not None and not args.baseline_after:
        results.append(baseline())
    now = bench(args.root.resolve(), scenes, args.device)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(now, indent=2))
    results.append(now)
    if args.baseline is not None and args.baseline_after:
        results.insert(0, baseline())
    for r in results:
        print(f"{r['commit']}: code from {r['code']}")
    _table(results)


if __name__ == "__main__":
    main()
