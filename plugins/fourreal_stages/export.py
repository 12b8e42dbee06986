"""Export a 4D scene: PLY per time step, the canonical PLY + deformer + manifest, videos
(bullet-time orbit at a fixed time, fixed camera over time, a spiral through space and
time) and a views x times image grid. Used by the `export` stage and `fourreal export`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from fourreal_core.io import write_json
from fourreal_core.types import Cameras

from .configs import ExportOptions
from .scene4d import Scene4D


def _rotation_about(axis: torch.Tensor, angle: float) -> torch.Tensor:
    axis = axis / axis.norm()
    x, y, z = axis.tolist()
    c, s = math.cos(angle), math.sin(angle)
    C = 1 - c
    return torch.tensor([
        [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
        [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
        [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
    ], dtype=torch.float32)


def look_at_target(scene: Scene4D, camera: Cameras) -> torch.Tensor:
    """The point an orbit turns around: on the camera's axis at the median depth of the
    Gaussians it sees."""
    g = scene.model.params()
    vm = camera.viewmats[0].to(g.means.device)
    pc = g.means @ vm[:3, :3].T + vm[:3, 3]
    z = pc[:, 2]
    depth = z[z > 0].median().item() if bool((z > 0).any()) else 1.0
    c2w = torch.linalg.inv(vm.cpu())
    return c2w[:3, 3] + c2w[:3, 2] * depth


def scene_up(scene: Scene4D, camera: Cameras) -> torch.Tensor:
    """The world's up direction: the mean image-up of the freeze-time cameras (an orbit turns
    about it), else world +z when the camera is roughly upright in a z-up world (synthetic,
    D-NeRF, normalised COLMAP), else the camera's own up."""
    def ups(c: Cameras) -> torch.Tensor:
        return -torch.linalg.inv(c.viewmats.cpu())[:, :3, 1]

    if scene.freeze_cameras is not None and len(scene.freeze_cameras) > 1:
        return torch.nn.functional.normalize(ups(scene.freeze_cameras).mean(0), dim=0)
    up = ups(camera[:1])[0]
    z = torch.tensor([0.0, 0.0, 1.0])
    return z if float(up @ z) > 0.5 else up


def orbit_cameras(camera: Cameras, target: torch.Tensor, angles_deg, up: Optional[torch.Tensor] = None) -> Cameras:
    """``camera`` (one) rotated about the axis through ``target`` along ``up`` (default: the
    camera's own up)."""
    c2w = torch.linalg.inv(camera.viewmats[0].cpu())
    up = -c2w[:3, 1] if up is None else up
    mats = []
    for a in angles_deg:
        R = _rotation_about(up, math.radians(float(a)))
        m = torch.eye(4)
        m[:3, :3] = R @ c2w[:3, :3]
        m[:3, 3] = R @ (c2w[:3, 3] - target) + target
        mats.append(torch.linalg.inv(m))
    n = len(mats)
    return Cameras(torch.stack(mats), camera.Ks[:1].cpu().expand(n, 3, 3).clone(), camera.width, camera.height)


def write_ply_at(scene: Scene4D, t: float, path: Path) -> None:
    """The Gaussians deformed to time ``t`` as a standard 3DGS PLY (SH colours are not
    rotated with the Gaussians)."""
    from fourreal_gaussians.ply import write_ply

    raw = scene.model.raw
    q = torch.nn.functional.normalize(raw["quats"].detach(), dim=-1)
    means, scales = raw["means"].detach(), raw["scales"].detach()
    if scene.deformer is not None:
        with torch.no_grad():
            d = scene.deformer.deform(means, float(t), quats=q)
        means, q = means + d.dx, q + d.dq
        if d.ds is not None:
            scales = scales + d.ds
    write_ply(path, means, q, scales, raw["opacities"].detach(), raw["sh0"].detach(), raw["shN"].detach())



def export_scene(scene: Scene4D, rasterizer, out: Path, opts: Optional[ExportOptions] = None,
                 camera: Optional[Cameras] = None) -> dict:
    """Write everything under ``out``; returns the manifest of written files."""
    from fourreal_core.video_io import write_image, write_video

    opts = opts or ExportOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cam = camera or scene.reference_camera
    if cam is None:
        raise ValueError("export: the scene has no reference camera; pass one")
    cam = cam[:1]
    times = (scene.times if (opts.num_times <= 0 and scene.times is not None)
             else torch.linspace(0, 1, max(opts.num_times, 2)))
    c = scene.canonical_index
    t_c = float(scene.times[c]) if (scene.times is not None and c is not None) else 0.5
    files: dict = {"ply": []}

    if opts.ply_per_time:
        for i, t in enumerate(times.tolist()):
            p = out / "ply" / f"t_{i:03d}.ply"
            write_ply_at(scene, t, p)
            files["ply"].append(str(p.relative_to(out)))
    scene.save(out / "scene")
    files["scene"] = "scene/scene4d.json"

    target = look_at_target(scene, cam)
    up = scene_up(scene, cam)
    half = opts.orbit_arc_deg / 2
    angles = torch.linspace(-half, half, opts.orbit_frames)
    orbit = orbit_cameras(cam, target, angles.tolist(), up)
    bullet = scene.render_each(rasterizer, orbit, [t_c] * len(orbit))
    write_video(out / "bullet_time.mp4", bullet, fps=opts.fps)
    fixed = scene.render_each(rasterizer, Cameras.cat([cam.to("cpu")] * len(times)), times.tolist())
    write_video(out / "fixed_camera.mp4", fixed, fps=opts.fps)
    n = opts.orbit_frames
    spiral_angles = [half * math.sin(2 * math.pi * k / n) for k in range(n)]
    spiral_times = [0.5 - 0.5 * math.cos(2 * math.pi * k / n) for k in range(n)]
    spiral = scene.render_each(rasterizer, orbit_cameras(cam, target, spiral_angles, up), spiral_times)
    write_video(out / "spiral.mp4", spiral, fps=opts.fps)
    files.update({"bullet_time": "bullet_time.mp4", "fixed_camera": "fixed_camera.mp4", "spiral": "spiral.mp4"})

    gv, gt = max(opts.grid_views, 1), max(opts.grid_times, 1)
    vcams = orbit_cameras(cam, target, torch.linspace(-half, half, gv).tolist(), up)
    rows = []
    for v in range(gv):
        rows.append(torch.cat([scene.render(rasterizer, vcams[v], t).rgb[0].clamp(0, 1).cpu()
                               for t in torch.linspace(0, 1, gt).tolist()], dim=1))
    write_image(out / "grid.png", torch.cat(rows, dim=0))
    files["grid"] = "grid.png"
    files["grid_layout"] = {"rows": "views (orbit angles)", "cols": "times 0..1", "views": gv, "times": gt}
    write_json(out / "export.json", files)
    return files
