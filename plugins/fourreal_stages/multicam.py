"""The `multicam` stage: a synchronized multi-camera capture (read by a `capture` plugin,
:mod:`fourreal_poses.capture`) -> the training and held-out videos.

The stage then forms one of two settings (``setting``):

* ``4real`` (the paper's): the freeze-time video = the training cameras at the canonical
  time ``t_c``; the reference video = ``reference_camera`` over time; the held-out cameras
  are scored over time (``test/``) and at ``t_c`` (``test_static/``). Canonical + motion
  stages follow (recipes/multicam-to-4d.yaml).
* ``all``: the reference "video" = every training camera at every time (the standard
  multi-view dynamic setting; recipes/multicam-all-views.yaml), and the same freeze-time
  video as ``4real`` (the training cameras at ``t_c``) so a canonical stage can fit the scene
  at c before the motion stage moves it (a static warm-up over all times averages the
  moving people away: docs/real-data.md); the same ``test/`` views.

Outputs (``stages/NN_multicam/``)::

    reference/transforms.json     (+ images/)   per-frame camera and time; canonical_view = c
    freeze_time/transforms.json   (+ images/)   the training cameras at t_c; canonical_view = k_c, the reference camera
    test/transforms.json          (+ images/, dynamic_masks/ when given)   held-out cameras over time
    test_static/transforms.json   held-out cameras at t_c
    points.ply                    initial points (file / triangulated / frustum; see triangulate.py)
    capture.json                  what was read and chosen
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import torch

from fourreal_core.config import InputPath, above, at_least
from fourreal_core.errors import InputError
from fourreal_core.interfaces import Stage
from fourreal_core.types import PosedVideo, Video
from fourreal_poses.capture import Capture, read_capture


@dataclass
class MulticamConfig:
    """A synchronized multi-camera capture -> the 4Real setting or the all-views setting.

    capture: a Dynamic-3D-Gaussians folder (train_meta.json / test_meta.json, ims/, optional
        seg/ and init_pt_cld.npz) or a cameras .json (nerfstudio-style, one entry per camera
        whose file_path is that camera's video or frame folder). See docs/real-data.md.
    setting: ``4real`` -- freeze-time = training cameras at the canonical frame, reference =
        ``reference_camera`` over time; ``all`` -- every training camera at every time.
    train_cameras / test_cameras: camera names ([]: the data's split -- test_meta.json's
        cameras, or entries with ``"split": "test"`` -- and the rest for training).
    """

    capture: Optional[InputPath] = None
    # the capture plugin that reads it (dynamic3dgs, camera_videos or a registered one); None:
    # the first registered layout that claims the path
    layout: Optional[str] = None
    setting: Literal["4real", "all"] = "4real"
    train_cameras: list[str] = field(default_factory=list)
    test_cameras: list[str] = field(default_factory=list)
    reference_camera: Optional[str] = None  # a training camera (default: the first)
    canonical_frame: Optional[int] = None  # index into the selected times (default: the middle one)
    start: int = 0
    stride: int = 1
    max_frames: Optional[int] = None
    test_times: int = 15  # held-out cameras are scored at this many evenly spaced times (0: all)
    long_side: Optional[int] = 256  # frames resized so the longest side is this (unless height/width)
    height: Optional[int] = None
    width: Optional[int] = None
    fps: float = 30.0
    # initial points: auto = the capture's points file, else triangulated from the training
    # cameras at t_c (poses fixed), topped up with frustum points below min_points
    points: Literal["auto", "triangulate", "file", "frustum", "none"] = "auto"
    min_points: int = 2000
    fill_points: int = 20000
    # how the fill points are placed: sweep -- where the training views agree (a plane sweep,
    # fourreal_poses.triangulate.sweep_points); frustum -- at random depths in every frustum
    fill: Literal["sweep", "frustum"] = "sweep"
    # near plane the later stages render with (written to every transforms.json as
    # fourreal.near_plane): the cameras of a capture dome sit in the wall the other cameras
    # see, and without one the Gaussians of that wall cover a held-out camera's view.
    # None: near_plane_fraction x the median distance from the cameras to where they look; 0: off
    near_plane: Optional[float] = None
    near_plane_fraction: float = 0.15
    max_points: int = 100000  # a larger file is subsampled
    triangulate_long_side: int = 1024  # SIFT sees the frames at this size (native if smaller)
    max_pair_angle_deg: float = 75.0

    def __post_init__(self) -> None:
        at_least(self, start=0, stride=1, max_frames=1, test_times=0, long_side=1, height=1, width=1, min_points=0,
                 fill_points=0, max_points=0, triangulate_long_side=16, canonical_frame=0)
        above(self, fps=0)


def _size(cap: Capture, height: Optional[int], width: Optional[int], long_side: Optional[int]) -> tuple[int, int]:
    from fourreal_media import target_size

    if height is None and width is None and long_side:
        if cap.width >= cap.height:
            width = int(long_side)
        else:
            height = int(long_side)
    return target_size(cap.height, cap.width, height, width)


class MulticamStage(Stage):
    """Forms the 4Real setting (or the all-views setting) from a synchronized capture."""

    writes = ("freeze_time/transforms.json", "reference/transforms.json", "capture.json")
    may_write = ("test/transforms.json", "test_static/transforms.json", "points.ply")  # held-out cameras, points

    def __init__(self, cfg: MulticamConfig) -> None:
        self.cfg = cfg

    def _split(self, cap: Capture) -> tuple[list[str], list[str]]:
        cfg = self.cfg
        known = set(cap.cameras)
        for key in ("train_cameras", "test_cameras"):
            for c in getattr(cfg, key):
                if str(c) not in known:
                    raise InputError(f"params.{key}: camera {c!r} is not in the capture ({', '.join(cap.cameras)})")
        test = [str(c) for c in cfg.test_cameras] or [c for c in cap.cameras if cap.splits.get(c) == "test"]
        train = [str(c) for c in cfg.train_cameras] or [c for c in cap.cameras if c not in test]
        if not train:
            raise InputError(f"{cap.root}: no training cameras left (test_cameras: {test})")
        overlap = sorted(set(train) & set(test))
        if overlap:
            raise InputError(f"params.train_cameras and params.test_cameras share camera(s) {overlap}")
        return train, test

    def run(self, ctx) -> None:
        from fourreal_core.io import write_json
        from fourreal_formats.transforms import write_transforms

        from fourreal_formats.points import write_points_ply

        from fourreal_poses.triangulate import colour_from_frames, frustum_points, merge_points, scene_points, sweep_points

        cfg = self.cfg
        if not cfg.capture:
            raise InputError(f"stage {ctx.name!r}: params.capture: give the capture folder (train_meta.json "
                             "layout) or a cameras .json with one entry per camera video")
        cap = read_capture(ctx.resolve(cfg.capture), ctx.registry, cfg.layout)
        train, test = self._split(cap)
        times = list(range(cfg.start, cap.num_times, cfg.stride))
        if cfg.max_frames:
            times = times[: cfg.max_frames]
        T = len(times)
        if T < 2:
            raise InputError(f"{cap.root}: {T} time step(s) after start/stride/max_frames; need at least 2")
        c = cfg.canonical_frame if cfg.canonical_frame is not None else T // 2
        if not 0 <= c < T:
            raise InputError(f"params.canonical_frame: {c} is outside the {T} selected time steps")
        ref_cam = str(cfg.reference_camera) if cfg.reference_camera is not None else train[0]
        if ref_cam not in train:
            raise InputError(f"params.reference_camera: {ref_cam!r} is not a training camera ({', '.join(train)})")
        H, W = _size(cap, cfg.height, cfg.width, cfg.long_side)
        tnorm = torch.linspace(0.0, 1.0, T)
        near = cfg.near_plane
        if near is None:
            from fourreal_poses.known import _focus_point

            cams_all = cap.cameras_at(train + test, [times[c]] * len(train + test), H, W)
            focus, _ = _focus_point(cams_all)
            near = float(cfg.near_plane_fraction) * float((cams_all.centers.double() - focus).norm(dim=-1).median())
        rx = {"near_plane": round(float(near), 6)} if near and near > 0 else {}
        t_c = float(tnorm[c])
        out = ctx.out_dir
        info = {"capture": str(cap.root), "layout": cap.layout, "setting": cfg.setting, "train_cameras": train,
                "test_cameras": test, "reference_camera": ref_cam, "times": times, "canonical_frame": c,
                "t_c": t_c, "size": [W, H], "native_size": [cap.width, cap.height], **rx}
        ctx.log("multicam", stage=ctx.name, cameras=len(cap.cameras), train=len(train), test=len(test), times=T)

        # -- the training videos
        frz_cams = cap.cameras_at(train, [times[c]] * len(train), H, W)
        frz_frames = torch.cat([cap.frames(cam, [times[c]], H, W) for cam in train])
        k_c = train.index(ref_cam)
        frz = PosedVideo(Video(frz_frames, fps=cfg.fps), frz_cams, times=torch.full((len(train),), t_c), canonical_view=k_c)
        write_transforms(out / "freeze_time" / "transforms.json", frz,
                         extra={"split": "freeze_time", "t_c": t_c, "canonical_frame": c, "cameras": train, **rx})
        if cfg.setting == "4real":
            ref = PosedVideo(Video(cap.frames(ref_cam, times, H, W), fps=cfg.fps),
                             cap.cameras_at([ref_cam] * T, times, H, W), times=tnorm, canonical_view=c)
        else:
            pairs = [(cam, k) for k in range(T) for cam in train]
            fr = torch.cat([cap.frames(cam, times, H, W) for cam in train])  # [C*T] camera-major
            order = [train.index(cam) * T + k for cam, k in pairs]  # time-major: every camera at t, then t+1
            ref = PosedVideo(Video(fr[order], fps=cfg.fps),
                             cap.cameras_at([p[0] for p in pairs], [times[p[1]] for p in pairs], H, W),
                             times=torch.tensor([float(tnorm[k]) for _, k in pairs]),
                             canonical_view=c * len(train) + k_c)  # the reference camera at t_c
        write_transforms(out / "reference" / "transforms.json", ref,
                         extra={"split": "reference", "t_c": t_c, "canonical_frame": c, "setting": cfg.setting,
                                "reference_camera": ref_cam, **rx})

        # -- held-out cameras over time and at t_c
        if test:
            n = min(cfg.test_times, T) if cfg.test_times > 0 else T
            ks = sorted(set(torch.linspace(0, T - 1, n).round().long().tolist()))
            tc_cams, tc_k, tfr, tms = [], [], [], []
            for cam in test:
                tfr.append(cap.frames(cam, [times[k] for k in ks], H, W))
                m = cap.masks(cam, [times[k] for k in ks], H, W)
                tms.append(m)
                tc_cams += [cam] * len(ks)
                tc_k += ks
            masks = torch.cat(tms) if all(m is not None for m in tms) else None
            tv = PosedVideo(Video(torch.cat(tfr), fps=cfg.fps), cap.cameras_at(tc_cams, [times[k] for k in tc_k], H, W),
                            times=torch.tensor([float(tnorm[k]) for k in tc_k]), dynamic_masks=masks)
            write_transforms(out / "test" / "transforms.json", tv,
                             extra={"split": "test", "cameras": tc_cams, "frame_indices": tc_k, **rx})
            st = PosedVideo(Video(torch.cat([cap.frames(cam, [times[c]], H, W) for cam in test]), fps=cfg.fps),
                            cap.cameras_at(test, [times[c]] * len(test), H, W), times=torch.full((len(test),), t_c))
            write_transforms(out / "test_static" / "transforms.json", st,
                             extra={"split": "test_static", "cameras": test, **rx})
            info["test_frames"] = [times[k] for k in ks]
            info["test_masks"] = "given" if masks is not None else "none (eval computes them from the frames)"

        # -- initial points: the capture's own file, else triangulated at t_c (native-ish
        #    resolution: SIFT needs pixels), topped up with points in every frustum
        pts, prep = None, {"mode": cfg.points}
        if cfg.points != "none":
            found, tri_frames, tri_cams = None, None, None
            if cfg.points in ("auto", "triangulate") and cap.points_file is None:
                th, tw = _size(cap, None, None, min(cfg.triangulate_long_side, max(cap.width, cap.height)))
                tri_cams = cap.cameras_at(train, [times[c]] * len(train), th, tw)
                tri_frames = torch.cat([cap.frames(cam, [times[c]], th, tw) for cam in train])
            if cfg.points != "frustum":
                found, prep = scene_points(tri_frames, tri_cams if tri_cams is not None else frz_cams,
                                           mode=cfg.points, points_file=cap.points_file, min_points=cfg.min_points,
                                           fill_points=0, seed=ctx.seed,
                                           triangulate_kw={"max_pair_angle_deg": cfg.max_pair_angle_deg})
            if found is not None and cfg.max_points and len(found) > cfg.max_points:
                g = torch.Generator().manual_seed(ctx.seed)
                keep = torch.randperm(len(found), generator=g)[: cfg.max_points]
                found = type(found)(found.points[keep], found.colors[keep])
            fill = None
            if cfg.fill_points > 0 and (found is None or len(found) < cfg.min_points or cfg.points == "frustum"):
                fill = None
                if cfg.fill == "sweep" and cfg.points != "frustum" and len(train) >= 4:
                    # a ray is kept where >= 3 other cameras agree: needs four training cameras
                    fill, srep = sweep_points(frz_frames, frz_cams, cfg.fill_points, seed=ctx.seed,
                                              points=None if found is None else found.points)
                    prep["sweep"] = srep
                    prep["num_sweep_points"] = len(fill)
                    if len(fill) < cfg.fill_points // 4:  # the views agree almost nowhere: top up
                        more = frustum_points(frz_cams, cfg.fill_points - len(fill), seed=ctx.seed,
                                              points=None if found is None else found.points)
                        more = colour_from_frames(more, frz_frames, frz_cams)
                        prep["num_frustum_points"] = len(more)
                        fill = merge_points(fill, more)
                if fill is None:
                    fill = frustum_points(frz_cams, cfg.fill_points, seed=ctx.seed,
                                          points=None if found is None else found.points)
                    fill = colour_from_frames(fill, frz_frames, frz_cams)
                    prep["num_frustum_points"] = len(fill)
            pts = merge_points(found, fill)
            if pts is not None:
                write_points_ply(out / "points.ply", pts)
            prep["num_points"] = 0 if pts is None else len(pts)
        info["points"] = prep
        write_json(out / "capture.json", info)
