"""Torch-free config dataclasses of the 4Real stages and the `stagewise` scheduler.

Default phase lists follow the paper's Appendix C; `iterations_scale` in the recipe
multiplies every phase length and every other step count (each is typed ``Steps``; the
stage applies the scale once, to its whole config, before building anything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

from fourreal_core.config import (Component, ConfigValueError, InputPath, Ramp, Steps, above, at_least,
                                  component_default, steps_floor)
from fourreal_core.config import renamed as _renamed  # old recipes: one line saying what was renamed


from .scheduler import canonical_phases, check_phases, motion_phases, scheduler_default


# ---------------------------------------------------------------------- canonical stage
@dataclass
class CanonicalConfig:
    """Paper §3.3: canonical 3DGS + per-frame deformation w_mv(x, k) from a freeze-time video.

    freeze_time: the freeze-time video's transforms.json (default: an earlier stage's
        ``freeze_time/transforms.json``). Its ``canonical_view`` is k_c: the freeze-time
        frame that shows the canonical frame c of the reference video.
    init_points: sparse points (.ply/.npz; default: an earlier stage's ``points.ply`` or
        ``init_points.npz``; else ``num_random_points`` random points).
    w_mv: the per-frame deformation field w_mv(x, k), zero at k_c; ``null`` turns it off
        (ablation). (Was ``deformer``.)
    losses: the loss terms; phases name which are active. Turn the small-motion loss off
        (ablation) by removing it or setting its weight to 0.
    refine_cameras: fine-tune per-frame camera poses (frame c fixed).
    eval_views: held-out views of the static scene to score (default: an earlier stage's
        ``test_static/transforms.json`` when present).
    """

    freeze_time: Optional[InputPath] = None
    init_points: Optional[InputPath] = None
    eval_views: Optional[InputPath] = None
    width: Optional[int] = None
    height: Optional[int] = None
    background: Optional[list[float]] = None  # RGB behind the Gaussians; None: the data's (fourreal.background) or black
    # training renders over ``fixed`` (the background above) or ``random`` (a new colour each
    # step, nerfstudio splatfacto's ``random``): for full-frame captures, where every pixel is
    # scene, so a semi-transparent fit can never match the target (docs/real-data.md)
    train_background: Literal["fixed", "random"] = "fixed"
    # render (and train) with at least this near plane; None: the data's (fourreal.near_plane,
    # set by the multicam stage for cameras mounted in the scene's wall), else the rasterizer's
    near_plane: Optional[float] = None
    num_random_points: int = 20000
    # without points: ``frustum`` -- random points over every camera's view frustum and the
    # scene's depth range (background included; fourreal_poses.triangulate.frustum_points),
    # coloured from the frames; ``box`` -- a cube around where the optical axes meet
    random_init: Literal["frustum", "box"] = "frustum"
    representation: Component("representation") = component_default("representation", "gaussians")  # type: ignore[valid-type]
    w_mv: Optional[Component("deformer")] = component_default(  # type: ignore[valid-type]
        "deformer", "mlp", time_input="frame_code", predict_scale=False
    )
    losses: list[Component("loss")] = field(  # type: ignore[valid-type]
        default_factory=lambda: [{"name": "l1", "params": {}}, {"name": "small_motion", "params": {}}]
    )
    scheduler: Component("scheduler") = scheduler_default(canonical_phases())  # type: ignore[valid-type]
    refine_cameras: bool = True
    # the per-frame camera corrections' learning rate, decayed log-linearly to camera_lr_final
    # over the stage (it was the scheduler's; recipes that set it there are told so)
    camera_lr: float = 1e-4
    camera_lr_final: float = 1e-6
    checkpoint_every: Steps = 500
    video_fps: float = 8.0
    deformer: Any = None  # renamed w_mv: kept only to say so

    #: what a phase's ``train`` may name here (``new_gaussians`` is every Gaussian: all are new)
    param_groups: ClassVar[tuple[str, ...]] = ("gaussians", "new_gaussians", "deformer", "cameras")

    def __post_init__(self) -> None:
        if self.deformer is not None:
            _renamed("deformer", "w_mv", "the canonical stage's per-frame deformation field")

    def check_recipe(self, registry: Any, label: str) -> None:
        check_phases(self, registry, label, self.param_groups)


# ------------------------------------------------------------------------- motion stage
@dataclass
class MotionConfig:
    """Paper §3.4, Appendix C.2: temporal deformation w_t(x, t) fitted to the reference video.

    reference: the reference video's transforms.json (default: an earlier stage's
        ``reference/transforms.json``); per-frame ``time`` in [0,1] (else evenly spaced);
        its ``canonical_view`` is the canonical frame c (t_c = its time; w_t is zero at t_c). A
        monocular D-NeRF capture works the same way.
    freeze_time: the freeze-time video (default: the newest earlier ``freeze_time/transforms.json``,
        i.e. the canonical stage's refined cameras); used by phases with ``frames: all``.
    canonical: canonical Gaussians (default: an earlier stage's ``canonical.ply``; without one the
        Gaussians start from points, as in a plain dynamic reconstruction, e.g. D-NeRF).
    w_t: the temporal deformation field w_t(x, t), zero at t_c. (Was ``deformer``.)
    per_frame_deformer: keep applying the canonical stage's w_mv (frozen) to freeze-time frames.
    growth_opacity: tau_alpha for the growth phase (paper E.2: 1e-2).
    growth_budget: the growth phase may add at most this fraction of the canonical Gaussian
        count (0.25: up to 25% more); None: only the representation's ``max_gaussians`` caps
        it (the paper sets no cap). A CPU budget: at a low ``growth_grad_threshold`` growth
        otherwise fills any cap within a few hundred steps (docs/real-data.md).
    dynamic_region: w_t moves only the Gaussians whose centre projects into the reference
        camera's dynamic region (pixels that change over the reference video), dilated by this
        fraction of the image's long side (0.03: 8 px at 256); the others are static. For a
        fixed reference camera and a subject small in the frame it makes a motion step cheaper
        by the static share and keeps the background from drifting (region.py,
        docs/real-data.md). None: w_t moves every Gaussian (the paper).
    tracker: point tracks of the reference video -- ``{name: opencv}`` (tracked here from
        ``track_points`` corners at c, half in the moving region) or ``{name: tracks_file,
        params: {path: tracks.npz}}`` (CoTracker, TAPIR...) -- and ``track_weight`` the weight of
        the track loss (Shape of Motion's: the reference camera's render at c of where w_t puts
        each Gaussian at t must follow the track at t, where it is visible; and the same from the
        previous frame to t). On every reference frame of phases that deform. None: off. The
        tracks are written to ``tracks.npz``. ``track_points`` query points at
        ``track_query_frames`` frames (c and others spread over the video).
    """

    reference: Optional[InputPath] = None
    freeze_time: Optional[InputPath] = None
    canonical: Optional[InputPath] = None
    init_points: Optional[InputPath] = None
    eval_views: Optional[InputPath] = None
    width: Optional[int] = None
    height: Optional[int] = None
    background: Optional[list[float]] = None  # RGB behind the Gaussians; None: the data's (fourreal.background) or black
    # render (and train) with at least this near plane; None: the data's (fourreal.near_plane,
    # set by the multicam stage for cameras mounted in the scene's wall), else the rasterizer's
    near_plane: Optional[float] = None
    num_random_points: int = 20000
    per_frame_deformer: bool = True
    representation: Component("representation") = component_default("representation", "gaussians")  # type: ignore[valid-type]
    w_t: Component("deformer") = component_default("deformer", "mlp", time_input="time")  # type: ignore[valid-type]
    losses: list[Component("loss")] = field(  # type: ignore[valid-type]
        default_factory=lambda: [{"name": n, "params": {}} for n in ("align", "norm", "diff", "rigid", "rot")]
    )
    scheduler: Component("scheduler") = scheduler_default(motion_phases())  # type: ignore[valid-type]
    growth_opacity: float = 1e-2
    growth_grad_threshold: float = 2e-4
    growth_budget: Optional[float] = None
    dynamic_region: Optional[float] = None
    # reference frames a step samples: within a window around the canonical frame c that
    # widens linearly to the whole video over the stage's first ``time_window`` steps
    # (0: every frame from the start); see docs/real-data.md, "The moving subject"
    time_window: Steps = 0
    # point tracks of the reference video (a tracker plugin: opencv, tracks_file) supervise w_t
    # with Shape of Motion's track loss (tracks.py; docs/deformers-and-losses.md, "Point
    # tracks"); None: no tracks (the paper)
    tracker: Optional[Component("tracker")] = None  # type: ignore[valid-type]
    track_weight: Ramp = field(default_factory=lambda: Ramp(1.0))  # loss in image-size units (1 = the image's long side) per visible track
    track_points: int = 300  # query points (opencv tracker; a file brings its own), split over the query frames
    track_query_frames: int = 4  # frames the points are queried at: c and others spread over the video
    # before the phases, w_t regressed onto the tracks' lifted offsets (tracks.track_init):
    # steps and Adam learning rate; 0 steps: off
    track_init_steps: steps_floor(300, "an initialisation: w_t must reach the tracks' offsets "
                                       "however short the schedule") = 300  # type: ignore[valid-type]
    track_init_lr: float = 1e-3
    # the initialisation's targets as a rigid motion of each Gaussian's neighbourhood of lifted
    # tracks (a weighted Kabsch fit per Gaussian and frame: offset and rotation, w_t's dq
    # regressed too) instead of their mean offset -- a spinning subject turns, not only moves
    track_init_rigid: bool = False
    # during the phases, hold the camera depth of w_t's offsets near lifted tracks to what the
    # track initialisation assumed (tracks.TrackDepthPrior); 0: off
    track_depth_weight: float = 0.0
    checkpoint_every: Steps = 500
    video_fps: float = 8.0
    deformer: Any = None  # renamed w_t: kept only to say so

    #: what a phase's ``train`` may name here (no camera refinement in this stage)
    param_groups: ClassVar[tuple[str, ...]] = ("gaussians", "new_gaussians", "deformer")

    def __post_init__(self) -> None:
        if self.deformer is not None:
            _renamed("deformer", "w_t", "the motion stage's temporal deformation field")

    def check_recipe(self, registry: Any, label: str) -> None:
        check_phases(self, registry, label, self.param_groups, grows=True)


# ------------------------------------------------------------------------- poses stage
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


# ----------------------------------------------------------------- export / eval stages
@dataclass
class ExportOptions:
    """What :func:`fourreal_stages.export.export_scene` writes (the export stage's params and
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


@dataclass
class EvalConfig:
    """Score held-out views (each rendered at its own camera and time): PSNR, SSIM, LPIPS."""

    against: Optional[InputPath] = None  # transforms.json (default: an earlier test/transforms.json)
    scene: Optional[InputPath] = None
    white_background: Optional[bool] = None  # RGBA targets: None = white (D-NeRF convention)
    lpips: bool = True
    # Size to score at (test images resized, intrinsics scaled). Default: the size the scene
    # was trained at, as D-NeRF-style benchmarks do; native_resolution: the test images' own.
    height: Optional[int] = None
    width: Optional[int] = None
    native_resolution: bool = False

    def __post_init__(self) -> None:
        at_least(self, height=1, width=1)


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


# ---------------------------------------------------------------------------- multicam
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
