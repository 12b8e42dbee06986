"""Single-video inputs: the `capture` plugin kind's layouts of ONE camera's footage.

The poses stage's ``reference`` and ``freeze_time`` inputs are read through these layouts
(:func:`read_single_video`), the multicam stage's ``capture`` through the multi-camera ones
(:func:`fourreal_poses.capture.read_capture`); a layout says which it is by
:attr:`~fourreal_core.interfaces.CaptureReader.single_video`. Three are built in, tried after
every other single-video layout and in this order (:data:`FALLBACK_LAYOUTS`):

* ``transforms_json`` -- a nerfstudio / instant-ngp / D-NeRF ``transforms.json`` (a ``.json``
  file, or a folder holding ``transforms.json``): posed images, read with
  :func:`fourreal_formats.transforms.load_transforms`; the input carries its cameras.
* ``image_folder`` -- any other folder: its image files (png/jpg/...) in natural order are the
  frames; the cameras are estimated.
* ``video_file`` -- any other path: a video file ffmpeg decodes (mp4/mov/webm/gif...) or one
  image; the cameras are estimated.

A reader's :meth:`~fourreal_core.interfaces.CaptureReader.read` returns a :class:`SingleVideo`;
its :meth:`SingleVideo.load` gives the frames the stage trains on (chosen and sized by a
:class:`FrameSelection`), the cameras when the input carries them (None when they must be
estimated: the stage runs its pose estimator, e.g. COLMAP, as for any video), what was used
(recorded in ``poses.json``) and, on request, larger frames for structure-from-motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

from fourreal_core.errors import InputError
from fourreal_core.interfaces import CaptureReader

__all__ = ["FrameSelection", "SingleVideo", "LoadedVideo", "read_single_video", "single_video_layouts",
           "FALLBACK_LAYOUTS", "TransformsJsonInput", "ImageFolderInput", "VideoFileInput"]

#: the built-in single-video layouts, tried last and in this order: each claims more than the
#: one before (any .json / a folder with transforms.json; any folder; any path)
FALLBACK_LAYOUTS = ("transforms_json", "image_folder", "video_file")


@dataclass(frozen=True)
class FrameSelection:
    """Which frames of a single video are used and at what size (the poses stage's params of
    the same names; docs/real-data.md).

    height / width: the training size (one of them keeps the aspect ratio; none: the
        source's); ``long_side`` instead sets the longest side, whatever the orientation.
    start / stride / max_frames / sampling: from source frame ``start``, every ``stride``-th,
        at most ``max_frames`` of them, ``even`` over the whole video or the ``first`` ones
        (a transforms.json keeps its first ``max_frames`` after ``stride``).
    min_frames: fewer usable frames is an :class:`InputError` naming the input.
    fps: the frame rate of a source that has none (a frame folder, a transforms.json).
    """

    height: Optional[int] = None
    width: Optional[int] = None
    long_side: Optional[int] = None
    start: int = 0
    stride: int = 1
    max_frames: Optional[int] = None
    sampling: str = "even"
    min_frames: int = 4
    fps: float = 8.0


class LoadedVideo(NamedTuple):
    """What :meth:`SingleVideo.load` returns.

    video: the training frames (:class:`~fourreal_core.types.Video`).
    posed: the same frames with their cameras (:class:`~fourreal_core.types.PosedVideo`, at the
        training size) when the input carries them, else None (the cameras are estimated).
    info: what was used, recorded in ``poses.json``: ``source`` (the path), ``kind``
        (``video`` / ``frame folder`` / ``transforms.json``) and ``indices`` (source frames
        used, in order); inputs without cameras also ``source_frames``, ``sampling`` and what
        :func:`fourreal_media.read_video_sampled` reports (``covered_fraction``, ``first_s`` /
        ``last_s``, ``source_size``...).
    sfm: the same frames larger, for structure-from-motion (asked for by ``sfm_long_side``),
        or None when they would be ``video`` itself.
    """

    video: object
    posed: object
    info: dict
    sfm: object


@dataclass
class SingleVideo:
    """One camera's footage, read on demand: what a single-video layout's ``read`` returns.

    source: the file or folder the frames come from (a video file, a frame folder, or a
        transforms.json / a folder holding one).
    layout: the name of the layout that read it.
    carries_poses: whether :meth:`load` returns cameras (``posed``); False: the poses stage's
        estimator finds them.

    Built from :meth:`from_frames` (a video file or frame folder, cameras estimated) or
    :meth:`from_transforms` (posed images); a format that is neither subclasses this and
    implements :meth:`load`.
    """

    source: Path
    layout: str
    carries_poses: bool = False

    @classmethod
    def from_frames(cls, source, layout: str) -> "SingleVideo":
        """A video file (anything ffmpeg decodes), one image, or a folder of image files (in
        natural order): frames only, the cameras are estimated."""
        return _Frames(Path(source), layout, carries_poses=False)

    @classmethod
    def from_transforms(cls, source, layout: str) -> "SingleVideo":
        """A nerfstudio / instant-ngp / D-NeRF transforms.json (or a folder holding one):
        posed images."""
        return _Transforms(Path(source), layout, carries_poses=True)

    def load(self, sel: FrameSelection, sfm_long_side: Optional[int] = None) -> LoadedVideo:
        """The frames :class:`FrameSelection` picks, at its size (and, with ``sfm_long_side``,
        also at that longest side -- capped at the source's, never below the training size --
        for structure-from-motion). Raises :class:`InputError` naming the input when it
        cannot be read or has fewer than ``sel.min_frames`` frames."""
        raise NotImplementedError(f"{type(self).__name__}.load")


def long_side_size(h: int, w: int, long_side: int) -> tuple[int, int]:
    """``(height, width)`` with the longest side ``long_side``, the aspect ratio kept."""
    s = float(long_side) / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


class _Transforms(SingleVideo):
    def load(self, sel: FrameSelection, sfm_long_side: Optional[int] = None) -> LoadedVideo:
        from fourreal_formats.transforms import load_transforms

        path, height, width = self.source, sel.height, sel.width
        if sel.long_side is not None:
            cams = load_transforms(path, load_images=False).cameras
            height, width = long_side_size(cams.height, cams.width, sel.long_side)
        posed = load_transforms(path, height=height, width=width, stride=sel.stride, max_frames=sel.max_frames)
        if len(posed) < sel.min_frames:
            raise InputError(f"{path}: has {len(posed)} frames, need at least {sel.min_frames}")
        info = {"source": str(path), "kind": "transforms.json",
                "indices": list(posed.meta.get("frame_indices", range(len(posed))))}
        return LoadedVideo(posed.video, posed, info, None)


class _Frames(SingleVideo):
    def load(self, sel: FrameSelection, sfm_long_side: Optional[int] = None) -> LoadedVideo:
        from fourreal_core.types import Video
        from fourreal_media import read_video_sampled, resize_frames, target_size

        path, height, width = self.source, sel.height, sel.width
        kw = dict(stride=sel.stride, max_frames=sel.max_frames, min_frames=sel.min_frames, start=sel.start,
                  sampling=sel.sampling)
        if sfm_long_side is None:
            if sel.long_side is not None:
                video, info = read_video_sampled(path, long_side=sel.long_side, **kw)
            else:
                video, info = read_video_sampled(path, height=height, width=width, **kw)
            big = None
        else:
            big, info = read_video_sampled(path, long_side=int(sfm_long_side), **kw)
            src_w, src_h = info["source_size"]
            h, w = (long_side_size(src_h, src_w, sel.long_side) if sel.long_side is not None
                    else target_size(src_h, src_w, height, width))
            if max(h, w) >= max(big.height, big.width):  # training at or above the SfM size: one video
                video, big = read_video_sampled(path, height=h, width=w, **kw)[0], None
            else:
                video = Video(resize_frames(big.frames, h, w), fps=big.fps)
        info = {"source": str(path), "kind": "video" if path.is_file() else "frame folder", **info,
                "size": [video.width, video.height]}
        if big is not None:
            info["sfm_size"] = [big.width, big.height]
        fps = video.fps or sel.fps
        return LoadedVideo(Video(video.frames, fps=fps), None, info,
                           Video(big.frames, fps=fps) if big is not None else None)


# ================================================================================ readers
class TransformsJsonInput(CaptureReader):
    """The ``transforms_json`` layout: a ``.json`` file, or a folder holding transforms.json."""

    single_video = True

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg

    def claims(self, path: Path) -> bool:
        return path.suffix == ".json" or (path.is_dir() and (path / "transforms.json").exists())

    def read(self, path: Path) -> SingleVideo:
        return SingleVideo.from_transforms(path, "transforms_json")


class ImageFolderInput(CaptureReader):
    """The ``image_folder`` layout: a folder of image files, one per frame (natural order)."""

    single_video = True

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg

    def claims(self, path: Path) -> bool:
        return path.is_dir()

    def read(self, path: Path) -> SingleVideo:
        return SingleVideo.from_frames(path, "image_folder")


class VideoFileInput(CaptureReader):
    """The ``video_file`` layout: a video file (or one image); claims any path that is not a
    folder, so ffmpeg's own message names a file it cannot decode."""

    single_video = True

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg

    def claims(self, path: Path) -> bool:
        return not path.is_dir()

    def read(self, path: Path) -> SingleVideo:
        return SingleVideo.from_frames(path, "video_file")


def single_video_layouts(registry) -> list[tuple[str, CaptureReader]]:
    """``[(name, reader)]`` of the registered single-video layouts in the order they are
    tried: every other one first (by name), then :data:`FALLBACK_LAYOUTS` in their order."""
    readers = [(n, registry.create("capture", n)) for n in registry.names("capture")]
    readers = [(n, r) for n, r in readers if r.single_video]
    rank = {n: i + 1 for i, n in enumerate(FALLBACK_LAYOUTS)}
    return sorted(readers, key=lambda nr: rank.get(nr[0], 0))  # stable: names stay sorted


def read_single_video(path, registry=None, layout: Optional[str] = None) -> SingleVideo:
    """The :class:`SingleVideo` at ``path``: read by the single-video layout ``layout`` names,
    else by the first that claims it (:func:`single_video_layouts` order). ``registry``: the
    run's (default: the installed plugins')."""
    from fourreal_core.registry import get_registry

    reg = registry if registry is not None else get_registry()
    path = Path(path)
    layouts = single_video_layouts(reg)
    if layout is not None:
        found = dict(layouts)
        if layout not in found and layout in reg.names("capture"):
            raise InputError(f"params.layout: {layout!r} is a multi-camera capture layout (the multicam stage's "
                             f"capture), not a single video; single-video: {', '.join(n for n, _ in layouts)}")
        if layout not in found:
            raise InputError(f"params.layout: unknown single-video layout {layout!r}; registered: "
                             f"{', '.join(n for n, _ in layouts)}")
        return found[layout].read(path)
    for _, reader in layouts:
        if reader.claims(path):
            return reader.read(path)
    raise InputError(f"{path}: not a video, frame folder or transforms.json any registered layout reads "
                     f"({', '.join(n for n, _ in layouts)})")
