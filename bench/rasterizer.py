#!/usr/bin/env python
"""Benchmark the rasterizers: forward + backward time and peak memory.

Compares, in the same way for every cell (N Gaussians x image size):

* ``torch``: the tile-based rasterizer (``fourreal_gaussians.rasterize_torch``),
* ``numba``: the same projection with the compiled, multi-threaded CPU compositing
  (``fourreal_gaussians.rasterize_numba``; CPU only; its kernels are compiled or loaded from
  numba's cache in the warm-up run, which is not timed),
* ``native``: the same with the vectorised C kernels (``fourreal_gaussians.rasterize_native``;
  CPU only; built on first use, in the untimed warm-up run),
* ``dense``: the dense reference (every Gaussian x every pixel, with pixel chunks under
  activation checkpointing so that its memory stays bounded) -- skipped, with a note, when
  ``N * H * W`` exceeds ``--dense-max-evals`` or the cell runs past ``--timeout``,
* ``gsplat`` (CUDA only, when gsplat imports): ``gsplat.rasterization``.

Each (backend, cell) runs in fresh subprocesses, so peak memory is measured per cell (CPU:
peak RSS growth over the process's size before rendering, in a separate pass where glibc
maps every large allocation on its own, see :func:`run_cell`; CUDA:
``max_memory_allocated``) and a cell that runs too long can be killed. Scenes mimic a trained 3DGS scene: Gaussians
in a slab 2-6 units in front of the camera filling the view, opacities U(0.1, 1), and
scales ~ 0.02 * sqrt(10k / N) (log-normal), so each Gaussian covers a few tiles.

Examples::

    python bench/rasterizer.py                       # the default grid on CPU
    python bench/rasterizer.py --sizes 10k --resolutions 128x128 --repeats 5
    python bench/rasterizer.py --sizes 20k --resolutions 144x256 --backends torch,numba --threads 2
    python bench/rasterizer.py --device cuda         # torch vs gsplat (vs dense where it fits)
    python bench/rasterizer.py --scene runs/dome27/stages/03_motion --backends torch,numba --threads 2
    python bench/rasterizer.py --scene runs/dome27/stages/03_motion --parity   # images + gradients vs torch

``--scene`` times a trained scene instead of the random one (a run's stage folder or its
``scene4d.json``): its canonical Gaussians with their SH, seen from its reference camera at the
size it was trained at -- what a stage renders on real footage (``--sizes`` and
``--resolutions`` do not apply).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "plugins"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def parse_size(s: str) -> int:
    s = s.strip().lower()
    mult = 1
    if s.endswith("k"):
        mult, s = 1000, s[:-1]
    elif s.endswith("m"):
        mult, s = 1000_000, s[:-1]
    return int(float(s) * mult)


def parse_res(s: str) -> tuple[int, int]:
    h, w = s.lower().split("x")
    return int(h), int(w)


def make_scene(N: int, H: int, W: int, device: str, seed: int = 0) -> dict:
    """A trained-like random scene in front of an identity camera (OpenCV axes)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    z = torch.empty(N).uniform_(2.0, 6.0, generator=g)
    x = (torch.rand(N, generator=g) * 2 - 1) * z * 0.6 * (W / max(W, H))
    y = (torch.rand(N, generator=g) * 2 - 1) * z * 0.6 * (H / max(W, H))
    s = 0.02 * math.sqrt(1e4 / N)
    f = 0.9 * max(W, H)
    scene = dict(
        means=torch.stack([x, y, z], -1),
        quats=torch.randn(N, 4, generator=g),
        scales=s * torch.exp(0.5 * torch.randn(N, 3, generator=g)),
        opacities=torch.rand(N, generator=g) * 0.9 + 0.1,
        colors=torch.rand(N, 3, generator=g),
        viewmats=torch.eye(4)[None],
        Ks=torch.tensor([[[f, 0.0, W / 2], [0.0, f, H / 2], [0.0, 0.0, 1.0]]]),
    )
    return {k: v.to(device) for k, v in scene.items()}


def load_scene(path: str, device: str) -> dict:
    """A trained scene's canonical Gaussians (with SH) and its reference camera, as
    :func:`make_scene` returns them (plus ``sh_degree``, ``width``, ``height``)."""
    from fourreal_core.registry import get_registry
    from fourreal_formats.scene4d import Scene4D, find_scene

    sc = Scene4D.load(find_scene(Path(path)), get_registry())
    g = sc.model.params()
    cam = sc.reference_camera
    scene = dict(means=g.means, quats=g.quats, scales=g.scales, opacities=g.opacities, colors=g.colors,
                 viewmats=cam.viewmats, Ks=cam.Ks)
    scene = {k: v.detach().to(device) for k, v in scene.items()}
    scene.update(sh_degree=g.sh_degree, width=int(cam.width), height=int(cam.height))
    return scene


def scene_parity(path: str, backends: list[str]) -> list[str]:
    """Each CPU backend against the torch path on a trained scene: image and alpha MAE, and the
    relative error of every parameter gradient and of means2d's (one weighted RGB loss)."""
    import torch

    from fourreal_gaussians.rasterize_torch import rasterize

    sc = load_scene(path, "cpu")
    res = {}
    for comp in ["torch"] + [b for b in backends if b in ("numba", "native")]:
        leaves = {k: sc[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
        rgb, alpha, _, meta = rasterize(**leaves, viewmats=sc["viewmats"], Ks=sc["Ks"], width=sc["width"],
                                        height=sc["height"], sh_degree=sc["sh_degree"], compositor=comp,
                                        backgrounds=torch.tensor([0.3, 0.2, 0.1]))
        (rgb * torch.linspace(0, 1, rgb.numel()).reshape(rgb.shape)).sum().backward()
        res[comp] = (rgb.detach(), alpha.detach(), {k: v.grad for k, v in leaves.items()}, meta["means2d"].grad)

    def rel(a, b):
        return float((a - b).norm() / b.norm().clamp_min(1e-30))

    t = res["torch"]
    lines = [f"{path}: {len(sc['means'])} Gaussians, {int((sc['opacities'] > 0.99).sum())} with opacity > 0.99"]
    for comp, r in res.items():
        if comp != "torch":
            grads = " ".join(f"{k} {rel(r[2][k], t[2][k]):.1e}" for k in r[2])
            lines.append(f"{comp} vs torch: image MAE {float((r[0] - t[0]).abs().mean()):.1e}, alpha MAE "
                         f"{float((r[1] - t[1]).abs().mean()):.1e}, relative gradient error: means2d "
                         f"{rel(r[3], t[3]):.1e} {grads}")
    return lines


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cell(backend: str, N: int, H: int, W: int, repeats: int, device: str, threads, q, scene_path=None) -> None:
    """Runs in a subprocess: time `repeats` forward+backward passes, report to queue q."""
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        scene = make_scene(N, H, W, device) if scene_path is None else load_scene(scene_path, device)
        leaves = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
        cams = dict(viewmats=scene["viewmats"], Ks=scene["Ks"])
        if scene.get("sh_degree") is not None:
            if backend == "dense":
                raise ValueError("the dense reference takes plain colours, not a scene's SH")
            cams["sh_degree"] = scene["sh_degree"]
        info = {}
        if backend == "torch":
            from fourreal_gaussians.rasterize_torch import rasterize

            def render():
                rgb, alpha, depth, meta = rasterize(**leaves, **cams, width=W, height=H)
                info.update(pairs=meta["n_pairs"], isects=meta["n_isects"], evals=meta["n_evals"],
                            visible=int((meta["radii"] > 0).sum()))
                return rgb, depth
        elif backend in ("numba", "native"):
            from fourreal_gaussians.rasterize_torch import rasterize

            def render():
                rgb, alpha, depth, meta = rasterize(**leaves, **cams, width=W, height=H, compositor=backend)
                return rgb, depth
        elif backend == "dense":
            from fourreal_gaussians.dense_reference import rasterize_dense

            chunk = max(64, (1 << 22) // max(N, 1))

            def render():
                rgb, alpha, depth, _ = rasterize_dense(**leaves, **cams, width=W, height=H, pixel_chunk=chunk)
                return rgb, depth
        elif backend == "gsplat":
            import gsplat

            def render():
                out, alpha, meta = gsplat.rasterization(**leaves, **cams, width=W, height=H, packed=False,
                                                        render_mode="RGB+ED")
                return out[..., :3], out[..., 3:]
        else:
            raise ValueError(backend)

        def sync():
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _rss_bytes()
        fwd, bwd = [], []
        if repeats == 0:  # memory pass: a single forward+backward
            n_runs = 1
        else:  # one warm-up run (not for dense: slow)
            n_runs = repeats + (1 if backend != "dense" else 0)
        for i in range(n_runs):
            for v in leaves.values():
                v.grad = None
            sync()
            t0 = time.perf_counter()
            rgb, depth = render()
            sync()
            t1 = time.perf_counter()
            (rgb.sum() + 0.01 * depth.sum()).backward()
            sync()
            t2 = time.perf_counter()
            if backend == "dense" or repeats == 0 or i > 0:
                fwd.append(t1 - t0)
                bwd.append(t2 - t1)
            del rgb, depth
        if cuda:
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        q.put(dict(ok=True, fwd=statistics.median(fwd), bwd=statistics.median(bwd),
                   total=statistics.median([a + b for a, b in zip(fwd, bwd)]), peak=max(peak, 0),
                   threads=torch.get_num_threads(), **info))
    except Exception as exc:  # noqa: BLE001 - reported in the table
        q.put(dict(ok=False, note=f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:80]}"))


def _spawn(backend, N, H, W, repeats, device, threads, timeout, env, scene_path=None) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_cell, args=(backend, N, H, W, repeats, device, threads, q, scene_path))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # inherited by the spawned interpreter
    try:
        p.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        return dict(ok=False, note=f"skipped: > {timeout:.0f} s timeout")
    if p.exitcode != 0:
        return dict(ok=False, note=f"crashed (exit {p.exitcode}; out of memory?)")
    return q.get() if not q.empty() else dict(ok=False, note="no result")


def run_cell(backend, N, H, W, repeats, device, threads, timeout, scene_path=None) -> dict:
    """Time in one subprocess (default allocator), measure peak memory in another.

    On CPU the memory pass runs one forward+backward with glibc's mmap threshold at 64 KiB,
    so every large tensor is mapped and unmapped on its own and the peak RSS growth is the
    peak of live memory (with the default dynamic threshold the heap fragments: the dense
    reference's RSS grows by tens of MB per pixel chunk, which says nothing about it).
    """
    out = _spawn(backend, N, H, W, repeats, device, threads, timeout, {}, scene_path)
    if out.get("ok") and not device.startswith("cuda"):
        mem = _spawn(backend, N, H, W, 0, device, threads, timeout, {"MALLOC_MMAP_THRESHOLD_": "65536"}, scene_path)
        out["peak"] = mem.get("peak") if mem.get("ok") else None
    return out


def fmt_time(s) -> str:
    return "-" if s is None else (f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s")


def fmt_mem(b) -> str:
    return "-" if b is None else (f"{b / 2**20:.0f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10k,50k,200k", help="Gaussian counts, comma separated (10k, 2e5, ...)")
    ap.add_argument("--resolutions", default="128x128,288x512", help="HxW, comma separated")
    ap.add_argument("--repeats", type=int, default=3, help="timed forward+backward passes per cell (median)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    ap.add_argument("--backends", default=None,
                    help="comma separated subset of torch,numba,native,dense,gsplat (default: torch,numba,native,"
                         "dense on cpu; torch,dense + gsplat on cuda)")
    ap.add_argument("--dense-max-evals", type=float, default=1e9,
                    help="skip the dense baseline when N*H*W exceeds this (it would take minutes to hours)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per cell before it is skipped")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table (default: rich if installed)")
    ap.add_argument("--scene", default=None,
                    help="a trained scene (a run's stage folder or scene4d.json) instead of the random one")
    ap.add_argument("--parity", action="store_true",
                    help="with --scene: compare each CPU backend's image and gradients with the torch path's instead")
    args = ap.parse_args(argv)

    import torch

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    resolutions = [parse_res(r) for r in args.resolutions.split(",")]
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda is not available", file=sys.stderr)
        return 2
    if args.backends:
        backends = args.backends.split(",")
    else:
        backends = ["torch", "dense"] if cuda else ["torch", "numba", "native", "dense"]
        if cuda:
            try:
                import gsplat  # noqa: F401

                backends.append("gsplat")
            except Exception:  # noqa: BLE001
                print("note: gsplat not importable; torch vs gsplat skipped", file=sys.stderr)
    ref = "gsplat" if "gsplat" in backends else "torch"

    if args.scene:
        try:
            sc = load_scene(args.scene, "cpu")
        except Exception as exc:  # noqa: BLE001 - one line, exit 2
            print(f"error: --scene {args.scene}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                  file=sys.stderr)
            return 2
        sizes, resolutions = [len(sc["means"])], [(sc["height"], sc["width"])]
        if args.parity:
            for line in scene_parity(args.scene, backends):
                print(line)
            return 0
    rows = []
    for H, W in resolutions:
        for N in sizes:
            res = {}
            for b in backends:
                if b == "dense" and N * H * W > args.dense_max_evals:
                    res[b] = dict(ok=False, note=f"skipped: N*H*W = {N * H * W:.1e} > --dense-max-evals")
                    continue
                print(f"[{b}] N={N} {H}x{W} ...", file=sys.stderr, flush=True)
                res[b] = run_cell(b, N, H, W, args.repeats, args.device, args.threads, args.timeout, args.scene)
            rows.append((N, H, W, res))

    headers = ["N", "H x W", "tiles/G"]
    for b in backends:
        headers += [f"{b} fwd+bwd", f"{b} peak mem"]
    others = [b for b in backends if b != ref]
    headers += [f"{b} / {ref}" for b in others]
    table = []
    notes = []
    threads = None
    for N, H, W, res in rows:
        t = res.get("torch", {})
        threads = threads or t.get("threads")
        tiles = f"{t['isects'] / max(t['visible'], 1):.1f}" if t.get("ok") else "-"
        line = [f"{N // 1000}k" if N % 1000 == 0 else str(N), f"{H} x {W}", tiles]
        for b in backends:
            r = res[b]
            if r.get("ok"):
                line += [fmt_time(r["total"]), fmt_mem(r["peak"])]
            else:
                line += ["n/a", "n/a"]
                notes.append(f"{b} N={N} {H}x{W}: {r.get('note')}")
        for b in others:
            a, c = res[b], res[ref]
            line.append(f"{a['total'] / c['total']:.1f}x" if a.get("ok") and c.get("ok") else "-")
        table.append(line)

    title = (f"rasterizer forward+backward, device={args.device}, torch {torch.__version__}, "
             f"{threads or torch.get_num_threads()} threads, median of {args.repeats} (dense: 1 run)")
    use_rich = not args.markdown
    if use_rich:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            use_rich = False
    if use_rich:
        tab = Table(title=title)
        for h in headers:
            tab.add_column(h, justify="right")
        for line in table:
            tab.add_row(*line)
        Console().print(tab)
    else:
        print(f"**{title}**\n")
        print("| " + " | ".join(headers) + " |")
        print("|" + "|".join("---:" for _ in headers) + "|")
        for line in table:
            print("| " + " | ".join(line) + " |")
    for n in notes:
        print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
