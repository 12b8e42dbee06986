#!/usr/bin/env python
"""Benchmark ``fourreal view``'s frame path: frames/s of a 20k-Gaussian 4D scene.

Times exactly what a browser tab costs the server per frame (``fourreal_viewer.render.
FrameRenderer.render`` -- deformed Gaussians cached per time, the project's rasterizer --
plus the image encoding viser does for ``set_background_image``), with the camera turning a
little every frame:

* ``moving``: the camera moves at a fixed time, at the interactive size (JPEG);
* ``playing``: time plays as well, so the deformer runs every frame (JPEG);
* ``still``: one full-size frame (PNG), what the viewer sends once the camera stops;
* ``baseline``: the naive path the viewer avoids -- deform and render at full size every
  frame (PNG); every row's ratio is against it, measured in the same process.

The scene: Gaussians in a slab in front of the camera as in bench/rasterizer.py, an ``mlp``
deformer of the demo recipe's size (64x4) with random weights (a trained one costs the same).

    python bench/viewer.py                        # 20k Gaussians, 256x144 interactive, 640x360 full
    python bench/viewer.py --gaussians 50k --threads 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "plugins", ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def build_scene(n: int, width: int, height: int):
    import torch

    from fourreal_core.recipe import component_from_plain
    from fourreal_core.registry import get_registry
    from fourreal_core.types import Cameras
    from fourreal_formats.scene4d import Scene4D
    from rasterizer import make_scene

    reg = get_registry()
    s = make_scene(n, height, width, "cpu")
    rep = component_from_plain("representation", {"name": "gaussians", "params": {}}, reg, source="bench")
    model = rep.build(reg)
    sh0 = ((s["colors"] - 0.5) / 0.28209479177387814)[:, None, :]
    model.set_raw({"means": s["means"], "quats": torch.nn.functional.normalize(s["quats"], dim=-1),
                   "scales": s["scales"].log(), "opacities": torch.logit(s["opacities"]),
                   "sh0": sh0, "shN": torch.zeros(n, 0, 3)})
    dspec = component_from_plain("deformer", {"name": "mlp", "params": {"time_input": "time", "width": 64, "depth": 4,
                                                                        "x_multires": 4, "t_multires": 4}},
                                 reg, source="bench")
    deformer = dspec.build(reg)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in deformer.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    cam = Cameras(s["viewmats"], s["Ks"], width, height)
    rast = component_from_plain("rasterizer", {"name": "torch", "params": {}}, reg, source="bench").build(reg)
    return Scene4D(model, deformer, torch.zeros(3), times=torch.linspace(0, 1, 12), reference_camera=cam), rast


def encode(img, fmt: str) -> int:
    from viser._scene_api import _encode_image_binary

    return len(_encode_image_binary(img, fmt, jpeg_quality=85)[1])


def run_row(renderer, scene, fov, w, h, frames, play: bool, fmt: str, fresh_renderer=None) -> list[float]:
    """Seconds per frame; the camera turns 0.2 degrees a frame about its own up axis."""
    import torch

    from fourreal_viewer.render import FrameRenderer

    vm0 = scene.reference_camera.viewmats[0]
    out = []
    for k in range(frames):
        a = math.radians(0.2 * (k + 1))
        R = torch.tensor([[math.cos(a), 0, math.sin(a), 0], [0, 1, 0, 0], [-math.sin(a), 0, math.cos(a), 0],
                          [0, 0, 0, 1]], dtype=torch.float32)
        t = 0.5 + (0.3 * math.sin(k) if play else 0.0)
        r = FrameRenderer(scene, renderer.rasterizer) if fresh_renderer else renderer
        t0 = time.perf_counter()
        img = r.render(R @ vm0, fov, w, h, t)
        encode(img, fmt)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gaussians", default="20k")
    ap.add_argument("--interactive", default="256x144", help="WxH while moving")
    ap.add_argument("--full", default="640x360", help="WxH of the still frame")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    import torch

    from fourreal_viewer.render import FrameRenderer, fov_y

    if args.threads:
        torch.set_num_threads(args.threads)
    n = int(float(args.gaussians.lower().rstrip("k")) * (1000 if args.gaussians.lower().endswith("k") else 1))
    iw, ih = (int(x) for x in args.interactive.lower().split("x"))
    fw, fh = (int(x) for x in args.full.lower().split("x"))
    scene, rast = build_scene(n, iw, ih)
    fov = fov_y(scene.reference_camera)
    renderer = FrameRenderer(scene, rast)
    run_row(renderer, scene, fov, iw, ih, 3, False, "jpeg")  # warm-up
    rows = [
        ("baseline: deform + full size every frame (PNG)", run_row(renderer, scene, fov, fw, fh, max(args.frames // 4, 3),
                                                                   True, "png", fresh_renderer=True)),
        (f"moving: camera moves, fixed time, {iw}x{ih} JPEG", run_row(renderer, scene, fov, iw, ih, args.frames, False, "jpeg")),
        (f"playing: camera + time, {iw}x{ih} JPEG", run_row(renderer, scene, fov, iw, ih, args.frames, True, "jpeg")),
        (f"still: one full-size frame {fw}x{fh} PNG", run_row(renderer, scene, fov, fw, fh, max(args.frames // 4, 3),
                                                            False, "png")),
    ]
    base = 1.0 / statistics.median(rows[0][1])
    print(f"fourreal view frame path: {n:,} Gaussians, torch rasterizer on {torch.get_num_threads()} thread(s)")
    print(f"{'path':<52} {'ms/frame':>9} {'frames/s':>9} {'x baseline':>11}")
    for name, secs in rows:
        med = statistics.median(secs)
        print(f"{name:<52} {med * 1000:>9.1f} {1 / med:>9.2f} {(1 / med) / base:>11.2f}")


if __name__ == "__main__":
    main()
