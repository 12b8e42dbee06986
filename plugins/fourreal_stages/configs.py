"""Torch-free config dataclasses of the poses, export, eval and render stages (the others'
live in their stage's module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from fourreal_core.config import Component, ConfigValueError, InputPath, above, at_least, component_default
from fourreal_core.config import renamed as _renamed  # old recipes: one line saying what was renamed


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
