"""``.splatv``: the 4D splat format of antimatter15's splaTV web viewer (Spacetime Gaussians'
polynomial motion), written by least-squares fitting each Gaussian's trajectory.

The file is ``uint32 0x674b``, ``uint32 len``, ``len`` bytes of JSON
``[{"type": "splat", "size": bytes, "texwidth": 4096, "texheight": h, "cameras": [...]}]`` and
then the texture: 16 uint32 per Gaussian (padded to ``texwidth * texheight * 4`` words)::

    0-2  centre p (float32 x3)          8-12 motion m0..m8 (float16, pairs; 12: m8, 0)
    3-4  rotation q, wxyz (float16 x4)  13-14 omega w0..w3 (float16 x4)
    5-6  scale (float16 x3, then 0)     15   trbf_center, trbf_scale (float16 x2)
    7    RGBA (uint8 x4)

The viewer evaluates, with dt = t - trbf_center and t in [0,1]::

    x(t) = p + m[0:3] dt + m[3:6] dt^2 + m[6:9] dt^3
    q(t) = normalise(q + w dt)
    opacity(t) = opacity * exp(-(dt / trbf_scale)^2)

Here the fourreal scene's deformation is sampled at ``times`` and fitted: centres by a cubic in
dt (one least-squares solve shared by all Gaussians; dt measured from the canonical time
t_c), rotations by a line; trbf_center = t_c and trbf_scale = 1000, so opacity does not vary
(exp(-1e-6) at most). What the format cannot hold is reported, not hidden: scale changes over
time (the scale is the canonical one), view-dependent colour (one RGB: the SH evaluated toward
the reference camera), and the fit's own error, measured by decoding the written file
(float16 coefficients included) and comparing with the deformation at every sampled time.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import torch

MAGIC = 0x674B
TEXWIDTH = 1024 * 4
TRBF_SCALE = 1000.0


def _half_pairs(a: np.ndarray) -> np.ndarray:
    """``[N,2k]`` floats -> ``[N,k]`` uint32, two float16 each (low half first, as unpackHalf2x16)."""
    h = np.ascontiguousarray(a, dtype=np.float16).view(np.uint16).astype(np.uint32)
    return h[:, 0::2] | (h[:, 1::2] << 16)


def _unhalf_pairs(u: np.ndarray) -> np.ndarray:
    lo = (u & 0xFFFF).astype(np.uint16).view(np.float16)
    hi = (u >> 16).astype(np.uint16).view(np.float16)
    return np.stack([lo, hi], -1).reshape(u.shape[0], -1).astype(np.float32)


def _camera_json(cams, name: str) -> list:
    out = []
    for i in range(len(cams)):
        c2w = torch.linalg.inv(cams.viewmats[i].detach().cpu().double()).float()
        out.append({"id": i, "img_name": f"{name}_{i:03d}", "width": int(cams.width), "height": int(cams.height),
                    "position": [float(v) for v in c2w[:3, 3]], "rotation": c2w[:3, :3].tolist(),
                    "fx": float(cams.Ks[i, 0, 0]), "fy": float(cams.Ks[i, 1, 1])})
    return out


@torch.no_grad()
def fit_trajectories(scene, times: torch.Tensor, t_c: float, idx: torch.Tensor):
    """Least-squares cubic (centres) and line (rotations) in dt = t - t_c for the Gaussians
    ``idx``; returns (p [N,3], m [N,9], q [N,4], w [N,4], samples) with the sampled
    deformation kept for the error report."""
    means, quats, scales = [], [], []
    for t in times.tolist():
        g = scene.gaussians_at(t)
        means.append(g.means.detach().float().cpu()[idx])
        quats.append(torch.nn.functional.normalize(g.quats.detach().float().cpu()[idx], dim=-1))
        scales.append(g.scales.detach().float().cpu()[idx])
    X = torch.stack(means).double()  # [T,N,3]
    Q = torch.stack(quats).double()  # [T,N,4]
    S = torch.stack(scales)
    T, N = X.shape[:2]
    dt = (times.double() - t_c)
    deg = min(3, T - 1)
    A = torch.stack([dt ** k for k in range(deg + 1)], 1)  # [T,deg+1]
    coef = torch.linalg.lstsq(A, X.reshape(T, -1)).solution.reshape(deg + 1, N, 3)  # shared design matrix
    p = coef[0]
    m = torch.zeros(N, 9, dtype=torch.float64)
    for k in range(1, deg + 1):
        m[:, 3 * (k - 1):3 * k] = coef[k]
    # rotations: sign-aligned to the one nearest t_c, then a line in dt
    c = int(torch.argmin(dt.abs()))
    Q = Q * torch.where((Q * Q[c:c + 1]).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    A1 = torch.stack([torch.ones_like(dt), dt], 1)
    rc = torch.linalg.lstsq(A1, Q.reshape(T, -1)).solution.reshape(2, N, 4)
    return p.float(), m.float(), rc[0].float(), rc[1].float(), (X.float(), Q.float(), S)


def pack(p, q, scale, rgba_u8, m, w, t_c: float) -> np.ndarray:
    """``[N,16]`` uint32 rows of the splatv texture."""
    n = p.shape[0]
    rows = np.zeros((n, 16), np.uint32)
    rows[:, 0:3] = np.ascontiguousarray(p.numpy(), np.float32).view(np.uint32)
    rows[:, 3:5] = _half_pairs(q.numpy())
    rows[:, 5:7] = _half_pairs(np.concatenate([scale.numpy(), np.zeros((n, 1), np.float32)], 1))
    rows[:, 7] = np.ascontiguousarray(rgba_u8).view(np.uint32).reshape(n)
    rows[:, 8:13] = _half_pairs(np.concatenate([m.numpy(), np.zeros((n, 1), np.float32)], 1))
    rows[:, 13:15] = _half_pairs(w.numpy())
    rows[:, 15] = _half_pairs(np.tile(np.array([[t_c, TRBF_SCALE]], np.float32), (n, 1)))[:, 0]
    return rows


def read_splatv(path: Path) -> tuple[list, np.ndarray]:
    """(header JSON, ``[N,16]`` uint32 rows) of a .splatv file (padding rows dropped: the
    header's ``vertexCount``)."""
    data = Path(path).read_bytes()
    magic, n = struct.unpack_from("<II", data, 0)
    if magic != MAGIC:
        raise ValueError(f"{path}: not a .splatv file (magic {magic:#x})")
    header = json.loads(data[8:8 + n])
    words = np.frombuffer(data, np.uint32, offset=8 + n, count=header[0]["size"] // 4)
    rows = words.reshape(-1, 16)[: header[0]["vertexCount"]]
    return header, rows


def evaluate(rows: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres and unit rotations (wxyz) at ``t`` as the splaTV viewer computes them."""
    p = rows[:, 0:3].copy().view(np.float32)
    q = _unhalf_pairs(rows[:, 3:5])
    m = _unhalf_pairs(rows[:, 8:13])[:, :9]
    w = _unhalf_pairs(rows[:, 13:15])
    trbf = _unhalf_pairs(rows[:, 15:16])
    dt = (t - trbf[:, 0])[:, None]
    x = p + m[:, 0:3] * dt + m[:, 3:6] * dt ** 2 + m[:, 6:9] * dt ** 3
    r = q + w * dt
    return x, r / np.linalg.norm(r, axis=1, keepdims=True)


@torch.no_grad()
def write_splatv(scene, path: Path, times: torch.Tensor, t_c: float, keep: torch.Tensor, rgb: torch.Tensor,
                 opacity: torch.Tensor, extent: float) -> dict:
    """Fit, write ``path`` and return the fit report (errors from decoding the written file)."""
    from fourreal_core.io import atomic_path

    idx = keep.nonzero().squeeze(1)
    p, m, q, w, (X, Q, S) = fit_trajectories(scene, times, t_c, idx)
    scale_c = scene.model.params().scales.detach().float().cpu()[idx]
    rgba = torch.cat([rgb, opacity[:, None]], 1).clamp(0, 1)
    rgba = (rgba * 255).round().to(torch.uint8).numpy()
    rows = pack(p, q, scale_c, rgba, m, w, t_c)
    n = rows.shape[0]
    texheight = max(1, math.ceil(4 * n / TEXWIDTH))
    tex = np.zeros((texheight * TEXWIDTH // 4, 16), np.uint32)
    tex[:n] = rows
    cams = _camera_json(scene.reference_camera[:1], "reference")
    if scene.freeze_cameras is not None:
        cams += _camera_json(scene.freeze_cameras, "freeze_time")
    header = [{"type": "splat", "size": int(tex.nbytes), "texwidth": TEXWIDTH, "texheight": texheight,
               "vertexCount": n, "cameras": cams}]
    blob = json.dumps(header).encode()
    with atomic_path(path, suffix=".splatv") as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<II", MAGIC, len(blob)))
            f.write(blob)
            f.write(tex.tobytes())
    # the error of what was written: decode the file, evaluate at every sampled time
    _, back = read_splatv(path)
    pos_err, rot_err = [], []
    for k, t in enumerate(times.tolist()):
        x, r = evaluate(back, t)
        pos_err.append(np.linalg.norm(x - X[k].numpy(), axis=1))
        dot = np.abs((r * Q[k].numpy()).sum(1)).clip(0, 1)
        rot_err.append(np.degrees(2 * np.arccos(dot)))
    pe, re_ = np.stack(pos_err), np.stack(rot_err)
    per_g = np.sqrt((pe ** 2).mean(0))  # RMS over time, per Gaussian
    scale_drop = float(torch.log(S / scale_c[None]).abs().max()) if len(S) else 0.0
    return {"file": Path(path).name, "bytes": Path(path).stat().st_size, "gaussians": n,
            "times_fitted": [round(float(t), 6) for t in times], "trbf_center": t_c, "model": "cubic in t - t_c "
            "(centres), linear (rotations)",
            "position_rms_error": float(np.sqrt((pe ** 2).mean())), "position_max_error": float(pe.max()),
            "position_p95_gaussian_rms": float(np.percentile(per_g, 95)),
            "position_rms_error_fraction_of_scene": float(np.sqrt((pe ** 2).mean()) / max(extent, 1e-12)),
            "rotation_mean_error_deg": float(re_.mean()), "rotation_max_error_deg": float(re_.max()),
            "scale_change_dropped_max_log": scale_drop}
