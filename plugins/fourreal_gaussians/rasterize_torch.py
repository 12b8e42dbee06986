"""Portable, differentiable, tile-based 3D Gaussian rasterizer in pure PyTorch.

It computes what gsplat's ``rasterization(..., packed=False, rasterize_mode="classic")``
computes (same projection, culling, tile binning, thresholds and compositing; see
``docs/rasterizer.md``), with only torch ops, so it runs on CPU, CUDA and MPS.

Pipeline (``C`` cameras, ``N`` Gaussians)
-----------------------------------------
1. **Projection** (autograd, O(C*N)): quaternion (normalised) + scales -> 3D covariance
   ``R S S^T R^T``; world -> camera; EWA projection ``J W Sigma W^T J^T`` with the Jacobian
   of the perspective projection evaluated at the mean with ``x/z``, ``y/z`` clamped to the
   frustum widened by 30% (gsplat: ``lim = (W - cx)/fx + 0.3 * tan_fovx``, i.e.
   ``1.3 * tan(fov/2)`` for a centred principal point); ``eps2d`` added to the diagonal;
   ``conic = inverse``; radius ``ceil(3 sqrt(lambda_max))`` with
   ``lambda_max = b + sqrt(max(b^2 - det, 0.01))``; culled (radius 0) when the depth is
   outside ``(near_plane, far_plane)``, ``det <= 0`` or the 3-sigma box misses the image.
2. **Binning** (no grad): each visible Gaussian covers the gsplat tile rectangle
   ``floor(m/ts - r/ts) .. ceil(m/ts + r/ts)`` (clamped to the tile grid). Inside those
   tiles it is then assigned only to the ``block x block`` pixel blocks (default 4x4) that
   can hold a pixel centre with ``alpha >= 1/255``, i.e. that meet the axis-aligned box of
   the ellipse ``0.5 d^T Sigma^-1 d <= ln(255 o)`` (half-widths ``sqrt(2 ln(255 o)
   Sigma_xx)``, ``sqrt(2 ln(255 o) Sigma_yy)``, padded by a small margin). This finer
   culling is *exact*: it only drops (pixel, Gaussian) pairs that gsplat skips anyway
   (``alpha < 1/255`` leaves the transmittance and the early stop untouched). The
   (block, Gaussian) pairs are sorted by (camera, block, depth) into per-block lists.
3. **Compositing** (custom :class:`torch.autograd.Function`): blocks whose lists have
   similar lengths are batched into padded ``[B, P, L]`` tensors (P pixels per block,
   L Gaussians; lists longer than ``slice_len`` are cut into depth slices with T carried
   across slices, and blocks whose pixels have all stopped leave the later slices). Per
   slice: ``-sigma`` as one matmul of the pixels' monomials ``(1,u,v,u^2,uv,v^2)`` by six
   per-pair coefficients, ``alpha = min(0.99, o exp(-sigma))``, skipped (alpha = 0) when
   ``alpha < 1/255``, T by cumprod, and gsplat's early stop done exactly: a Gaussian whose
   inclusion would take T to ``<= 1e-4`` is not composited and ends the pixel. The
   backward pass recomputes each slice (nothing of size pixels x Gaussians is kept between
   the passes) and applies the closed-form 3DGS gradients, walking the slices back to
   front to carry the suffix sums ``sum_{j>i} w_j c_j``.

Outputs: ``rgb = sum_i w_i c_i + T * background`` with ``w_i = alpha_i T_i``;
``alpha = 1 - T``; expected depth ``sum_i w_i z_i / alpha`` (0 where ``alpha == 0``;
gsplat's "ED" mode, ``z`` is camera-space depth of the Gaussian centre).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Optional

import torch

from fourreal_formats.quaternions import quat_to_matrix

from .sh import eval_sh

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.99
TRANSMITTANCE_THRESHOLD = 1e-4

#: per-slice element budget (blocks x pixels x Gaussians) of the compositing tensors
DEFAULT_BUDGET = 1 << 18
#: a batch of blocks stops at lists shorter than this fraction of its longest (padding waste)
MIN_FILL = 0.75
#: Gaussians per depth slice of a block list
DEFAULT_SLICE_LEN = 256


# ------------------------------------------------------------------------------ CPU threads
def _raster_threads() -> Optional[int]:
    """Intra-op threads for the CPU compositing loop, or None to keep torch's setting.

    The loop issues thousands of medium-size ops; on an oversubscribed machine (load average
    above the core count) every OpenMP parallel region waits for a descheduled worker, which
    measured 20-50x slower than one thread on a shared 2-core box. So by default one thread is
    used when the machine is oversubscribed, torch's setting otherwise.
    ``FOURREAL_RASTER_THREADS=n`` forces n threads (0: always keep torch's setting).
    """
    env = os.environ.get("FOURREAL_RASTER_THREADS")
    if env:
        n = int(env)
        return n if n > 0 else None
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return None
    return 1 if load > (os.cpu_count() or 1) else None


@contextlib.contextmanager
def _cpu_threads(device: torch.device):
    n = _raster_threads() if device.type == "cpu" else None
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------ projection
def project_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> dict:
    """EWA-project N Gaussians into C cameras (differentiable), exactly as gsplat.

    Args:
        means: ``[N,3]`` world positions. quats: ``[N,4]`` wxyz. scales: ``[N,3]``.
        viewmats: ``[C,4,4]`` world-to-camera (OpenCV). Ks: ``[C,3,3]`` pixel intrinsics.

    Returns:
        dict with ``means2d [C,N,2]`` (pixels), ``conics [C,N,3]`` (inverse 2D covariance
        a, b, c of ``[[a,b],[b,c]]``), ``cov2d [C,N,3]`` (2D covariance incl. eps2d),
        ``depths [C,N]`` (camera z), ``radii [C,N]`` int32 (0 = culled).
    """
    R = quat_to_matrix(quats)  # [N,3,3]
    M = R * scales[:, None, :]  # R diag(s): Sigma = M M^T
    Rw = viewmats[:, :3, :3]  # [C,3,3]
    tw = viewmats[:, :3, 3]  # [C,3]
    pc = torch.einsum("cij,nj->cni", Rw, means) + tw[:, None, :]  # [C,N,3]
    Mc = torch.einsum("cij,njk->cnik", Rw, M)  # [C,N,3,3]: Sigma_c = Mc Mc^T
    r0, r1, r2 = Mc.unbind(-2)
    s00, s01, s02 = (r0 * r0).sum(-1), (r0 * r1).sum(-1), (r0 * r2).sum(-1)
    s11, s12, s22 = (r1 * r1).sum(-1), (r1 * r2).sum(-1), (r2 * r2).sum(-1)

    tx, ty, tz = pc.unbind(-1)
    valid = (tz > near_plane) & (tz < far_plane)
    z = torch.where(valid, tz, torch.ones_like(tz))  # keep culled ones finite (no NaN grads)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    u = (tx / z).clamp(min=-(cx / fx + 0.3 * tan_fovx), max=(width - cx) / fx + 0.3 * tan_fovx)
    v = (ty / z).clamp(min=-(cy / fy + 0.3 * tan_fovy), max=(height - cy) / fy + 0.3 * tan_fovy)

    # J = [[fx/z, 0, -fx u/z], [0, fy/z, -fy v/z]]
    gx, gy = fx / z, fy / z
    a = gx * gx * (s00 - 2 * u * s02 + u * u * s22) + eps2d
    b = gx * gy * (s01 - u * s12 - v * s02 + u * v * s22)
    c = gy * gy * (s11 - 2 * v * s12 + v * v * s22) + eps2d
    det = a * c - b * b
    valid = valid & (det > 0)
    det_s = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], dim=-1)
    means2d = torch.stack([fx * tx / z + cx, fy * ty / z + cy], dim=-1)

    with torch.no_grad():
        mid = 0.5 * (a + c)
        lam = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(lam.clamp(min=0)))
        mx, my = means2d[..., 0], means2d[..., 1]
        inside = (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        radius = torch.where(valid & inside, radius, torch.zeros_like(radius))
        radii = radius.to(torch.int32)
    return {
        "means2d": means2d,
        "conics": conics,
        "cov2d": torch.stack([a, b, c], dim=-1),
        "depths": tz,
        "radii": radii,
    }


def antialias_compensation(cov2d: torch.Tensor, eps2d: float) -> torch.Tensor:
    """Mip-Splatting's 2D filter / gsplat's "antialiased" mode: ``[C,N]`` opacity factors
    ``sqrt(det(cov2d - eps2d I) / det(cov2d))`` that keep each Gaussian's integrated alpha what
    it was before the eps2d low-pass widened it (``cov2d [C,N,3]`` as :func:`project_gaussians`
    returns it, eps2d included)."""
    a, b, c = cov2d.unbind(-1)
    det = a * c - b * b
    det0 = (a - eps2d) * (c - eps2d) - b * b
    return torch.sqrt(torch.clamp(det0 / torch.where(det > 0, det, torch.ones_like(det)), min=0.0))


# ---------------------------------------------------------------------------------- binning
@dataclass
class _Group:
    keys: torch.Tensor  # [B] block ids (camera-major): similar list lengths, screen order
    gid: torch.Tensor  # [B,lmax] position in plan.src of each list entry, depth order (padding: M)
    counts: torch.Tensor  # [B] list lengths
    centres: torch.Tensor  # [B,2] block centres in pixels
    lmax: int


@dataclass
class TilePlan:
    """Binning result: which Gaussians each pixel block composites, in depth order."""

    C: int
    H: int
    W: int
    block: int  # block (subtile) edge in pixels
    nbx: int
    nby: int
    src: torch.Tensor  # [M] flat index c*N+n of the binned Gaussians, in screen (row-major) order
    pair_pos: torch.Tensor  # [Npairs] position in ``src`` of each (block, Gaussian) pair
    groups: list = field(default_factory=list)
    pixT: Optional[torch.Tensor] = None  # [6,P] monomials (1,u,v,u^2,uv,v^2) of local pixel centres
    slice_len: int = DEFAULT_SLICE_LEN
    n_evals: int = 0  # padded (pixel, Gaussian) evaluations per forward pass (upper bound)

    @property
    def num_blocks(self) -> int:
        return self.C * self.nby * self.nbx

    @property
    def P(self) -> int:
        return self.block * self.block

    @property
    def n_pairs(self) -> int:
        return int(self.pair_pos.numel())

    @property
    def pair_gid(self) -> torch.Tensor:
        """``[Npairs]`` flat index c*N+n of each pair, sorted by (block, depth)."""
        return self.src.index_select(0, self.pair_pos)

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """``[C*nby*nbx, P, D]`` blocks -> ``[C,H,W,D]`` image."""
        D = x.shape[-1]
        s = self.block
        img = x.reshape(self.C, self.nby, self.nbx, s, s, D).permute(0, 1, 3, 2, 4, 5)
        img = img.reshape(self.C, self.nby * s, self.nbx * s, D)
        return img[:, : self.H, : self.W]


def _floordiv(a: torch.Tensor, b) -> torch.Tensor:
    """Floor division of non-negative int64 tensors. On CPU through float64 (exact below
    2^52, and much faster than int64 division there); elsewhere integer division (MPS has
    no float64)."""
    if a.device.type == "cpu":
        bf = b.to(torch.float64) if isinstance(b, torch.Tensor) else float(b)
        return torch.floor(a.to(torch.float64) / bf).to(torch.int64)
    return torch.div(a, b, rounding_mode="floor")


def footprints(means2d, cov2d, opacities, radii, width: int, height: int, tile_size: int):
    """Per (camera, Gaussian): gsplat's tile rectangle ``(tminx, tmaxx, tminy, tmaxy)`` (same
    float expression order as its isect_tiles kernel), ``tiles_per_gauss``, and the exact
    pixel-centre box ``(j0, j1, i0, i1)`` of the ``alpha >= 1/255`` ellipse with ``ok`` where
    that box is non-empty -- the culling both compositors (torch blocks, numba tiles) share."""
    ts = int(tile_size)
    dtype = means2d.dtype
    tw, th = math.ceil(width / ts), math.ceil(height / ts)
    mx, my = means2d[..., 0], means2d[..., 1]
    r = radii.to(dtype)
    vis = radii > 0
    # gsplat's tile rectangle (same float expression order as its isect_tiles kernel)
    tminx = torch.floor(mx / ts - r / ts).clamp(0, tw).to(torch.int64)
    tmaxx = torch.ceil(mx / ts + r / ts).clamp(0, tw).to(torch.int64)
    tminy = torch.floor(my / ts - r / ts).clamp(0, th).to(torch.int64)
    tmaxy = torch.ceil(my / ts + r / ts).clamp(0, th).to(torch.int64)
    tiles_per_gauss = (tmaxx - tminx) * (tmaxy - tminy) * vis

    # exact finer culling: pixel-centre box of the alpha >= 1/255 ellipse, in blocks
    o = opacities.to(dtype)
    smax = (torch.log(torch.clamp(o * 255.0, min=1e-30)) + 1e-3).clamp(min=0)
    ok = vis & (o >= ALPHA_THRESHOLD) & (tiles_per_gauss > 0)
    ex = torch.sqrt(2 * smax * cov2d[..., 0].clamp(min=0)) * (1 + 1e-4) + 1e-3
    ey = torch.sqrt(2 * smax * cov2d[..., 2].clamp(min=0)) * (1 + 1e-4) + 1e-3
    j0 = torch.ceil((mx - ex - 0.5).clamp(-1, width + 1)).clamp(min=0)
    j1 = torch.floor((mx + ex - 0.5).clamp(-1, width + 1)).clamp(max=width - 1)
    i0 = torch.ceil((my - ey - 0.5).clamp(-1, height + 1)).clamp(min=0)
    i1 = torch.floor((my + ey - 0.5).clamp(-1, height + 1)).clamp(max=height - 1)
    ok = ok & (j0 <= j1) & (i0 <= i1)
    return (tminx, tmaxx, tminy, tmaxy), tiles_per_gauss, (j0, j1, i0, i1), ok


# ------------------------------------------------- tile lists (the compiled compositors' input)
class TileLists:
    """Per-tile front-to-back lists of (flat ``c*N+n``) Gaussian indices."""

    def __init__(self, C, H, W, tile_size, pair_gid, tile_off, n_isects, tiles_per_gauss, box):
        self.C, self.H, self.W, self.ts = C, H, W, tile_size
        self.box = box  # [C*N,4] int64 pixel box (x0, x1, y0, y1, inclusive) of alpha >= 1/255
        self.tw, self.th = math.ceil(W / tile_size), math.ceil(H / tile_size)
        self.pair_gid = pair_gid  # [Npairs] int64
        self.tile_off = tile_off  # [C*th*tw + 1] int64
        self.n_isects = n_isects
        self.tiles_per_gauss = tiles_per_gauss

    @property
    def n_pairs(self) -> int:
        return int(self.pair_gid.numel())


@torch.no_grad()
def bin_tiles(means2d, cov2d, opacities, radii, depths, width: int, height: int, tile_size: int = 16) -> TileLists:
    """Tile lists sorted by depth (stable: ties keep index order, as gsplat's radix sort).

    A Gaussian is listed in the tiles of gsplat's tile rectangle that also meet the pixel-centre
    box of its ``alpha >= 1/255`` ellipse (the exact culling of :func:`.rasterize_torch.build_plan`).
    """
    C, N = radii.shape
    ts = int(tile_size)
    tw, th = math.ceil(width / ts), math.ceil(height / ts)
    (tminx, tmaxx, tminy, tmaxy), tiles_per_gauss, (j0, j1, i0, i1), ok = footprints(
        means2d, cov2d, opacities, radii, width, height, ts)
    box = torch.stack([j0, j1, i0, i1], -1).reshape(C * N, 4).to(torch.int64)
    tx0 = torch.maximum(torch.floor(j0 / ts).to(torch.int64), tminx)
    tx1 = torch.minimum(torch.floor(j1 / ts).to(torch.int64) + 1, tmaxx)
    ty0 = torch.maximum(torch.floor(i0 / ts).to(torch.int64), tminy)
    ty1 = torch.minimum(torch.floor(i1 / ts).to(torch.int64) + 1, tmaxy)
    nx = (tx1 - tx0).clamp(min=0)
    ny = (ty1 - ty0).clamp(min=0)
    cnt = (nx * ny * ok).reshape(-1)
    ntiles = C * th * tw
    sel = torch.nonzero(cnt).squeeze(1)
    dsel = depths.reshape(-1).index_select(0, sel).contiguous()
    if dsel.numel() and float(dsel.min()) > 0 and dsel.dtype in (torch.float32, torch.float64):
        dsel = dsel.view(torch.int32 if dsel.dtype == torch.float32 else torch.int64)  # same order, faster
    sel = sel.index_select(0, torch.argsort(dsel, stable=True))
    cs = cnt.index_select(0, sel)
    n_pairs = int(cs.sum())
    if n_pairs == 0:
        return TileLists(C, height, width, ts, torch.zeros(0, dtype=torch.int64),
                         torch.zeros(ntiles + 1, dtype=torch.int64), int(tiles_per_gauss.sum()), tiles_per_gauss, box)
    owner = torch.repeat_interleave(cs)
    first = torch.cumsum(cs, 0) - cs
    local = torch.arange(n_pairs) - first.index_select(0, owner)
    snx = nx.reshape(-1).index_select(0, sel).index_select(0, owner)
    ly = torch.div(local, snx, rounding_mode="floor")
    lx = local - ly * snx
    cam = torch.div(sel, N, rounding_mode="floor")
    base = (cam * th + ty0.reshape(-1).index_select(0, sel)) * tw + tx0.reshape(-1).index_select(0, sel)
    key = base.index_select(0, owner) + ly * tw + lx
    if ntiles < 2**31:
        key = key.to(torch.int32)
    key, perm = torch.sort(key, stable=True)  # pairs were generated front to back
    pair_gid = sel.index_select(0, owner.index_select(0, perm)).contiguous()
    counts = torch.bincount(key, minlength=ntiles).to(torch.int64)
    tile_off = torch.zeros(ntiles + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=tile_off[1:])
    return TileLists(C, height, width, ts, pair_gid, tile_off, int(tiles_per_gauss.sum()), tiles_per_gauss, box)


# --------------------------------------- compiled CPU compositors over the tile lists (numba, native)
class TileKernels:
    """What a compiled CPU compositor implements (:mod:`.rasterize_numba`, :mod:`.rasterize_native`):
    the per-tile kernels over :class:`TileLists`. The autograd function, the buffers and the
    pixel walk's count-then-fill passes around them are shared here (:func:`composite_tiles`,
    :func:`walk_pixels`). ``consts`` is ``[0.5, MAX_ALPHA, ALPHA_THRESHOLD,
    TRANSMITTANCE_THRESHOLD, 1, 255]`` in the packed dtype (:func:`kernel_consts`)."""

    def check(self, packed: torch.Tensor, tile_size: int) -> None:
        """Raise (one line) when these kernels cannot composite ``packed`` at ``tile_size``."""
        if packed.device.type != "cpu":
            raise ValueError(f"the compiled ({self.name}) rasterizer runs on the CPU; tensors are on {packed.device}")

    def forward(self, pk, consts, tiles: TileLists, acc, Tfin, last) -> None:
        """Fill ``acc [P,D]``, ``Tfin [P]``, ``last [P]`` (index after each pixel's last composited pair)."""
        raise NotImplementedError

    def backward(self, pk, tiles: TileLists, Tfin, last, g_acc, g_T, g_pairs, g_packed) -> None:
        """Per-pair gradients into ``g_pairs [n_pairs, F]``, then summed per Gaussian into ``g_packed``."""
        raise NotImplementedError

    def pixel_walk(self, geo, consts, tiles: TileLists, qx, qy, start, qi, gi, wi) -> None:
        """``start`` None: each query's weight count into ``qi``; else fill from ``start[q]``."""
        raise NotImplementedError

    def bin_tiles(self, means2d, cov2d, opacities, radii, depths, width: int, height: int,
                  tile_size: int) -> TileLists:
        """The depth-sorted tile lists (default: :func:`bin_tiles`, torch)."""
        return bin_tiles(means2d, cov2d, opacities, radii, depths, width, height, tile_size)

    def project_all(self, means, quats, scales, viewmats, Ks, width: int, height: int, eps2d: float,
                    near_plane: float, far_plane: float, antialiased: bool) -> dict:
        """A render's :func:`project_gaussians` (differentiable; default: the torch code)."""
        return project_gaussians(means, quats, scales, viewmats, Ks, width, height, eps2d=eps2d,
                                 near_plane=near_plane, far_plane=far_plane)

    def project(self, means, quats, scales, viewmat, K, width: int, height: int, eps2d: float, near_plane: float,
                far_plane: float) -> dict:
        """:func:`project_gaussians` into one camera without gradient (default: the torch code)."""
        with torch.no_grad():
            return project_gaussians(means, quats, scales, viewmat[None], K[None], width, height, eps2d=eps2d,
                                     near_plane=near_plane, far_plane=far_plane)


def kernel_consts(dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor([0.5, MAX_ALPHA, ALPHA_THRESHOLD, TRANSMITTANCE_THRESHOLD, 1.0, 255.0], dtype=dtype)


class _CompositeTiles(torch.autograd.Function):
    """packed ``[C*N, 6+D]`` (means2d x y, conic A B C, opacity, features) -> accumulated
    features ``[C*H*W, D]`` and final transmittance ``[C*H*W]``, with a :class:`TileKernels`."""

    @staticmethod
    def forward(ctx, packed: torch.Tensor, tiles: TileLists, kernels: TileKernels):
        P = tiles.C * tiles.H * tiles.W
        pk = packed.detach().contiguous()
        acc = torch.zeros(P, packed.shape[1] - 6, dtype=packed.dtype)
        Tfin = torch.ones(P, dtype=packed.dtype)
        last = torch.zeros(P, dtype=torch.int64)
        if tiles.n_pairs:
            kernels.forward(pk, kernel_consts(pk.dtype), tiles, acc, Tfin, last)
        ctx.tiles, ctx.kernels = tiles, kernels
        ctx.save_for_backward(pk, Tfin, last)
        return acc, Tfin

    @staticmethod
    def backward(ctx, g_acc, g_T):
        pk, Tfin, last = ctx.saved_tensors
        tiles: TileLists = ctx.tiles
        F = pk.shape[1]
        P = tiles.C * tiles.H * tiles.W
        g_acc = torch.zeros(P, F - 6, dtype=pk.dtype) if g_acc is None else g_acc.contiguous()
        g_T = torch.zeros(P, dtype=pk.dtype) if g_T is None else g_T.contiguous()
        g_packed = torch.zeros_like(pk)
        if tiles.n_pairs:
            g_pairs = torch.zeros(tiles.n_pairs, F, dtype=pk.dtype)  # one row per (tile, Gaussian) pair
            ctx.kernels.backward(pk, tiles, Tfin, last, g_acc, g_T, g_pairs, g_packed)
        return g_packed, None, None


def composite_tiles(kernels: TileKernels, packed, means2d, cov2d, opacities, radii, depths, width: int, height: int,
                    tile_size: int):
    """A compiled compositor's counterpart of the torch path's plan + compositing: ``(acc
    [C,H,W,D], T [C,H,W,1], stats)`` from the packed per-Gaussian data ``[C*N, 6+D]``."""
    kernels.check(packed, tile_size)
    C = radii.shape[0]
    tiles = kernels.bin_tiles(means2d, cov2d, opacities, radii, depths, width, height, tile_size)
    acc, T = _CompositeTiles.apply(packed, tiles, kernels)
    D = packed.shape[1] - 6
    stats = {"tiles_per_gauss": tiles.tiles_per_gauss, "n_isects": tiles.n_isects, "n_pairs": tiles.n_pairs,
             "n_evals": tiles.n_pairs * tile_size * tile_size, "block": tile_size}
    return acc.view(C, height, width, D), T.view(C, height, width, 1), stats


def walk_pixels(kernels: TileKernels, geo: torch.Tensor, tiles: TileLists, px: torch.Tensor, py: torch.Tensor):
    """The compositing weights at pixels ``(px, py)`` (``[Q]`` each) from the packed geometry
    ``geo [N,6]`` (means2d, conic, opacity) and its tile lists: each pixel walks its list with
    the forward kernel's tests and stops where it stops (a count pass, then a fill pass).
    ``(query [M], gaussian [M], weight [M])``."""
    g = geo.detach().contiguous()
    kernels.check(g, tiles.ts)
    qx, qy = px.to(torch.int64).contiguous(), py.to(torch.int64).contiguous()
    Q = len(qx)
    consts = kernel_consts(g.dtype)
    counts = torch.zeros(Q, dtype=torch.int64)
    kernels.pixel_walk(g, consts, tiles, qx, qy, None, counts, None, None)
    start = torch.zeros(Q, dtype=torch.int64)
    if Q > 1:
        torch.cumsum(counts[:-1], 0, out=start[1:])
    M = int(counts.sum())
    qi, gi, wi = torch.zeros(M, dtype=torch.int64), torch.zeros(M, dtype=torch.int64), torch.zeros(M, dtype=g.dtype)
    if M:
        kernels.pixel_walk(g, consts, tiles, qx, qy, start, qi, gi, wi)
    return qi, gi, wi


def compiled_kernels(compositor: str) -> TileKernels:
    """The :class:`TileKernels` of a compiled compositor (``"numba"`` or ``"native"``)."""
    if compositor == "numba":
        from .rasterize_numba import KERNELS
    else:
        from .rasterize_native import KERNELS
    return KERNELS


@torch.no_grad()
def build_plan(
    means2d: torch.Tensor,
    cov2d: torch.Tensor,
    opacities: torch.Tensor,
    radii: torch.Tensor,
    depths: torch.Tensor,
    width: int,
    height: int,
    tile_size: int = 16,
    block: Optional[int] = None,
    budget: int = DEFAULT_BUDGET,
    slice_len: int = DEFAULT_SLICE_LEN,
) -> tuple[TilePlan, dict]:
    """Bin projected Gaussians into tiles, then into pixel blocks, sorted by depth.

    Args:
        means2d: ``[C,N,2]``; cov2d: ``[C,N,3]`` (a, b, c incl. eps2d); opacities: ``[C,N]``;
        radii: ``[C,N]`` int; depths: ``[C,N]``.
        block: block edge in pixels (must divide ``tile_size``); default 4.
        budget: target ``B * P * L`` elements of one batched slice.
        slice_len: Gaussians per depth slice.

    Returns:
        (plan, stats) where stats holds ``tiles_per_gauss [C,N]`` (gsplat's count of tiles
        in each Gaussian's tile rectangle), ``n_isects`` (their sum: gsplat's number of
        tile-Gaussian intersections) and ``n_pairs`` (block-Gaussian pairs kept).
    """
    C, N = radii.shape
    device = means2d.device
    dtype = means2d.dtype
    ts = int(tile_size)
    if block is None:
        block = 4 if ts % 4 == 0 else ts
    if ts % block != 0:
        raise ValueError(f"block ({block}) must divide tile_size ({ts})")
    k = ts // block
    tw, th = math.ceil(width / ts), math.ceil(height / ts)
    nbx, nby = math.ceil(width / block), math.ceil(height / block)

    (tminx, tmaxx, tminy, tmaxy), tiles_per_gauss, (j0, j1, i0, i1), ok = footprints(
        means2d, cov2d, opacities, radii, width, height, ts)
    stats = {"tiles_per_gauss": tiles_per_gauss, "n_isects": int(tiles_per_gauss.sum())}
    bx0 = torch.maximum(torch.floor(j0 / block).to(torch.int64), tminx * k)
    bx1 = torch.minimum(torch.floor(j1 / block).to(torch.int64) + 1, tmaxx * k)
    by0 = torch.maximum(torch.floor(i0 / block).to(torch.int64), tminy * k)
    by1 = torch.minimum(torch.floor(i1 / block).to(torch.int64) + 1, tmaxy * k)
    nx = (bx1 - bx0).clamp(min=0)
    ny = (by1 - by0).clamp(min=0)
    cnt = (nx * ny * ok).reshape(-1)

    P = block * block
    ar = torch.arange(block, device=device, dtype=dtype) + 0.5 - block / 2
    uu = ar[None, :].expand(block, block).reshape(-1)
    vv = ar[:, None].expand(block, block).reshape(-1)
    pixT = torch.stack([torch.ones_like(uu), uu, vv, uu * uu, uu * vv, vv * vv], dim=0)
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    plan = TilePlan(C=C, H=height, W=width, block=block, nbx=nbx, nby=nby, src=empty,
                    pair_pos=empty, pixT=pixT, slice_len=slice_len)

    sel = torch.nonzero(cnt).squeeze(1)  # flat c*N+n of Gaussians with >= 1 block
    # depth order, stable (ties keep index order, like gsplat's radix sort); positive floats
    # sort like their bit patterns, and integer sorts are much faster on CPU
    dsel = depths.reshape(-1).index_select(0, sel).contiguous()
    if dsel.numel() and float(dsel.min()) > 0 and dsel.dtype in (torch.float32, torch.float64):
        dsel = dsel.view(torch.int32 if dsel.dtype == torch.float32 else torch.int64)
    sel = sel.index_select(0, torch.argsort(dsel, stable=True))
    cs = cnt.index_select(0, sel)
    n_pairs = int(cs.sum())
    stats["n_pairs"] = n_pairs
    if n_pairs == 0:
        return plan, stats

    owner = torch.repeat_interleave(cs)  # pair -> position in sel
    first = torch.cumsum(cs, 0) - cs
    local = torch.arange(n_pairs, device=device) - first.index_select(0, owner)
    snx = nx.reshape(-1).index_select(0, sel).index_select(0, owner)
    ly = _floordiv(local, snx)
    lx = local - ly * snx
    cam = _floordiv(sel, N)
    sbx0 = bx0.reshape(-1).index_select(0, sel)
    sby0 = by0.reshape(-1).index_select(0, sel)
    base = (cam * nby + sby0) * nbx + sbx0  # block of the Gaussian's (0, 0) pair
    key = base.index_select(0, owner) + ly * nbx + lx  # block id of each pair
    if plan.num_blocks < 2**31:
        key = key.to(torch.int32)
    key, perm = torch.sort(key, stable=True)  # pairs were generated in depth order
    # The compositing gathers Gaussians from a compact copy in screen order (sorted by their
    # first block), so that the Gaussians of neighbouring blocks are close in memory.
    M = sel.numel()
    screen = torch.argsort(base.to(torch.int32) if plan.num_blocks < 2**31 else base, stable=True)
    rank = torch.empty_like(screen)
    rank[screen] = torch.arange(M, device=device)
    plan.src = sel.index_select(0, screen)
    plan.pair_pos = rank.index_select(0, owner.index_select(0, perm))
    gid_pad = torch.cat([plan.pair_pos, torch.full((1,), M, dtype=torch.int64, device=device)])

    counts = torch.bincount(key, minlength=plan.num_blocks).to(torch.int64)
    starts = torch.cumsum(counts, 0) - counts
    # Batches of blocks with similar list lengths (geometric buckets of ratio MIN_FILL bound
    # the padding), in screen order inside a bucket (neighbouring blocks share Gaussians:
    # better cache reuse when gathering them).
    nz = torch.nonzero(counts).squeeze(1).cpu()  # (small: one entry per non-empty block)
    cnz = counts.cpu().index_select(0, nz)
    bucket = torch.floor(torch.log(cnz.to(torch.float64)) / -math.log(MIN_FILL)).to(torch.int64)
    order = torch.argsort(-bucket * plan.num_blocks + nz)
    nz, cnz, bucket = nz[order].to(device), cnz[order].to(device), bucket[order]
    bvals, bcounts = torch.unique_consecutive(bucket, return_counts=True)
    spans = []
    i = 0
    for b, nb in zip(bvals.tolist(), bcounts.tolist()):
        ub = min(int(math.ceil(MIN_FILL ** -(b + 1))), slice_len)  # longest list in the bucket
        B = max(1, budget // (ub * P))
        spans += [(i0, min(i + nb, i0 + B)) for i0 in range(i, i + nb, B)]
        i += nb
    for i, j in spans:
        keys = nz[i:j]
        cn = cnz[i:j]
        L = int(cn.max())
        ls = torch.arange(L, device=device)
        pidx = torch.where(ls[None, :] < cn[:, None], starts[keys][:, None] + ls[None, :],
                           torch.full((1, 1), n_pairs, dtype=torch.int64, device=device))
        bxk = keys % nbx
        byk = torch.div(keys, nbx, rounding_mode="floor") % nby
        centres = torch.stack([bxk, byk], -1).to(dtype) * block + block / 2
        gid = gid_pad.index_select(0, pidx.reshape(-1)).view(pidx.shape)
        plan.groups.append(_Group(keys, gid, cn, centres, L))
        plan.n_evals += (j - i) * P * L
    return plan, stats


# ------------------------------------------------------------------------------ compositing
LOG2E = 1.4426950408889634


def _slice_data(packedT: torch.Tensor, gid: torch.Tensor, centres: torch.Tensor):
    """Gather a slice's Gaussians and build the coefficients of ``-sigma * log2(e)``.

    ``sigma = 0.5 A dx^2 + B dx dy + 0.5 C dy^2`` with ``d = mean - pixel`` is quadratic in
    the pixel's block-local coordinates ``(u, v)``: ``-sigma = c0 + c1 u + c2 v + c3 u^2 +
    c4 uv + c5 v^2``, so a batch of blocks is one matmul with the monomials of the pixels.
    Local coordinates (relative to the block centre) keep the expansion well conditioned, and
    the ``log2(e)`` factor lets ``exp2`` (several times faster than ``exp`` on CPU) give
    ``exp(-sigma)``.

    Args:
        packedT: ``[6+D, M+1]`` per-Gaussian (mx, my, conic a, b, c, opacity, features) of
            the binned Gaussians, last column all zeros (the padding Gaussian: opacity 0).
        gid: ``[B,L]`` columns of packedT. centres: ``[B,2]`` block centres.

    Returns:
        (coef ``[B,6,L]``, o ``[B,1,L]``, featT ``[B,D,L]``, geometry (mx, my, A, B, C) ``[B,L]``).
    """
    pp = packedT.index_select(1, gid.reshape(-1)).view(packedT.shape[0], *gid.shape)  # [F,B,L]
    mx = pp[0] - centres[:, 0:1]
    my = pp[1] - centres[:, 1:2]
    A, Bc, Cc = pp[2], pp[3], pp[4]
    Amx = A * mx + Bc * my
    Cmy = Bc * mx + Cc * my
    h = 0.5 * LOG2E
    coef = torch.stack(
        [-h * (Amx * mx + Cmy * my), LOG2E * Amx, LOG2E * Cmy, -h * A, -LOG2E * Bc, -h * Cc], dim=1
    )
    return coef, pp[5][:, None, :], pp[6:].transpose(0, 1).contiguous(), (mx, my, A, Bc, Cc)


def _mask(x: torch.Tensor, op, thr: float) -> torch.Tensor:
    """Float 0/1 mask ``op(x, thr)`` (comparisons into a float buffer are much faster on CPU
    than bool masks followed by ``where``/``masked_fill``)."""
    out = torch.empty_like(x)
    op(x, thr, out=out)
    return out


def _below(x: float, dtype: torch.dtype) -> float:
    """The largest value of ``dtype`` below ``x``: ``torch.threshold(t, _below(x), 0)`` keeps
    ``t >= x`` exactly (threshold keeps values strictly greater)."""
    t = torch.tensor(x, dtype=dtype)
    return float(torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype)))


def _transmittance(alpha, T0, alive0):
    """``om = 1 - alpha``, inclusive transmittance ``cp = T0 * cumprod(om)`` and a float keep
    mask (or None when nothing stops in this slice).

    ``keep`` is 0 for the Gaussian that would take T to ``<= 1e-4`` and everything after it
    (``cp`` is non-increasing, so this is exactly gsplat's early termination), and for pixels
    stopped in an earlier slice (``alive0 == 0``).
    """
    om = 1.0 - alpha
    cp = torch.cumprod(om, dim=-1)
    if T0 is not None:
        cp.mul_(T0[..., None])
    keep = None
    if float(cp[..., -1].min()) <= TRANSMITTANCE_THRESHOLD:
        keep = _mask(cp, torch.gt, TRANSMITTANCE_THRESHOLD)
    if alive0 is not None and float(alive0.min()) < 1.0:
        keep = alive0[..., None].expand_as(cp) if keep is None else keep.mul_(alive0[..., None])
    return om, cp, keep


class _CompositeBlocks(torch.autograd.Function):
    """packed ``[C*N, 6+D]`` (means2d, conic a b c, opacity, features) -> blocks of
    accumulated features ``[C*nby*nbx, P, D]`` and final transmittance ``[C*nby*nbx, P]``.

    Per slice (``alpha = min(0.99, o exp(-sigma))``, 0 below 1/255 -- a skipped Gaussian
    leaves T unchanged): ``w_i = alpha_i T_i = alpha_i cp_i / (1 - alpha_i)`` with ``cp`` the
    inclusive cumprod. For a positive-definite conic (guaranteed: det > 0 and eps2d > 0)
    ``sigma >= 0`` analytically, so gsplat's ``sigma < 0`` skip never fires; it is not
    re-tested here, since the expanded polynomial may round to -1e-7 at a Gaussian's centre.
    """

    @staticmethod
    def forward(ctx, packed: torch.Tensor, plan: TilePlan):
        with _cpu_threads(packed.device):
            return _CompositeBlocks._forward(ctx, packed, plan)

    @staticmethod
    def backward(ctx, g_acc: torch.Tensor, g_T: torch.Tensor):
        with _cpu_threads(g_acc.device if g_acc is not None else g_T.device):
            return _CompositeBlocks._backward(ctx, g_acc, g_T)

    @staticmethod
    def _forward(ctx, packed: torch.Tensor, plan: TilePlan):
        Fdim = packed.shape[1]
        D = Fdim - 6
        P = plan.P
        NB = plan.num_blocks
        acc = packed.new_zeros(NB, P, D)
        Tfin = packed.new_ones(NB, P)
        packedT = torch.cat([packed.index_select(0, plan.src).T, packed.new_zeros(Fdim, 1)], dim=1)
        pix = plan.pixT.T.contiguous()
        thr = _below(ALPHA_THRESHOLD, packed.dtype)
        states = []
        for g in plan.groups:
            T = alive = accg = rows = None
            slices = []
            for l0 in range(0, g.lmax, plan.slice_len):
                l1 = min(g.lmax, l0 + plan.slice_len)
                gid = g.gid[:, l0:l1] if rows is None else g.gid[rows, l0:l1]
                cen = g.centres if rows is None else g.centres[rows]
                coef, o, featT, _ = _slice_data(packedT, gid, cen)
                T0 = None if T is None else T[rows]
                a0 = None if alive is None else alive[rows]
                alpha = torch.matmul(pix, coef).exp2_().mul_(o).clamp_(max=MAX_ALPHA)
                torch.threshold_(alpha, thr, 0.0)  # alpha < 1/255: skipped
                om, cp, keep = _transmittance(alpha, T0, a0)
                w = torch.div(cp, om).mul_(alpha)  # alpha_i T_i
                if keep is None:
                    Tnew = cp[..., -1].clone()
                    anew = a0
                else:
                    w.mul_(keep)
                    # T after the slice: cp at the last composited Gaussian (a prefix), else T0
                    nkeep = keep.sum(-1, keepdim=True).long()
                    Tl = cp.gather(-1, (nkeep - 1).clamp(min=0)).squeeze(-1)
                    T0v = T0 if T0 is not None else torch.ones_like(Tl)
                    Tnew = torch.where(nkeep.squeeze(-1) > 0, Tl, T0v)
                    anew = keep[..., -1].contiguous()
                contrib = torch.bmm(featT, w.transpose(1, 2))  # [B,D,P]
                slices.append((rows, l0, l1, T0, a0))
                if rows is None:
                    accg, T = contrib, Tnew
                    alive = anew if anew is not None else torch.ones_like(T)
                else:
                    accg.index_add_(0, rows, contrib)
                    T = T.index_copy(0, rows, Tnew)
                    if anew is not None:
                        alive = alive.index_copy(0, rows, anew)
                if l1 < g.lmax:
                    rows = torch.nonzero((alive.amax(-1) > 0) & (g.counts > l1)).squeeze(1)
                    if rows.numel() == 0:
                        break
            acc[g.keys] = accg.transpose(1, 2)
            Tfin[g.keys] = T
            states.append(slices)
        ctx.plan = plan
        ctx.states = states
        ctx.save_for_backward(packed, Tfin)
        return acc, Tfin

    @staticmethod
    def _backward(ctx, g_acc: torch.Tensor, g_T: torch.Tensor):
        packed, Tfin = ctx.saved_tensors
        plan: TilePlan = ctx.plan
        Fdim = packed.shape[1]
        P = plan.P
        if g_acc is None:
            g_acc = packed.new_zeros(plan.num_blocks, P, Fdim - 6)
        if g_T is None:
            g_T = packed.new_zeros(plan.num_blocks, P)
        packedT = torch.cat([packed.index_select(0, plan.src).T, packed.new_zeros(Fdim, 1)], dim=1)
        g_packedT = torch.zeros_like(packedT)  # [F, M+1] (last column: padding sink)
        pix = plan.pixT.T.contiguous()
        pixT = plan.pixT
        thr = _below(ALPHA_THRESHOLD, packed.dtype)
        for g, slices in zip(plan.groups, ctx.states):
            Gg = g_acc[g.keys]  # [B,P,D]
            # d Tfin / d alpha_i = -Tfin / (1 - alpha_i): enters like a suffix term
            Kg = g_T[g.keys] * Tfin[g.keys]  # [B,P]
            S_after = torch.zeros_like(Kg)  # sum of w_j q_j over later slices
            for rows, l0, l1, T0, a0 in reversed(slices):
                gid = g.gid[:, l0:l1] if rows is None else g.gid[rows, l0:l1]
                cen = g.centres if rows is None else g.centres[rows]
                coef, o, featT, (mx, my, A, Bc, Cc) = _slice_data(packedT, gid, cen)
                G = Gg if rows is None else Gg[rows]
                Sa = S_after if rows is None else S_after[rows]
                K = (Kg if rows is None else Kg[rows]) + Sa
                # recompute the slice
                e = torch.matmul(pix, coef).exp2_()
                araw = e * o
                alpha = torch.threshold_(araw.clamp(max=MAX_ALPHA), thr, 0.0)
                om, cp, keep = _transmittance(alpha, T0, a0)
                Texcl = torch.div(cp, om)
                w = Texcl * alpha
                # alpha is a constant where skipped or clamped (exactly where alpha != araw) or
                # stopped
                live = _mask(alpha, torch.eq, araw)
                if keep is not None:
                    w.mul_(keep)
                    live.mul_(keep)
                # dL/dalpha_i = T_i q_i - (sum_{j>i} w_j q_j + K) / (1 - alpha_i)
                q = torch.bmm(G, featT)  # [B,P,L]: upstream . features
                csum = torch.cumsum(w * q, dim=-1)
                tot = csum[..., -1].clone()
                g_a = csum.sub_((tot + K)[..., None]).div_(om).add_(q.mul_(Texcl))
                ge = g_a.mul_(live).mul_(e)  # dL/daraw * exp(-sigma)
                g_o = ge.sum(1)  # [B,L]
                # dL/dc_k (c: coefficients of -sigma); d araw/d(-sigma) = o exp(-sigma)
                G0, G1, G2, G3, G4, G5 = torch.matmul(pixT, ge).mul_(o).unbind(1)
                g_mx = G1 * A + G2 * Bc - G0 * (A * mx + Bc * my)
                g_my = G1 * Bc + G2 * Cc - G0 * (Bc * mx + Cc * my)
                g_A = G1 * mx - 0.5 * (G0 * mx * mx + G3)
                g_B = G1 * my + G2 * mx - G0 * mx * my - G4
                g_C = G2 * my - 0.5 * (G0 * my * my + G5)
                g_featT = torch.bmm(G.transpose(1, 2), w)  # [B,D,L]
                gsl = torch.cat(
                    [torch.stack([g_mx, g_my, g_A, g_B, g_C, g_o], 0), g_featT.transpose(0, 1)], dim=0
                )  # [F,B,L]
                g_packedT.index_add_(1, gid.reshape(-1), gsl.reshape(Fdim, -1))
                if rows is None:
                    S_after = Sa + tot
                else:
                    S_after.index_copy_(0, rows, Sa + tot)
        g_packed = torch.zeros_like(packed)
        g_packed.index_copy_(0, plan.src, g_packedT[:, :-1].T)
        return g_packed, None


# ------------------------------------------------------------------------------- interface
def rasterize(
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
    block: Optional[int] = None,
    budget: int = DEFAULT_BUDGET,
    slice_len: int = DEFAULT_SLICE_LEN,
    compositor: str = "torch",
    antialiased: bool = False,
):
    """Render N Gaussians from C cameras (gsplat-compatible, differentiable, tile-based).

    Args:
        means: ``[N,3]`` world positions.
        quats: ``[N,4]`` wxyz rotations (normalised here).
        scales: ``[N,3]`` standard deviations (not log).
        opacities: ``[N]`` in [0,1] (not logits).
        colors: ``[N,D]`` / ``[C,N,D]`` features (usually RGB) when ``sh_degree`` is None,
            else ``[N,K,3]`` / ``[C,N,K,3]`` SH coefficients with ``K >= (sh_degree+1)**2``.
        viewmats: ``[C,4,4]`` world-to-camera, OpenCV axes. Ks: ``[C,3,3]`` intrinsics.
        width, height: image size in pixels.
        sh_degree: SH degree to evaluate, or None for plain colours.
        backgrounds: ``[C,D]`` (or ``[D]``) colour composited behind (``rgb + T * bg``).
        near_plane, far_plane: depth culling range. eps2d: 2D low-pass added to the covariance.
        tile_size: gsplat tile size (defines each Gaussian's footprint, as in gsplat).
        render_depth: also return the expected depth.
        block, budget, slice_len: performance knobs (pixel block edge dividing tile_size,
            elements per batched slice, Gaussians per depth slice); results do not depend
            on them beyond float rounding.
        compositor: ``"torch"`` (the portable block compositing of this module) or
            ``"numba"`` (the compiled, multi-threaded CPU kernels of :mod:`.rasterize_numba`;
            same outputs and gradients; ``block``/``budget``/``slice_len`` do not apply), or
            ``"native"`` (the same in C, vectorised, built on first use: :mod:`.rasterize_native`;
            ``tile_size`` 16).
        antialiased: gsplat's ``rasterize_mode="antialiased"`` (Mip-Splatting's 2D filter):
            each opacity is multiplied by ``sqrt(det(Sigma2d) / det(Sigma2d + eps2d I))``, so
            the eps2d low-pass does not make small or distant Gaussians heavier.

    Returns:
        ``(rgb [C,H,W,D], alpha [C,H,W,1], depth [C,H,W,1] or None, meta)`` where meta has
        ``means2d [C,N,2]`` (requires grad and retains it: after backward its ``.grad`` is
        the view-space positional gradient), ``radii [C,N]`` int32, ``depths [C,N]``,
        ``conics [C,N,3]``, ``tiles_per_gauss [C,N]``, ``n_isects`` (tile-Gaussian
        intersections), ``n_pairs`` (block-Gaussian pairs after exact culling), ``n_evals``
        (padded pixel-Gaussian evaluations), ``tile_width``, ``tile_height``, ``tile_size``,
        ``block``.
    """
    with _cpu_threads(means.device):
        return _rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                          backgrounds, near_plane, far_plane, eps2d, tile_size, render_depth, block, budget,
                          slice_len, compositor, antialiased)


def _rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds,
               near_plane, far_plane, eps2d, tile_size, render_depth, block, budget, slice_len, compositor,
               antialiased=False):
    C = viewmats.shape[0]
    N = means.shape[0]
    kernels = compiled_kernels(compositor) if compositor in ("numba", "native") else TileKernels()
    proj = kernels.project_all(means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane,
                               antialiased)
    means2d = proj["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    depths = proj["depths"]

    if sh_degree is not None:
        if viewmats.device.type in ("cpu", "cuda"):
            campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C,3] (as gsplat)
        else:  # e.g. MPS: invert the tiny [C,4,4] on the CPU
            campos = torch.linalg.inv(viewmats.cpu()).to(viewmats.device)[:, :3, 3]
        # one camera at a time: no [C,N,K,3] temporary
        feats = [eval_sh(sh_degree, colors[c] if colors.dim() == 4 else colors, means - campos[c])
                 for c in range(C)]
        feats = torch.stack(feats) if feats else means.new_zeros(0, N, 3)  # [C,N,3]
    else:
        feats = colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)
    D = feats.shape[-1]
    op = opacities[None, :].expand(C, N)
    if antialiased:
        op = op * antialias_compensation(proj["cov2d"], eps2d)
    parts = [means2d, proj["conics"], op[..., None], feats]
    if render_depth:
        parts.append(depths[..., None])
    packed = torch.cat(parts, dim=-1)
    packed = packed.reshape(C * N, packed.shape[-1])

    if compositor in ("numba", "native"):
        acc, T, stats = composite_tiles(kernels, packed, means2d.detach(), proj["cov2d"].detach(),
                                        op.detach(), proj["radii"], depths.detach(), width, height, tile_size)
        n_evals, block = stats["n_evals"], stats["block"]
    elif compositor == "torch":
        plan, stats = build_plan(means2d.detach(), proj["cov2d"].detach(), op.detach(), proj["radii"],
                                 depths.detach(), width, height, tile_size, block, budget, slice_len)
        acc_b, T_b = _CompositeBlocks.apply(packed, plan)
        acc = plan.to_image(acc_b)  # [C,H,W,D(+1)]
        T = plan.to_image(T_b[..., None])  # [C,H,W,1] final transmittance
        n_evals, block = plan.n_evals, plan.block
    else:
        raise ValueError(f"compositor must be 'torch', 'numba' or 'native', got {compositor!r}")
    alpha = 1.0 - T
    rgb = acc[..., :D]
    if backgrounds is not None:
        bg = backgrounds.to(rgb.dtype)
        if bg.dim() == 1:
            bg = bg[None].expand(C, -1)
        rgb = rgb + T * bg[:, None, None, :]
    depth = None
    if render_depth:
        depth = acc[..., D:] / alpha.clamp(min=1e-10)
    meta = {
        "means2d": means2d,
        "radii": proj["radii"],
        "depths": depths,
        "conics": proj["conics"],
        "tiles_per_gauss": stats["tiles_per_gauss"],
        "n_isects": stats["n_isects"],
        "n_pairs": stats["n_pairs"],
        "n_evals": n_evals,
        "tile_size": tile_size,
        "tile_width": math.ceil(width / tile_size),
        "tile_height": math.ceil(height / tile_size),
        "block": block,
        "width": width,
        "height": height,
    }
    return rgb, alpha, depth, meta


@torch.no_grad()
def pixel_weights(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    pixels: torch.Tensor,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    tile_size: int = 16,
    antialiased: bool = False,
    compositor: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The compositing weights ``alpha_n T_n`` of :func:`rasterize` at a few pixels of one camera.

    A render of features ``f`` at pixel ``q`` is ``sum_n w[q,n] f_n`` (+ ``T_q`` x background);
    this returns the non-zero ``w[q,n]`` without rendering the rest of the image: each pixel
    walks its tile's front-to-back list with the same culling, alpha clamp, ``1/255`` skip and
    ``T <= 1e-4`` stop as the compositors (a cumulative product over the padded lists, so it
    runs on any device). What a loss that reads a render at a few hundred pixels needs (the
    track loss: :mod:`fourreal_stages.tracks`) at a fraction of a full render's cost.

    Args:
        means, quats, scales, opacities: the N Gaussians (as :func:`rasterize`).
        viewmat: ``[4,4]`` world-to-camera; K: ``[3,3]``; width, height: the image size.
        pixels: ``[Q,2]`` integer pixel (column x, row y) indices inside the image.
        compositor: ``"torch"`` (padded lists and a cumulative product, any device),
            ``"numba"`` or ``"native"`` (each pixel walks its list on the CPU and stops where the
            compositor stops: far fewer evaluations on an opaque scene).

    Returns:
        ``(query [M], gaussian [M], weight [M])``: pixel index into ``pixels``, Gaussian index,
        and its weight; no gradient (the weights are what a detached-geometry render uses).
    """
    dev = means.device
    px = pixels[:, 0].to(device=dev, dtype=torch.int64)
    py = pixels[:, 1].to(device=dev, dtype=torch.int64)
    kernels = compiled_kernels(compositor) if compositor in ("numba", "native") else TileKernels()
    proj = kernels.project(means, quats, scales, viewmat, K, width, height, eps2d, near_plane, far_plane)
    op = opacities[None, :]
    if antialiased:
        op = op * antialias_compensation(proj["cov2d"], eps2d)
    tiles = kernels.bin_tiles(proj["means2d"], proj["cov2d"], op, proj["radii"], proj["depths"], width, height,
                              tile_size)
    if compositor in ("numba", "native"):
        geo = torch.cat([proj["means2d"][0], proj["conics"][0], op[0][:, None]], dim=1)
        return walk_pixels(kernels, geo, tiles, px, py)
    tile = torch.div(py, tiles.ts, rounding_mode="floor") * tiles.tw + torch.div(px, tiles.ts, rounding_mode="floor")
    off = tiles.tile_off.to(dev)
    start, count = off[tile], off[tile + 1] - off[tile]
    L = int(count.max()) if len(count) else 0
    empty = torch.zeros(0, dtype=torch.int64, device=dev)
    if L == 0:
        return empty, empty, means.new_zeros(0)
    slot = torch.arange(L, device=dev)
    listed = slot[None, :] < count[:, None]  # [Q,L]
    gid = tiles.pair_gid.to(dev)[(start[:, None] + slot[None, :]).clamp(max=max(tiles.n_pairs - 1, 0))]
    m2 = proj["means2d"][0][gid]  # [Q,L,2]
    con = proj["conics"][0][gid]
    dx = m2[..., 0] - (px[:, None].to(m2.dtype) + 0.5)
    dy = m2[..., 1] - (py[:, None].to(m2.dtype) + 0.5)
    sigma = 0.5 * (con[..., 0] * dx * dx + con[..., 2] * dy * dy) + con[..., 1] * dx * dy
    alpha = torch.clamp_max(op[0][gid] * torch.exp(-sigma), MAX_ALPHA)
    alpha = torch.where(listed & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
    T_after = torch.cumprod(1.0 - alpha, dim=1)  # sequential, as the compositors multiply
    keep = (alpha > 0) & (T_after > TRANSMITTANCE_THRESHOLD)  # T only falls: the stop ends the list
    T_before = torch.cat([torch.ones_like(T_after[:, :1]), T_after[:, :-1]], dim=1)
    q, k = torch.nonzero(keep, as_tuple=True)
    return q, gid[q, k], (alpha * T_before)[q, k]
