"""Point clouds on disk: a PLY with x,y,z (+ red,green,blue), or an ``.npz`` with
``points`` ``[P,3]`` and ``colors`` ``[P,3]`` in [0,1] -- what the poses, multicam and
synthetic stages write (``points.ply``, ``init_points.npz``) and the canonical stage reads.

:func:`read_plydata` is the one PLY opener (also of the Gaussian PLYs of
:mod:`fourreal_gaussians.ply`): files that are not (whole) PLYs fail in one line naming them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fourreal_core.errors import InputError
from fourreal_core.types import PointCloud

__all__ = ["read_plydata", "read_points", "write_points_ply"]


def read_plydata(path: os.PathLike | str):
    """``plyfile.PlyData.read`` with one-line errors for files that are not (whole) PLYs."""
    from plyfile import PlyData, PlyParseError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such PLY file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(5)
        if not (head.startswith(b"ply\n") or head.startswith(b"ply\r")):
            raise InputError(f"{path}: not a PLY file (it does not start with 'ply')")
        return PlyData.read(str(path))
    except PlyParseError as exc:
        raise InputError(f"{path}: damaged or truncated PLY ({_first_line(exc)})") from None
    except (ValueError, EOFError, IndexError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: damaged or truncated PLY ({type(exc).__name__}: {_first_line(exc)})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def read_points(path: Path) -> PointCloud:
    """Coloured points from ``.npz`` (points, colors) or a PLY with x,y,z (+ red,green,blue)."""
    import numpy as np

    path = Path(path)
    try:
        if path.suffix == ".npz":
            import zipfile

            try:
                with np.load(path) as z:
                    pts, cols = z["points"].astype(np.float32), z["colors"].astype(np.float32)
            except zipfile.BadZipFile:
                raise InputError(f"{path}: not a readable .npz file") from None
            if not np.isfinite(pts).all():
                raise InputError(f"{path}: points hold non-finite coordinates")
            return PointCloud(torch.from_numpy(pts), torch.from_numpy(cols))
        v = read_plydata(path)["vertex"]
        pts = np.stack([v["x"], v["y"], v["z"]], -1).astype(np.float32)
        bad = ~np.isfinite(pts).all(-1)
        if bad.any():
            raise InputError(f"{path}: point {int(np.argmax(bad))} has a non-finite coordinate "
                             f"({int(bad.sum())} of {len(pts)} points)")
        if not len(pts):
            raise InputError(f"{path}: holds no points (element vertex 0)")
        names = v.data.dtype.names
        if "red" in names:
            cols = np.stack([v["red"], v["green"], v["blue"]], -1).astype(np.float32)
            bad = ~np.isfinite(cols).all(-1)
            if bad.any():
                raise InputError(f"{path}: point {int(np.argmax(bad))} has a non-finite colour "
                                 f"({int(bad.sum())} of {len(pts)} points)")
            cols = cols / 255.0 if cols.max() > 1.0 else cols
        else:
            cols = np.full_like(pts, 0.5)
        return PointCloud(torch.from_numpy(pts), torch.from_numpy(cols))
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: cannot read points ({exc})") from None


def write_points_ply(path: Path, points: PointCloud) -> None:
    """Coloured points as a PLY (x,y,z float, red,green,blue uchar), atomically."""
    import numpy as np
    from plyfile import PlyData, PlyElement

    from fourreal_core.io import atomic_path

    p = points.points.detach().cpu().numpy().astype(np.float32)
    c = (points.colors.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    arr = np.empty(len(p), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    arr["x"], arr["y"], arr["z"] = p[:, 0], p[:, 1], p[:, 2]
    arr["red"], arr["green"], arr["blue"] = c[:, 0], c[:, 1], c[:, 2]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(arr, "vertex")]).write(str(tmp))
