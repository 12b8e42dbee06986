"""The `colmap` pose estimator: structure-from-motion with pycolmap.

Pipeline (all videos in ONE reconstruction, so they share one world frame):

1. write every frame as an image into a workspace (``images/v00/00000.jpg``...; one folder
   per video),
2. SIFT features (``max_image_size``, ``max_num_features``); one shared camera for all
   frames (``share_intrinsics``) or one camera per video,
3. matching: exhaustive for short inputs, else sequential within each video (overlap +
   quadratic overlap, no loop detection) plus a grid of pairs between every two videos,
4. incremental mapping; the reconstruction with the most registered frames wins,
5. COLMAP's ``cam_from_world`` is already an OpenCV world-to-camera transform: it becomes
   ``viewmats`` directly; ``Ks`` come from the camera's calibration matrix,
6. frames that did not register are interpolated, dropped, or an error
   (``on_unregistered``); the world is optionally normalised (``normalize``),
7. the sparse points (colours in [0,1]) go out in the same, normalised, world frame.

See docs/poses.md for the options and the numbers measured on real data.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from fourreal_core.errors import FourRealError, InputError, PluginError
from fourreal_core.interfaces import PoseEstimator, PoseResult
from fourreal_core.types import Cameras, PointCloud, PosedVideo, Video

from .align import _up_rotation, apply_similarity, interpolate_missing_poses, transform_cameras
from .plugin import ColmapConfig

__all__ = [
    "ColmapPoseEstimator",
    "assemble_result",
    "import_pycolmap",
    "make_pairs",
    "normalization_similarity",
]

FAIL_HINT = (
    "try more frames, a higher resolution (max_image_size), matching: exhaustive, or the "
    "`known` pose estimator (a transforms.json per video, or an orbit)"
)
_DISTORTED_MODELS = {"SIMPLE_RADIAL", "RADIAL", "OPENCV"}


def fail_hint(cfg: ColmapConfig, videos: Sequence[Video]) -> str:
    """What to try when COLMAP fails, naming the knob that can help: ``max_image_size``
    only when it shrank the frames; otherwise the frames themselves are small, and only
    larger frames (the poses stage's ``sfm_long_side``) give SIFT more to work with."""
    side = max((max(v.width, v.height) for v in videos), default=0)
    if side > int(cfg.max_image_size):
        pixels = f"a higher resolution (max_image_size, now {cfg.max_image_size}, shrinks the {side} px frames)"
    else:
        pixels = (f"larger frames (these are {side} px on the long side, under max_image_size "
                  f"{cfg.max_image_size}: the poses stage's sfm_long_side sets the size COLMAP gets)")
    return (f"try {pixels}, more frames, matching: exhaustive, or the `known` pose estimator "
            "(a transforms.json per video, or an orbit)")


def import_pycolmap():
    """Import pycolmap, or raise a :class:`PluginError` saying how to install it.

    ``zlib`` (and Pillow, if present) are imported first on purpose: pycolmap's wheel
    exports its own zlib symbols, and a Pillow loaded *after* it into a process that has
    not loaded the system libz yet crashes when it writes a PNG (heap corruption in
    ``ImagingZipEncode``, seen with pycolmap 4.2.1 + Pillow 12). Loading libz first makes
    every later library bind to the system one.
    """
    import zlib  # noqa: F401

    try:
        import PIL.Image  # noqa: F401
    except ImportError:  # pragma: no cover - Pillow comes with imageio
        pass
    try:
        import pycolmap
    except ImportError as exc:
        raise PluginError("pose estimator 'colmap' needs pycolmap: pip install fourreal[colmap]") from exc
    if not hasattr(pycolmap, "FeatureExtractionOptions") or not hasattr(pycolmap, "match_image_pairs"):
        raise PluginError(
            f"pose estimator 'colmap' needs a newer pycolmap (found {getattr(pycolmap, '__version__', '?')}, "
            "tested with 4.2): pip install -U 'fourreal[colmap]'"
        )
    return pycolmap


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ==================================================================================== pairs
def make_pairs(
    lengths: Sequence[int],
    overlap: int = 10,
    quadratic: bool = True,
    cross_video_pairs: int = 256,
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Image pairs to match for sequential matching of several videos.

    Within each video, frame ``i`` is paired with ``i+1 .. i+overlap`` and, if
    ``quadratic``, with ``i + 2^k`` for ``k < overlap`` (COLMAP's quadratic overlap, which
    catches the long baselines an orbit needs). Between every two videos, about
    ``cross_video_pairs`` pairs on a grid of evenly spaced frames of both (so a reference
    video meets the freeze-time frame it shares, wherever that frame is).

    Args:
        lengths: number of frames of each video.

    Returns:
        unique pairs ``((video_a, frame_a), (video_b, frame_b))``, deterministic order.
    """
    pairs: list[tuple[tuple[int, int], tuple[int, int]]] = []
    seen: set = set()

    def add(a: tuple[int, int], b: tuple[int, int]) -> None:
        if a == b:
            return
        key = (a, b) if a < b else (b, a)
        if key not in seen:
            seen.add(key)
            pairs.append(key)

    for v, n in enumerate(lengths):
        for i in range(n):
            for d in range(1, overlap + 1):
                if i + d < n:
                    add((v, i), (v, i + d))
            if quadratic:
                for k in range(overlap):
                    d = 2**k
                    if i + d >= n:
                        break
                    add((v, i), (v, i + d))
    side = max(1, int(math.ceil(math.sqrt(max(cross_video_pairs, 0))))) if cross_video_pairs > 0 else 0
    for a in range(len(lengths)):
        for b in range(a + 1, len(lengths)):
            if side == 0 or lengths[a] == 0 or lengths[b] == 0:
                continue
            fa = sorted(set(np.linspace(0, lengths[a] - 1, min(side, lengths[a])).round().astype(int).tolist()))
            fb = sorted(set(np.linspace(0, lengths[b] - 1, min(side, lengths[b])).round().astype(int).tolist()))
            for i in fa:
                for j in fb:
                    add((a, i), (b, j))
    return pairs


# ============================================================================ normalization
def normalization_similarity(
    centres: torch.Tensor, up_dirs: torch.Tensor, points: Optional[torch.Tensor]
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The similarity ``X' = s R X + t`` that `normalize` applies.

    * centre: the per-axis median of the sparse ``points`` (what the cameras look at), or
      the mean camera centre when there are fewer than 10 points;
    * rotation: the mean camera up direction (``-y`` of OpenCV cameras) becomes ``+z``;
    * scale: the median distance from the centre to the camera centres becomes 1.

    Args:
        centres: ``[M,3]`` camera centres; up_dirs: ``[M,3]`` camera up vectors in world
        coordinates; points: ``[P,3]`` or None.

    Returns:
        ``(s, R [3,3], t [3])`` float64.
    """
    C = centres.double()
    if points is not None and points.shape[0] >= 10:
        centre = points.double().median(dim=0).values
    else:
        centre = C.mean(0)
    up = up_dirs.double().mean(0)
    R = _up_rotation(up) if float(up.norm()) > 1e-9 else torch.eye(3, dtype=torch.float64)
    dist = (C - centre).norm(dim=-1)
    d = float(dist.median())
    if not math.isfinite(d) or d <= 1e-12:
        d = float(dist.max()) if float(dist.max()) > 1e-12 else 1.0
    s = 1.0 / d
    t = -s * (R @ centre)
    return s, R, t


# ================================================================================ estimator
@contextmanager
def _quiet(pycolmap, verbose: bool) -> Iterator[None]:
    """Silence COLMAP's glog lines unless ``verbose`` (failures surface as our own
    one-line errors instead)."""
    log = getattr(pycolmap, "logging", None)
    if verbose or log is None or not hasattr(log, "minloglevel"):
        yield
        return
    old = log.minloglevel
    try:
        log.minloglevel = 3  # FATAL only
        yield
    finally:
        log.minloglevel = old


class ColmapPoseEstimator(PoseEstimator):
    """Cameras for all frames of all videos from one pycolmap reconstruction.

    Args:
        cfg: :class:`~fourreal_poses.plugin.ColmapConfig`.
    """

    def __init__(self, cfg: Optional[ColmapConfig] = None) -> None:
        self.cfg = cfg or ColmapConfig()
        self.pycolmap = import_pycolmap()

    # ------------------------------------------------------------------------ public
    def estimate(self, videos: list[Video], names: list[str]) -> PoseResult:
        """Run SfM on ``videos`` (``[N_v,H,W,3]`` frames each) and return one
        :class:`PosedVideo` per video, in order, plus the sparse points.

        Raises:
            InputError: bad inputs, or unregistered frames with ``on_unregistered: error``.
            FourRealError: COLMAP found no usable reconstruction (one line with advice).
        """
        cfg = self.cfg
        if not videos:
            raise InputError("pose estimator 'colmap': no videos given")
        if len(names) != len(videos):
            raise InputError(f"pose estimator 'colmap': {len(videos)} videos but {len(names)} names")
        sizes = {(v.width, v.height) for v in videos}
        if cfg.share_intrinsics and len(sizes) > 1:
            listing = ", ".join(f"{n}: {v.width}x{v.height}" for n, v in zip(names, videos))
            raise InputError(
                f"pose estimator 'colmap': share_intrinsics needs one frame size, got {listing}; "
                "resize the videos or set share_intrinsics: false"
            )
        if not 0.0 <= cfg.min_registered_fraction <= 1.0:
            raise InputError(f"colmap: min_registered_fraction must be in [0,1], got {cfg.min_registered_fraction}")
        if cfg.workspace:
            ws = Path(cfg.workspace).expanduser().resolve()
            ws.mkdir(parents=True, exist_ok=True)
            for stale in ("database.db", "pairs.txt"):
                (ws / stale).unlink(missing_ok=True)
            for stale in ("images", "sparse"):
                shutil.rmtree(ws / stale, ignore_errors=True)
            return self._run(videos, names, ws)
        with tempfile.TemporaryDirectory(prefix="fourreal-colmap-") as tmp:
            return self._run(videos, names, Path(tmp))

    # ----------------------------------------------------------------------- pipeline
    def _run(self, videos: list[Video], names: list[str], ws: Path) -> PoseResult:
        pc, cfg = self.pycolmap, self.cfg
        self._hint = fail_hint(cfg, videos)
        timings: dict[str, float] = {}
        total = sum(len(v) for v in videos)
        lengths = [len(v) for v in videos]
        t0 = time.perf_counter()
        image_dir = ws / "images"
        image_names = self._write_frames(videos, image_dir)
        timings["write_frames"] = time.perf_counter() - t0

        db = ws / "database.db"
        mode = cfg.matching
        if mode == "auto":
            mode = "exhaustive" if total <= cfg.exhaustive_max_frames else "sequential"
        if cfg.seed is not None and hasattr(pc, "set_random_seed"):
            pc.set_random_seed(int(cfg.seed))

        with _quiet(pc, cfg.verbose):
            # -- features
            t = time.perf_counter()
            reader = pc.ImageReaderOptions()
            reader.camera_model = cfg.camera_model
            extraction = pc.FeatureExtractionOptions()
            extraction.max_image_size = int(cfg.max_image_size)
            extraction.num_threads = int(cfg.num_threads)
            extraction.sift.max_num_features = int(cfg.max_num_features)
            camera_mode = pc.CameraMode.SINGLE if cfg.share_intrinsics else pc.CameraMode.PER_FOLDER
            self._step(
                "feature extraction", pc.extract_features, db, image_dir,
                image_names=[n for vid in image_names for n in vid], camera_mode=camera_mode,
                reader_options=reader, extraction_options=extraction,
            )
            timings["features"] = time.perf_counter() - t
            stats = self._db_stats(db)

            # -- matching
            t = time.perf_counter()
            matching = pc.FeatureMatchingOptions()
            matching.num_threads = int(cfg.num_threads)
            verification = pc.TwoViewGeometryOptions()
            verification.min_num_inliers = int(cfg.min_num_matches)
            if mode == "exhaustive":
                num_pairs = total * (total - 1) // 2
                self._step(
                    "exhaustive matching", pc.match_exhaustive, db,
                    matching_options=matching, verification_options=verification,
                )
            else:
                pairs = make_pairs(lengths, cfg.sequential_overlap, cfg.quadratic_overlap, cfg.cross_video_pairs)
                num_pairs = len(pairs)
                pairs_file = ws / "pairs.txt"
                pairs_file.write_text(
                    "".join(f"{image_names[a][i]} {image_names[b][j]}\n" for (a, i), (b, j) in pairs)
                )
                pairing = pc.ImportedPairingOptions()
                pairing.match_list_path = str(pairs_file)
                self._step(
                    "sequential matching", pc.match_image_pairs, db,
                    matching_options=matching, pairing_options=pairing,
                    verification_options=verification,
                )
            timings["matching"] = time.perf_counter() - t
            stats.update(self._db_stats(db))

            # -- mapping
            t = time.perf_counter()
            opts = pc.IncrementalPipelineOptions()
            opts.min_num_matches = int(cfg.min_num_matches)
            opts.num_threads = int(cfg.num_threads)
            opts.min_model_size = int(min(10, max(3, total // 3)))
            opts.extract_colors = True
            if hasattr(opts, "random_seed"):
                opts.random_seed = int(cfg.seed)
            opts.mapper.init_min_num_inliers = int(cfg.init_min_num_inliers)
            for key in ("focal_length", "principal_point", "extra_params"):  # intrinsics BA refines
                if hasattr(opts, f"ba_refine_{key}"):
                    setattr(opts, f"ba_refine_{key}", bool(getattr(cfg, f"refine_{key}")))
            sparse = ws / "sparse"
            sparse.mkdir(exist_ok=True)
            recs = self._step("incremental mapping", pc.incremental_mapping, db, image_dir, sparse, options=opts)
            timings["mapping"] = time.perf_counter() - t

        recs = dict(recs or {})
        sizes = sorted((r.num_reg_images() for r in recs.values()), reverse=True)
        what = f"{total} frames of {', '.join(repr(n) for n in names)}"
        if not recs or sizes[0] == 0:
            raise FourRealError(
                f"COLMAP found no reconstruction for {what} ({stats.get('keypoints_per_image', 0):.0f} "
                f"features per frame, {stats.get('inlier_matches', 0)} verified matches): {self._hint}"
            )
        rec = max(recs.values(), key=lambda r: r.num_reg_images())

        # -- cameras per frame, then the policy (fractions, unregistered, normalisation)
        per_video = [self._cameras_of(rec, image_names[vi], video) for vi, video in enumerate(videos)]
        points, colors = self._points(rec)
        cameras_report, warnings = self._camera_report(rec)
        report = {
            "pose_estimator": "colmap",
            "pycolmap_version": getattr(pc, "__version__", "?"),
            "matching": mode,
            "num_pairs": int(num_pairs),
            "reconstruction_sizes": sizes,
            "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
            "cameras": cameras_report,
            "warnings": warnings,
            "database": stats,
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        }
        report["timings_s"]["total"] = round(time.perf_counter() - t0, 3)
        if cfg.workspace:
            report["workspace"] = str(ws)
        return assemble_result(videos, names, per_video, points, colors, cfg, report)

    # ------------------------------------------------------------------------ helpers
    def _step(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*(str(a) if isinstance(a, Path) else a for a in args), **kwargs)
        except FourRealError:
            raise
        except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError
            raise FourRealError(f"COLMAP {what} failed: {_one_line(exc)}; {self._hint}") from exc

    def _write_frames(self, videos: list[Video], image_dir: Path) -> list[list[str]]:
        """Frames -> 8-bit images, one folder per video. Returns the relative names."""
        from PIL import Image

        ext = self.cfg.image_format
        out = []
        for vi, video in enumerate(videos):
            folder = image_dir / f"v{vi:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            arr = (video.frames.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            names = []
            for k in range(arr.shape[0]):
                rel = f"v{vi:02d}/{k:05d}.{ext}"
                img = Image.fromarray(arr[k])
                if ext == "jpg":
                    img.save(image_dir / rel, quality=95, subsampling=0)
                else:
                    img.save(image_dir / rel)
                names.append(rel)
            out.append(names)
        return out

    def _db_stats(self, db: Path) -> dict:
        """Diagnostics from the database (best effort: absent if the API differs)."""
        pc = self.pycolmap
        try:
            d = pc.Database.open(str(db)) if hasattr(pc.Database, "open") else pc.Database(str(db))
            try:
                n = max(int(d.num_images()), 1)
                return {
                    "images": int(d.num_images()),
                    "keypoints_per_image": float(d.num_keypoints()) / n,
                    "inlier_matches": int(d.num_inlier_matches()),
                }
            finally:
                d.close()
        except Exception:  # noqa: BLE001 - diagnostics only
            return {}

    def _cameras_of(self, rec, names: list[str], video: Video):
        """``(viewmats [N,4,4], Ks [N,3,3], registered [N] bool)`` of one video; rows of
        unregistered frames are identity / zeros."""
        n = len(names)
        vm = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
        Ks = torch.zeros(n, 3, 3, dtype=torch.float64)
        ok = torch.zeros(n, dtype=torch.bool)
        for k, name in enumerate(names):
            img = rec.find_image_with_name(name)
            if img is None or not _has_pose(img):
                continue
            cfw = img.cam_from_world
            cfw = cfw() if callable(cfw) else cfw  # a method in pycolmap >= 3.12, a property before
            vm[k, :3, :4] = torch.from_numpy(np.asarray(cfw.matrix(), dtype=np.float64))
            cam = rec.cameras[img.camera_id]
            K = torch.from_numpy(np.asarray(cam.calibration_matrix(), dtype=np.float64))
            if (cam.width, cam.height) != (video.width, video.height):  # not expected; be safe
                K[0] *= video.width / cam.width
                K[1] *= video.height / cam.height
            Ks[k] = K
            ok[k] = True
        if bool(ok.any()) and not bool(ok.all()):
            Ks[~ok] = Ks[ok][0]
        return vm.float(), Ks.float(), ok

    def _points(self, rec):
        """Sparse points ``[P,3]`` float64 and colours ``[P,3]`` in [0,1], or (None, None)."""
        pts = rec.points3D
        if len(pts) == 0:
            return None, None
        xyz = np.empty((len(pts), 3), dtype=np.float64)
        rgb = np.empty((len(pts), 3), dtype=np.float64)
        for i, p in enumerate(pts.values()):
            xyz[i] = p.xyz
            rgb[i] = p.color
        return torch.from_numpy(xyz), torch.from_numpy(rgb / 255.0)

    def _camera_report(self, rec) -> tuple[list[dict], list[str]]:
        out, warnings = [], []
        for cam_id, cam in sorted(rec.cameras.items()):
            model = str(cam.model_name)
            params = [float(x) for x in np.asarray(cam.params).reshape(-1)]
            entry = {
                "camera_id": int(cam_id),
                "model": model,
                "width": int(cam.width),
                "height": int(cam.height),
                "params": params,
                "params_info": str(getattr(cam, "params_info", "")),
                "distortion_px": 0.0,
            }
            if model in _DISTORTED_MODELS:
                # how far the image corners move between the distorted and the pinhole model
                w, h = float(cam.width), float(cam.height)
                corners = np.array([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]])
                try:
                    xy = np.asarray(cam.cam_from_img(corners), dtype=np.float64)
                    K = np.asarray(cam.calibration_matrix(), dtype=np.float64)
                    pin = (np.c_[xy, np.ones(len(xy))] @ K.T)[:, :2]
                    disp = float(np.linalg.norm(pin - corners, axis=1).max())
                except Exception:  # noqa: BLE001 - diagnostics only
                    disp = float("nan")
                entry["distortion_px"] = disp
                if not disp < 0.5:
                    warnings.append(
                        f"camera {cam_id} ({model}) has lens distortion that moves the image corners "
                        f"by {disp:.1f} px; fourreal's rasterizer is pinhole, so frames are used as "
                        "they are (undistort them, or use camera_model: PINHOLE / SIMPLE_PINHOLE for "
                        "generated videos)"
                    )
            out.append(entry)
        return out, warnings


# ================================================================================ assembly
def assemble_result(
    videos: list[Video],
    names: list[str],
    per_video: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    points: Optional[torch.Tensor],
    colors: Optional[torch.Tensor],
    cfg: ColmapConfig,
    report: Optional[dict] = None,
) -> PoseResult:
    """Turn per-frame SfM cameras into a :class:`PoseResult` following ``cfg``'s policy.

    Checks ``min_registered_fraction`` and that every video has a registered frame,
    handles unregistered frames (``on_unregistered``), normalises the world (``normalize``,
    see :func:`normalization_similarity`) and fills the report. Independent of pycolmap.

    Args:
        videos, names: the inputs of :meth:`ColmapPoseEstimator.estimate`.
        per_video: for each video ``(viewmats [N,4,4], Ks [N,3,3], registered [N] bool)``;
            rows of unregistered frames are ignored.
        points, colors: sparse points ``[P,3]`` and colours ``[P,3]`` in [0,1], or None.
        report: entries to start the report with.
    """
    report = dict(report or {})
    hint = fail_hint(cfg, videos)
    total = sum(len(v) for v in videos)
    registered = sum(int(ok.sum()) for _, _, ok in per_video)
    frac = registered / max(total, 1)
    what = f"{total} frames of {', '.join(repr(n) for n in names)}"
    if frac < cfg.min_registered_fraction:
        raise FourRealError(
            f"COLMAP registered only {registered} of {what} ({100 * frac:.0f}% < "
            f"min_registered_fraction {100 * cfg.min_registered_fraction:.0f}%): {hint}"
        )
    for (_, _, ok), name, video in zip(per_video, names, videos):
        if not bool(ok.any()):
            raise FourRealError(
                f"COLMAP registered none of the {len(video)} frames of {name!r} "
                f"({registered} of {total} frames overall), so it has no place in the shared "
                f"world frame: {hint}"
            )
    missing = [torch.nonzero(~ok).reshape(-1).tolist() for _, _, ok in per_video]
    if cfg.on_unregistered == "error" and any(missing):
        listing = "; ".join(f"{n!r}: frames {idx}" for n, idx in zip(names, missing) if idx)
        raise InputError(
            f"COLMAP did not register {total - registered} of {total} frames ({listing}); "
            f"set on_unregistered: interpolate or drop, or {hint}"
        )

    sim = None
    if cfg.normalize:  # computed on registered cameras only
        reg_vm = torch.cat([vm[ok] for vm, _, ok in per_video]).double()
        c2w = torch.linalg.inv(reg_vm)
        sim = normalization_similarity(c2w[:, :3, 3], -c2w[:, :3, 1], points)

    posed: list[PosedVideo] = []
    video_reports = []
    for (vm, Ks, ok), name, video, idx_missing in zip(per_video, names, videos, missing):
        meta: dict = {"pose_estimator": "colmap", "name": name}
        if cfg.on_unregistered == "drop" and idx_missing:
            keep = torch.nonzero(ok).reshape(-1)
            video_out = Video(video.frames[keep.to(video.frames.device)], video.fps)
            cams = Cameras(vm[keep], Ks[keep], video.width, video.height)
            meta["kept_indices"] = keep.tolist()
            meta["dropped_indices"] = idx_missing
        else:
            video_out = video
            if idx_missing:
                vm = interpolate_missing_poses(vm, ok)
                Ks = Ks.clone()
                Ks[~ok] = Ks[ok][0]  # every frame of a video shares its camera
                meta["interpolated_indices"] = idx_missing
            cams = Cameras(vm, Ks, video.width, video.height)
        if sim is not None:
            cams = transform_cameras(cams, *sim)
        posed.append(PosedVideo(video=video_out, cameras=cams, meta=meta))
        video_reports.append(
            {"name": name, "frames": len(video), "registered": int(ok.sum()), "unregistered": idx_missing}
        )

    cloud = None
    if points is not None and len(points) > 0:
        pts = apply_similarity(points, *sim) if sim is not None else points
        cols = colors if colors is not None else torch.full_like(pts, 0.5)
        cloud = PointCloud(pts.float(), cols.float().clamp(0, 1))

    report.update(
        {
            "num_frames": total,
            "num_registered": registered,
            "registered_fraction": frac,
            "on_unregistered": cfg.on_unregistered,
            "videos": video_reports,
            "num_points": 0 if cloud is None else len(cloud),
        }
    )
    report.setdefault("pose_estimator", "colmap")
    if sim is not None:
        s, R, t = sim
        report["normalization"] = {
            "scale": s,
            "rotation": R.tolist(),
            "translation": t.tolist(),
            "note": "X_normalized = scale * rotation @ X_colmap + translation",
        }
    return PoseResult(videos=posed, points=cloud, report=report)


def _has_pose(img) -> bool:
    for attr in ("has_pose", "registered"):  # 4.x: has_pose; 3.x: registered
        val = getattr(img, attr, None)
        if val is not None:
            return bool(val() if callable(val) else val)
    return False
