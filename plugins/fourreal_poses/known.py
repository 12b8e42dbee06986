"""The `known` pose estimator: cameras that need no estimation.

* ``source: auto`` (default) -- ``transforms`` when ``transforms`` lists files or every
  video's name is a path to a transforms.json (or a folder holding one) or to an input a
  plugin's single-video layout reads with its cameras (fourreal_poses.single_video), else
  ``orbit``.
* ``source: transforms`` -- one nerfstudio / instant-ngp / D-NeRF ``transforms.json`` per
  video (``transforms``, or the video names when that list is empty; read with
  :func:`fourreal_formats.transforms.load_transforms`, intrinsics scaled
  to the video's frame size; ``time`` and the fourreal ``canonical_view`` are passed on).
* ``source: orbit`` -- a parametric orbit for generated videos whose camera path is known:
  frame ``k`` of an orbit video looks at ``look_at`` from azimuth
  ``start_azimuth_deg + k * arc_deg / (n - 1)`` (``/ n`` for a full 360 degree orbit, whose
  end point would duplicate the start), elevation ``elevation_deg``, distance ``radius``;
  a ``fixed`` video (the 4Real reference video) keeps the orbit's camera at
  ``canonical_view`` (k_c) for all its frames. The cameras are
  :func:`fourreal_formats.cameras.orbit_cameras` (the synthetic scenes' convention: z up,
  azimuth from +x toward +y, horizontal ``fov_deg``; any axis-aligned ``up``).

Points: ``None``, or with ``random_points > 0`` that many random points (uniform in a cube
around ``look_at``, random colours), those seen by every camera first -- an
initialisation for scenes without SfM points.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from fourreal_core.errors import InputError
from fourreal_core.interfaces import PoseEstimator, PoseResult
from fourreal_core.types import Cameras, PointCloud, PosedVideo, Video
from fourreal_formats.cameras import orbit_cameras, points_in_view

from .plugin import KnownConfig

__all__ = ["KnownPoseEstimator"]

class KnownPoseEstimator(PoseEstimator):
    """Cameras from transforms.json files or a parametric orbit (no estimation).

    Args:
        cfg: :class:`~fourreal_poses.plugin.KnownConfig`.
    """

    def __init__(self, cfg: Optional[KnownConfig] = None) -> None:
        self.cfg = cfg or KnownConfig()

    def estimate(self, videos: list[Video], names: list[str]) -> PoseResult:
        """One :class:`PosedVideo` per video (in order) with the known cameras.

        Raises:
            InputError: wrong number of transforms files / trajectories, or a
                transforms.json whose frame count differs from its video's.
        """
        if not videos:
            raise InputError("pose estimator 'known': no videos given")
        if len(names) != len(videos):
            raise InputError(f"pose estimator 'known': {len(videos)} videos but {len(names)} names")
        source = self.cfg.source
        if source == "auto":
            source = "transforms" if self.cfg.transforms or _all_transforms(names) else "orbit"
        if source == "transforms":
            posed, report = self._from_transforms(videos, names)
        else:
            posed, report = self._from_orbit(videos, names)
        points = None
        if self.cfg.random_points > 0:
            cams = Cameras.cat([p.cameras for p in posed]) if _same_size(posed) else posed[0].cameras
            points = self._random_points(cams, report["source"])
            report["num_points"] = len(points)
        else:
            points = self._scene_points(posed, report)
        return PoseResult(videos=posed, points=points, report=report)

    # ------------------------------------------------------------------ scene points
    def _scene_points(self, posed: list[PosedVideo], report: dict):
        """Points for a scene (docs/real-data.md): a file beside the transforms, else
        triangulated with the poses fixed, topped up with frustum points; ``None`` for orbits
        under ``points: auto`` and for ``points: none``."""
        from pathlib import Path

        from .triangulate import points_beside, scene_points

        cfg = self.cfg
        mode = cfg.points
        if mode == "none" or (mode == "auto" and report["source"] == "orbit"):
            return None
        pfile = Path(cfg.points_file) if cfg.points_file else None
        if pfile is None and report["source"] == "transforms":
            for entry in report["videos"]:
                pfile = points_beside(Path(entry["transforms"]))
                if pfile is not None:
                    break
        frames, cams = distinct_views(posed, cfg.triangulate_max_frames)
        kw = {"max_image_size": cfg.triangulate_max_image_size, "max_pair_angle_deg": cfg.triangulate_max_pair_angle_deg,
              "pairs_per_frame": cfg.triangulate_pairs_per_frame}
        pts, rep = scene_points(frames, cams, mode=mode, points_file=pfile, min_points=cfg.min_points,
                                fill_points=cfg.fill_points, seed=cfg.seed, triangulate_kw=kw)
        report["points"] = rep
        report["num_points"] = 0 if pts is None else len(pts)
        return pts

    # -------------------------------------------------------------------- transforms
    def _from_transforms(self, videos: list[Video], names: list[str]):
        from fourreal_formats.transforms import load_transforms

        files = list(self.cfg.transforms)
        if not files:
            if not _all_transforms(names):
                raise InputError(
                    "pose estimator 'known' (source: transforms): list one transforms.json per video "
                    f"in params.transforms (the video names {', '.join(repr(n) for n in names)} are not "
                    "transforms.json paths)"
                )
            files = list(names)
        if len(files) != len(videos):
            raise InputError(
                f"pose estimator 'known' (source: transforms): {len(videos)} videos "
                f"({', '.join(names)}) but {len(files)} transforms files; list one per video, in order"
            )
        posed, rep = [], []
        for video, name, path in zip(videos, names, files):
            carried = None if _is_transforms(str(path)) else _carried_cameras(str(path), video)
            tj = carried if carried is not None else \
                load_transforms(path, height=video.height, width=video.width, load_images=False)
            if len(tj) != len(video):
                raise InputError(
                    f"{tj.meta.get('source', path)}: {len(tj)} frames but video {name!r} has {len(video)}"
                )
            meta = {
                "pose_estimator": "known",
                "source": "transforms",
                "name": name,
                "transforms": tj.meta.get("source", str(path)),
                "warnings": list(tj.meta.get("warnings", [])),
            }
            posed.append(PosedVideo(video=video, cameras=tj.cameras, times=tj.times, canonical_view=tj.canonical_view,
                                    meta=meta))
            rep.append({"name": name, "frames": len(video), "transforms": meta["transforms"],
                        "warnings": meta["warnings"]})
        return posed, {"pose_estimator": "known", "source": "transforms", "videos": rep}

    # ------------------------------------------------------------------------- orbit
    def _trajectories(self, n_videos: int) -> list[str]:
        traj = list(self.cfg.trajectories)
        if not traj:
            return ["orbit"] + ["fixed"] * (n_videos - 1)
        if len(traj) != n_videos:
            raise InputError(
                f"pose estimator 'known': trajectories lists {len(traj)} entries ({traj}) "
                f"for {n_videos} videos; give one per video (orbit or fixed)"
            )
        return traj

    def _orbit(self, n: int, width: int, height: int) -> Cameras:
        c = self.cfg
        return orbit_cameras(
            n, width, height, c.radius, c.elevation_deg, c.arc_deg, c.start_azimuth_deg,
            c.look_at, c.fov_deg, c.up,
        )

    def _from_orbit(self, videos: list[Video], names: list[str]):
        cfg = self.cfg
        if len(cfg.look_at) != 3:
            raise InputError(f"pose estimator 'known': look_at must have 3 numbers, got {cfg.look_at}")
        traj = self._trajectories(len(videos))
        orbit_len = next((len(v) for v, t in zip(videos, traj) if t == "orbit"), None)
        if orbit_len is not None and not 0 <= cfg.canonical_view < orbit_len:
            raise InputError(
                f"pose estimator 'known': canonical_view {cfg.canonical_view} is outside the orbit "
                f"video's {orbit_len} frames"
            )
        posed, rep = [], []
        for video, name, kind in zip(videos, names, traj):
            W, H = video.width, video.height
            meta = {"pose_estimator": "known", "source": "orbit", "name": name, "trajectory": kind}
            if kind == "orbit":
                cams = self._orbit(len(video), W, H)
                k_c = cfg.canonical_view
            else:
                # the orbit's camera at the canonical view (as the orbit video samples it)
                n_ref = orbit_len if orbit_len is not None else 1
                a = cfg.canonical_view if orbit_len is not None else 0
                one = self._orbit(n_ref, W, H)[a]
                cams = Cameras(
                    one.viewmats.expand(len(video), 4, 4).clone(), one.Ks.expand(len(video), 3, 3).clone(), W, H
                )
                k_c = None
                meta["canonical_view"] = a
            posed.append(PosedVideo(video=video, cameras=cams, canonical_view=k_c, meta=meta))
            rep.append({"name": name, "frames": len(video), "trajectory": kind})
        orbit = {
            k: getattr(cfg, k)
            for k in (
                "radius", "elevation_deg", "arc_deg", "start_azimuth_deg", "look_at", "fov_deg", "up",
                "canonical_view",
            )
        }
        return posed, {"pose_estimator": "known", "source": "orbit", "orbit": orbit, "videos": rep}

    # ------------------------------------------------------------------------ points
    def _random_points(self, cameras: Cameras, posed_source: str) -> PointCloud:
        """``random_points`` points uniform in a cube around the orbit centre (or the
        cameras' look-at region), kept where the most cameras see them."""
        cfg = self.cfg
        n = int(cfg.random_points)
        g = torch.Generator().manual_seed(int(cfg.seed))
        if posed_source == "orbit":
            centre = torch.tensor(cfg.look_at, dtype=torch.float64)
            half = cfg.random_points_extent or cfg.radius * math.tan(0.5 * math.radians(cfg.fov_deg))
        else:
            # in front of the cameras: around the point closest to all optical axes
            centre, dist = _focus_point(cameras)
            half = cfg.random_points_extent or dist * 0.5
        cands, counts = [], []
        for _ in range(20):
            p = centre + (2 * torch.rand(4 * n, 3, generator=g, dtype=torch.float64) - 1) * half
            cands.append(p)
            counts.append(points_in_view(p, cameras))
            if int((torch.cat(counts) == len(cameras)).sum()) >= n:
                break
        P, C = torch.cat(cands), torch.cat(counts)
        order = torch.argsort(C, descending=True, stable=True)[:n]  # seen by all cameras first
        pts = P[order].float()
        cols = torch.rand(len(pts), 3, generator=g)
        return PointCloud(pts, cols)


def _is_transforms(name: str) -> bool:
    """Whether ``name`` is a transforms.json file or a folder holding one."""
    from pathlib import Path

    p = Path(name)
    return (p.is_file() and p.suffix.lower() == ".json") or (p.is_dir() and any(p.glob("transforms*.json")))


def _all_transforms(names: list[str]) -> bool:
    """Whether every name is a transforms.json file or a folder holding one -- or an input a
    single-video layout of a plugin reads with its cameras (docs/plugins.md, "Capture layouts")."""
    return bool(names) and all(_is_transforms(str(n)) or _plugin_posed(str(n)) is not None for n in names)


def _plugin_posed(name: str):
    """The :class:`~fourreal_poses.single_video.SingleVideo` at ``name`` when a single-video
    layout other than the built-in ones claims it and it carries its cameras, else None (the
    built-in layouts' inputs keep the rules above: a transforms.json or nothing)."""
    from pathlib import Path

    from fourreal_core.registry import get_registry

    from .single_video import FALLBACK_LAYOUTS, single_video_layouts

    p = Path(name)
    if not p.exists():
        return None
    for layout, reader in single_video_layouts(get_registry()):
        if layout not in FALLBACK_LAYOUTS and reader.claims(p):
            source = reader.read(p)
            return source if source.carries_poses else None
    return None


def _carried_cameras(name: str, video: Video) -> Optional[PosedVideo]:
    """The cameras a plugin's posed input carries, as the transforms branch uses them: all its
    frames at ``video``'s size (frames kept: ``meta`` as load_transforms gives it)."""
    from .single_video import FrameSelection

    source = _plugin_posed(name)
    if source is None:
        return None
    posed = source.load(FrameSelection(height=video.height, width=video.width, min_frames=1)).posed
    if posed is None:
        raise InputError(f"{name}: layout {source.layout!r} says it carries cameras but loaded none")
    return PosedVideo(video=posed.video, cameras=posed.cameras, times=posed.times,
                      canonical_view=posed.canonical_view, meta={"source": str(name), "warnings": [], **posed.meta})


def distinct_views(posed: list[PosedVideo], max_frames: int = 64) -> tuple[torch.Tensor, Cameras]:
    """``(frames [M,H,W,3], cameras)``: one frame per distinct camera of the videos that share
    the first video's frame size (a fixed reference camera counts once), at most
    ``max_frames`` of them, evenly spaced."""
    W, H = posed[0].cameras.width, posed[0].cameras.height
    frames, vms, Ks = [], [], []
    for p in posed:
        if (p.cameras.width, p.cameras.height) != (W, H):
            continue
        for k in range(len(p)):
            vm = p.cameras.viewmats[k].detach().cpu()
            if any(torch.allclose(vm, o, atol=1e-6) for o in vms[-64:]):
                continue
            vms.append(vm)
            Ks.append(p.cameras.Ks[k].detach().cpu())
            frames.append(p.video.frames[k].detach().cpu())
    idx = torch.linspace(0, len(vms) - 1, min(max_frames, len(vms))).round().long().unique() if vms else []
    cams = Cameras(torch.stack([vms[i] for i in idx]), torch.stack([Ks[i] for i in idx]), W, H)
    return torch.stack([frames[i] for i in idx]), cams


def _same_size(posed: list[PosedVideo]) -> bool:
    return len({(p.cameras.width, p.cameras.height) for p in posed}) == 1


def _focus_point(cameras: Cameras) -> tuple[torch.Tensor, float]:
    """The point nearest to all optical axes (least squares) and its mean distance to the
    cameras; falls back to 1 unit in front of the mean camera for parallel axes."""
    c2w = torch.linalg.inv(cameras.viewmats.double())
    o = c2w[:, :3, 3]
    d = torch.nn.functional.normalize(c2w[:, :3, 2], dim=-1)  # OpenCV forward = +z
    A = torch.zeros(3, 3, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    for oi, di in zip(o, d):
        M = torch.eye(3, dtype=torch.float64) - torch.outer(di, di)
        A += M
        b += M @ oi
    if torch.linalg.cond(A) > 1e8:
        p = o.mean(0) + d.mean(0)
    else:
        p = torch.linalg.solve(A, b)
    dist = float((o - p).norm(dim=-1).mean())
    if ((p - o) * d).sum(-1).mean() <= 0:  # behind the cameras: parallel-ish axes
        p = o.mean(0) + d.mean(0)
        dist = 1.0
    return p, max(dist, 1e-6)
