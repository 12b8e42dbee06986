"""Stage `poses`: cameras for the reference and freeze-time videos in one world frame (+ sparse
points), from videos, frame folders or transforms.json files (or any single-video ``capture``
layout), by a ``pose_estimator`` plugin (COLMAP, known cameras).

Outputs (``stages/NN_poses/``)::

    freeze_time/transforms.json   the freeze-time (orbit) video's training frames and cameras
    reference/transforms.json     the reference video, per-frame times (not with ``orbit_only``)
    test/, test_static/           held-out reference / freeze-time frames (``*holdout_every``)
    points.ply                    the estimator's sparse points, when it has some
    poses.json                    what was read, chosen and estimated
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from fourreal_core.config import Component, ConfigValueError, InputPath, component_default
from fourreal_core.config import renamed as _renamed  # old recipes: one line saying what was renamed
from fourreal_core.errors import InputError
from fourreal_core.interfaces import Stage
from fourreal_core.io import write_json

from fourreal_formats.points import write_points_ply

from .common import read_json


@dataclass
class PosesConfig:
    """Cameras for the reference and freeze-time videos in one world frame (+ sparse points).

    reference / freeze_time: a video (mp4/mov/webm/gif), a folder of frames, or a
        transforms.json (its frames are used; its cameras too with ``pose_estimator: known``)
        -- or any input a single-video ``capture`` plugin reads (docs/plugins.md, "Capture
        layouts"). Default: an earlier stage's ``reference.mp4`` / ``freeze_time.mp4`` (the
        generate stage).
    layout: the single-video layout that reads both inputs (``transforms_json``,
        ``image_folder``, ``video_file`` or a plugin's). None: for each input, the first layout
        that claims its path (plugins' layouts first, then those three in that order).
    canonical_frame: the reference frame c the freeze-time video was generated from
        (default: the generate stage's ``generation.json``, else the middle frame).
    canonical_view: k_c, the freeze-time frame that is reference frame c seen from the
        reference camera (default: ``generation.json``'s, else 0). (Was ``freeze_time_anchor``.)
    reference_camera: ``fixed`` -- the reference video is filmed from the canonical view's
        camera (the 4Real setting: only the freeze-time video goes through SfM);
        ``estimate`` -- register every reference frame in the same reconstruction.
    height / width / long_side: the training size (one of height/width keeps the aspect
        ratio; ``long_side`` sets the longest side whatever the orientation and overrides
        them: 320 gives 320x180 for a landscape phone video and 180x320 for a portrait one).
    start / stride / max_frames / sampling: which frames of a video or frame folder are used:
        from source frame ``start``, every ``stride``-th, at most ``max_frames`` of them --
        evenly spaced over the whole video (``sampling: even``, first and last frame kept) or
        the first ones (``sampling: first``). ``poses.json`` (``frames``) records the source
        indices used and the seconds they span. (A transforms.json input: stride/max_frames
        keep its first frames, as before.)
    holdout_every: hold out every N-th used frame of the freeze-time (orbit) video (frames
        0, N, 2N, ... of those used; never k_c): SfM still sees them, so they share the
        world frame, but they go to ``test_static/transforms.json`` instead of the training
        frames and the canonical stage scores them (``heldout_static_psnr`` in its
        metrics.json). None: every frame trains.
    reference_holdout_every: the same for the reference video (frames 0, N, 2N, ...; never
        the canonical frame c): held-out frames keep their times and go to
        ``test/transforms.json``, which an ``eval`` stage after the motion stage scores over
        time (frames the motion never saw: interpolation in time). None: every frame trains.
    sfm_long_side: structure-from-motion sees a video you give (``freeze_time`` /
        ``reference`` set) at this longest side in pixels (never above the source's, never
        below the training size) while training uses ``height`` / ``width``; SIFT needs
        the pixels (fox at 54x96: 28 of 67 frames registered; at 270x480: all 67). None: SfM
        at the training size. The generate stage's videos always go at the training size.
    max_step_deg: a camera path check for video inputs: neighbouring frames whose estimated
        cameras turn by more than this AND 4x the path's median step are a pose failure
        (``on_jump: error``, naming the frames) or a warning in poses.json (``warn``).
        A flipped pose turns by ~180 deg; a real gap in a capture can reach ~45 deg (the fox
        capture, 14 frames missing between two of its images: 42.7 deg with its known poses).
        None: no check.
    """

    reference: Optional[InputPath] = None
    freeze_time: Optional[InputPath] = None
    layout: Optional[str] = None
    pose_estimator: Component("pose_estimator") = component_default("pose_estimator", "colmap")  # type: ignore[valid-type]
    width: Optional[int] = None
    height: Optional[int] = None
    long_side: Optional[int] = None
    stride: int = 1
    max_frames: Optional[int] = None
    start: int = 0
    sampling: Literal["even", "first"] = "even"
    min_frames: int = 4
    holdout_every: Optional[int] = None
    reference_holdout_every: Optional[int] = None
    sfm_long_side: Optional[int] = 640
    max_step_deg: Optional[float] = 60.0
    on_jump: Literal["error", "warn"] = "error"
    # what the freeze-time video is, for its report's verdict and advice: auto = a video given
    # in params.freeze_time is a real capture, the generate stage's is generated
    freeze_time_source: Literal["auto", "capture", "generated"] = "auto"
    canonical_frame: Optional[int] = None
    canonical_view: Optional[int] = None
    reference_camera: Literal["fixed", "estimate"] = "fixed"
    orbit_only: bool = False  # only a freeze-time/orbit video (a static scene): no reference video
    fps: float = 8.0
    freeze_time_anchor: Any = None  # renamed canonical_view: kept only to say so

    def __post_init__(self) -> None:
        if self.long_side is not None and self.long_side < 8:
            raise ConfigValueError("long_side", f"must be >= 8 pixels, got {self.long_side}")
        if self.holdout_every is not None and self.holdout_every < 2:
            raise ConfigValueError("holdout_every", f"must be >= 2 (every N-th frame held out), got {self.holdout_every}")
        if self.reference_holdout_every is not None and self.reference_holdout_every < 2:
            raise ConfigValueError("reference_holdout_every",
                                   f"must be >= 2 (every N-th frame held out), got {self.reference_holdout_every}")
        if self.stride < 1:
            raise ConfigValueError("stride", f"must be >= 1, got {self.stride}")
        if self.start < 0:
            raise ConfigValueError("start", f"must be >= 0, got {self.start}")
        if self.freeze_time_anchor is not None:
            _renamed("freeze_time_anchor", "canonical_view", "k_c, the freeze-time index of the canonical frame")


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
