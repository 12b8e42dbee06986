"""Stages `poses`, `export` and `eval`: the ends of a video-to-4D run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from fourreal_core.errors import InputError
from fourreal_core.interfaces import Stage
from fourreal_core.io import write_json

from fourreal_formats.points import write_points_ply

from .common import read_json
from .configs import EvalConfig, ExportConfig, PosesConfig
from .evaluate import evaluate_views


# ------------------------------------------------------------------------------ poses
def frame_selection(cfg: PosesConfig):
    """The poses stage's params that choose and size a single video's frames."""
    from fourreal_poses.single_video import FrameSelection

    return FrameSelection(height=cfg.height, width=cfg.width, long_side=cfg.long_side, start=cfg.start,
                          stride=cfg.stride, max_frames=cfg.max_frames, sampling=cfg.sampling,
                          min_frames=cfg.min_frames, fps=cfg.fps)


def read_any_video(path: Path, cfg: PosesConfig, sfm_long_side: Optional[int] = None, registry=None):
    """``(video, posed or None, frames info, sfm video or None)`` of a single-video input: a
    video file, a frame folder, a transforms.json or any format a ``capture`` plugin with
    ``single_video`` reads (fourreal_poses.single_video), by ``params.layout`` or the first
    layout that claims ``path``. Frames are chosen and sized by ``start`` / ``stride`` /
    ``max_frames`` / ``sampling`` / ``height`` / ``width`` / ``long_side``; ``posed`` holds the
    input's own cameras when it carries them. With ``sfm_long_side`` the frames are also
    decoded at that longest side (capped at the source's, never below the training size) for
    structure-from-motion; the sfm video is None when it would be the training video itself."""
    from fourreal_poses.single_video import read_single_video

    source = read_single_video(path, registry, cfg.layout)
    return tuple(source.load(frame_selection(cfg), sfm_long_side=sfm_long_side))


def _plain(report) -> dict:
    return {k: v for k, v in (report or {}).items() if isinstance(v, (int, float, str, list, dict, bool))}


def _freeze_report(ctx, cfg, frz, k_c, info, frz_path) -> None:
    """The freeze-time usability report (fourreal_stages.freeze_report) with the cameras
    this stage hands on; window seams when the video is the generate stage's. A video the
    user gave (``params.freeze_time``) is a real capture; the generate stage's is generated:
    the report's verdict and advice differ."""
    from .freeze_report import write_report

    windows = info.get("windows") if not cfg.freeze_time else None
    write_report(ctx.out_dir, frz.video.frames, cameras=frz.cameras, canonical_view=k_c, windows=windows,
                 source=f"poses: {frz_path}", ctx=ctx, kind=_source_kind(cfg))


def _source_kind(cfg) -> str:
    if cfg.freeze_time_source != "auto":
        return cfg.freeze_time_source
    return "capture" if cfg.freeze_time else "generated"


def _at_training_size(posed, video):
    """The cameras SfM estimated on the large frames, for ``video`` (the training frames):
    intrinsics scaled per axis, frames dropped by ``on_unregistered: drop`` dropped too."""
    from fourreal_core.types import Cameras, PosedVideo

    keep = posed.meta.get("kept_indices")
    if keep is not None:
        from fourreal_core.types import Video

        video = Video(video.frames[keep], fps=video.fps)
    cams = posed.cameras
    Ks = cams.Ks.clone()
    Ks[:, 0, :] *= video.width / cams.width
    Ks[:, 1, :] *= video.height / cams.height
    return PosedVideo(video, Cameras(cams.viewmats, Ks, video.width, video.height), times=posed.times,
                      canonical_view=posed.canonical_view, masks=posed.masks, meta=posed.meta)


def _estimate(ctx, cfg, estimator, videos, sfm, names, infos, given: bool = True):
    """Run the pose estimator on the SfM-size frames (where given), hand back the cameras
    at the training size; a COLMAP failure says at what size the frames went in and which
    knob gives SfM more pixels (``given``: the videos are the user's, so ``sfm_long_side``
    applies; else the generate stage's, which SfM sees at the training size)."""
    from fourreal_core.errors import FourRealError

    inputs = [b if b is not None else v for v, b in zip(videos, sfm)]
    try:
        result = estimator.estimate(inputs, names)
    except FourRealError as e:
        if not str(e).startswith("COLMAP"):
            raise
        size = inputs[0]
        side = max(size.width, size.height)
        src = max(infos[0].get("source_size") or [0])
        key = f"stages.{ctx.name}.params"
        if not given:
            knob = f"{key}.long_side (the training size, at which SfM sees the generate stage's videos)"
        elif src and side >= src:
            knob = (f"none left: the video's own {src} px are in use (try more frames, matching: exhaustive, "
                    "or a sharper video)")
        else:
            want = max(960, 2 * side) if cfg.sfm_long_side is not None else 640
            knob = f"{key}.sfm_long_side (now {cfg.sfm_long_side}; try {min(want, src) if src else want})"
        raise type(e)(f"{e} [poses: the frames went to SfM at {size.width}x{size.height}; more pixels: {knob}]") from None
    result.videos = [_at_training_size(p, v) if b is not None else p for p, v, b in zip(result.videos, videos, sfm)]
    return result


def _check_path(ctx, cfg, posed, name, report: dict) -> None:
    """The camera-path jump check (fourreal_poses.align.camera_path_jumps) on an estimated
    video's cameras: a failure naming the frames (``on_jump: error``) or a warning."""
    from fourreal_core.errors import FourRealError
    from fourreal_poses.align import camera_path_jumps, neighbour_rotations_deg

    if cfg.max_step_deg is None or len(posed) < 3:
        return
    steps = neighbour_rotations_deg(posed.cameras)
    jumps = camera_path_jumps(posed.cameras, cfg.max_step_deg)
    report.setdefault("camera_path", {})[name] = {"median_step_deg": round(float(steps.median()), 3),
                                                  "max_step_deg": round(float(steps.max()), 3), "jumps": jumps}
    if not jumps:
        return
    listing = ", ".join(f"{j['frames'][0]}->{j['frames'][1]} ({j['deg']:.0f} deg)" for j in jumps[:6])
    more = f" and {len(jumps) - 6} more" if len(jumps) > 6 else ""
    msg = (f"poses: the {name} video's camera path jumps between neighbouring frames {listing}{more} "
           f"(median step {float(steps.median()):.1f} deg, max_step_deg {cfg.max_step_deg:g}): SfM placed those frames "
           "wrongly; try sampling more frames (max_frames), larger SfM frames (sfm_long_side), matching: "
           f"exhaustive, or on_jump: warn to go on (frame indices are of the frames used; poses.json lists their source "
           "frames)")
    if cfg.on_jump == "error":
        raise FourRealError(msg)
    report.setdefault("warnings", []).append(msg)
    ctx.notice("WARNING: " + msg)


def split_holdout(posed, every: Optional[int], k_c: int):
    """``(train, held_out or None, train indices, held-out indices)``: frames 0, N, 2N, ...
    (but never k_c) held out; k_c re-indexed into the training frames."""
    from fourreal_core.types import PosedVideo, Video

    n = len(posed)
    held = [i for i in range(n) if every and i % every == 0 and i != k_c]
    if not held:
        return posed, None, list(range(n)), []
    train = [i for i in range(n) if i not in set(held)]

    def sub(idx, canonical):
        t = torch.as_tensor(idx)
        return PosedVideo(Video(posed.video.frames[t], fps=posed.video.fps), posed.cameras[t],
                          times=posed.times[t] if posed.times is not None else None, canonical_view=canonical,
                          masks=posed.masks[t] if posed.masks is not None else None, meta=dict(posed.meta))

    return sub(train, train.index(k_c)), sub(held, None), train, held


class PosesStage(Stage):
    reads = ("reference.mp4", "freeze_time.mp4", "generation.json")
    writes = ("freeze_time/transforms.json", "poses.json")
    may_write = ("reference/transforms.json", "test/transforms.json", "test_static/transforms.json", "points.ply",
                 "freeze_time_report.json")  # no reference with orbit_only; held-out views when asked for

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

    def _read(self, ctx, path, given: bool):
        """A video of the stage: the SfM-size frames too when the user gave it (a capture)
        and the estimator is not ``known``."""
        cfg = self.cfg
        big = cfg.sfm_long_side if (given and cfg.pose_estimator.name != "known") else None
        video, posed, info, sfm = read_any_video(path, cfg, sfm_long_side=big, registry=ctx.registry)
        if posed is None:  # frames whose cameras are estimated: say which were used
            used = info["indices"]
            span = (f", {info['first_s']:.2f}-{info['last_s']:.2f} s" if "first_s" in info else "")
            ctx.notice(f"{path.name}: {len(used)} of {info['source_frames']} frames "
                       f"({info['sampling']} over {100 * info.get('covered_fraction', 1):.0f}% of the video{span}) "
                       f"at {video.width}x{video.height}" + (f", SfM at {sfm.width}x{sfm.height}" if sfm is not None else ""))
        return video, info, sfm

    def run(self, ctx) -> None:
        from fourreal_formats.transforms import write_transforms
        from fourreal_core.types import Cameras, PosedVideo

        cfg = self.cfg
        ref_path, frz_path, info = self._inputs(ctx)
        frz_video, frz_info, frz_sfm = self._read(ctx, frz_path, bool(cfg.freeze_time))
        estimated = cfg.pose_estimator.name != "known"
        frames_rec = {"freeze_time": frz_info}
        if cfg.orbit_only:  # an orbit video alone (a static scene): cameras + points, no reference
            k_c = cfg.canonical_view or 0
            if not 0 <= k_c < len(frz_video):
                raise InputError(f"params.canonical_view: {k_c} is outside the orbit video's {len(frz_video)} "
                                 f"frames ({frz_path})")
            result = _estimate(ctx, cfg, cfg.pose_estimator.build(ctx.registry), [frz_video], [frz_sfm],
                               [str(frz_path)], [frz_info], given=bool(cfg.freeze_time))
            report = _plain(result.report)
            frz = result.videos[0]
            if estimated:
                _check_path(ctx, cfg, frz, "freeze_time", report)
            frz = PosedVideo(frz.video, frz.cameras, times=torch.zeros(len(frz)), canonical_view=int(k_c))
            _freeze_report(ctx, cfg, frz, k_c, info, frz_path)
            k_c = self._write_freeze_time(ctx, cfg, frz, k_c, frz_info)
            if result.points is not None and len(result.points):
                write_points_ply(ctx.out_dir / "points.ply", result.points)
            write_json(ctx.out_dir / "poses.json", {"estimator": cfg.pose_estimator.name, "canonical_view": k_c,
                                                    "frames": frames_rec, "report": report})
            return
        ref_video, ref_info, ref_sfm = self._read(ctx, ref_path, bool(cfg.reference))
        frames_rec["reference"] = ref_info
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
            result = _estimate(ctx, cfg, estimator, [frz_video], [frz_sfm], [str(frz_path)], [frz_info],
                               given=bool(cfg.freeze_time))
            frz = result.videos[0]
            cam = frz.cameras[k_c]
            ref_cams = Cameras(cam.viewmats.expand(T, 4, 4).clone(), cam.Ks.expand(T, 3, 3).clone(), cam.width, cam.height)
            ref = PosedVideo(ref_video, ref_cams)
        else:
            result = _estimate(ctx, cfg, estimator, [frz_video, ref_video], [frz_sfm, ref_sfm],
                               [str(frz_path), str(ref_path)], [frz_info, ref_info], given=bool(cfg.freeze_time))
            frz, ref = result.videos
        report = _plain(result.report)
        if estimated:
            _check_path(ctx, cfg, frz, "freeze_time", report)
            if cfg.reference_camera == "estimate":
                _check_path(ctx, cfg, ref, "reference", report)
        times = torch.linspace(0.0, 1.0, len(ref)) if len(ref) > 1 else torch.zeros(1)
        ref = PosedVideo(ref.video, ref.cameras, times=times, canonical_view=int(c))  # the reference video's is c
        t_c = float(times[c]) if c < len(times) else 0.0
        frz = PosedVideo(frz.video, frz.cameras, times=torch.full((len(frz),), t_c), canonical_view=int(k_c))
        ref_train, ref_held, _, ref_ho = split_holdout(ref, cfg.reference_holdout_every, int(c))
        write_transforms(ctx.out_dir / "reference" / "transforms.json", ref_train)
        if ref_held is not None:  # frames the motion stage never sees, at their own times
            write_transforms(ctx.out_dir / "test" / "transforms.json", ref_held, extra={"split": "test"})
            ref_info.update(reference_holdout_every=cfg.reference_holdout_every, heldout=ref_ho)
            ctx.notice(f"{len(ref_ho)} of {len(ref)} reference frames held out (every "
                       f"{cfg.reference_holdout_every}th: {ref_ho[:8]}{' ...' if len(ref_ho) > 8 else ''}); "
                       "an eval stage scores them over time")
        _freeze_report(ctx, cfg, frz, k_c, info, frz_path)
        k_c = self._write_freeze_time(ctx, cfg, frz, k_c, frz_info)
        if result.points is not None and len(result.points):
            write_points_ply(ctx.out_dir / "points.ply", result.points)
        write_json(ctx.out_dir / "poses.json", {"estimator": cfg.pose_estimator.name, "canonical_frame": c,
                                                "canonical_view": k_c, "frames": frames_rec, "report": report})

    def _write_freeze_time(self, ctx, cfg, frz, k_c: int, frz_info: dict) -> int:
        """``freeze_time/transforms.json`` (the training frames) and, with ``holdout_every``,
        ``test_static/transforms.json`` (the held-out ones, which the canonical stage scores).
        Returns k_c as an index into the training frames; records the split in ``frz_info``."""
        from fourreal_formats.transforms import write_transforms

        train, held, tr_idx, ho_idx = split_holdout(frz, cfg.holdout_every, int(k_c))
        write_transforms(ctx.out_dir / "freeze_time" / "transforms.json", train)
        if held is not None:
            write_transforms(ctx.out_dir / "test_static" / "transforms.json", held)
            src = frz_info.get("indices")
            if src is not None and len(src) == len(frz):
                frz_info["train_source_indices"] = [src[i] for i in tr_idx]
                frz_info["heldout_source_indices"] = [src[i] for i in ho_idx]
            frz_info.update(holdout_every=cfg.holdout_every, heldout=ho_idx, canonical_view_in_video=int(k_c))
            ctx.notice(f"{len(ho_idx)} of {len(frz)} freeze-time frames held out (every "
                       f"{cfg.holdout_every}th: {ho_idx[:8]}{' ...' if len(ho_idx) > 8 else ''}); "
                       "the canonical stage scores them")
        return int(train.canonical_view)


# ----------------------------------------------------------------------------- export
class ExportStage(Stage):
    reads = ("scene4d.json",)
    writes = ("export.json", "scene/scene4d.json", "bullet_time.mp4", "fixed_camera.mp4", "spiral.mp4", "grid.png")
    may_write = ("ply/*.ply", "ply_sequence.zip", "scene.rrd")

    def __init__(self, cfg: ExportConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        from .export import export_scene
        from fourreal_formats.scene4d import MANIFEST, Scene4D

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
    from fourreal_formats.transforms import load_transforms

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
    from fourreal_formats.transforms import load_transforms

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
    reads = ("scene4d.json", "test/transforms.json")
    writes = ("eval.json", "eval.mp4")

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        from fourreal_media import write_video

        from fourreal_formats.scene4d import MANIFEST, Scene4D

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
        for note in res["notes"]:  # as `fourreal eval` prints them (e.g. a subject that barely moves)
            ctx.notice(note)


# ----------------------------------------------------------------------------- render
class RenderStage(Stage):
    reads = ("scene4d.json",)
    writes = ("render.json",)
    may_write = ("render_*.png",)

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        from fourreal_media import write_image

        from fourreal_formats.cameras import look_at_target, orbit_about, scene_up
        from fourreal_formats.scene4d import MANIFEST, Scene4D

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
