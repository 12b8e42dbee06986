"""Registers the synthetic family: stage ``synthetic`` (procedural 4D scenes with known
truth) and the ``oracle`` video prior (their ground truth, a test instrument for SDS). The
implementations (torch, rendering) are imported inside the factories."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from fourreal_core import hookimpl
from fourreal_core.config import renamed


@dataclass
class SyntheticImperfectionsConfig:
    """Inconsistencies injected into the freeze-time video (all zero at its canonical view k_c),
    imitating what a video model gets wrong. Set a value to 0 to turn that one off."""

    wobble: float = 0.1  # peak non-rigid displacement in a region, fraction of its radius
    wobble_radius: Optional[float] = None  # world units; None: the scene's default region
    moving_object: float = 0.05  # reference-time the mover keeps advancing over the orbit
    flicker: float = 0.02  # peak per-channel colour gain change (bias: half of it)
    seed: Optional[int] = None  # None: the stage's seed


@dataclass
class SyntheticStageConfig:
    """Render a procedural dataset: reference video (fixed camera, t in [0,1]), freeze-time
    orbit at t_c with imperfections, held-out test views, and surface points at t_c."""

    scene: Literal["garden", "object", "articulated"] = "garden"
    width: int = 128
    height: int = 96
    num_reference_frames: int = 16
    num_freeze_frames: int = 16
    canonical_frame: Optional[int] = None  # c: the reference frame at t_c (None: the middle one)
    canonical_view: int = 0  # k_c: the freeze-time frame shot from the reference camera
    orbit_arc_deg: float = 150.0
    num_test_views: int = 4
    num_test_static_views: int = 4
    num_init_points: int = 4000
    detail: int = 1  # Gaussian density multiplier per axis
    # garden only: the moving subject (ball, or cart: a sliding block) and its speed in its own
    # sizes per reference frame, on a path that zig-zags across the view (None: the scene's own)
    mover: Literal["ball", "cart"] = "ball"
    mover_speed: Optional[float] = None
    fps: float = 8.0
    seed: Optional[int] = None  # None: the recipe's seed
    write_videos: bool = True
    rasterizer: Literal["torch", "recipe"] = "torch"  # truth renderer
    imperfections: SyntheticImperfectionsConfig = field(default_factory=SyntheticImperfectionsConfig)
    anchor_index: Any = None  # renamed canonical_frame: kept only to say so
    freeze_anchor_index: Any = None  # renamed canonical_view: kept only to say so

    def __post_init__(self) -> None:
        if self.anchor_index is not None:
            renamed("anchor_index", "canonical_frame", "c, the reference frame the freeze-time video shows")
        if self.freeze_anchor_index is not None:
            renamed("freeze_anchor_index", "canonical_view", "k_c, the freeze-time frame shot from the reference camera")
        if self.width < 8 or self.height < 8:
            raise ValueError(f"width and height must be >= 8, got {self.width}x{self.height}")
        if self.num_reference_frames < 2 or self.num_freeze_frames < 2:
            raise ValueError("num_reference_frames and num_freeze_frames must be >= 2")
        if self.canonical_frame is not None and not 0 <= self.canonical_frame < self.num_reference_frames:
            raise ValueError(
                f"canonical_frame {self.canonical_frame} outside 0..{self.num_reference_frames - 1}"
            )
        if not 0 <= self.canonical_view < self.num_freeze_frames:
            raise ValueError(
                f"canonical_view {self.canonical_view} outside 0..{self.num_freeze_frames - 1}"
            )
        if self.orbit_arc_deg <= 0:
            raise ValueError(f"orbit_arc_deg must be positive, got {self.orbit_arc_deg}")
        if (self.mover != "ball" or self.mover_speed is not None) and self.scene != "garden":
            raise ValueError(f"mover and mover_speed are options of the garden scene, not of {self.scene!r}")
        if self.mover_speed is not None and self.mover_speed <= 0:
            raise ValueError(f"mover_speed must be positive, got {self.mover_speed}")

    def scene_options(self) -> dict:
        """``make_scene`` options for the garden's mover (travel = speed x size x (T - 1))."""
        if self.scene != "garden":
            return {}
        from .scenes import MOVER_SIZE

        travel = None if self.mover_speed is None else (
            float(self.mover_speed) * MOVER_SIZE[self.mover] * (self.num_reference_frames - 1))
        return {"mover": self.mover, "travel": travel}


@dataclass
class OraclePriorConfig:
    """The ``oracle`` video prior -- a TEST INSTRUMENT for the SDS machinery, not a video
    model: ``predict_x0`` returns the procedural scene's ground truth at the cameras and
    times it is given, at 36x64, blurred with sigma = 1 + 2 x noise level px (see
    fourreal_synthetic.oracle). ``scene``/``seed``/``detail`` must match the synthetic stage."""

    scene: Literal["garden", "object", "articulated"] = "garden"
    seed: int = 0
    detail: int = 1
    num_frames: int = 16
    height: int = 36  # the working size (the paper's SDS size); the blur is fixed at this size
    width: int = 64


@hookimpl
def fourreal_register(registry):
    registry.add(
        "stage", "synthetic", "fourreal_synthetic.stage:SyntheticStage", config=SyntheticStageConfig,
        description="Procedural 4D scene -> reference + freeze-time videos, test views, init points",
    )
    registry.add(
        "video_prior", "oracle", "fourreal_synthetic.oracle:OraclePrior", config=OraclePriorConfig,
        description="TEST INSTRUMENT for SDS: ground truth of a procedural scene, blurred (not a video model)",
    )
