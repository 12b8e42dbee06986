"""The standard 3D Gaussian Splatting PLY layout (as written by the original 3DGS code).

One ``vertex`` element, binary little endian, float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 ... f_rest_{3*(K-1)-1}
    opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

* ``f_dc_*`` are the degree-0 SH coefficients (RGB), ``f_rest_*`` the higher ones stored
  *channel-major*: ``shN`` ``[N,K-1,3]`` is transposed to ``[N,3,K-1]`` and flattened, so
  ``f_rest_0..f_rest_{K-2}`` are all red coefficients, then green, then blue.
* ``opacity`` is the logit, ``scale_*`` are log standard deviations, ``rot_*`` the
  quaternion ``wxyz`` (not necessarily normalised), normals are zero.

Reading accepts any SH degree (inferred from the number of ``f_rest_*`` properties) and
ignores extra properties. Values round-trip bitwise (float32 in, float32 out).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fourreal_core.errors import InputError
from fourreal_core.io import atomic_path
from fourreal_formats.points import read_plydata

if TYPE_CHECKING:
    import torch


@dataclass
class PlyGaussians:
    """Raw (unactivated) Gaussian attributes as stored in a 3DGS PLY, as float32 numpy.

    Attributes:
        means: ``[N,3]`` positions.
        quats: ``[N,4]`` rotations ``wxyz`` (as stored, not normalised).
        log_scales: ``[N,3]`` log standard deviations.
        opacity_logits: ``[N]`` opacity logits.
        sh0: ``[N,1,3]`` DC SH coefficients.
        shN: ``[N,K-1,3]`` higher SH coefficients, ``K=(sh_degree+1)**2``.
    """

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    opacity_logits: np.ndarray
    sh0: np.ndarray
    shN: np.ndarray

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_rest(self.shN.shape[1] * 3)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def to_torch(self, device="cpu") -> dict[str, "torch.Tensor"]:
        """The attributes as float32 torch tensors named like :class:`GaussianModel`'s."""
        import torch

        return {
            "means": torch.from_numpy(self.means.copy()).to(device),
            "quats": torch.from_numpy(self.quats.copy()).to(device),
            "scales": torch.from_numpy(self.log_scales.copy()).to(device),
            "opacities": torch.from_numpy(self.opacity_logits.copy()).to(device),
            "sh0": torch.from_numpy(self.sh0.copy()).to(device),
            "shN": torch.from_numpy(self.shN.copy()).to(device),
        }


def sh_degree_from_rest(num_rest: int) -> int:
    """SH degree from the number of ``f_rest_*`` properties (``3*((d+1)**2-1)``)."""
    if num_rest % 3:
        raise InputError(f"PLY has {num_rest} f_rest_* properties, not a multiple of 3")
    k = num_rest // 3 + 1
    d = int(round(math.sqrt(k))) - 1
    if (d + 1) ** 2 != k:
        raise InputError(
            f"PLY has {num_rest} f_rest_* properties: {k} SH coefficients per channel "
            "is not a square, so no SH degree matches"
        )
    return d


def property_names(sh_degree: int) -> list[str]:
    """The standard property names, in order, for ``sh_degree``."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def _np32(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def write_ply(
    path: os.PathLike | str,
    means,
    quats,
    log_scales,
    opacity_logits,
    sh0,
    shN,
) -> None:
    """Write Gaussians in the standard 3DGS layout, atomically.

    Args:
        path: destination ``.ply``.
        means: ``[N,3]``; quats: ``[N,4]`` wxyz; log_scales: ``[N,3]``;
        opacity_logits: ``[N]`` (or ``[N,1]``); sh0: ``[N,1,3]`` (or ``[N,3]``);
        shN: ``[N,K-1,3]`` (``K-1`` may be 0). Torch tensors or numpy arrays.
    """
    from plyfile import PlyData, PlyElement

    means = _np32(means).reshape(-1, 3)
    n = means.shape[0]
    quats = _np32(quats).reshape(n, 4)
    log_scales = _np32(log_scales).reshape(n, 3)
    opac = _np32(opacity_logits).reshape(n, 1)
    sh0 = _np32(sh0).reshape(n, 3)
    shN = _np32(shN)
    if shN.size == 0:
        shN = shN.reshape(n, 0, 3)
    if shN.ndim != 3 or shN.shape[0] != n or shN.shape[2] != 3:
        raise ValueError(f"shN must be [N,K-1,3] with N={n}, got {shN.shape}")
    degree = sh_degree_from_rest(shN.shape[1] * 3)
    rest = shN.transpose(0, 2, 1).reshape(n, -1)  # channel-major, as 3DGS
    normals = np.zeros((n, 3), dtype=np.float32)
    cols = np.concatenate([means, normals, sh0, rest, opac, log_scales, quats], axis=1)
    names = property_names(degree)
    assert cols.shape[1] == len(names)
    arr = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        arr[name] = cols[:, i]
    el = PlyElement.describe(arr, "vertex")
    with atomic_path(path, suffix=".ply") as tmp:
        PlyData([el], text=False, byte_order="<").write(str(tmp))


_REST = re.compile(r"^f_rest_(\d+)$")


def read_ply(path: os.PathLike | str) -> PlyGaussians:
    """Read a standard 3DGS PLY (any SH degree; extra properties are ignored).

    Raises:
        InputError: when a required property is missing or the f_rest count is invalid.
    """
    ply = read_plydata(path)
    try:
        v = ply["vertex"]
    except KeyError as e:
        raise InputError(f"{path}: no 'vertex' element; not a Gaussian splat PLY") from e
    names = {p.name for p in v.properties}
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    required += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    missing = [r for r in required if r not in names]
    if missing:
        raise InputError(f"{path}: missing PLY properties {missing}; not a 3DGS splat file")
    rest_idx = sorted(int(m.group(1)) for n in names if (m := _REST.match(n)))
    if rest_idx != list(range(len(rest_idx))):
        raise InputError(f"{path}: f_rest_* properties are not numbered 0..{len(rest_idx) - 1}")
    degree = sh_degree_from_rest(len(rest_idx))
    data = v.data
    n = len(data)

    def cols(keys: list[str]) -> np.ndarray:
        out = np.empty((n, len(keys)), dtype=np.float32)
        for i, k in enumerate(keys):
            out[:, i] = data[k]
        return out

    k1 = (degree + 1) ** 2 - 1
    rest = cols([f"f_rest_{i}" for i in range(len(rest_idx))]).reshape(n, 3, k1)
    for prop in required + [f"f_rest_{i}" for i in range(len(rest_idx))]:
        bad = ~np.isfinite(np.asarray(data[prop], dtype=np.float64))
        if bad.any():
            raise InputError(f"{path}: vertex {int(np.argmax(bad))} has a non-finite {prop} "
                             f"({int(bad.sum())} of {n} vertices); not a usable splat file")
    return PlyGaussians(
        means=cols(["x", "y", "z"]),
        quats=cols([f"rot_{i}" for i in range(4)]),
        log_scales=cols([f"scale_{i}" for i in range(3)]),
        opacity_logits=cols(["opacity"])[:, 0].copy(),
        sh0=cols(["f_dc_0", "f_dc_1", "f_dc_2"]).reshape(n, 1, 3),
        shN=np.ascontiguousarray(rest.transpose(0, 2, 1)),
    )
