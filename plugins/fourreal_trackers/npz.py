"""Tracks from an external tracker (CoTracker, TAPIR, BootsTAPIR...) in a ``.npz`` file.

Layout (docs/deformers-and-losses.md, "Point tracks")::

    tracks   [Q,T,2] float   (x, y) pixels, centre of the top-left pixel at (0, 0)
    visible  [Q,T]   bool    (or 0/1 integers) the point is seen in that frame
    queries  [Q,3]   float   optional: (frame, x, y) where each track was queried;
                             default: its first visible frame and position there
    size     [2]     int     optional: (height, width) of the frames the tracks were made on;
                             positions are rescaled to the video the stage trains on

Every breach is one line naming the file and the array (an :class:`InputError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fourreal_core.errors import InputError
from fourreal_core.interfaces import Tracker, Tracks

from .configs import TracksFileConfig


def load_tracks_npz(path: "str | Path", num_frames: int, height: int, width: int) -> Tracks:
    """Read and check a tracks ``.npz`` for a video of ``num_frames`` frames of
    ``height`` x ``width`` (positions rescaled from the file's ``size`` if it has one)."""
    path = Path(path)
    where = f"{path}"
    if not path.is_file():
        raise InputError(f"{where}: no such tracks file")
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # not a zip, truncated, pickled objects
        raise InputError(f"{where}: not a readable .npz of arrays ({type(exc).__name__}: {exc})") from None
    for key in ("tracks", "visible"):
        if key not in arrays:
            raise InputError(f"{where}: missing array {key!r} (has: {', '.join(sorted(arrays)) or 'none'}); "
                             "see docs/deformers-and-losses.md, 'Point tracks'")
    tr, vis = arrays["tracks"], arrays["visible"]
    if tr.ndim != 3 or tr.shape[2] != 2 or not np.issubdtype(tr.dtype, np.number):
        raise InputError(f"{where}: tracks must be a numeric [Q,T,2] array of (x, y) pixels, got {tr.dtype} {list(tr.shape)}")
    Q, T = tr.shape[:2]
    if vis.shape != (Q, T):
        raise InputError(f"{where}: visible must be [Q,T] = {[Q, T]} like tracks, got {list(vis.shape)}")
    if vis.dtype != bool and not (np.issubdtype(vis.dtype, np.number) and np.isin(vis, (0, 1)).all()):
        raise InputError(f"{where}: visible must be bool or 0/1, got {vis.dtype} with other values")
    vis = vis.astype(bool)
    if T != num_frames:
        raise InputError(f"{where}: tracks cover {T} frames but the reference video has {num_frames}")
    if Q == 0:
        raise InputError(f"{where}: tracks holds no track (Q = 0)")
    tr = tr.astype(np.float64)
    if not np.isfinite(tr[vis]).all():
        q, t = np.argwhere(vis & ~np.isfinite(tr).all(-1))[0]
        raise InputError(f"{where}: tracks[{q}, {t}] is not finite where visible is True")
    tr = np.where(np.isfinite(tr), tr, 0.0)
    if not vis.any(axis=1).all():
        raise InputError(f"{where}: track {int(np.flatnonzero(~vis.any(axis=1))[0])} is visible in no frame")
    sy, sx = 1.0, 1.0
    if "size" in arrays:
        size = arrays["size"]
        if size.shape != (2,) or not (size > 0).all():
            raise InputError(f"{where}: size must be [2] = (height, width) > 0, got {size.tolist()}")
        sy, sx = height / float(size[0]), width / float(size[1])
        tr = (tr + 0.5) * np.array([sx, sy]) - 0.5
    if "queries" in arrays:
        qu = arrays["queries"].astype(np.float64)
        if qu.shape != (Q, 3):
            raise InputError(f"{where}: queries must be [Q,3] = {[Q, 3]} (frame, x, y), got {list(qu.shape)}")
        f = qu[:, 0]
        if not (np.isfinite(qu).all() and (f == np.round(f)).all() and (f >= 0).all() and (f < T).all()):
            raise InputError(f"{where}: queries[:, 0] must be integer frame indices in [0, {T})")
        qu[:, 1:] = (qu[:, 1:] + 0.5) * np.array([sx, sy]) - 0.5
    else:
        first = vis.argmax(axis=1)
        qu = np.concatenate([first[:, None].astype(np.float64), tr[np.arange(Q), first]], axis=1)
    return Tracks(queries=torch.from_numpy(qu).float(), tracks=torch.from_numpy(tr).float(),
                  visible=torch.from_numpy(vis))


class TracksFile(Tracker):
    """See :class:`~fourreal_trackers.configs.TracksFileConfig`. The file's tracks are returned
    whatever ``queries`` asks for (an external tracker chose its own)."""

    def __init__(self, cfg: Optional[TracksFileConfig] = None) -> None:
        self.cfg = cfg or TracksFileConfig()

    def track(self, frames: torch.Tensor, queries: Optional[torch.Tensor] = None) -> Tracks:
        if not self.cfg.file:
            raise InputError("tracks_file: params.file is required (a .npz of tracks [Q,T,2] and visible [Q,T])")
        T, H, W = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
        return load_tracks_npz(self.cfg.file, T, H, W)
