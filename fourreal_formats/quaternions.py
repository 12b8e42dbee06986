"""wxyz quaternion helpers shared by every plugin (one convention, one implementation)."""

from __future__ import annotations

import torch


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of wxyz quaternions ``[...,4]`` (broadcasting)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_conjugate(q: torch.Tensor) -> torch.Tensor:
    """Conjugate (= inverse for unit quaternions) of wxyz ``[...,4]``."""
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """wxyz quaternions ``[...,4]`` (any norm; normalised here) -> rotations ``[...,3,3]``.
    Exact identity for ``(1,0,0,0)``."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)



def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Rotations ``[...,3,3]`` -> unit wxyz quaternions ``[...,4]`` with w >= 0 (Shepperd's
    method: divide by the largest of the four components, stable for every rotation)."""
    m = R.reshape(-1, 3, 3)
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    cand = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = cand.argmax(dim=-1)  # cand = 4 (w^2, x^2, y^2, z^2)
    out = torch.empty(m.shape[0], 4, dtype=m.dtype, device=m.device)
    for i in range(4):
        sel = best == i
        if not sel.any():
            continue
        mm = m[sel]
        s = torch.sqrt(cand[sel, i].clamp_min(1e-12)) * 2  # = 4 |q_i|
        a21, a12, a02, a20, a10, a01 = mm[:, 2, 1], mm[:, 1, 2], mm[:, 0, 2], mm[:, 2, 0], mm[:, 1, 0], mm[:, 0, 1]
        if i == 0:
            out[sel] = torch.stack([s / 4, (a21 - a12) / s, (a02 - a20) / s, (a10 - a01) / s], -1)
        elif i == 1:
            out[sel] = torch.stack([(a21 - a12) / s, s / 4, (a01 + a10) / s, (a02 + a20) / s], -1)
        elif i == 2:
            out[sel] = torch.stack([(a02 - a20) / s, (a01 + a10) / s, s / 4, (a12 + a21) / s], -1)
        else:
            out[sel] = torch.stack([(a10 - a01) / s, (a02 + a20) / s, (a12 + a21) / s, s / 4], -1)
    out = out * torch.where(out[:, :1] < 0, -1.0, 1.0)
    return torch.nn.functional.normalize(out, dim=-1).reshape(*R.shape[:-2], 4)


def slerp(q0: torch.Tensor, q1: torch.Tensor, w) -> torch.Tensor:
    """Spherical linear interpolation of wxyz quaternions ``[...,4]`` (normalised here) at
    ``w`` in [0,1] (a number or a tensor broadcast against the leading dims, e.g. ``[M]`` with
    ``[4]`` quaternions gives ``[M,4]``), along the shorter arc."""
    q0 = torch.nn.functional.normalize(q0, dim=-1)
    q1 = torch.nn.functional.normalize(q1, dim=-1)
    w = torch.as_tensor(w, dtype=q0.dtype, device=q0.device).unsqueeze(-1)
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    theta = torch.acos(dot.abs().clamp(max=1.0))
    sin = torch.sin(theta)
    small = sin < 1e-8
    a = torch.where(small, 1 - w, torch.sin((1 - w) * theta) / torch.where(small, 1.0, sin))
    b = torch.where(small, w, torch.sin(w * theta) / torch.where(small, 1.0, sin))
    return torch.nn.functional.normalize(a * q0 + b * q1, dim=-1)
