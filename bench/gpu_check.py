"""The prepared GPU check (issue 17): everything to measure the first time a CUDA GPU is
available, in one script that should finish in under 8 minutes on one H100/H200.

With CUDA (``python bench/gpu_check.py``):

1. **Video priors at full size** with random weights of the real architectures (LTX-Video
   2B, Wan 2.1 1.3B, CogVideoX 5B I2V; the configs of ``bench/prior.py``, which this
   extends): per prior one reference generation, one freeze-time extension window and one
   SDS step (``predict_x0`` + backward) at the prior's SDS working size, time and peak
   memory, with model CPU offload off and on.
2. **gsplat vs the portable rasterizer**: ``bench/rasterizer.py --device cuda`` (parity and
   speed; its own table).
3. **Time to 4D**: ``recipes/4real.yaml`` at ``--iterations-scale`` (default 0.02) with
   known orbit poses and the tiny masked prior in place of the video model, each training
   stage's mean step time (``train_end`` in the run log) extrapolated to its full iteration
   count (the SDS phases' prior cost comes from part 1: add it per SDS step).

Without CUDA, or with ``--dry-run``, it builds every full-size config on the **meta
device** (no memory, no weights): parameter counts, bf16 weight sizes, the latent shapes of
each measured call, the recipe validated -- so the script is exercised and ready.

Random weights measure speed and memory, not quality. Record the tables in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import prior as prior_bench  # noqa: E402  (bench/prior.py)

#: prior -> (full-size spec, SDS working size frames x H x W: the priors' config defaults)
PRIORS = {
    "ltx": (prior_bench.LTX_2B, (16, 288, 512)),
    "wan": (prior_bench.WAN_1_3B, (17, 480, 832)),
    "cogvideox": (prior_bench.COGVIDEOX_5B, (49, 480, 720)),
}


def _classes(kind: str):
    import diffusers as d

    return {
        "ltx": (d.LTXVideoTransformer3DModel, d.AutoencoderKLLTXVideo),
        "wan": (d.WanTransformer3DModel, d.AutoencoderKLWan),
        "cogvideox": (d.CogVideoXTransformer3DModel, d.AutoencoderKLCogVideoX),
    }[kind]


def dry_run(kinds: list[str]) -> list[dict]:
    """Every full-size config built on the meta device; shapes of the measured calls."""
    from fourreal_diffusers.base import round_frames, round_up

    rows = []
    for kind in kinds:
        spec, (F, H, W) = PRIORS[kind]
        Tr, Vae = _classes(kind)
        trs = dict(spec["transformer"])
        if kind == "cogvideox":
            trs["in_channels"] *= 2  # the I2V transformer (known first frame)
        with torch.device("meta"):
            tr = Tr(**trs)
            vae = Vae(**spec["vae"])
        p_tr = sum(p.numel() for p in tr.parameters())
        p_vae = sum(p.numel() for p in vae.parameters())
        if kind == "ltx":
            rt, rs, mult, ch = 8, 32, 32, trs["in_channels"]
        elif kind == "wan":
            rt, rs, mult, ch = 4, 8, 16, trs["in_channels"]
        else:
            rt, rs, mult, ch = 4, 8, 16, spec["transformer"]["in_channels"]
        n, h, w = round_frames(F, 4 if kind != "ltx" else rt), round_up(H, mult), round_up(W, mult)
        lat = (1, ch, (n - 1) // rt + 1, h // rs, w // rs)
        rows.append({"prior": kind, "transformer_B": p_tr / 1e9, "vae_M": p_vae / 1e6,
                     "bf16_GiB": (p_tr + p_vae) * 2 / 2**30, "run_shape": f"{n}x{h}x{w}",
                     "latent": "x".join(map(str, lat))})
        del tr, vae
    return rows


def _table(title: str, cols: list[str], rows: list[list[str]]):
    from rich.table import Table

    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*r)
    return t


def check_recipe(console) -> bool:
    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry

    rec = load_recipe(Path(HERE.parent / "recipes" / "4real.yaml"), [], get_registry())
    console.print(f"recipes/4real.yaml: {len(rec.stages)} stages parse and validate")
    return True


def time_to_4d(console, scale: float, tmp: Path) -> None:
    """Run recipes/4real.yaml at ``scale`` with known orbit poses and a tiny masked prior;
    extrapolate each phase's step time to the full iteration count."""
    from fourreal_masked_prior.configs import MaskedModelConfig
    from fourreal_masked_prior.model import MaskedVideoTransformer
    from fourreal_masked_prior.prior import save_checkpoint

    m = MaskedVideoTransformer(MaskedModelConfig(num_frames=16, height=32, width=32, patch=4, dim=64, depth=2,
                                                 heads=4, text_vocab=64, text_len=8))
    ck = save_checkpoint(tmp / "masked", m)
    p = "stages.generate.params."
    sets = [f"{p}prior.name=masked", f"{p}prior.params.checkpoint={ck}", f"{p}height=288", f"{p}width=512",
            "stages.poses.params.pose_estimator={name: known}", f"iterations_scale={scale}",
            "stages.canonical.params.num_random_points=20000"]
    args = [sys.executable, "-m", "fourreal_cli.main", "run", str(HERE.parent / "recipes" / "4real.yaml"),
            "--out", str(tmp / "run"), "--device", "cuda"]
    for s in sets:
        args += ["--set", s]
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        console.print(f"[red]4real.yaml run failed ({r.returncode}):[/red] {r.stderr[-600:]}")
        return
    events = [json.loads(x) for x in (tmp / "run" / "log.jsonl").read_text().splitlines()]
    # the trainer logs one train_end per training stage (steps, seconds); phases are not
    # logged apart, so the extrapolation is per stage: its mean step time x its full count
    ends = [e for e in events if e.get("event") == "train_end" and "steps" in e]
    rows, total = [], 0.0
    for e in ends:
        its, sec = int(e["steps"]), float(e.get("seconds", 0.0))
        full = its / scale
        est = sec / max(its, 1) * full
        total += est
        rows.append([str(e.get("stage")), str(its), f"{sec:.1f}", f"{full:.0f}", f"{est / 60:.1f}"])
    console.print(_table(f"recipes/4real.yaml at iterations_scale={scale} (wall {wall:.0f} s)",
                         ["stage", "its run", "s", "full its (approx.)", "full est (min)"], rows))
    console.print(f"time to 4D, extrapolated: {total / 60:.1f} min (goal <= 20 min on one H100; paper 1.5 h on an A100)"
                  if rows else "no train_end events in the run log")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="meta-device configs only (the default without CUDA)")
    ap.add_argument("--priors", default="ltx,wan,cogvideox")
    ap.add_argument("--steps", type=int, default=10, help="denoising steps of each generation")
    ap.add_argument("--iterations-scale", type=float, default=0.02)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: priors, rasterizer, recipe")
    args = ap.parse_args(argv)
    from rich.console import Console

    console = Console()
    kinds = [k.strip() for k in args.priors.split(",") if k.strip()]
    cuda = torch.cuda.is_available() and not args.dry_run
    rows = dry_run(kinds)
    console.print(_table("full-size priors on the meta device (no weights)",
                         ["prior", "transformer (B)", "VAE (M)", "bf16 weights (GiB)", "run F x H x W", "latent"],
                         [[r["prior"], f"{r['transformer_B']:.2f}", f"{r['vae_M']:.0f}", f"{r['bf16_GiB']:.2f}",
                           r["run_shape"], r["latent"]] for r in rows]))
    check_recipe(console)
    if not cuda:
        console.print("dry run: no CUDA device (or --dry-run); the full-size checks run when one is")
        return 0
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "priors" not in skip:
            out = []
            for kind in kinds:
                spec, (F, H, W) = PRIORS[kind]
                path = prior_bench.build(kind, spec, tmp / kind, torch.bfloat16)
                for off in (False, True):
                    out.append(prior_bench.bench_one(kind, spec, True, "bfloat16", F, H, W, args.steps, 1, tmp,
                                                     cpu_offload=off, window=True, path=path))
                    torch.cuda.empty_cache()
            console.print(_table(f"video priors on {torch.cuda.get_device_name()}, bf16, {args.steps} steps",
                                 ["prior", "offload", "F x H x W", "SDS step (s)", "SDS peak (GiB)", "reference (s)",
                                  "ref peak (GiB)", "freeze window (s)", "window peak (GiB)"],
                                 [[r["prior"], str(r["cpu_offload"]), r["shape"], f"{r['sds_s']:.2f}",
                                   f"{r['sds_peak_GiB']:.1f}", f"{r['gen_s']:.1f}", f"{r['gen_peak_GiB']:.1f}",
                                   f"{r['window_s']:.1f}", f"{r['window_peak_GiB']:.1f}"] for r in out]))
        if "rasterizer" not in skip:
            subprocess.run([sys.executable, str(HERE / "rasterizer.py"), "--device", "cuda"])
        if "recipe" not in skip:
            time_to_4d(console, args.iterations_scale, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
