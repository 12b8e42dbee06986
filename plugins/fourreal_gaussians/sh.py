"""Real spherical harmonics up to degree 3, with 3DGS / gsplat's constants and sign convention.

The colour of a Gaussian seen along the unit direction ``d = (x, y, z)`` (from the camera
centre towards the Gaussian, world axes) is::

    rgb = max(0, sum_k SH_k(d) * coeffs_k + 0.5)

with the basis ordering and signs of the reference 3DGS CUDA code (``computeColorFromSH``),
which gsplat reproduces ("make it apple-to-apple with Inria's CUDA backend"):

    k=0:        C0
    k=1..3:     -C1*y, C1*z, -C1*x
    k=4..8:     C2[0]*xy, C2[1]*yz, C2[2]*(2zz-xx-yy), C2[3]*xz, C2[4]*(xx-yy)
    k=9..15:    C3[0]*y*(3xx-yy), C3[1]*xyz, C3[2]*y*(4zz-xx-yy), C3[3]*z*(2zz-3xx-3yy),
                C3[4]*x*(4zz-xx-yy), C3[5]*z*(xx-yy), C3[6]*x*(xx-3yy)

Only torch ops: works on CPU, CUDA and MPS and is differentiable w.r.t. coeffs and dirs.
"""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)

MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients K for ``degree`` (0..3): ``(degree + 1) ** 2``."""
    if not 0 <= int(degree) <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be in [0, {MAX_SH_DEGREE}], got {degree}")
    return (int(degree) + 1) ** 2


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """DC coefficient that renders as ``rgb`` (any shape): ``(rgb - 0.5) / C0``."""
    return (rgb - 0.5) / C0


def sh_to_rgb(sh: torch.Tensor) -> torch.Tensor:
    """Colour of a DC coefficient (any shape), without clamping: ``sh * C0 + 0.5``."""
    return sh * C0 + 0.5


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """The real SH basis evaluated at unit directions.

    Args:
        degree: 0..3.
        dirs: ``[..., 3]`` unit vectors (not normalised here).

    Returns:
        ``[..., (degree+1)**2]`` basis values in 3DGS order.
    """
    num_sh_bases(degree)  # validates
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [
            C2[0] * xy,
            C2[1] * yz,
            C2[2] * (2.0 * zz - xx - yy),
            C2[3] * xz,
            C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            C3[0] * y * (3.0 * xx - yy),
            C3[1] * xy * z,
            C3[2] * y * (4.0 * zz - xx - yy),
            C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            C3[4] * x * (4.0 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """View-dependent colour from SH coefficients, exactly as gsplat's ``rasterization``.

    Args:
        degree: SH degree to evaluate (0..3). ``coeffs`` may hold more bases than needed
            (``K >= (degree+1)**2``); only the first ``(degree+1)**2`` are used, as gsplat
            does when the active degree is raised progressively during training.
        coeffs: ``[..., K, 3]`` coefficients.
        dirs: ``[..., 3]`` viewing directions (Gaussian centre minus camera centre); they
            are normalised here, so they need not be unit length. Broadcasts with coeffs.

    Returns:
        ``[..., 3]`` colour ``clamp_min(sum_k basis_k * coeffs_k + 0.5, 0)``.
    """
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(
            f"eval_sh: degree {degree} needs {k} coefficients, got {coeffs.shape[-2]}"
        )
    if degree == 0:
        return torch.clamp_min(C0 * coeffs[..., 0, :] + 0.5, 0.0)
    d = torch.nn.functional.normalize(dirs, dim=-1)
    basis = sh_basis(degree, d)  # [..., k]
    rgb = (basis[..., :, None] * coeffs[..., :k, :]).sum(dim=-2)
    return torch.clamp_min(rgb + 0.5, 0.0)
