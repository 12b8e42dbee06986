"""Stages `poses`, `export` and `eval`: the ends of a video-to-4D run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from fourreal_core.errors import InputError
from fourreal_core.interfaces import Stage
from fourreal_core.io import write_json

from .common import read_json, write_points_ply
from .configs import EvalConfig, ExportConfig, PosesConfig
from .evaluate import evaluate_views


# ------------------------------------------------------------------------------ poses
def read_any_video(path: Path, cfg: PosesConfig):
    """(Video, PosedVideo or None) from a video file, a frame folder or a transforms.json."""
    from fourreal_poses.transforms_json import load_transforms
    from fourreal_core.types import Video
    from fourreal_media import read_video

    if path.suffix == ".json" or (path.is_dir() and (path / "transforms.json").exists()):
        posed = load_transforms(path, height=cfg.height, width=cfg.width, stride=cfg.stride, max_frames=cfg.max_frames)
        if len(posed) < cfg.min_frames:
            raise InputError(f"{path}: has {len(posed)} frames, need at least {cfg.min_frames}")
        return posed.video, posed
    video = read_video(path, height=cfg.height, width=cfg.width, stride=cfg.stride, max_frames=cfg.max_frames,
                       min_frames=cfg.min_frames)
    return Video(video.frames, fps=video.fps or cfg.fps), None


def _plain(report) -> dict:
    return {k: v for k, v in (report or {}).items() if isinstance(v, (int, float, str, list, dict, bool))}


def _freeze_report(ctx, cfg, frz, k_c, info, frz_path) -> None:
    """The freeze-time usability report (fourreal_stages.freeze_report) with the cameras
    this stage hands on; window seams when the video is the generate stage's."""
    from .freeze_report import write_report

    windows = info.get("windows") if not cfg.freeze_time else None
    write_report(ctx.out_dir, frz.video.frames, cameras=frz.cameras, canonical_view=k_c, windows=windows,
                 source=f"poses: {frz_path}", ctx=ctx)


class PosesStage(Stage):
    def __init__(self, cfg: PosesConfig) -> None:
        self.cfg = cfg

    def _inputs(self, ctx):
        cfg = self.cfg
        ref = ctx.resolve(cfg.reference) if cfg.reference else ctx.find_output("reference.mp4")
        frz = ctx.resolve(cfg.freeze_time) if cfg.freeze_time else ctx.find_output("freeze_time.mp4")
        required = (("freeze_time", frz),) if cfg.orbit_only else (("reference", ref), ("freeze_time", frz))
        for key, p in required:
            if p is None:
                raise InputError(f"stage {ctx.name!r}: params.{key}: no video given and no earlier stage wrote "
                                 f"{key}.mp4 (set params.{key} to a video, frame folder or transforms.json)")
        gen = ctx.find_output("generation.json")
        info = read_json(gen) if gen is not None else {}
        return ref, frz, info

    def run(self, ctx) -> None:
        from fourreal_poses.transforms_json import write_transforms
        from fourreal_core.types import Cameras, PosedVideo

        cfg = self.cfg
        ref_path, frz_path, info = self._inputs(ctx)
        frz_video, _ = read_any_video(frz_path, cfg)
        if cfg.orbit_only:  # an orbit video alone (a static scene): cameras + points, no reference
            result = cfg.pose_estimator.build(ctx.registry).estimate([frz_video], [str(frz_path)])
            frz = result.videos[0]
            k_c = cfg.canonical_view or 0
            frz = PosedVideo(frz.video, frz.cameras, times=torch.zeros(len(frz)), canonical_view=int(k_c))
            write_transforms(ctx.out_dir / "freeze_time" / "transforms.json", frz)
            _freeze_report(ctx, cfg, frz, k_c, info, frz_path)
            if result.points is not None and len(result.points):
                write_points_ply(ctx.out_dir / "points.ply", result.points)
            write_json(ctx.out_dir / "poses.json", {"estimator": cfg.pose_estimator.name, "canonical_view": k_c,
                                                    "report": _plain(result.report)})
            return
        ref_video, _ = read_any_video(ref_path, cfg)
        T = len(ref_video)
        c = cfg.canonical_frame if cfg.canonical_frame is not None else info.get("canonical_frame", T // 2)
        # generation.json written before the rename says ``freeze_time_anchor``
        k_c = cfg.canonical_view if cfg.canonical_view is not None else \
            info.get("canonical_view", info.get("freeze_time_anchor", 0))
        if not 0 <= c < T:
            raise InputError(f"params.canonical_frame: {c} is outside the reference video's {T} frames ({ref_path})")
        if not 0 <= k_c < len(frz_video):
            raise InputError(f"params.canonical_view: {k_c} is outside the freeze-time video's "
                             f"{len(frz_video)} frames ({frz_path})")
        estimator = cfg.pose_estimator.build(ctx.registry)
        ctx.log("poses_start", stage=ctx.name, estimator=cfg.pose_estimator.name, frames=[len(frz_video), T])
        if cfg.reference_camera == "fixed":
            result = estimator.estimate([frz_video], [str(frz_path)])
            frz = result.videos[0]
            cam = frz.cameras[k_c]
            ref_cams = Cameras(cam.viewmats.expand(T, 4, 4).clone(), cam.Ks.expand(T, 3, 3).clone(), cam.width, cam.height)
            ref = PosedVideo(ref_video, ref_cams)
        else:
            result = estimator.estimate([frz_video, ref_video], [str(frz_path), str(ref_path)])
            frz, ref = result.videos
        times = torch.linspace(0.0, 1.0, len(ref)) if len(ref) > 1 else torch.zeros(1)
        ref = PosedVideo(ref.video, ref.cameras, times=times, canonical_view=int(c))  # the reference video's is c
        t_c = float(times[c]) if c < len(times) else 0.0
        frz = PosedVideo(frz.video, frz.cameras, times=torch.full((len(frz),), t_c), canonical_view=int(k_c))
        write_transforms(ctx.out_dir / "reference" / "transforms.json", ref)
        write_transforms(ctx.out_dir / "freeze_time" / "transforms.json", frz)
        _freeze_report(ctx, cfg, frz, k_c, info, frz_path)
        if result.points is not None and len(result.points):
            write_points_ply(ctx.out_dir / "points.ply", result.points)
        write_json(ctx.out_dir / "poses.json", {"estimator": cfg.pose_estimator.name, "canonical_frame": c,
                                                "canonical_view": k_c, "report": _plain(result.report)})


# ----------------------------------------------------------------------------- export
class ExportStage(Stage):
    def __init__(self, cfg: ExportConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        from .export import export_scene
        from .scene4d import MANIFEST, Scene4D

        cfg = self.cfg
        path = ctx.resolve(cfg.scene) if cfg.scene else ctx.find_output(MANIFEST)
        if path is None:
            raise InputError(f"stage {ctx.name!r}: no scene to export (run the canonical or motion stage first, "
                             "or set params.scene to a scene4d.json)")
        scene = Scene4D.load(path, ctx.registry, ctx.device)
        files = export_scene(scene, ctx.rasterizer, ctx.out_dir, cfg)
        ctx.log("export", stage=ctx.name, files=len(files.get("ply", [])))


# ------------------------------------------------------------------------------- eval
def eval_size(scene, against: Path, height: Optional[int], width: Optional[int], native: bool):
    """``(height, width, source)`` to score at: as given; the native size of the test images
    (``native``); else the size the scene was trained at (its reference camera), the usual
    protocol of D-NeRF-style benchmarks -- a scene trained at 200x200 is scored at 200x200,
    not asked to super-resolve 800x800 targets. When the test images have another aspect
    ratio than training, only the height is matched and the aspect ratio kept."""
    from fourreal_poses.transforms_json import load_transforms

    if height is not None or width is not None:
        return height, width, "given"
    ref = scene.reference_camera
    if native or ref is None:
        return None, None, "native"
    cams = load_transforms(against, load_images=False).cameras
    if abs(cams.width / cams.height - ref.width / ref.height) < 0.01:
        return int(ref.height), int(ref.width), "training"
    return int(ref.height), None, "training"


def run_eval(scene, rasterizer, against: Path, white_background, lpips: bool, out_json: Path,
             height: Optional[int] = None, width: Optional[int] = None, native: bool = False) -> dict:
    """Score ``scene`` on the views of ``against``, each at its own camera and time, at the
    size :func:`eval_size` picks (the training size by default)."""
    from fourreal_poses.transforms_json import load_transforms

    h, w, source = eval_size(scene, against, height, width, native)
    views = load_transforms(against, height=h, width=w, white_background=white_background)
    res = evaluate_views(scene, rasterizer, views, lpips=lpips)
    payload = {"against": str(against), "num_views": len(views),
               "resolution": {"height": views.video.height, "width": views.video.width, "from": source},
               "mean": res["mean"], "dynamic_mask": res["dynamic_mask_source"], "notes": res["notes"],
               "per_frame": res["per_frame"]}
    write_json(out_json, payload)
    return {**payload, "renders": res["renders"], "targets": views.video.frames}


class EvalStage(Stage):
    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        from fourreal_media import write_video

        from .scene4d import MANIFEST, Scene4D

        cfg = self.cfg
        spath = ctx.resolve(cfg.scene) if cfg.scene else ctx.find_output(MANIFEST)
        against = ctx.resolve(cfg.against) if cfg.against else ctx.find_output("test/transforms.json")
        if spath is None or against is None:
            missing = "4D scene (scene4d.json) among the finished stages" if spath is None else "held-out views (params.against)"
            raise InputError(f"stage {ctx.name!r}: nothing to evaluate: no {missing}")
        scene = Scene4D.load(spath, ctx.registry, ctx.device)
        res = run_eval(scene, ctx.rasterizer, against, cfg.white_background, cfg.lpips, ctx.out_dir / "eval.json",
                       height=cfg.height, width=cfg.width, native=cfg.native_resolution)
        write_video(ctx.out_dir / "eval.mp4", torch.cat([res["targets"], res["renders"]], dim=2), fps=4)
        ctx.log("eval", stage=ctx.name, **res["mean"])


# ----------------------------------------------------------------------------- render
class RenderStage(Stage):
    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        from fourreal_media import write_image

        from .export import look_at_target, orbit_cameras, scene_up
        from .scene4d import MANIFEST, Scene4D

        cfg = self.cfg
        path = ctx.resolve(cfg.scene) if cfg.scene else ctx.find_output(MANIFEST)
        if path is None:
            raise InputError(f"{ctx.name}: no scene to render (finish the canonical or motion stage, or set "
                             "params.scene to a scene4d.json)")
        scene = Scene4D.load(path, ctx.registry, ctx.device)
        if cfg.time is not None and not 0.0 <= cfg.time <= 1.0:
            raise InputError(f"{ctx.name}: --time {cfg.time} is outside [0, 1]")
        t_default = cfg.time
        if t_default is None:
            c = scene.canonical_frame
            t_default = float(scene.times[c]) if scene.times is not None and c is not None else 0.0
        if cfg.cameras:
            from fourreal_poses.transforms_json import load_transforms

            views = load_transforms(ctx.resolve(cfg.cameras), load_images=False)
            cams = views.cameras
            times = [cfg.time if cfg.time is not None else (float(views.times[i]) if views.times is not None
                     else t_default) for i in range(len(cams))]
        else:
            if scene.reference_camera is None:
                raise InputError(f"{path}: the scene has no reference camera; pass --cameras transforms.json")
            cam = scene.reference_camera
            cams = (orbit_cameras(cam, look_at_target(scene, cam), [cfg.orbit_deg], scene_up(scene, cam))
                    if cfg.orbit_deg else cam)
            times = [t_default] * len(cams)
        frames = scene.render_each(ctx.rasterizer, cams, times)
        for i, f in enumerate(frames):
            write_image(ctx.out_dir / f"render_{i:03d}_t{times[i]:.3f}.png", f)
        write_json(ctx.out_dir / "render.json", {"scene": str(path), "times": times, "count": len(frames)})
