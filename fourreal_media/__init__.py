"""Reading and writing videos and images at the boundary.

A plain library package on top of :mod:`fourreal_core` (no entry point, no plugin kind): the
stages, priors and pose plugins share it, and the core itself touches no media file.

In memory a video is always float32 ``[N,H,W,3]`` in [0,1] (:class:`~fourreal_core.types.Video`).
On disk it is an mp4/mov/webm/mkv/avi/gif file (decoded with ffmpeg through
``imageio-ffmpeg``) or a folder of png/jpg frames sorted naturally (``2.png`` before
``10.png``). Written mp4s are H.264, ``yuv420p``, even-sized and ``+faststart`` so common
players and browsers open them. Every writer is atomic (:func:`fourreal_core.io.atomic_path`).

User-facing problems (missing file, not a video, too few frames) raise
:class:`~fourreal_core.errors.InputError` with one line that names the file.

imageio / imageio-ffmpeg are imported inside the functions so importing this module is cheap.
"""

from __future__ import annotations

import contextlib

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

from fourreal_core.errors import InputError
from fourreal_core.io import atomic_path

if TYPE_CHECKING:
    import numpy as np
    import torch

    from fourreal_core.types import Video

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v", ".gif", ".mpg", ".mpeg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

__all__ = [
    "VIDEO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "read_video",
    "read_video_sampled",
    "count_frames",
    "sample_indices",
    "write_video",
    "write_frames",
    "read_image",
    "write_image",
    "list_frames",
    "natural_key",
    "resize_frames",
    "target_size",
    "to_uint8",
    "psnr",
]


# ---------------------------------------------------------------------------- helpers
def natural_key(name: Union[str, os.PathLike]) -> list:
    """Sort key that orders embedded numbers numerically: ``f2.png`` < ``f10.png``."""
    s = os.fspath(name)
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", s)]


def list_frames(folder: Union[str, os.PathLike]) -> list[Path]:
    """Image files (png/jpg/...) directly inside ``folder``, naturally sorted."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def target_size(
    src_height: int, src_width: int, height: Optional[int] = None, width: Optional[int] = None
) -> tuple[int, int]:
    """``(H, W)`` to resize to: both given -> as given; one given -> keep the aspect ratio
    (rounded to the nearest pixel, at least 1); none -> unchanged."""
    if height is None and width is None:
        return src_height, src_width
    if height is not None and width is not None:
        return int(height), int(width)
    if height is not None:
        return int(height), max(1, int(round(src_width * int(height) / src_height)))
    return max(1, int(round(src_height * int(width) / src_width))), int(width)


def resize_frames(frames: "torch.Tensor", height: int, width: int) -> "torch.Tensor":
    """Resize ``[N,H,W,C]`` float frames to ``[N,height,width,C]`` (bilinear, antialiased
    when shrinking; pixel-area alignment, i.e. ``align_corners=False``)."""
    import torch

    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    x = frames.permute(0, 3, 1, 2)
    shrink = height < frames.shape[1] or width < frames.shape[2]
    x = torch.nn.functional.interpolate(
        x.float(), size=(height, width), mode="bilinear", align_corners=False, antialias=shrink
    )
    return x.permute(0, 2, 3, 1).clamp(0.0, 1.0).contiguous()


def to_uint8(frames: "torch.Tensor | np.ndarray") -> "np.ndarray":
    """Float images in [0,1] (torch or numpy, any shape) -> uint8 numpy (rounded, clipped)."""
    import numpy as np

    if hasattr(frames, "detach"):
        frames = frames.detach().float().cpu().numpy()
    arr = np.asarray(frames)
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def psnr(a: "torch.Tensor", b: "torch.Tensor", max_val: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB between two float image tensors of one shape (no
    gradient; ``inf`` for identical images). The one psnr of the project: stages, scores,
    the synthetic oracle and the tests use it."""
    import math

    mse = float(((a.detach().float() - b.detach().float()) ** 2).mean())
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse / (max_val * max_val))


def _uint8_to_float(arr: "np.ndarray", background: Optional[Sequence[float]]) -> "torch.Tensor":
    """``[H,W]``, ``[H,W,1|2|3|4]`` uint8/uint16/float -> ``[H,W,3]`` float32 in [0,1];
    alpha is composited over ``background`` (RGB in [0,1])."""
    import numpy as np
    import torch

    a = np.asarray(arr)
    if a.dtype == np.uint8:
        x = torch.from_numpy(a.astype(np.float32) / 255.0)
    elif a.dtype == np.uint16:
        x = torch.from_numpy(a.astype(np.float32) / 65535.0)
    else:
        x = torch.from_numpy(a.astype(np.float32))
        if a.dtype.kind in "iu":
            x = x / 255.0
    if x.ndim == 2:
        x = x[..., None]
    c = x.shape[-1]
    if c in (2, 4):  # grey+alpha or RGBA
        alpha = x[..., -1:]
        rgb = x[..., :-1]
        if rgb.shape[-1] == 1:
            rgb = rgb.expand(*rgb.shape[:-1], 3)
        bg = torch.tensor(list(background) if background is not None else [0.0, 0.0, 0.0])
        x = rgb * alpha + bg * (1.0 - alpha)
    elif c == 1:
        x = x.expand(*x.shape[:-1], 3)
    elif c != 3:
        raise ValueError(f"unsupported number of channels {c}")
    return x.clamp(0.0, 1.0).contiguous()


# ----------------------------------------------------------------------------- images
def read_image(
    path: Union[str, os.PathLike],
    height: Optional[int] = None,
    width: Optional[int] = None,
    background: Optional[Sequence[float]] = (0.0, 0.0, 0.0),
) -> "torch.Tensor":
    """Read one image as ``[H,W,3]`` float32 in [0,1].

    Args:
        path: png/jpg/... file.
        height, width: resize (one of them keeps the aspect ratio).
        background: RGB in [0,1] that an alpha channel is composited over (default black).

    Raises:
        InputError: the file is missing or not a readable image.
    """
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        arr = iio.imread(path)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad input
        raise InputError(f"{path}: {_image_failure(path, e)}") from None
    if arr.ndim == 4:  # animated image: first frame
        arr = arr[0]
    try:
        img = _uint8_to_float(arr, background)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    h, w = target_size(img.shape[0], img.shape[1], height, width)
    return resize_frames(img[None], h, w)[0]


def _image_failure(path: Path, exc: Exception) -> str:
    """Why an image did not decode, in words (imageio's own message lists the plugins it
    tried, e.g. "pip install imageio[opencv]", which misleads for a file that is no image)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - pillow comes with imageio
        return f"not a readable image ({_short(exc)})"
    try:
        with Image.open(path) as im:
            im.load()
    except UnidentifiedImageError:
        return "not an image file (its contents are not PNG, JPEG or another known image format)"
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data
        return f"image data is damaged or truncated ({_short(e)})"
    return f"not a readable image ({_short(exc)})"


def read_image_rgba(path: Union[str, os.PathLike]) -> "torch.Tensor":
    """Read one image as ``[H,W,4]`` float32 in [0,1] (alpha 1 where the file has none)."""
    import imageio.v3 as iio
    import numpy as np
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        arr = np.asarray(iio.imread(path))
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: {_image_failure(path, e)}") from None
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype.kind in "iu" else 1.0
    x = torch.from_numpy(arr.astype(np.float32) / scale)
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[-1] in (1, 2):
        x = torch.cat([x[..., :1].expand(*x.shape[:-1], 3), x[..., 1:]], -1)
    if x.shape[-1] == 3:
        x = torch.cat([x, torch.ones_like(x[..., :1])], -1)
    return x.clamp(0.0, 1.0).contiguous()


def write_image(path: Union[str, os.PathLike], image: "torch.Tensor | np.ndarray") -> Path:
    """Write ``[H,W,3]`` (or ``[H,W,4]`` / ``[H,W]``) float in [0,1] or uint8 to png/jpg,
    atomically; the format follows the suffix. Returns the path."""
    import imageio.v3 as iio

    path = Path(path)
    arr = to_uint8(image)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, arr, extension=path.suffix.lower())
    return path


def write_frames(
    folder: Union[str, os.PathLike],
    frames: "torch.Tensor | Video",
    pattern: str = "{:05d}.png",
    start: int = 0,
) -> list[Path]:
    """Write ``[N,H,W,3]`` frames as images ``folder/pattern.format(i)``, i from ``start``.

    ``pattern`` is a ``str.format`` pattern (``"{:05d}.png"``, ``"frame_{:03d}.jpg"``).
    Returns the written paths in order.
    """
    frames = getattr(frames, "frames", frames)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_image(folder / pattern.format(start + i), frames[i]) for i in range(len(frames))]


# ----------------------------------------------------------------------------- videos
def read_video(
    path: Union[str, os.PathLike],
    height: Optional[int] = None,
    width: Optional[int] = None,
    stride: int = 1,
    max_frames: Optional[int] = None,
    min_frames: int = 1,
    start: int = 0,
    background: Optional[Sequence[float]] = (0.0, 0.0, 0.0),
) -> "Video":
    """Read a video file or a folder of frames.

    Args:
        path: an mp4/mov/webm/mkv/avi/gif file, or a folder of png/jpg frames (natural order).
        height, width: resize every frame; if only one is given the aspect ratio is kept.
        stride: keep every ``stride``-th frame (the fps is divided accordingly).
        max_frames: keep at most this many frames (after ``start`` and ``stride``).
        min_frames: fewer kept frames than this is an :class:`InputError`.
        start: skip this many source frames first.
        background: RGB an alpha channel (frame folders, gifs) is composited over.

    Returns:
        :class:`~fourreal_core.types.Video` with ``[N,H,W,3]`` float32 frames in [0,1] and
        the source fps divided by ``stride`` (8 for frame folders).

    Raises:
        InputError: missing path, unreadable/not a video, frames of different sizes, or
            fewer than ``min_frames`` frames -- one line naming the file.
    """
    import torch

    from fourreal_core.types import Video

    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")

    if path.is_dir():
        files = list_frames(path)
        if not files:
            raise InputError(
                f"{path}: folder holds no image frames ({', '.join(s[1:] for s in IMAGE_SUFFIXES[:3])})"
            )
        files = files[start::stride]
        if max_frames is not None:
            files = files[: max(0, int(max_frames))]
        frames, size = [], None
        for f in files:
            img = read_image(f, background=background)
            if size is None:
                size = img.shape[:2]
                h, w = target_size(size[0], size[1], height, width)
            elif img.shape[:2] != size:
                raise InputError(
                    f"{f}: frame is {img.shape[1]}x{img.shape[0]} but earlier frames of {path} are "
                    f"{size[1]}x{size[0]}"
                )
            frames.append(resize_frames(img[None], h, w)[0])
        fps = 8.0 / stride
    else:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            frames = [] if start > 0 else [read_image(path, height, width, background)]
            fps = 8.0
        else:
            frames, fps = _decode_video(path, height, width, stride, max_frames, start, background)
    n = len(frames)
    if n < max(1, min_frames):
        extra = f" (with stride {stride})" if stride > 1 else ""
        raise InputError(
            f"{path}: has {n} frame{'s' if n != 1 else ''}{extra}, need at least {max(1, min_frames)}"
        )
    return Video(torch.stack(frames).contiguous(), fps=float(fps))


def count_frames(path: Union[str, os.PathLike]) -> tuple[int, Optional[float]]:
    """``(frames, fps)`` of a video file or a frame folder without keeping any frame (a
    folder: its image count and no fps). Video files are counted by ffmpeg decoding the
    stream once (``imageio_ffmpeg.count_frames_and_secs``: exact, unlike the container's
    frame count, which some phones' files get wrong).

    Raises:
        InputError: missing path, or not a readable video / frame folder.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        n = len(list_frames(path))
        if not n:
            raise InputError(
                f"{path}: folder holds no image frames ({', '.join(s[1:] for s in IMAGE_SUFFIXES[:3])})"
            )
        return n, None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return 1, None
    import imageio_ffmpeg

    try:
        n, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    except Exception as e:  # noqa: BLE001 - ffmpeg could not open it
        raise InputError(f"{path}: not a readable video ({_short(e)})") from None
    return int(n), (n / secs if secs and secs > 0 else None)


def sample_indices(
    num_source: int, start: int = 0, stride: int = 1, max_frames: Optional[int] = None, sampling: str = "first"
) -> list[int]:
    """Indices into a video of ``num_source`` frames: from ``start`` every ``stride``-th
    frame, then at most ``max_frames`` of them -- the first ones (``sampling: first``) or
    evenly spaced over all of them, first and last included (``sampling: even``: a long
    phone orbit keeps its whole arc rather than its first seconds)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if sampling not in ("first", "even"):
        raise ValueError(f"sampling must be 'first' or 'even', got {sampling!r}")
    grid = list(range(max(0, int(start)), int(num_source), int(stride)))
    if max_frames is None or len(grid) <= int(max_frames):
        return grid
    m = max(0, int(max_frames))
    if sampling == "first" or m == 0:
        return grid[:m]
    if m == 1:
        return [grid[0]]
    # evenly spaced positions on the stride grid, rounded; strictly increasing since m <= len(grid)
    return [grid[round(i * (len(grid) - 1) / (m - 1))] for i in range(m)]


def read_video_sampled(
    path: Union[str, os.PathLike],
    height: Optional[int] = None,
    width: Optional[int] = None,
    stride: int = 1,
    max_frames: Optional[int] = None,
    min_frames: int = 1,
    start: int = 0,
    sampling: str = "even",
    background: Optional[Sequence[float]] = (0.0, 0.0, 0.0),
    long_side: Optional[int] = None,
) -> tuple["Video", dict]:
    """:func:`read_video` choosing the frames with :func:`sample_indices` over the whole
    source (``sampling: even`` by default) and saying which it used.

    Returns:
        ``(video, info)``: ``info`` has ``source_frames``, ``source_fps`` (None for folders),
        ``indices`` (source frame indices kept, in order), ``start`` / ``stride`` /
        ``max_frames`` / ``sampling``, ``first_s`` / ``last_s`` (seconds into the source, when
        its fps is known), ``covered_fraction`` (the share of the source between the first
        and the last kept frame) and ``source_size`` ``[width, height]``.

    ``long_side`` (instead of ``height`` / ``width``): resize so the longest side is this
    many pixels, never enlarging a smaller source.
    """
    import torch

    from fourreal_core.types import Video

    path = Path(path)
    n_src, fps = count_frames(path)
    idx = sample_indices(n_src, start, stride, max_frames, sampling)
    info: dict = {"source_frames": n_src, "source_fps": fps, "start": int(start), "stride": int(stride),
                  "max_frames": max_frames, "sampling": sampling, "indices": idx}
    if len(idx) < max(1, min_frames):
        extra = f" (start {start}, stride {stride})" if stride > 1 or start else ""
        raise InputError(f"{path}: has {len(idx)} usable frame{'s' if len(idx) != 1 else ''}{extra} of {n_src}, "
                         f"need at least {max(1, min_frames)}")
    if idx:
        span = (idx[-1] - idx[0] + 1) if len(idx) > 1 else 1
        info["covered_fraction"] = round(span / max(1, n_src), 4)
        if fps:
            info["first_s"], info["last_s"] = round(idx[0] / fps, 3), round(idx[-1] / fps, 3)
    step = (idx[-1] - idx[0]) / (len(idx) - 1) if len(idx) > 1 else 1.0
    out_fps = (fps or 8.0) / max(step, 1.0)
    def size_of(src_h: int, src_w: int) -> tuple[int, int]:
        info["source_size"] = [int(src_w), int(src_h)]
        if long_side is not None:
            s = min(1.0, float(long_side) / max(src_h, src_w))
            return max(1, round(src_h * s)), max(1, round(src_w * s))
        return target_size(src_h, src_w, height, width)

    if path.is_dir():
        files = list_frames(path)
        frames, size = [], None
        for i in idx:
            img = read_image(files[i], background=background)
            if size is None:
                size = img.shape[:2]
                h, w = size_of(size[0], size[1])
            elif img.shape[:2] != size:
                raise InputError(f"{files[i]}: frame is {img.shape[1]}x{img.shape[0]} but earlier frames of {path} "
                                 f"are {size[1]}x{size[0]}")
            frames.append(resize_frames(img[None], h, w)[0])
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        img = read_image(path, background=background)
        h, w = size_of(img.shape[0], img.shape[1])
        frames = [resize_frames(img[None], h, w)[0]] if idx else []
    else:
        frames, _ = _decode_video(path, height, width, 1, None, 0, background, keep=set(idx), size_fn=size_of)
    if len(frames) < max(1, min_frames):  # the stream ended before its counted length
        raise InputError(f"{path}: decoded {len(frames)} of the {len(idx)} frames asked for, need at least "
                         f"{max(1, min_frames)}")
    info["indices"] = idx[: len(frames)]
    return Video(torch.stack(frames).contiguous(), fps=float(out_fps)), info


def _decode_video(path: Path, height, width, stride, max_frames, start, background, keep=None, size_fn=None):
    """Decode with ffmpeg (imageio-ffmpeg): yields frames already resized (``keep``: only
    these source indices)."""
    import numpy as np
    import torch

    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(gen)
    except StopIteration:
        raise InputError(f"{path}: not a readable video (no video stream)") from None
    except Exception as e:  # noqa: BLE001 - ffmpeg could not open it
        raise InputError(f"{path}: not a readable video ({_short(e)})") from None
    try:
        src_w, src_h = (int(v) for v in meta["size"])
        fps = float(meta.get("fps") or 8.0)
        h, w = size_fn(src_h, src_w) if size_fn is not None else target_size(src_h, src_w, height, width)
        frames = []
        last = max(keep) if keep else -1
        for i, buf in enumerate(gen):
            if keep is not None:
                if i > last:
                    break
                if i not in keep:
                    continue
            elif i < start or (i - start) % stride:
                continue
            if max_frames is not None and len(frames) >= max_frames:
                break
            arr = np.frombuffer(buf, dtype=np.uint8).reshape(src_h, src_w, 3)
            img = torch.from_numpy(arr.astype(np.float32) / 255.0)
            frames.append(resize_frames(img[None], h, w)[0])
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt stream mid-way
        raise InputError(f"{path}: not a readable video ({_short(e)})") from None
    finally:
        gen.close()
    return frames, fps / stride


def write_video(
    path: Union[str, os.PathLike],
    frames: "torch.Tensor | np.ndarray | Video",
    fps: Optional[float] = None,
    crf: int = 18,
    even: str = "pad",
) -> Path:
    """Write frames as an H.264 mp4 (yuv420p, faststart) that common players open.

    Args:
        path: output file (``.mp4``; ``.gif`` also works, written with Pillow).
        frames: ``[N,H,W,3]`` float in [0,1] (torch or numpy), uint8, or a ``Video``.
        fps: frames per second; default the ``Video``'s fps, else 8.
        crf: x264 constant rate factor (0 lossless .. 51 worst; 18 is visually lossless).
        even: yuv420p needs even sizes: ``"pad"`` replicates the last row/column,
            ``"resize"`` resizes to the nearest even size below (min 2).

    Written atomically; returns ``path``.
    """
    import numpy as np

    if hasattr(frames, "frames"):
        fps = frames.fps if fps is None else fps
        frames = frames.frames
    fps = 8.0 if fps is None else float(fps)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if hasattr(frames, "detach") and frames.dtype.is_floating_point:
        frames = frames.detach().float().cpu()
        if even == "resize" and (frames.shape[1] % 2 or frames.shape[2] % 2):
            h2, w2 = max(2, frames.shape[1] // 2 * 2), max(2, frames.shape[2] // 2 * 2)
            frames = resize_frames(frames, h2, w2)
    arr = to_uint8(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"write_video expects [N,H,W,3] frames, got shape {tuple(arr.shape)}")
    if len(arr) == 0:
        raise ValueError("write_video: no frames to write")
    n, h, w, _ = arr.shape
    if h % 2 or w % 2:
        # pad (or, for uint8 input with even='resize', also pad: never drop content)
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = arr.shape[1], arr.shape[2]
    arr = np.ascontiguousarray(arr)

    path = Path(path)
    if path.suffix.lower() == ".gif":  # palette-quantised by Pillow, loops forever
        import imageio.v3 as iio

        with atomic_path(path) as tmp:
            iio.imwrite(tmp, arr, extension=".gif", duration=1000.0 / fps, loop=0)
        return path

    with atomic_path(path) as tmp:
        _ffmpeg_encode(arr, tmp, fps, crf, path)
    return path


def _ffmpeg_encode(arr, tmp: Path, fps: float, crf: int, path: Path) -> None:
    """Pipe ``arr`` ``[N,H,W,3]`` uint8 into ffmpeg (libx264, yuv420p), the command
    imageio-ffmpeg's ``write_frames`` builds. Run here rather than through ``write_frames``
    because that writer does not check ffmpeg's exit status (ffmpeg killed by the file-size
    limit left a truncated mp4 and exit 0) and lets ffmpeg print to our stderr (a full disk
    gave lines after fourreal's one error line). A failure becomes an ``OSError`` naming
    ``path`` (ENOSPC, EFBIG) or an :class:`InputError`-like one-line error."""
    import errno
    import signal
    import subprocess
    import tempfile
    from fractions import Fraction

    import imageio_ffmpeg

    n, h, w, _ = arr.shape
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{w}x{h}",
           "-pix_fmt", "rgb24", "-r", str(Fraction(fps).limit_denominator()), "-i", "-", "-an",
           "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-v", "error",
           "-crf", str(int(crf)), "-preset", "medium", "-movflags", "+faststart", str(tmp)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        try:
            for frame in arr:
                proc.stdin.write(frame.tobytes())
        except (BrokenPipeError, OSError):
            pass  # ffmpeg died: its exit status and stderr say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        code = proc.wait()
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    if code == 0:
        return
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "No space left" in text:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    if "Disk quota" in text:
        raise OSError(errno.EDQUOT, "Disk quota exceeded", str(path))
    if code == -signal.SIGXFSZ or "File too large" in text:
        raise OSError(errno.EFBIG, "File too large", str(path))
    why = lines[-1][:160] if lines else f"exit status {code}"
    raise InputError(f"{path}: ffmpeg could not write the video ({why})")


def _short(e: BaseException) -> str:
    """A one-line, bounded summary of an exception from a decoder."""
    msg = str(e).strip().splitlines()
    # ffmpeg errors put the useful line last
    useful = [m.strip() for m in msg if m.strip()]
    text = useful[-1] if useful else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."
