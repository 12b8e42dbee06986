"""Export a 4D scene: PLY per time step, the canonical PLY + deformer + manifest, videos
(bullet-time orbit at a fixed time, fixed camera over time, a spiral through space and
time) and a views x times image grid. The `export` stage (:class:`ExportStage`, params
:class:`ExportConfig`) and `fourreal export` (:class:`ExportOptions`) run :func:`export_scene`.

The PLY sequence is laid out as Brush reads one (docs/viewing.md): a folder -- and a zip --
holding nothing but ``.ply`` files, one per time step, whose names sort in time order
(``t_000.ply``, ``t_001.ply``, ...; Brush sorts the names alphanumerically, treats a source
whose files are all ``.ply`` as a splat sequence, and plays it at a fixed 24 frames/s).
With rerun-sdk installed, ``scene.rrd`` is a Rerun recording of the same sequence:
``GaussianSplats3D`` on a ``time`` timeline, the cameras, and the input frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from fourreal_core.config import ConfigValueError, InputPath, above, at_least
from fourreal_core.interfaces import Stage
from fourreal_core.io import write_json
from fourreal_core.types import Cameras

from fourreal_formats.cameras import look_at_target, orbit_about, scene_up
from fourreal_formats.scene4d import Scene4D

from .common import stage_scene


@dataclass
class ExportOptions:
    """What :func:`export_scene` writes (the export stage's params and
    ``fourreal export``'s options)."""

    num_times: int = 0  # PLY/fixed-camera frames; 0: the reference video's frame times
    orbit_frames: int = 48
    orbit_arc_deg: float = 120.0
    fps: float = 12.0
    ply_per_time: bool = True
    grid_views: int = 4
    grid_times: int = 4
    # size of the videos and the grid's tiles; None: the input's (the reference camera's: the
    # frames the scene was trained on); one of them keeps the aspect ratio
    width: Optional[int] = None
    height: Optional[int] = None

    def __post_init__(self) -> None:
        for key in ("width", "height"):
            v = getattr(self, key)
            if v is not None and v < 2:
                raise ConfigValueError(key, f"must be >= 2 pixels, got {v}")
        at_least(self, num_times=0, orbit_frames=1, grid_views=1, grid_times=1)
        above(self, fps=0)


@dataclass
class ExportConfig(ExportOptions):
    """PLY per time step, canonical PLY + deformer + manifest, bullet-time / fixed-camera /
    spiral videos and a views x times grid (see docs/pipeline.md)."""

    scene: Optional[InputPath] = None  # a scene4d.json (default: the newest earlier one)


@torch.no_grad()
def deformed_raw(scene: Scene4D, t: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Means, quaternions (wxyz, not renormalised) and log-scales of the Gaussians deformed to
    time ``t`` -- the raw (file) parametrisation, unlike :meth:`Scene4D.gaussians_at`."""
    raw = scene.model.raw
    q = torch.nn.functional.normalize(raw["quats"].detach(), dim=-1)
    means, log_scales = raw["means"].detach(), raw["scales"].detach()
    if scene.deformer is not None:
        d = scene.deformer.deform(means, float(t), quats=q)
        means, q = means + d.dx, q + d.dq
        if d.ds is not None:
            log_scales = log_scales + d.ds
    return means, q, log_scales


def write_ply_at(scene: Scene4D, t: float, path: Path) -> None:
    """The Gaussians deformed to time ``t`` as a standard 3DGS PLY (SH colours are not
    rotated with the Gaussians)."""
    from fourreal_gaussians.ply import write_ply

    raw = scene.model.raw
    means, q, scales = deformed_raw(scene, t)
    write_ply(path, means, q, scales, raw["opacities"].detach(), raw["sh0"].detach(), raw["shN"].detach())



def video_camera(cam: Cameras, width: Optional[int], height: Optional[int]) -> Cameras:
    """``cam`` for images of ``width`` x ``height`` (intrinsics scaled per axis; one of them
    given keeps the aspect ratio; none: ``cam`` as it is, the input's size)."""
    from fourreal_media import target_size

    if width is None and height is None:
        return cam
    h, w = target_size(cam.height, cam.width, height, width)
    Ks = cam.Ks.clone()
    Ks[:, 0, :] *= w / cam.width
    Ks[:, 1, :] *= h / cam.height
    return Cameras(cam.viewmats, Ks, w, h)


def export_scene(scene: Scene4D, rasterizer, out: Path, opts: Optional[ExportOptions] = None,
                 camera: Optional[Cameras] = None) -> dict:
    """Write everything under ``out``; returns the manifest of written files."""
    from fourreal_media import write_image, write_video

    opts = opts or ExportOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cam = camera or scene.reference_camera
    if cam is None:
        raise ValueError("export: the scene has no reference camera; pass one")
    cam = video_camera(cam[:1], opts.width, opts.height)
    times = (scene.times if (opts.num_times <= 0 and scene.times is not None)
             else torch.linspace(0, 1, max(opts.num_times, 2)))
    c = scene.canonical_frame
    t_c = float(scene.times[c]) if (scene.times is not None and c is not None) else 0.5
    files: dict = {"ply": []}

    if opts.ply_per_time:
        for p, t in zip(ply_sequence_names(len(times)), times.tolist()):
            write_ply_at(scene, t, out / "ply" / p)
            files["ply"].append(f"ply/{p}")
        write_ply_zip(out, files["ply"], out / PLY_ZIP)
        files["ply_sequence"] = {"folder": "ply", "zip": PLY_ZIP, "times": [float(t) for t in times],
                                 "layout": "Brush PLY sequence: only .ply files, names sort in time order",
                                 "brush_fps": BRUSH_FPS}
    rrd = write_rerun(scene, out / RRD, times.tolist(), opts.fps, find_inputs(out, scene))
    if rrd is not None:
        files["rerun"] = {"file": RRD, **rrd}
    scene.save(out / "scene")
    files["scene"] = "scene/scene4d.json"

    target = look_at_target(scene, cam)
    up = scene_up(scene, cam)
    half = opts.orbit_arc_deg / 2
    angles = torch.linspace(-half, half, opts.orbit_frames)
    orbit = orbit_about(cam, target, angles.tolist(), up)
    bullet = scene.render_each(rasterizer, orbit, [t_c] * len(orbit))
    write_video(out / "bullet_time.mp4", bullet, fps=opts.fps)
    fixed = scene.render_each(rasterizer, Cameras.cat([cam.to("cpu")] * len(times)), times.tolist())
    write_video(out / "fixed_camera.mp4", fixed, fps=opts.fps)
    n = opts.orbit_frames
    spiral_angles = [half * math.sin(2 * math.pi * k / n) for k in range(n)]
    spiral_times = [0.5 - 0.5 * math.cos(2 * math.pi * k / n) for k in range(n)]
    spiral = scene.render_each(rasterizer, orbit_about(cam, target, spiral_angles, up), spiral_times)
    write_video(out / "spiral.mp4", spiral, fps=opts.fps)
    files.update({"bullet_time": "bullet_time.mp4", "fixed_camera": "fixed_camera.mp4", "spiral": "spiral.mp4"})

    gv, gt = max(opts.grid_views, 1), max(opts.grid_times, 1)
    vcams = orbit_about(cam, target, torch.linspace(-half, half, gv).tolist(), up)
    rows = []
    for v in range(gv):
        rows.append(torch.cat([scene.render(rasterizer, vcams[v], t).rgb[0].clamp(0, 1).cpu()
                               for t in torch.linspace(0, 1, gt).tolist()], dim=1))
    write_image(out / "grid.png", torch.cat(rows, dim=0))
    files["grid"] = "grid.png"
    files["grid_layout"] = {"rows": "views (orbit angles)", "cols": "times 0..1", "views": gv, "times": gt}
    write_json(out / "export.json", files)
    return files


# ------------------------------------------------------------------ other viewers' formats
PLY_ZIP = "ply_sequence.zip"
RRD = "scene.rrd"
BRUSH_FPS = 24  # Brush plays a PLY sequence at this fixed rate


def ply_sequence_names(n: int) -> list[str]:
    """``t_000.ply`` ... : zero-padded so that plain and alphanumeric sorting agree."""
    width = max(3, len(str(max(n - 1, 0))))
    return [f"t_{i:0{width}d}.ply" for i in range(n)]


def write_ply_zip(root: Path, names: list, dest: Path) -> None:
    """The sequence as one zip with the PLYs at its root (and nothing else), atomically."""
    import zipfile

    from fourreal_core.io import atomic_path

    with atomic_path(dest, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            for name in names:
                p = Path(root) / name
                z.write(p, arcname=p.name)


def find_inputs(out: Path, scene: Scene4D) -> dict:
    """The input frames of the run ``out`` lies in (newest ``reference/`` and
    ``freeze_time/`` transforms.json of its finished stages), as ``[N,H,W,3]`` floats; only
    when their counts match the scene's cameras."""
    from fourreal_formats.transforms import load_transforms

    run = next((p for p in [Path(out).resolve(), *Path(out).resolve().parents][:4]
                if (p / "run.json").is_file() and (p / "stages").is_dir()), None)
    found: dict = {}
    if run is None:
        return found
    counts = {"reference": len(scene.times) if scene.times is not None else None,
              "freeze_time": len(scene.freeze_cameras) if scene.freeze_cameras is not None else None}
    for key, n in counts.items():
        cands = [p for p in sorted((run / "stages").glob(f"[0-9]*/{key}/transforms.json"))]
        if not cands or n is None:
            continue
        try:
            v = load_transforms(cands[-1]).video.frames
        except Exception:  # the recording is written without those frames rather than not at all
            continue
        if len(v) == n:
            found[key] = v
    return found


def _c2w(viewmat: torch.Tensor) -> torch.Tensor:
    return torch.linalg.inv(viewmat.detach().cpu().double()).float()


def write_rerun(scene: Scene4D, path: Path, times, fps: float, inputs: Optional[dict] = None) -> Optional[dict]:
    """A Rerun recording (``.rrd``) of the scene: one ``GaussianSplats3D`` per time step on
    the ``time`` timeline (seconds: t * (T-1) / fps) and the ``frame`` timeline (index), the
    reference camera (pinhole, with its input frame at each time) and the freeze-time cameras
    (with their frames, static). Colours are the SH DC term; None when rerun-sdk is absent."""
    try:
        import rerun as rr
    except ImportError:
        return None
    from fourreal_core.io import atomic_path

    inputs = inputs or {}
    raw = scene.model.raw
    opac = torch.sigmoid(raw["opacities"].detach().reshape(-1))
    rgb = (0.5 + 0.28209479177387814 * raw["sh0"].detach().reshape(-1, 3)).clamp(0, 1)
    rgba = (torch.cat([rgb, opac[:, None]], 1) * 255).round().to(torch.uint8).cpu().numpy()
    span = max(len(times) - 1, 1) / max(float(fps), 1e-6)

    def u8(img: torch.Tensor):
        return (img.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()

    def log_camera(rec, name: str, cam: Cameras, static: bool) -> None:
        m = _c2w(cam.viewmats[0])
        rec.log(name, rr.Transform3D(translation=m[:3, 3].numpy(), mat3x3=m[:3, :3].numpy()), static=static)
        rec.log(f"{name}/image", rr.Pinhole(image_from_camera=cam.Ks[0].detach().cpu().numpy(),
                                            resolution=[cam.width, cam.height], camera_xyz=rr.ViewCoordinates.RDF),
                static=static)

    with atomic_path(path, suffix=".rrd") as tmp:
        rec = rr.RecordingStream("fourreal", recording_id=f"fourreal-{Path(path).parent.name}")
        rec.save(str(tmp))
        if scene.freeze_cameras is not None:
            frz = inputs.get("freeze_time")
            for i in range(len(scene.freeze_cameras)):
                name = f"world/cameras/freeze_time/{i:03d}"
                log_camera(rec, name, scene.freeze_cameras[i:i + 1], static=True)
                if frz is not None:
                    rec.log(f"{name}/image", rr.Image(u8(frz[i])), static=True)
        if scene.reference_camera is not None:
            log_camera(rec, "world/cameras/reference", scene.reference_camera[:1], static=True)
        ref = inputs.get("reference")
        for k, t in enumerate(times):
            rec.set_time("frame", sequence=k)
            rec.set_time("time", duration=float(t) * span)
            means, q, log_s = deformed_raw(scene, t)
            q = torch.nn.functional.normalize(q, dim=-1)
            rec.log("world/gaussians", rr.GaussianSplats3D(
                means.cpu().numpy(), scales=torch.exp(log_s).cpu().numpy(),
                quaternions=q[:, [1, 2, 3, 0]].cpu().numpy(),  # Rerun stores xyzw
                colors=rgba))
            if ref is not None and scene.times is not None:
                j = int(torch.argmin((scene.times - float(t)).abs()))
                rec.log("world/cameras/reference/image", rr.Image(u8(ref[j])))
        rec.flush()
        rec.disconnect()
        del rec
    return {"times": [float(t) for t in times], "entity": "world/gaussians", "timelines": ["time", "frame"],
            "input_frames": sorted(inputs), "colors": "SH DC term + opacity"}


# --------------------------------------------------------------------------- the stage
class ExportStage(Stage):
    reads = ("scene4d.json",)
    writes = ("export.json", "scene/scene4d.json", "bullet_time.mp4", "fixed_camera.mp4", "spiral.mp4", "grid.png")
    may_write = ("ply/*.ply", "ply_sequence.zip", "scene.rrd")

    def __init__(self, cfg: ExportConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        cfg = self.cfg
        _, scene = stage_scene(ctx, cfg.scene, "export")
        files = export_scene(scene, ctx.rasterizer, ctx.out_dir, cfg)
        ctx.log("export", stage=ctx.name, files=len(files.get("ply", [])))
