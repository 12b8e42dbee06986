"""Config dataclasses of the trackers family (no torch / OpenCV import: validation stays fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from fourreal_core.config import InputPath


@dataclass
class OpenCVTrackerConfig:
    """Classical point tracking with OpenCV, chained frame to frame from each query frame
    forwards and backwards through the video.

    method: ``lk`` -- pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``) on the tracked
        points; ``dis`` -- dense DIS optical flow (``cv2.DISOpticalFlow``, preset ``medium``)
        between neighbouring frames, sampled bilinearly at the tracked points.
    search / patch: ``lk`` only: each step first block-matches the ``(2 patch + 1)^2`` patch
        around the point (normalised cross-correlation) within ``search`` pixels of where the
        point's last velocity predicts it, then refines with LK in that window (a long jump: a
        subject that moves about its own size per frame is a pixel at a pyramid's coarse
        levels). ``search: 0`` -- plain pyramidal LK from the prediction.
    win_size / levels: the plain pyramidal LK's window (pixels) and pyramid levels.
    fb_threshold: forward-backward check -- a step whose track, followed back one frame,
        misses its start by more than this many pixels is marked not visible there.
    reseed: a point that fails the check moves on at its last velocity (not visible there)
        and is tracked again from that prediction on the next frame, visible again once the
        check passes (instead of stopping for good).
    upscale: track on frames enlarged by this integer factor (small generated or CPU-size
        videos: LK and DIS need a few pixels of texture per window); positions are reported
        in the original pixels.
    """

    method: Literal["lk", "dis"] = "lk"
    search: int = 16
    patch: int = 6
    win_size: int = 15
    levels: int = 3
    fb_threshold: float = 1.0
    reseed: bool = True
    upscale: int = 1


@dataclass
class TracksFileConfig:
    """Tracks from an external tracker (CoTracker, TAPIR, BootsTAPIR...) saved as ``.npz``.

    file: the .npz. Arrays (docs/deformers-and-losses.md, "Point tracks"): ``tracks``
        ``[Q,T,2]`` float ``(x, y)`` pixels (centre of the top-left pixel at (0, 0)),
        ``visible`` ``[Q,T]`` bool (or 0/1), optional ``queries`` ``[Q,3]``
        ``(frame, x, y)`` (default: each track's first visible frame), optional ``size``
        ``[2]`` = ``(height, width)`` of the frames the tracks were computed on (positions are
        rescaled to the video the stage trains on; default: that video's size).
    """

    file: Optional[InputPath] = None  # required; Optional only so the config has a default
