"""nerfstudio / instant-ngp / D-NeRF ``transforms.json`` <-> :class:`PosedVideo`.

The file layout (all three projects share it)::

    {
      "fl_x": 1375.5, "fl_y": 1374.5, "cx": 554.6, "cy": 965.3, "w": 1080, "h": 1920,
      "camera_angle_x": 0.748,           # D-NeRF / NeRF-synthetic: horizontal FOV (radians)
      "camera_model": "OPENCV", "k1": 0, "k2": 0, "p1": 0, "p2": 0,
      "frames": [
        {"file_path": "images/0001.jpg",  # relative to the json; extension optional
         "transform_matrix": [[...4x4...]],   # camera-to-world, OpenGL axes (y up, z back)
         "time": 0.0,                     # optional, D-NeRF style, in [0,1]
         "mask_path": "masks/0001.png",   # optional, nerfstudio style: pixels to supervise
         "dynamic_mask_path": "dynamic_masks/0001.png"}  # optional: the moving region (scores)
      ]
    }

Intrinsics may be global or per frame (per-frame keys win). ``w``/``h`` default to the
image size; when the images on disk differ from the declared ``w``/``h`` (downscaled
copies) the intrinsics are scaled to the real images. Distortion coefficients are not
modelled: they are ignored with a warning recorded in ``PosedVideo.meta["warnings"]``.

The conversion to fourreal's OpenCV world-to-camera cameras happens here and nowhere
else (it is the same math as :meth:`Cameras.from_c2w_opengl`, done in float64 so a
write/load round trip is exact to ~1e-7).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from fourreal_core.errors import InputError
from fourreal_core.io import write_json
from fourreal_core.types import _GL_TO_CV_DIAG

if TYPE_CHECKING:
    import torch

    from fourreal_core.types import PosedVideo

__all__ = ["load_transforms", "write_transforms", "find_transforms"]

_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")
_PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "OPENCV_FISHEYE", "SIMPLE_RADIAL", "RADIAL")


def find_transforms(path: Union[str, os.PathLike]) -> Path:
    """``path`` itself if it is a file, else ``path/transforms.json`` (or the only
    ``transforms*.json`` there). Raises :class:`InputError` if there is none."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        if (p / "transforms.json").is_file():
            return p / "transforms.json"
        cands = sorted(p.glob("transforms*.json"))
        if len(cands) == 1:
            return cands[0]
        if cands:
            names = ", ".join(c.name for c in cands)
            raise InputError(f"{p}: several transforms files ({names}); name one")
        raise InputError(f"{p}: folder has no transforms.json")
    raise InputError(f"{p}: no such file or folder")


def _resolve_image(root: Path, file_path: str, json_path: Path) -> Path:
    p = Path(file_path)
    p = p if p.is_absolute() else root / p
    if p.suffix and p.is_file():
        return p
    for ext in (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG", ".webp", ".exr"):
        cand = p.with_name(p.name + ext)
        if cand.is_file():
            return cand
    if p.is_file():
        return p
    raise InputError(f"{json_path}: frame image {file_path!r} not found (looked for {p})")


def sel_keys(data: dict, idx: int) -> set:
    """Keys set on frame ``idx`` itself (per-frame intrinsics), to name where a bad value is."""
    fr = data["frames"][idx]
    return set(fr) if isinstance(fr, dict) else set()


def _number(value: Any, where: str, positive: bool = False) -> float:
    """A finite number from the JSON, or an :class:`InputError` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{where} must be a number, got {json.dumps(value)[:40]}")
    try:
        v = float(value)
    except ValueError:
        raise InputError(f"{where} must be a number, got {json.dumps(value)[:40]}") from None
    if not math.isfinite(v):
        raise InputError(f"{where} must be finite, got {value}")
    if positive and v <= 0:
        raise InputError(f"{where} must be > 0, got {value}")
    return v


def _matrix(value: Any, where: str) -> "torch.Tensor":
    """A camera-to-world 4x4 (or 3x4) matrix of finite numbers with an invertible rotation."""
    import torch

    rows = value if isinstance(value, list) else None
    if rows is None or len(rows) not in (3, 4) or any(not isinstance(r, list) or len(r) != 4 for r in rows):
        raise InputError(f"{where} must be a 4x4 (or 3x4) list of rows of numbers, got {json.dumps(value)[:60]}")
    m = torch.tensor([[_number(v, f"{where}[{i}][{j}]") for j, v in enumerate(r)] for i, r in enumerate(rows)],
                     dtype=torch.float64)
    if m.shape == (3, 4):
        m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    det = float(torch.linalg.det(m[:3, :3]))
    if abs(det) < 1e-9:
        raise InputError(f"{where} is singular (its rotation part has determinant {det:.3g}); not a camera pose")
    if abs(float(torch.linalg.det(m))) < 1e-9:
        raise InputError(f"{where} is singular (last row {m[3].tolist()}); expected [0, 0, 0, 1]")
    return m


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file without decoding all of it when possible."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # noqa: BLE001 - fall back to a full decode
        from fourreal_media import read_image_rgba

        img = read_image_rgba(path)
        return int(img.shape[0]), int(img.shape[1])


def load_transforms(
    path: Union[str, os.PathLike],
    height: Optional[int] = None,
    width: Optional[int] = None,
    stride: int = 1,
    max_frames: Optional[int] = None,
    white_background: Optional[bool] = None,
    load_images: bool = True,
    sort_by_file: bool = False,
) -> "PosedVideo":
    """Load a nerfstudio / instant-ngp / D-NeRF ``transforms.json`` as a :class:`PosedVideo`.

    Args:
        path: the json file, or a folder holding ``transforms.json``.
        height, width: resize the images (one of them keeps the aspect ratio); intrinsics
            are scaled to match.
        stride, max_frames: keep every ``stride``-th frame, at most ``max_frames`` of them
            (in the file's frame order, or by file name with ``sort_by_file``).
        white_background: composite RGBA images on white (True) or black (False);
            None: white, the D-NeRF / NeRF-synthetic convention.
        load_images: False skips decoding (frames are zeros) -- cameras only, fast.
        sort_by_file: order frames by ``file_path`` (natural order) as nerfstudio does.

    Returns:
        PosedVideo with frames ``[N,H,W,3]``, OpenCV cameras, ``times [N]`` when every frame
        has ``time``, ``canonical_view`` from the fourreal extras (re-indexed after striding; files
        written before the rename say ``anchor``, still read), masks
        ``[N,H,W,1]`` when frames have ``mask_path`` (frames without: all supervised),
        ``dynamic_masks`` ``[N,H,W,1]`` when frames have ``dynamic_mask_path`` (frames
        without: NaN, unknown), and ``meta`` with ``source``,
        ``file_paths``, ``frame_indices`` (into the file's frame list), ``warnings`` and the
        file's other top-level keys (``aabb_scale``...).

    Raises:
        InputError: missing/unparsable file, no frames, a missing image, or frames of
            different sizes without ``height``/``width`` to resize them to.
    """
    import torch

    from fourreal_core.types import Cameras, PosedVideo, Video
    from fourreal_media import natural_key, read_image, resize_frames, target_size

    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    jpath = find_transforms(path)
    try:
        data = json.loads(jpath.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{jpath}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{jpath}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise InputError(f"{jpath}: no 'frames' list (not a transforms.json)")
    root = jpath.parent
    all_frames = list(enumerate(data["frames"]))
    if not all_frames:
        raise InputError(f"{jpath}: has no frames")
    if sort_by_file:
        all_frames.sort(key=lambda it: natural_key(str(it[1].get("file_path", ""))))
    sel = all_frames[::stride]
    if max_frames is not None:
        sel = sel[: max(0, int(max_frames))]
    if not sel:
        raise InputError(f"{jpath}: no frames left after stride={stride}, max_frames={max_frames}")

    warnings: list[str] = []
    model = data.get("camera_model")
    if model is not None and str(model).upper() not in _PINHOLE_MODELS:
        warnings.append(f"camera_model {model!r} treated as a pinhole camera")
    bg = (1.0, 1.0, 1.0) if (white_background is None or white_background) else (0.0, 0.0, 0.0)

    c2ws, intr, files, masks_files, dyn_files, times, idxs = [], [], [], [], [], [], []
    dist_seen = False
    for idx, fr in sel:
        where = f"{jpath}: frames[{idx}]"
        if not isinstance(fr, dict):
            raise InputError(f"{where} is not an object")
        if "transform_matrix" not in fr:
            raise InputError(f"{where} has no transform_matrix")
        m = _matrix(fr["transform_matrix"], f"{where}.transform_matrix")
        if "file_path" not in fr:
            raise InputError(f"{where} has no file_path")
        img_path = _resolve_image(root, str(fr["file_path"]), jpath)
        cam = {k: fr.get(k, data.get(k)) for k in _INTRINSIC_KEYS}
        if not dist_seen and any(
            abs(_number(fr.get(k, data.get(k, 0.0)) or 0.0, f"{where}: {k}")) > 0 for k in _DISTORTION_KEYS
        ):
            dist_seen = True
        c2ws.append(m)
        intr.append(cam)
        files.append(img_path)
        masks_files.append(_resolve_image(root, str(fr["mask_path"]), jpath) if fr.get("mask_path") else None)
        dyn_files.append(_resolve_image(root, str(fr["dynamic_mask_path"]), jpath)
                         if fr.get("dynamic_mask_path") else None)
        t = None if fr.get("time") is None else _number(fr["time"], f"{where}.time")
        if t is not None and not 0.0 <= t <= 1.0:
            raise InputError(f"{where}.time must be in [0, 1] (D-NeRF convention), got {fr['time']}")
        times.append(t)
        idxs.append(idx)
    if dist_seen:
        present = [k for k in _DISTORTION_KEYS if k in data or k in sel[0][1]]
        warnings.append(
            f"lens distortion ({', '.join(present)}) ignored: images are used as pinhole images"
        )

    # --- intrinsics for the images as they are on disk ---------------------------------
    Ks, sizes = [], []
    size_cache: dict[Path, tuple[int, int]] = {}
    for f, cam, idx in zip(files, intr, idxs):
        where = f"{jpath}: frames[{idx}]"
        for k in _INTRINSIC_KEYS:
            if cam.get(k) is not None:
                cam[k] = _number(cam[k], f"{where}: {k}" if k in sel_keys(data, idx) else f"{jpath}: {k}",
                                 positive=k != "cx" and k != "cy")
        if cam.get("camera_angle_x") is not None and not cam["camera_angle_x"] < math.pi:
            raise InputError(f"{jpath}: camera_angle_x must be below pi radians, got {cam['camera_angle_x']}")
        decl_w, decl_h = cam.get("w"), cam.get("h")
        if decl_w is None or decl_h is None or load_images:
            if f not in size_cache:
                size_cache[f] = _image_size(f)
            img_h, img_w = size_cache[f]
        else:
            img_h, img_w = int(round(float(decl_h))), int(round(float(decl_w)))
        W = float(decl_w) if decl_w is not None else float(img_w)
        H = float(decl_h) if decl_h is not None else float(img_h)
        if cam.get("fl_x") is not None:
            fx = float(cam["fl_x"])
        elif cam.get("camera_angle_x") is not None:
            fx = 0.5 * W / math.tan(0.5 * float(cam["camera_angle_x"]))
        elif cam.get("fl_y") is not None:
            fx = float(cam["fl_y"])
        else:
            raise InputError(f"{jpath}: no focal length (fl_x or camera_angle_x) for {f.name}")
        if cam.get("fl_y") is not None:
            fy = float(cam["fl_y"])
        elif cam.get("camera_angle_y") is not None and cam.get("fl_x") is None:
            fy = 0.5 * H / math.tan(0.5 * float(cam["camera_angle_y"]))
        else:
            fy = fx
        cx = float(cam["cx"]) if cam.get("cx") is not None else W / 2.0
        cy = float(cam["cy"]) if cam.get("cy") is not None else H / 2.0
        sx, sy = img_w / W, img_h / H  # images stored at another size than declared
        if abs(img_w - W * sy) > 1.5 or abs(img_h - H * sx) > 1.5:  # not a uniformly scaled copy
            raise InputError(f"{where}: image {f.name} is {img_w}x{img_h}, but the file declares w={W:g}, h={H:g} "
                             "(another aspect ratio, not a scaled copy); fix w/h or the image (not stretched)")
        Ks.append([fx * sx, fy * sy, cx * sx, cy * sy])
        sizes.append((img_h, img_w))

    if len(set(sizes)) > 1 and height is None and width is None:
        raise InputError(
            f"{jpath}: frames have different image sizes ({sorted(set(sizes))[:3]}...); "
            "pass height/width to resize them to one size"
        )
    src_h, src_w = sizes[0]
    out_h, out_w = target_size(src_h, src_w, height, width)

    K_all = torch.zeros(len(Ks), 3, 3, dtype=torch.float64)
    for i, ((fx, fy, cx, cy), (h, w)) in enumerate(zip(Ks, sizes)):
        sx, sy = out_w / w, out_h / h
        K_all[i] = torch.tensor(
            [[fx * sx, 0.0, cx * sx], [0.0, fy * sy, cy * sy], [0.0, 0.0, 1.0]], dtype=torch.float64
        )

    # --- cameras: c2w OpenGL -> w2c OpenCV (float64) ---------------------------------
    c2w = torch.stack(c2ws)
    flip = torch.diag(torch.tensor(_GL_TO_CV_DIAG, dtype=torch.float64))
    viewmats = torch.linalg.inv(c2w @ flip)
    cameras = Cameras(viewmats.float(), K_all.float(), out_w, out_h)

    # --- images -------------------------------------------------------------------------
    if load_images:
        frames = torch.stack(
            [resize_frames(read_image(f, background=bg)[None], out_h, out_w)[0] for f in files]
        )
    else:
        frames = torch.zeros(len(files), out_h, out_w, 3)
    masks = None
    if load_images and any(m is not None for m in masks_files):
        ms = []
        for mf in masks_files:
            if mf is None:
                ms.append(torch.ones(out_h, out_w, 1))
            else:
                m = read_image(mf)[..., :1]
                ms.append(resize_frames(m[None], out_h, out_w)[0])
        masks = torch.stack(ms)
    dynamic_masks = None
    if load_images and any(m is not None for m in dyn_files):
        # a frame without one: its moving region is unknown (NaN), not "everything moves"
        dynamic_masks = torch.stack([
            torch.full((out_h, out_w, 1), float("nan")) if mf is None
            else resize_frames(read_image(mf)[..., :1][None], out_h, out_w)[0] for mf in dyn_files])

    times_t = None
    if all(t is not None for t in times):
        times_t = torch.tensor([float(t) for t in times], dtype=torch.float32)
    elif any(t is not None for t in times):
        warnings.append("some frames have 'time' and some do not: times ignored")

    extras = data.get("fourreal") if isinstance(data.get("fourreal"), dict) else {}
    canonical_view = None
    for key in ("canonical_view", "anchor"):  # ``anchor``: files written before the rename
        src = extras.get(key, data.get(key))
        if src is not None:
            k = int(_number(src, f"{jpath}: {key}"))
            canonical_view = idxs.index(k) if k in idxs else None
            break

    fps = float(extras.get("fps", data.get("fps", 8.0)) or 8.0) / stride
    meta: dict[str, Any] = {
        "source": str(jpath),
        "file_paths": [str(f) for f in files],
        "frame_indices": idxs,
        "warnings": warnings,
        "white_background": bg == (1.0, 1.0, 1.0),
    }
    for k, v in data.items():
        if k not in ("frames",) + _INTRINSIC_KEYS + _DISTORTION_KEYS:
            meta.setdefault(k, v)
    return PosedVideo(
        video=Video(frames.contiguous(), fps=fps),
        cameras=cameras,
        times=times_t,
        canonical_view=canonical_view,
        masks=masks,
        meta=meta,
        dynamic_masks=dynamic_masks,
    )


def write_transforms(
    path: Union[str, os.PathLike],
    posed: "PosedVideo",
    image_folder: str = "images",
    write_images: bool = True,
    file_pattern: str = "{:05d}.png",
    extra: Optional[dict] = None,
) -> Path:
    """Write ``posed`` as a nerfstudio/D-NeRF ``transforms.json`` plus its frames.

    Layout: ``fl_x, fl_y, cx, cy, w, h`` (global when all cameras share them, else per
    frame), ``camera_angle_x`` (for D-NeRF loaders), ``camera_model: OPENCV`` with zero
    distortion, ``frames`` with ``file_path`` (``image_folder/file_pattern``), camera-to-world
    OpenGL ``transform_matrix``, ``time`` when ``posed.times`` is set and ``mask_path`` when
    ``posed.masks`` is, ``dynamic_mask_path`` for frames whose ``posed.dynamic_masks`` is known;
    fourreal extras (``canonical_view``, ``fps``, ``extra``) under ``"fourreal"``.

    Args:
        path: the json file to write (its folder receives ``image_folder/``).
        posed: the frames, cameras and optional times/canonical_view/masks.
        image_folder: folder for the PNGs, relative to the json.
        write_images: False writes only the json (images assumed present).
        file_pattern: ``str.format`` pattern for image names.
        extra: JSON-serialisable values stored under ``"fourreal"``.

    Every file is written atomically; the json last. Returns the json path.
    """
    import torch

    from fourreal_media import write_image

    path = Path(path)
    if path.suffix.lower() != ".json":
        path = path / "transforms.json"
    root = path.parent
    cams = posed.cameras
    W, H = cams.width, cams.height
    Ks = cams.Ks.detach().double().cpu()
    viewmats = cams.viewmats.detach().double().cpu()
    flip = torch.diag(torch.tensor(_GL_TO_CV_DIAG, dtype=torch.float64))
    c2w_gl = torch.linalg.inv(viewmats) @ flip

    def k_of(K):
        return {"fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2])}

    shared = bool(torch.allclose(Ks, Ks[:1].expand_as(Ks), atol=0, rtol=0))
    out: dict[str, Any] = {"camera_model": "OPENCV"}
    if shared:
        out.update(k_of(Ks[0]))
        out["camera_angle_x"] = 2.0 * math.atan(W / (2.0 * float(Ks[0, 0, 0])))
    out.update({"w": W, "h": H, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0})

    frames_json = []
    img_dir = root / image_folder
    for i in range(len(posed)):
        name = file_pattern.format(i)
        rel = f"{image_folder}/{name}" if image_folder else name
        fr: dict[str, Any] = {"file_path": rel, "transform_matrix": c2w_gl[i].tolist()}
        if not shared:
            fr.update(k_of(Ks[i]))
        if posed.times is not None:
            fr["time"] = float(posed.times[i])
        if posed.masks is not None:
            mrel = f"masks/{Path(name).with_suffix('.png').name}"
            fr["mask_path"] = mrel
            if write_images:
                m = posed.masks[i].detach().float().cpu()
                write_image(root / mrel, m[..., 0])
        if posed.dynamic_masks is not None and not bool(torch.isnan(posed.dynamic_masks[i]).any()):
            drel = f"dynamic_masks/{Path(name).with_suffix('.png').name}"
            fr["dynamic_mask_path"] = drel
            if write_images:
                write_image(root / drel, posed.dynamic_masks[i].detach().float().cpu()[..., 0])
        if write_images:
            write_image(img_dir / name, posed.video.frames[i])
        frames_json.append(fr)
    out["frames"] = frames_json
    fourreal: dict[str, Any] = {"version": 1, "fps": float(posed.video.fps), "num_frames": len(posed)}
    if posed.canonical_view is not None:
        fourreal["canonical_view"] = int(posed.canonical_view)
    if extra:
        if "canonical_view" in extra:  # the video's own: posed.canonical_view
            raise ValueError("write_transforms: set posed.canonical_view, not extra['canonical_view']")
        fourreal.update(extra)
    out["fourreal"] = fourreal
    write_json(path, out)
    return path
