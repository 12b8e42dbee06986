"""Synchronized multi-camera captures: the `capture` plugin kind's built-in layouts.

Two layouts are read (:func:`read_capture`):

* **Dynamic-3D-Gaussians** (Luiten et al.; the Panoptic-dome sequences and ``rig4``): a
  folder with ``train_meta.json`` (and optionally ``test_meta.json`` / ``meta_all.json``)
  holding ``w``, ``h`` and, per time ``t`` and camera slot ``i``, ``k[t][i]`` (3x3 pixel
  intrinsics), ``w2c[t][i]`` (4x4 world-to-camera, OpenCV axes), ``fn[t][i]`` (image path
  under ``ims/``) and ``cam_id[t][i]``. Masks ``seg/<fn>.png`` and points
  ``init_pt_cld.npz`` (``data [N,7]``: xyz, rgb, seg) are used when present.
* **per-camera videos + a cameras file**: a nerfstudio-style ``transforms.json`` with ONE
  entry per camera whose ``file_path`` is that camera's video (mp4/mov/webm/gif) or a
  folder of its frames, camera-to-world OpenGL ``transform_matrix``, intrinsics per entry
  or global (``fl_x, fl_y, cx, cy, w, h`` in pixels of the video), and an optional
  ``camera`` name (default: the file's stem). All videos are synchronized: frame ``t`` of
  every video is the same instant. Masks: an optional ``dynamic_mask_path`` per entry (a
  video or frame folder of the same length; white = moving subject), used to score the moving
  region of held-out cameras (``mask_path``, nerfstudio's pixels-to-supervise, is refused).

Single-video inputs (a video file, a frame folder, a transforms.json) are the same plugin kind
with ``single_video = True``: :mod:`fourreal_poses.single_video`.

The `multicam` stage (:mod:`fourreal_stages.multicam`) forms the training and held-out videos
from a :class:`Capture`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from fourreal_core.errors import InputError
from fourreal_core.interfaces import CaptureReader
from fourreal_core.types import Cameras

__all__ = ["Capture", "read_capture", "Dynamic3DGSCapture", "CameraVideosCapture"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".gif", ".avi", ".mkv")


@dataclass
class Capture:
    """A synchronized capture, lazily loaded.

    Attributes:
        root: the folder.
        layout: ``dynamic3dgs`` or ``videos``.
        cameras: camera names in order.
        num_times: synchronized frames per camera.
        width, height: native image size.
        Ks, viewmats: ``{camera: [T,3,3] / [T,4,4]}`` per-time calibration (float64).
        splits: ``{camera: "train" | "test"}`` as the data says (DG3 metas), else all train.
        points_file: an initial point cloud shipped with the capture, or None.
    """

    root: Path
    layout: str
    cameras: list[str]
    num_times: int
    width: int
    height: int
    Ks: dict
    viewmats: dict
    splits: dict
    points_file: Optional[Path] = None
    _files: dict = field(default_factory=dict)  # dynamic3dgs: {camera: [T] image paths}
    _masks: dict = field(default_factory=dict)  # {camera: [T] mask paths} or video paths
    _videos: dict = field(default_factory=dict)  # videos: {camera: path}
    _cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------- constructors
    @classmethod
    def from_images(cls, root: Path, files: dict, Ks: dict, viewmats: dict, width: int, height: int,
                    splits: Optional[dict] = None, masks: Optional[dict] = None,
                    points_file: Optional[Path] = None) -> "Capture":
        """A capture of one image per camera and time: ``files {camera: [T] paths}``,
        ``Ks {camera: [T,3,3]}`` pixel intrinsics at ``width x height``, ``viewmats {camera:
        [T,4,4]}`` world-to-camera (OpenCV axes), ``splits {camera: "train" | "test"}`` (default
        all train), ``masks {camera: [T] paths}`` of the moving subject (white), optional
        ``points_file`` (.ply / .npz). Cameras are ordered by name (numbers numerically)."""
        return cls._checked(root, "images", files, Ks, viewmats, width, height, splits, points_file,
                            _files=dict(files), _masks=dict(masks or {}))

    @classmethod
    def from_videos(cls, root: Path, videos: dict, Ks: dict, viewmats: dict, width: int, height: int,
                    num_times: int, splits: Optional[dict] = None, masks: Optional[dict] = None,
                    points_file: Optional[Path] = None) -> "Capture":
        """A capture of one synchronized video (or frame folder) per camera: ``videos {camera:
        path}``, ``num_times`` frames used from each, the rest as :meth:`from_images` (``masks
        {camera: video path}``)."""
        return cls._checked(root, "videos", {c: [None] * int(num_times) for c in videos}, Ks, viewmats, width, height,
                            splits, points_file, _masks=dict(masks or {}), _videos=dict(videos))

    @classmethod
    def _checked(cls, root, layout, per_time, Ks, viewmats, width, height, splits, points_file, **private):
        cams = sorted(per_time, key=lambda c: (len(str(c)), str(c)))
        if not cams:
            raise InputError(f"{root}: a capture needs at least one camera")
        T = len(per_time[cams[0]])
        Kt, Vt = {}, {}
        for cam in cams:
            if len(per_time[cam]) != T:
                raise InputError(f"{root}: camera {cam} has {len(per_time[cam])} time steps, camera {cams[0]} has {T}")
            K, V = torch.as_tensor(Ks[cam], dtype=torch.float64), torch.as_tensor(viewmats[cam], dtype=torch.float64)
            if K.shape == (3, 3):
                K = K[None].expand(T, 3, 3).clone()
            if V.shape == (4, 4):
                V = V[None].expand(T, 4, 4).clone()
            if K.shape != (T, 3, 3) or V.shape != (T, 4, 4):
                raise InputError(f"{root}: camera {cam}: intrinsics must be [T,3,3] or [3,3] and viewmats [T,4,4] or "
                                 f"[4,4] with T = {T}; got {list(K.shape)} and {list(V.shape)}")
            Kt[cam], Vt[cam] = K, V
        spl = {c: "train" for c in cams}
        spl.update(splits or {})
        return cls(Path(root), layout, cams, int(T), int(width), int(height), Kt, Vt, spl,
                   points_file=points_file, **private)

    # ------------------------------------------------------------------------ frames
    def frames(self, camera: str, times: list[int], height: int, width: int) -> torch.Tensor:
        """``[len(times),height,width,3]`` float in [0,1]."""
        from fourreal_media import read_image, read_video, resize_frames

        if self._files and self.layout != "videos":  # one image per camera and time
            out = []
            for t in times:
                p = self._files[camera][t]
                if not p.is_file():
                    raise InputError(f"{self.root}: camera {camera} time {t}: image {p} is missing")
                self._check_size(p, camera, t)
                out.append(read_image(p, height=height, width=width))
            return torch.stack(out)
        key = (camera, height, width)
        if key not in self._cache:
            v = read_video(self._videos[camera])
            if len(v) < self.num_times:
                raise InputError(f"{self._videos[camera]}: {len(v)} frames, but the capture has {self.num_times}")
            self._cache[key] = resize_frames(v.frames[: self.num_times], height, width)
        return self._cache[key][list(times)]

    def _check_size(self, path: Path, camera: str, t: int) -> None:
        """Refuse a frame stored at another size than the meta file declares: resized, it would
        be stretched under intrinsics that belong to the declared size."""
        from fourreal_formats.transforms import _image_size

        if path not in self._cache:
            self._cache[path] = _image_size(path)
        h, w = self._cache[path]
        if (w, h) != (self.width, self.height):
            raise InputError(f"{path}: camera {camera} time {t}: image is {w}x{h}, but the capture's meta file "
                             f"declares {self.width}x{self.height} (w x h); resize it or fix w/h (not stretched)")

    def masks(self, camera: str, times: list[int], height: int, width: int) -> Optional[torch.Tensor]:
        """``[len(times),height,width,1]`` in [0,1] (1 = the moving subject), or None."""
        from fourreal_media import read_image, read_video, resize_frames

        if camera not in self._masks:
            return None
        if self.layout != "videos":
            ms = []
            for t in times:
                p = self._masks[camera][t]
                if not p.is_file():
                    return None
                ms.append(read_image(p, height=height, width=width).mean(-1, keepdim=True))
            return (torch.stack(ms) > 0.5).float()
        v = read_video(self._masks[camera])
        m = resize_frames(v.frames[: self.num_times], height, width)[list(times)]
        return (m.mean(-1, keepdim=True) > 0.5).float()

    def cameras_at(self, cams: list[str], times: list[int], height: int, width: int) -> Cameras:
        """Cameras of (``cams[i]``, ``times[i]``) pairs, intrinsics scaled to ``width x height``."""
        sx, sy = width / self.width, height / self.height
        V = torch.stack([self.viewmats[c][t] for c, t in zip(cams, times)]).float()
        K = torch.stack([self.Ks[c][t] for c, t in zip(cams, times)]).clone()
        K[:, 0] *= sx
        K[:, 1] *= sy
        return Cameras(V, K.float(), width, height)


# ================================================================================ readers
def read_capture(path, registry=None, layout: Optional[str] = None) -> Capture:
    """A :class:`Capture` read by the ``capture`` plugin ``layout`` names, or by the first
    registered multi-camera one that claims ``path`` (built in: a Dynamic-3D-Gaussians folder,
    or a cameras .json -- or a folder holding ``cameras.json`` / ``transforms.json`` -- of
    per-camera videos). Single-video layouts (``single_video``: the poses stage's inputs,
    :mod:`fourreal_poses.single_video`) are not asked. ``registry``: the run's (default: the
    installed plugins')."""
    from fourreal_core.registry import get_registry

    reg = registry if registry is not None else get_registry()
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such capture (a folder or a cameras .json)")
    every = [(n, reg.create("capture", n)) for n in reg.names("capture")]
    readers = [(n, r) for n, r in every if not r.single_video]  # single videos are the poses stage's
    names = [n for n, _ in readers]
    if layout is not None:
        if layout in dict(every) and layout not in names:
            raise InputError(f"params.layout: {layout!r} is a single-video layout (the poses stage's reference / "
                             f"freeze_time inputs), not a multi-camera capture; multi-camera: {', '.join(names)}")
        if layout not in names:
            raise InputError(f"params.layout: unknown capture layout {layout!r}; registered: {', '.join(names)}")
        return dict(readers)[layout].read(path)
    for _, reader in readers:
        if reader.claims(path):
            return reader.read(path)
    raise InputError(f"{path}: not a capture any registered layout reads ({', '.join(names)}): expected "
                     "train_meta.json (Dynamic-3D-Gaussians layout) or cameras.json / transforms.json with one "
                     "entry per camera video")


class Dynamic3DGSCapture(CaptureReader):
    """The ``dynamic3dgs`` layout: a folder with train_meta.json (+ test_meta.json) or
    meta_all.json, ims/, optional seg/ and init_pt_cld.npz (or one of those meta files)."""

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg

    def claims(self, path: Path) -> bool:
        if path.is_dir():
            return (path / "train_meta.json").is_file() or (path / "meta_all.json").is_file()
        return path.name in ("train_meta.json", "test_meta.json", "meta_all.json")

    def read(self, path: Path) -> Capture:
        return _read_dynamic3dgs(path if path.is_dir() else path.parent)


class CameraVideosCapture(CaptureReader):
    """The ``camera_videos`` layout: a cameras .json (nerfstudio-style, one entry per camera
    whose file_path is its video or frame folder), or a folder holding cameras.json /
    transforms.json."""

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg

    def claims(self, path: Path) -> bool:
        if path.is_dir():
            return any((path / n).is_file() for n in ("cameras.json", "transforms.json"))
        return path.suffix == ".json" and not Dynamic3DGSCapture().claims(path)

    def read(self, path: Path) -> Capture:
        if path.is_dir():
            path = next(path / n for n in ("cameras.json", "transforms.json") if (path / n).is_file())
        return _read_videos(path)


def _load_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def _pixels(value, where: str) -> int:
    """A positive whole number of pixels from a meta file (``"h": "tall"``, 0, 24.5 refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value or value < 1 or value > 1 << 20:
        raise InputError(f"{where} must be a positive whole number of pixels, got {json.dumps(value)[:40]}")
    return int(value)


def _per_time_lengths(mpath: Path, m: dict) -> int:
    """T, after checking that ``k``, ``w2c``, ``fn`` and ``cam_id`` are lists of T lists, the
    t-th of each holding one entry per camera of ``cam_id[t]`` (a ragged list names its entry)."""
    for key in ("cam_id", "fn", "k", "w2c"):
        if not isinstance(m[key], list) or not m[key]:
            raise InputError(f"{mpath}: {key} must be a non-empty list with one list per time step, "
                             f"got {json.dumps(m[key])[:40]}")
    t_n = len(m["cam_id"])
    for key in ("fn", "k", "w2c"):
        if len(m[key]) != t_n:
            raise InputError(f"{mpath}: {key} has {len(m[key])} time steps, cam_id has {t_n}")
    for t in range(t_n):
        if not isinstance(m["cam_id"][t], list):
            raise InputError(f"{mpath}: cam_id[{t}] must be a list of cameras, got {json.dumps(m['cam_id'][t])[:40]}")
        n = len(m["cam_id"][t])
        for key in ("fn", "k", "w2c"):
            row = m[key][t]
            if not isinstance(row, list) or len(row) != n:
                got = f"{len(row)} entries" if isinstance(row, list) else json.dumps(row)[:40]
                raise InputError(f"{mpath}: {key}[{t}] must hold one entry per camera of cam_id[{t}] ({n}), got {got}")
    return t_n


def _number_matrix(value, shape: tuple, where: str) -> torch.Tensor:
    rows = value if isinstance(value, list) else None
    if rows is None or len(rows) != shape[0] or any(not isinstance(r, list) or len(r) != shape[1] for r in rows) \
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for r in rows for v in r):
        raise InputError(f"{where}: expected a {shape[0]}x{shape[1]} matrix of numbers, got {json.dumps(value)[:60]}")
    out = torch.tensor(rows, dtype=torch.float64)
    if not torch.isfinite(out).all():
        raise InputError(f"{where}: holds a non-finite number")
    return out


def _intrinsics(value, where: str) -> torch.Tensor:
    """A pixel intrinsics matrix: positive focal lengths, last row [0, 0, 1]."""
    K = _number_matrix(value, (3, 3), where)
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise InputError(f"{where}: focal lengths must be > 0, got fx={float(K[0, 0]):g}, fy={float(K[1, 1]):g}")
    if K[1, 0] != 0 or K[2].tolist() != [0.0, 0.0, 1.0]:
        raise InputError(f"{where}: not a pinhole intrinsics matrix (expected rows [fx, s, cx], [0, fy, cy], "
                         f"[0, 0, 1]), got {K.tolist()}")
    return K


def _world_to_camera(value, where: str) -> torch.Tensor:
    """A rigid 4x4 world-to-camera matrix (rotation part orthonormal up to 1e-3, last row [0,0,0,1])."""
    vm = _number_matrix(value, (4, 4), where)
    if vm[3].tolist() != [0.0, 0.0, 0.0, 1.0]:
        raise InputError(f"{where}: last row must be [0, 0, 0, 1], got {vm[3].tolist()}")
    R = vm[:3, :3]
    err = float((R @ R.T - torch.eye(3, dtype=torch.float64)).abs().max())
    if err > 1e-3 or float(torch.linalg.det(R)) <= 0:
        raise InputError(f"{where}: not a camera pose (its rotation part is not a rotation: "
                         f"det {float(torch.linalg.det(R)):.3g}, |R R^T - I| {err:.2g})")
    return vm


def _read_dynamic3dgs(root: Path) -> Capture:
    metas = []
    for name, split in (("train_meta.json", "train"), ("test_meta.json", "test")):
        if (root / name).is_file():
            metas.append((root / name, split))
    if not metas:
        metas.append((root / "meta_all.json", "train"))
    Ks, V, files, masks, splits = {}, {}, {}, {}, {}
    W = H = T = None
    for mpath, split in metas:
        m = _load_json(mpath)
        if not isinstance(m, dict):
            raise InputError(f"{mpath}: expected a JSON object with w, h, k, w2c, fn, cam_id, got a {type(m).__name__}")
        for key in ("w", "h", "k", "w2c", "fn", "cam_id"):
            if key not in m:
                raise InputError(f"{mpath}: missing key {key!r} (Dynamic-3D-Gaussians layout: w, h, k, w2c, fn, cam_id)")
        w, h = _pixels(m["w"], f"{mpath}: w"), _pixels(m["h"], f"{mpath}: h")
        if W is None:
            W, H = w, h
        elif (w, h) != (W, H):
            raise InputError(f"{mpath}: image size {w}x{h} differs from {W}x{H} of the other meta file")
        t_n = _per_time_lengths(mpath, m)
        if T is None:
            T = t_n
        elif t_n != T:
            raise InputError(f"{mpath}: {t_n} time steps, the other meta file has {T}")
        for t in range(t_n):
            seen: set = set()
            for i, cid in enumerate(m["cam_id"][t]):
                if isinstance(cid, (dict, list)) or isinstance(cid, bool):
                    raise InputError(f"{mpath}: cam_id[{t}][{i}] must be a camera number or name, got {json.dumps(cid)[:40]}")
                cam = str(cid)
                if cam in seen:
                    raise InputError(f"{mpath}: cam_id[{t}][{i}]: camera {cam} appears twice at time {t}")
                seen.add(cam)
                K = _intrinsics(m["k"][t][i], f"{mpath}: k[{t}][{i}] (camera {cam})")
                vm = _world_to_camera(m["w2c"][t][i], f"{mpath}: w2c[{t}][{i}] (camera {cam})")
                Ks.setdefault(cam, [None] * t_n)[t] = K
                V.setdefault(cam, [None] * t_n)[t] = vm
                fn = m["fn"][t][i]
                if not isinstance(fn, str) or not fn:
                    raise InputError(f"{mpath}: fn[{t}][{i}] must be an image path under ims/, got {json.dumps(fn)[:40]}")
                files.setdefault(cam, [None] * t_n)[t] = root / "ims" / fn
                seg = root / "seg" / Path(fn).with_suffix(".png")
                masks.setdefault(cam, [None] * t_n)[t] = seg
                splits[cam] = split
    for cam in list(Ks):
        if any(k is None for k in Ks[cam]):
            raise InputError(f"{root}: camera {cam} is missing at some time steps")
        Ks[cam], V[cam] = torch.stack(Ks[cam]), torch.stack(V[cam])
    has_seg = (root / "seg").is_dir()
    cams = sorted(Ks, key=lambda c: (len(c), c))
    pf = root / "init_pt_cld.npz"
    return Capture(root, "dynamic3dgs", cams, int(T), int(W), int(H), Ks, V, splits,
                   points_file=pf if pf.is_file() else None, _files=files, _masks=masks if has_seg else {})


def _read_videos(jpath: Path) -> Capture:
    from fourreal_core.types import Cameras as _C

    from fourreal_formats.transforms import _matrix, _number

    data = _load_json(jpath)
    root = jpath.parent
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{jpath}: no 'frames' list (one entry per camera video)")
    names, Ks, V, videos, masks = [], {}, {}, {}, {}
    W = H = None
    from fourreal_media import read_video

    lengths = {}
    for i, fr in enumerate(frames):
        where = f"{jpath}: frames[{i}]"
        if not isinstance(fr, dict):
            raise InputError(f"{where}: expected an object (file_path, transform_matrix...), got {json.dumps(fr)[:40]}")
        if "file_path" not in fr or "transform_matrix" not in fr:
            raise InputError(f"{where}: needs file_path (the camera's video) and transform_matrix")
        vp = (root / str(fr["file_path"])).resolve()
        if not vp.exists():
            raise InputError(f"{where}: file_path {fr['file_path']!r}: no such video or frame folder ({vp})")
        name = str(fr.get("camera", Path(str(fr["file_path"])).stem))
        if name in Ks:
            raise InputError(f"{where}: camera name {name!r} is used twice")

        def num(key, positive=False):
            v = fr.get(key, data.get(key))
            if v is None:
                raise InputError(f"{where}: {key} missing (per entry or global)")
            return _number(v, f"{where}: {key}", positive=positive)

        w, h = _pixels(num("w"), f"{where}: w"), _pixels(num("h"), f"{where}: h")
        if W is None:
            W, H = w, h
        elif (w, h) != (W, H):
            raise InputError(f"{where}: size {w}x{h} differs from {W}x{H} (resize the videos to one size)")
        K = torch.tensor([[num("fl_x", True), 0, num("cx")], [0, num("fl_y", True), num("cy")], [0, 0, 1]],
                         dtype=torch.float64)
        c2w = _matrix(fr["transform_matrix"], f"{where}.transform_matrix")  # 4x4 (or 3x4), invertible
        vm = _C.from_c2w_opengl(c2w[None].float(), K[None].float(), w, h).viewmats[0].double()
        v = read_video(vp)
        if (v.width, v.height) != (w, h):
            raise InputError(f"{where}: video {vp.name} is {v.width}x{v.height}, the cameras file says {w}x{h}")
        lengths[name] = len(v)
        names.append(name)
        Ks[name], V[name], videos[name] = K, vm, vp
        if fr.get("mask_path"):  # nerfstudio's meaning (pixels to supervise) is not this one
            raise InputError(f"{where}: mask_path means pixels to supervise, which a capture does not take; "
                             "a mask of the moving subject is dynamic_mask_path")
        if fr.get("dynamic_mask_path"):
            masks[name] = (root / str(fr["dynamic_mask_path"])).resolve()
            if not masks[name].exists():
                raise InputError(f"{where}: dynamic_mask_path {fr['dynamic_mask_path']!r}: no such video or frame "
                                 f"folder ({masks[name]})")
        if fr.get("split", "train") not in ("train", "test"):
            raise InputError(f"{where}: split must be \"train\" or \"test\", got {json.dumps(fr['split'])[:40]}")
    T = min(lengths.values())
    if len(set(lengths.values())) > 1:
        pass  # synchronized from frame 0; extra trailing frames are ignored (capture.json records it)
    Ks = {n: k[None].expand(T, 3, 3).clone() for n, k in Ks.items()}
    V = {n: v[None].expand(T, 4, 4).clone() for n, v in V.items()}
    from .triangulate import points_beside

    splits = {n: str(fr.get("split", "train")) for n, fr in zip(names, frames)}
    return Capture(root, "videos", names, int(T), int(W), int(H), Ks, V, splits,
                   points_file=points_beside(jpath), _masks=masks, _videos=videos)


# ================================================================================= stage
