"""A deliberately simple, dense reference rasterizer (every Gaussian x every pixel).

Written directly from the 3DGS / gsplat equations, independently of
:mod:`.rasterize_torch` (it shares only :mod:`.sh`), with autograd through everything. It
is the ground truth of the parity tests and the baseline of ``bench/rasterizer.py``. It is
O(C * H * W * N) in time and memory: use it for small scenes, or pass ``pixel_chunk`` to
bound the memory with activation checkpointing (recomputed in backward).

For one camera, with pixel centres ``p = (x + 0.5, y + 0.5)``:

* ``R`` from the normalised quaternion (here via ``R = (w^2 - |v|^2) I + 2 v v^T + 2 w [v]x``),
  ``Sigma = R diag(s^2) R^T``; camera point ``t = W mu + b``, ``Sigma_c = W Sigma W^T``.
* ``J = [[fx/z, 0, -fx x'/z], [0, fy/z, -fy y'/z]]`` with ``x' = clamp(x/z)``, ``y' = clamp(y/z)``
  to the frustum widened by ``0.3 tan(fov/2)`` on each side (gsplat); ``Sigma_2d = J Sigma_c J^T
  + eps2d I``; ``mu_2d = (fx x/z + cx, fy y/z + cy)``.
* ``lambda_max = m + sqrt(max(m^2 - det, 0.01))`` (``m`` = half trace), radius
  ``r = ceil(3 sqrt(lambda_max))``; a Gaussian is visible when ``near < z < far``,
  ``det > 0`` and its ``r``-box overlaps the image. Like every tile-based 3DGS rasterizer it
  only reaches the pixels of the tiles in ``[floor(mu/ts - r/ts), ceil(mu/ts + r/ts))``.
* ``sigma = 0.5 d^T Sigma_2d^-1 d`` with ``d = mu_2d - p``; ``alpha = min(0.99, o exp(-sigma))``;
  a Gaussian is skipped at a pixel when ``alpha < 1/255`` or ``sigma < 0``.
* Front to back in depth order: ``T_i = prod_{j<i} (1 - alpha_j)``; the first Gaussian with
  ``T_i (1 - alpha_i) <= 1e-4`` is not composited and ends the pixel.
* ``rgb = sum w_i c_i + T bg``, ``w_i = alpha_i T_i``, ``alpha_pix = 1 - T``, expected depth
  ``sum w_i z_i / alpha_pix`` (0 where ``alpha_pix = 0``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch.utils.checkpoint import checkpoint

from .sh import eval_sh


def _rotation(quats: torch.Tensor) -> torch.Tensor:
    q = quats / quats.norm(dim=-1, keepdim=True)
    w = q[:, 0]
    v = q[:, 1:]
    eye = torch.eye(3, dtype=q.dtype, device=q.device).expand(q.shape[0], 3, 3)
    zero = torch.zeros_like(w)
    cross = torch.stack(
        [
            torch.stack([zero, -v[:, 2], v[:, 1]], -1),
            torch.stack([v[:, 2], zero, -v[:, 0]], -1),
            torch.stack([-v[:, 1], v[:, 0], zero], -1),
        ],
        dim=-2,
    )
    vv = (v * v).sum(-1)
    return (w * w - vv)[:, None, None] * eye + 2 * v[:, :, None] * v[:, None, :] + 2 * w[:, None, None] * cross


def _composite_pixels(pix, m2d, conic, opac, feats, z, tile_lo, tile_hi, pix_tile):
    """Dense compositing of all (depth-sorted) Gaussians at the given pixels.

    pix ``[Q,2]`` pixel centres, pix_tile ``[Q,2]`` their tile coords; per Gaussian ``[N,..]``.
    Returns (features ``[Q,D]``, depth sum ``[Q]``, final transmittance ``[Q]``).
    """
    dx = m2d[None, :, 0] - pix[:, None, 0]  # [Q,N]
    dy = m2d[None, :, 1] - pix[:, None, 1]
    sigma = 0.5 * (conic[:, 0, 0] * dx * dx + conic[:, 1, 1] * dy * dy) + conic[:, 0, 1] * dx * dy
    alpha = torch.clamp(opac[None, :] * torch.exp(-sigma), max=0.99)
    in_tiles = (
        (pix_tile[:, None, 0] >= tile_lo[None, :, 0]) & (pix_tile[:, None, 0] < tile_hi[None, :, 0])
        & (pix_tile[:, None, 1] >= tile_lo[None, :, 1]) & (pix_tile[:, None, 1] < tile_hi[None, :, 1])
    )
    keep = in_tiles & (sigma >= 0) & (alpha >= 1.0 / 255.0)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha
    T_after = torch.cumprod(one_minus, dim=1)  # transmittance after each Gaussian
    T_before = torch.cat([torch.ones_like(T_after[:, :1]), T_after[:, :-1]], dim=1)
    composited = T_after > 1e-4  # the stopping Gaussian and all later ones are excluded
    weights = torch.where(composited, alpha * T_before, torch.zeros_like(alpha))
    T_final = torch.prod(torch.where(composited, one_minus, torch.ones_like(one_minus)), dim=1)
    return weights @ feats, weights @ z, T_final


def rasterize_dense(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[torch.Tensor] = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    tile_size: int = 16,
    render_depth: bool = True,
    pixel_chunk: Optional[int] = None,
    antialiased: bool = False,
):
    """Dense reference with the signature of :func:`.rasterize_torch.rasterize`.

    Args:
        means ``[N,3]``, quats ``[N,4]`` wxyz, scales ``[N,3]``, opacities ``[N]``,
        colors ``[N,D]`` (or SH ``[N,K,3]`` with ``sh_degree``), viewmats ``[C,4,4]``,
        Ks ``[C,3,3]``, backgrounds ``[C,D]`` or ``[D]``.
        pixel_chunk: if set, composite this many pixels at a time under activation
            checkpointing (bounded memory, recomputation in backward).

    Returns:
        ``(rgb [C,H,W,D], alpha [C,H,W,1], depth [C,H,W,1] or None, meta)`` with meta
        ``means2d [C,N,2]`` (retains grad), ``radii [C,N]`` int32, ``depths [C,N]``.
    """
    C = viewmats.shape[0]
    dev, dt = means.device, means.dtype
    R = _rotation(quats)
    cov_world = R @ torch.diag_embed(scales * scales) @ R.transpose(1, 2)  # [N,3,3]
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    ys, xs = torch.meshgrid(torch.arange(height, device=dev), torch.arange(width, device=dev), indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).to(dt) + 0.5  # [HW,2]
    pix_tile = torch.stack([xs.reshape(-1) // tile_size, ys.reshape(-1) // tile_size], -1)

    rgbs, alphas, depth_maps, m2ds, radii_all, depths_all = [], [], [], [], [], []
    for ci in range(C):
        Wr = viewmats[ci, :3, :3]
        tr = viewmats[ci, :3, 3]
        K = Ks[ci]
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        p_cam = means @ Wr.T + tr  # [N,3]
        cov_cam = Wr @ cov_world @ Wr.T
        z = p_cam[:, 2]
        in_range = (z > near_plane) & (z < far_plane)
        zs = torch.where(in_range, z, torch.ones_like(z))
        tanx, tany = 0.5 * width / fx, 0.5 * height / fy
        xz = torch.clamp(p_cam[:, 0] / zs, -(cx / fx + 0.3 * tanx), (width - cx) / fx + 0.3 * tanx)
        yz = torch.clamp(p_cam[:, 1] / zs, -(cy / fy + 0.3 * tany), (height - cy) / fy + 0.3 * tany)
        zero = torch.zeros_like(zs)
        J = torch.stack(
            [torch.stack([fx / zs, zero, -fx * xz / zs], -1), torch.stack([zero, fy / zs, -fy * yz / zs], -1)],
            dim=1,
        )  # [N,2,3]
        cov2d_raw = J @ cov_cam @ J.transpose(1, 2)
        cov2d = cov2d_raw + eps2d * torch.eye(2, dtype=dt, device=dev)
        det = torch.linalg.det(cov2d)
        if antialiased:  # Mip-Splatting's 2D filter: sqrt(det(Sigma) / det(Sigma + eps2d I))
            comp = torch.sqrt(torch.clamp(torch.linalg.det(cov2d_raw) / torch.where(det > 0, det, torch.ones_like(det)),
                                          min=0.0))
        else:
            comp = torch.ones_like(det)
        ok = in_range & (det > 0)
        cov2d_safe = torch.where(ok[:, None, None], cov2d, torch.eye(2, dtype=dt, device=dev).expand_as(cov2d))
        conic = torch.linalg.inv(cov2d_safe)
        conic = 0.5 * (conic + conic.transpose(1, 2))
        m2d = torch.stack([fx * p_cam[:, 0] / zs + cx, fy * p_cam[:, 1] / zs + cy], -1)

        with torch.no_grad():
            half_trace = 0.5 * (cov2d[:, 0, 0] + cov2d[:, 1, 1])
            lam_max = half_trace + torch.sqrt(torch.clamp(half_trace**2 - det, min=0.01))
            r = torch.ceil(3.0 * torch.sqrt(lam_max.clamp(min=0)))
            overlaps = (
                (m2d[:, 0] + r > 0) & (m2d[:, 0] - r < width) & (m2d[:, 1] + r > 0) & (m2d[:, 1] - r < height)
            )
            r = torch.where(ok & overlaps, r, torch.zeros_like(r))
            lo = torch.stack(
                [torch.floor(m2d[:, 0] / tile_size - r / tile_size).clamp(0, tw),
                 torch.floor(m2d[:, 1] / tile_size - r / tile_size).clamp(0, th)], -1).long()
            hi = torch.stack(
                [torch.ceil(m2d[:, 0] / tile_size + r / tile_size).clamp(0, tw),
                 torch.ceil(m2d[:, 1] / tile_size + r / tile_size).clamp(0, th)], -1).long()
            hi = torch.where((r > 0)[:, None], hi, lo)  # invisible: empty tile range
        m2d_out = m2d
        if m2d_out.requires_grad:
            m2d_out.retain_grad()
        m2ds.append(m2d_out)
        radii_all.append(r.to(torch.int32))
        depths_all.append(z)

        if sh_degree is not None:
            campos = -Wr.T @ tr
            feats = eval_sh(sh_degree, colors, means - campos)
        else:
            feats = colors
        order = torch.argsort(z.detach(), stable=True)
        args = (m2d[order], conic[order], (opacities * comp)[order], feats[order], z[order, None], lo[order], hi[order])
        if pixel_chunk is None:
            f, dsum, T = _composite_pixels(pix, *args[:5], args[5], args[6], pix_tile)
        else:
            fs, ds, Ts = [], [], []
            for s in range(0, pix.shape[0], pixel_chunk):
                e = s + pixel_chunk
                out = checkpoint(_composite_pixels, pix[s:e], *args[:5], args[5], args[6], pix_tile[s:e],
                                 use_reentrant=True)
                fs.append(out[0]); ds.append(out[1]); Ts.append(out[2])
            f, dsum, T = torch.cat(fs), torch.cat(ds), torch.cat(Ts)
        a = 1.0 - T
        if backgrounds is not None:
            bg = backgrounds if backgrounds.dim() == 1 else backgrounds[ci]
            f = f + T[:, None] * bg.to(dt)
        rgbs.append(f.reshape(height, width, -1))
        alphas.append(a.reshape(height, width, 1))
        if render_depth:
            dmap = torch.where(a[:, None] > 0, dsum / torch.where(a[:, None] > 0, a[:, None], torch.ones_like(dsum)),
                               torch.zeros_like(dsum))
            depth_maps.append(dmap.reshape(height, width, 1))
    rgb = torch.stack(rgbs)
    alpha = torch.stack(alphas)
    depth = torch.stack(depth_maps) if render_depth else None
    meta = {
        "means2d_list": m2ds,  # per camera [N,2] leaves of the graph (each retains grad)
        "means2d": torch.stack([m.detach() for m in m2ds]),
        "radii": torch.stack(radii_all),
        "depths": torch.stack([d.detach() for d in depths_all]),
    }
    return rgb, alpha, depth, meta
