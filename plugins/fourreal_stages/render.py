"""Stage `render`: a 4D scene (``scene4d.json``) rendered at any camera and time to PNGs (as
``fourreal render``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fourreal_core.config import InputPath
from fourreal_core.errors import InputError
from fourreal_core.interfaces import Stage
from fourreal_core.io import write_json


@dataclass
class RenderConfig:
    """Render a 4D scene at any camera and time to PNGs.

    Cameras: every camera of ``cameras`` (a transforms.json; each frame at its own ``time``
    unless ``time`` is given), or the reference camera turned by ``orbit_deg`` about the scene.
    """

    scene: Optional[InputPath] = None
    time: Optional[float] = None  # in [0,1]; default: the canonical time
    cameras: Optional[InputPath] = None
    orbit_deg: float = 0.0


class RenderStage(Stage):
    reads = ("scene4d.json",)
    writes = ("render.json",)
    may_write = ("render_*.png",)

    def __init__(self, cfg: RenderConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        from fourreal_media import write_image

        from fourreal_formats.cameras import look_at_target, orbit_about, scene_up
        from .common import stage_scene

        cfg = self.cfg
        path, scene = stage_scene(ctx, cfg.scene, "render")
        if cfg.time is not None and not 0.0 <= cfg.time <= 1.0:
            raise InputError(f"{ctx.name}: --time {cfg.time} is outside [0, 1]")
        t_default = cfg.time
        if t_default is None:
            c = scene.canonical_frame
            t_default = float(scene.times[c]) if scene.times is not None and c is not None else 0.0
        if cfg.cameras:
            from fourreal_formats.transforms import load_transforms

            views = load_transforms(ctx.resolve(cfg.cameras), load_images=False)
            cams = views.cameras
            times = [cfg.time if cfg.time is not None else (float(views.times[i]) if views.times is not None
                     else t_default) for i in range(len(cams))]
        else:
            if scene.reference_camera is None:
                raise InputError(f"{path}: the scene has no reference camera; pass --cameras transforms.json")
            cam = scene.reference_camera
            cams = (orbit_about(cam, look_at_target(scene, cam), [cfg.orbit_deg], scene_up(scene, cam))
                    if cfg.orbit_deg else cam)
            times = [t_default] * len(cams)
        frames = scene.render_each(ctx.rasterizer, cams, times)
        for i, f in enumerate(frames):
            write_image(ctx.out_dir / f"render_{i:03d}_t{times[i]:.3f}.png", f)
        write_json(ctx.out_dir / "render.json", {"scene": str(path), "times": times, "count": len(frames)})
