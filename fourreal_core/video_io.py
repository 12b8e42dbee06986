"""Moved: video and image I/O is the library package :mod:`fourreal_media` (same functions)."""

raise ImportError("fourreal_core.video_io moved to fourreal_media (same names): use 'from fourreal_media import read_video'")
