"""Registers the poses family: pose estimators `colmap` (pycolmap SfM) and `known`
(transforms.json or a parametric orbit), the capture layouts `dynamic3dgs` and
`camera_videos` (fourreal_poses.capture; the `multicam` stage that uses them is a stage of
fourreal_stages) and the single-video layouts `transforms_json`, `image_folder` and
`video_file` (fourreal_poses.single_video; the `poses` stage's inputs). Config dataclasses are torch-free;
implementations are imported inside the factories. See docs/poses.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from fourreal_core import hookimpl
from fourreal_core.config import InputPath, renamed

CameraModel = Literal["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV"]


@dataclass
class ColmapConfig:
    """Structure-from-motion with pycolmap: SIFT, matching, incremental mapping.

    All videos go into ONE reconstruction so they share one world frame. Output cameras
    are OpenCV world-to-camera; see docs/poses.md for every option.
    """

    # -- matching --------------------------------------------------------------------
    matching: Literal["auto", "sequential", "exhaustive"] = "auto"
    exhaustive_max_frames: int = 40  # auto: exhaustive up to this many frames in total
    sequential_overlap: int = 10  # sequential: match each frame with the next this many
    quadratic_overlap: bool = True  # sequential: also frames i + 2^k (k < overlap)
    cross_video_pairs: int = 256  # sequential, several videos: pairs between each two videos
    # -- features --------------------------------------------------------------------
    max_image_size: int = 1024  # SIFT runs on frames downscaled to this longest side
    max_num_features: int = 4096
    # -- cameras ---------------------------------------------------------------------
    camera_model: CameraModel = "SIMPLE_RADIAL"
    share_intrinsics: bool = True  # one camera for all frames of all videos
    # what bundle adjustment refines of the camera (COLMAP's mapper options ba_refine_*):
    # the focal length and the distortion terms by default; the principal point stays at the
    # image centre unless asked (it is poorly constrained by a short orbit)
    refine_focal_length: bool = True
    refine_principal_point: bool = False
    refine_extra_params: bool = True
    # -- mapping ---------------------------------------------------------------------
    min_num_matches: int = 15  # verified matches for a pair to count
    init_min_num_inliers: int = 100  # inliers of the initial pair (lower for tiny frames)
    seed: int = 0
    num_threads: int = -1  # -1: all cores
    # -- outputs ---------------------------------------------------------------------
    on_unregistered: Literal["interpolate", "drop", "error"] = "interpolate"
    min_registered_fraction: float = 0.5  # of all frames; below it the estimator fails
    normalize: bool = True  # centre on the cameras, farthest camera at distance 1, z up
    image_format: Literal["jpg", "png"] = "jpg"  # frames written for COLMAP
    workspace: Optional[str] = None  # keep COLMAP's files here (default: a temp folder)
    verbose: bool = False  # let COLMAP log to stderr


@dataclass
class KnownConfig:
    """Cameras that are already known: a transforms.json per video, or a parametric orbit.

    ``source: auto`` reads transforms.json files when ``transforms`` lists them or when
    every video's name is the path of one (a transforms.json or a folder holding one),
    and uses the orbit otherwise. ``source: orbit`` gives the videos listed as ``orbit`` in ``trajectories`` the orbit
    described below and the ``fixed`` ones the orbit's camera at ``canonical_view`` (the
    4Real reference video is filmed from the freeze-time video's canonical view k_c).
    (``canonical_view`` was ``anchor_frame``.)
    """

    source: Literal["auto", "transforms", "orbit"] = "auto"
    # -- source: transforms -------------------------------------------------------------
    transforms: list[InputPath] = field(default_factory=list)  # one per video, in order ([]: the names)
    # -- source: orbit ------------------------------------------------------------------
    trajectories: list[Literal["orbit", "fixed"]] = field(default_factory=list)  # []: first orbits, rest fixed
    radius: float = 4.0
    elevation_deg: float = 20.0
    arc_deg: float = 360.0  # inclusive end; a full 360 leaves the duplicate end point out
    start_azimuth_deg: float = -90.0
    look_at: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    fov_deg: float = 50.0  # horizontal field of view; square pixels, centred principal point
    up: Literal["+z", "-z", "+y", "-y", "+x", "-x"] = "+z"
    canonical_view: int = 0  # k_c: the orbit frame whose camera the fixed videos use
    # -- optional initial points ----------------------------------------------------------
    random_points: int = 0  # >0: random points seen by every camera (PoseResult.points)
    random_points_extent: float = 0.0  # half-size of the sampling cube; 0: radius * tan(fov/2)
    seed: int = 0
    # -- scene points (docs/real-data.md) ---------------------------------------------------
    # auto: for transforms.json cameras, a points file beside them (nerfstudio ply_file_path,
    #   sparse_pc.ply, points3D.ply, init_pt_cld.npz...) else COLMAP's point triangulator with
    #   the poses fixed; topped up with frustum points below min_points. Orbits: no points.
    # triangulate / file / frustum / none: only that (a failed triangulate or a missing file
    #   is an error).
    points: Literal["auto", "triangulate", "file", "frustum", "none"] = "auto"
    points_file: Optional[InputPath] = None  # explicit points file (PLY / npz / points3D.bin)
    min_points: int = 1000  # fewer found points: add fill_points random points in every frustum
    fill_points: int = 20000
    triangulate_max_frames: int = 64  # frames used (evenly spaced over all videos' distinct cameras)
    triangulate_max_image_size: int = 1024
    triangulate_max_pair_angle_deg: float = 75.0  # match frames whose optical axes are this close
    triangulate_pairs_per_frame: int = 8
    anchor_frame: Any = None  # renamed canonical_view: kept only to say so

    def __post_init__(self) -> None:
        if self.anchor_frame is not None:
            renamed("anchor_frame", "canonical_view", "k_c, the orbit frame the fixed videos are filmed from")


@hookimpl
def fourreal_register(registry):
    registry.add(
        "pose_estimator", "colmap", "fourreal_poses.colmap:ColmapPoseEstimator", config=ColmapConfig,
        description="COLMAP structure-from-motion via pycolmap (pip install fourreal[colmap])",
    )
    registry.add(
        "capture", "dynamic3dgs", "fourreal_poses.capture:Dynamic3DGSCapture",
        description="Dynamic-3D-Gaussians folder: train_meta.json / test_meta.json, ims/, seg/, init_pt_cld.npz",
    )
    registry.add(
        "capture", "camera_videos", "fourreal_poses.capture:CameraVideosCapture",
        description="One video or frame folder per camera + a cameras .json (nerfstudio-style transform_matrix, fl_x...)",
    )
    # single-video layouts (the poses stage's reference / freeze_time inputs), tried after any
    # other single-video layout in the order transforms_json, image_folder, video_file
    registry.add(
        "capture", "transforms_json", "fourreal_poses.single_video:TransformsJsonInput",
        description="Posed images: a transforms.json (nerfstudio / instant-ngp / D-NeRF) or a folder holding one",
    )
    registry.add(
        "capture", "image_folder", "fourreal_poses.single_video:ImageFolderInput",
        description="One video as a folder of image files (png/jpg/...), natural order; cameras estimated",
    )
    registry.add(
        "capture", "video_file", "fourreal_poses.single_video:VideoFileInput",
        description="One video file (mp4/mov/webm/gif...) or image; cameras estimated",
    )
    registry.add(
        "pose_estimator", "known", "fourreal_poses.known:KnownPoseEstimator", config=KnownConfig,
        description="Known cameras: a transforms.json per video or a parametric orbit",
    )
