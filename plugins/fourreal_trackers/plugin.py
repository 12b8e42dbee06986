"""Registers the trackers family: ``opencv`` (pyramidal Lucas-Kanade or DIS flow chained frame
to frame, forward-backward check, re-seeding) and ``tracks_file`` (tracks from an external
tracker in a documented ``.npz`` layout). Implementations are imported inside the factories."""

from __future__ import annotations

from fourreal_core import hookimpl

from .configs import OpenCVTrackerConfig, TracksFileConfig


@hookimpl
def fourreal_register(registry):
    registry.add(
        "tracker", "opencv", "fourreal_trackers.opencv:OpenCVTracker", config=OpenCVTrackerConfig,
        description="OpenCV point tracks: block matching + Lucas-Kanade (or DIS flow) chained frame to frame "
        "with a forward-backward check and re-seeding",
    )
    registry.add(
        "tracker", "tracks_file", "fourreal_trackers.npz:TracksFile", config=TracksFileConfig,
        description="Point tracks from an external tracker (CoTracker, TAPIR) in a .npz: "
        "tracks [Q,T,2], visible [Q,T], optional queries [Q,3] and size [2]",
    )
