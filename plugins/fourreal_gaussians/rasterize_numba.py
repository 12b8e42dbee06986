"""Compiled CPU compositing for the tile-based rasterizer (numba, multi-threaded over tiles).

Why numba: it is a pip-only dependency with wheels for Linux, macOS (x86 and Apple silicon)
and Windows, it needs no compiler on the user's machine (unlike a ``torch.utils.cpp_extension``
build, which needs g++/clang and ninja and a matching toolchain), and its ``prange`` runs the
per-tile loops on all cores. It was chosen over NVIDIA Warp and Taichi because those ship
large runtimes for a GPU we do not use here (gsplat serves CUDA) and over a hand-written C++
extension because of that build step; measured in ``bench/rasterizer.py``
(docs/benchmarks.md). Kernels are compiled on first use and cached (``cache=True``).

Only the compositing is compiled: projection (EWA), SH evaluation and the packing of
``(means2d, conic, opacity, features)`` are the torch code of :mod:`.rasterize_torch`, so
autograd carries the gradients of this module's ``packed`` input back to means, quats,
scales, opacities, SH coefficients and ``means2d`` (which densification reads).

Per tile (gsplat's 16x16), the Gaussians overlapping it are listed front to back -- the same
tile rectangle as gsplat, intersected with the exact pixel box of the ``alpha >= 1/255``
ellipse, as :func:`.rasterize_torch.build_plan` does. Each pixel then walks its tile's list
exactly as gsplat's ``rasterize_to_pixels`` kernel: skip when ``sigma < 0`` or
``alpha < 1/255``, stop before the Gaussian that would take T to ``<= 1e-4``. The backward
walks the list back to front from the last composited Gaussian, recovering ``T_i`` by
division as gsplat does (in float64 here), and writes each (tile, Gaussian) pair's gradient
into its own row -- one tile is one thread's, so there are no races -- which torch then
sums per Gaussian with ``index_add_``.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np
import torch

from .rasterize_torch import ALPHA_THRESHOLD, MAX_ALPHA, TileKernels, _raster_threads

try:  # numba is an install requirement; keep the module importable (for the error) without it
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only on a broken install
    numba = None

if numba is not None and not os.environ.get("NUMBA_THREADING_LAYER"):
    # numba's own thread pool. Its OpenMP layer spins its idle workers after each kernel, and
    # those spinning threads took the cores from torch's ops between kernels: measured 20k
    # Gaussians at 256x144, backward 552 ms with 'omp' vs 58 ms with 'workqueue' on 2 cores.
    numba.config.THREADING_LAYER = "workqueue"

#: the workqueue layer must not be entered from two threads at once (numba aborts the process)
_LAUNCH = threading.Lock()


def available() -> bool:
    """True when numba imports (the compiled CPU path can run)."""
    return numba is not None


if numba is not None:

    @njit(parallel=True, cache=True, nogil=True, fastmath=True)
    def _forward_kernel(packed, consts, box, pair_gid, tile_off, C, H, W, ts, tw, th, acc, Tfin,
                        last):  # pragma: no cover
        # consts (packed's dtype, so float32 inputs are composited in float32 as gsplat does):
        # 0.5, MAX_ALPHA, ALPHA_THRESHOLD, TRANSMITTANCE_THRESHOLD, 1.0, 255.0
        half = consts[0]
        amax = consts[1]
        athr = consts[2]
        tthr = consts[3]
        one = consts[4]
        zero = consts[0] * 0
        D = acc.shape[1]
        ntiles = C * tw * th
        for t in prange(ntiles):
            c = t // (tw * th)
            r = t - c * tw * th
            ty = r // tw
            tx = r - ty * tw
            s = tile_off[t]
            e = tile_off[t + 1]
            ox = tx * ts
            oy = ty * ts
            x1 = min(W, ox + ts) - 1
            y1 = min(H, oy + ts) - 1
            tsw = x1 - ox + 1
            npix = tsw * (y1 - oy + 1)
            T = np.ones(npix, packed.dtype)  # negated once a pixel has stopped
            lastl = np.full(npix, s, np.int64)
            accl = np.zeros((D, npix), packed.dtype)
            feat = np.empty(D, packed.dtype)
            ndone = 0
            # Gaussian-major: each Gaussian visits only the pixels of its alpha >= 1/255 box
            for k in range(s, e):
                g = pair_gid[k]
                mx = packed[g, 0]
                my = packed[g, 1]
                A = packed[g, 2]
                B = packed[g, 3]
                Cc = packed[g, 4]
                o = packed[g, 5]
                smax = math.log(o * consts[5])  # sigma above this: alpha < 1/255, skip the exp
                for d in range(D):
                    feat[d] = packed[g, 6 + d]
                xa = max(ox, box[g, 0])
                xb = min(x1, box[g, 1]) + 1
                for py in range(max(oy, box[g, 2]), min(y1, box[g, 3]) + 1):
                    dy = my - (py + half)
                    row = (py - oy) * tsw - ox
                    hc = half * Cc * dy * dy
                    bdy = B * dy
                    # branch-free over the row (selects, not jumps): LLVM vectorises it
                    for px in range(xa, xb):
                        li = row + px
                        Ti = T[li]
                        dx = mx - (px + half)
                        sigma = half * A * dx * dx + hc + bdy * dx
                        alpha = min(amax, o * math.exp(-min(max(sigma, zero), smax)))
                        ok = (Ti > zero) & (sigma >= zero) & (sigma <= smax) & (alpha >= athr)
                        nT = Ti * (one - alpha)
                        stop = ok & (nT <= tthr)
                        comp = ok & (nT > tthr)
                        w = alpha * Ti if comp else zero
                        for d in range(D):
                            accl[d, li] += w * feat[d]
                        T[li] = nT if comp else (-Ti if stop else Ti)
                        lastl[li] = k + 1 if comp else lastl[li]
                        ndone += 1 if stop else 0
                if ndone == npix:
                    break
            for py in range(oy, y1 + 1):
                for px in range(ox, x1 + 1):
                    li = (py - oy) * tsw + px - ox
                    pix = (c * H + py) * W + px
                    for d in range(D):
                        acc[pix, d] = accl[d, li]
                    Tfin[pix] = abs(T[li])
                    last[pix] = lastl[li]

    @njit(parallel=True, cache=True, nogil=True, fastmath=True)
    def _backward_kernel(packed, box, pair_gid, tile_off, C, H, W, ts, tw, th, Tfin, last, g_acc, g_T,
                         g_pairs):  # pragma: no cover
        # float64 throughout: T_i is recovered by division from the final T (as gsplat does)
        D = g_acc.shape[1]
        ntiles = C * tw * th
        for t in prange(ntiles):
            c = t // (tw * th)
            r = t - c * tw * th
            ty = r // tw
            tx = r - ty * tw
            s = tile_off[t]
            ox = tx * ts
            oy = ty * ts
            x1 = min(W, ox + ts) - 1
            y1 = min(H, oy + ts) - 1
            tsw = x1 - ox + 1
            npix = tsw * (y1 - oy + 1)
            T = np.empty(npix, np.float64)
            Tf = np.empty(npix, np.float64)
            gt = np.empty(npix, np.float64)
            lastl = np.empty(npix, np.int64)
            gp = np.empty((D, npix), np.float64)
            buf = np.zeros((D, npix), np.float64)
            feat = np.empty(D, np.float64)
            gf = np.empty(D, np.float64)
            e = s
            for py in range(oy, y1 + 1):
                for px in range(ox, x1 + 1):
                    li = (py - oy) * tsw + px - ox
                    pix = (c * H + py) * W + px
                    T[li] = Tfin[pix]
                    Tf[li] = Tfin[pix]
                    gt[li] = g_T[pix]
                    lastl[li] = last[pix]
                    e = max(e, last[pix])
                    for d in range(D):
                        gp[d, li] = g_acc[pix, d]
            for k in range(e - 1, s - 1, -1):
                g = pair_gid[k]
                mx = np.float64(packed[g, 0])
                my = np.float64(packed[g, 1])
                A = np.float64(packed[g, 2])
                B = np.float64(packed[g, 3])
                Cc = np.float64(packed[g, 4])
                o = np.float64(packed[g, 5])
                smax = math.log(o * 255.0)
                for d in range(D):
                    feat[d] = packed[g, 6 + d]
                    gf[d] = 0.0
                g_mx = 0.0
                g_my = 0.0
                g_A = 0.0
                g_B = 0.0
                g_C = 0.0
                g_o = 0.0
                xa = max(ox, box[g, 0])
                xb = min(x1, box[g, 1]) + 1
                for py in range(max(oy, box[g, 2]), min(y1, box[g, 3]) + 1):
                    dy = my - (py + 0.5)
                    row = (py - oy) * tsw - ox
                    for px in range(xa, xb):
                        li = row + px
                        dx = mx - (px + 0.5)
                        sigma = 0.5 * (A * dx * dx + Cc * dy * dy) + B * dx * dy
                        vis = math.exp(-min(max(sigma, 0.0), smax))
                        araw = o * vis
                        alpha = min(MAX_ALPHA, araw)
                        ok = (k < lastl[li]) & (sigma >= 0.0) & (sigma <= smax) & (alpha >= ALPHA_THRESHOLD)
                        m = 1.0 if ok else 0.0
                        ra = 1.0 / (1.0 - alpha)
                        Tc = T[li]
                        Ti = Tc * ra
                        T[li] = Ti if ok else Tc
                        w = alpha * Ti * m
                        v_alpha = 0.0
                        for d in range(D):
                            gpd = gp[d, li]
                            gf[d] += w * gpd
                            v_alpha += (feat[d] * Ti - buf[d, li] * ra) * gpd
                            buf[d, li] += feat[d] * w
                        v_alpha = (v_alpha - Tf[li] * ra * gt[li]) * m
                        if araw > MAX_ALPHA:  # clamped: alpha does not depend on the parameters
                            v_alpha = 0.0
                        v_sigma = -araw * v_alpha
                        g_mx += v_sigma * (A * dx + B * dy)
                        g_my += v_sigma * (B * dx + Cc * dy)
                        g_A += 0.5 * v_sigma * dx * dx
                        g_B += v_sigma * dx * dy
                        g_C += 0.5 * v_sigma * dy * dy
                        g_o += vis * v_alpha
                g_pairs[k, 0] = g_mx
                g_pairs[k, 1] = g_my
                g_pairs[k, 2] = g_A
                g_pairs[k, 3] = g_B
                g_pairs[k, 4] = g_C
                g_pairs[k, 5] = g_o
                for d in range(D):
                    g_pairs[k, 6 + d] = gf[d]


    @njit(cache=True, nogil=True)
    def _sum_pairs(pair_gid, g_pairs, g_packed):  # pragma: no cover
        # serial scatter-add of the per-pair gradients (torch's index_add_ on the CPU took 8% of a
        # canonical step on its own)
        for k in range(pair_gid.shape[0]):
            g = pair_gid[k]
            for f in range(g_pairs.shape[1]):
                g_packed[g, f] += g_pairs[k, f]


    @njit(parallel=True, cache=True, nogil=True, fastmath=True)
    def _pixel_walk_kernel(geo, consts, box, pair_gid, tile_off, tw, ts, qx, qy, start, qi, gi, wi):  # pragma: no cover
        # one pixel per query: its tile's list front to back with the forward kernel's tests,
        # stopping where it stops. start is None-like (len 0): count pass; else fill pass.
        half = consts[0]
        amax = consts[1]
        athr = consts[2]
        tthr = consts[3]
        one = consts[4]
        zero = consts[0] * 0
        fill = start.shape[0] > 0
        for q in prange(qx.shape[0]):
            px = qx[q]
            py = qy[q]
            t = (py // ts) * tw + px // ts
            T = one
            m = 0
            o_ = start[q] if fill else 0
            for k in range(tile_off[t], tile_off[t + 1]):
                g = pair_gid[k]
                if px < box[g, 0] or px > box[g, 1] or py < box[g, 2] or py > box[g, 3]:
                    continue
                o = geo[g, 5]
                smax = math.log(o * consts[5])
                dx = geo[g, 0] - (px + half)
                dy = geo[g, 1] - (py + half)
                sigma = half * geo[g, 2] * dx * dx + half * geo[g, 4] * dy * dy + geo[g, 3] * dy * dx
                if sigma < zero or sigma > smax:
                    continue
                alpha = min(amax, o * math.exp(-sigma))
                if alpha < athr:
                    continue
                nT = T * (one - alpha)
                if nT <= tthr:
                    break
                if fill:
                    qi[o_ + m] = q
                    gi[o_ + m] = g
                    wi[o_ + m] = alpha * T
                m += 1
                T = nT
            if not fill:
                qi[q] = m


def _threads() -> int:
    """numba threads for the kernels: the rasterizer's CPU-thread policy (one when the machine
    is oversubscribed, ``FOURREAL_RASTER_THREADS`` when set), else torch's intra-op count."""
    n = _raster_threads() or torch.get_num_threads()
    return max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))


class NumbaKernels(TileKernels):
    """The numba kernels above behind the shared compositing (:func:`.rasterize_torch.composite_tiles`)."""

    name = "numba"

    def check(self, packed, tile_size):
        if numba is None:
            raise ImportError("the compiled rasterizer needs numba: pip install numba")
        super().check(packed, tile_size)

    def forward(self, pk, consts, tiles, acc, Tfin, last):
        with _LAUNCH:
            numba.set_num_threads(_threads())
            _forward_kernel(pk.numpy(), consts.numpy(), tiles.box.numpy(), tiles.pair_gid.numpy(),
                            tiles.tile_off.numpy(), tiles.C, tiles.H, tiles.W, tiles.ts, tiles.tw, tiles.th,
                            acc.numpy(), Tfin.numpy(), last.numpy())

    def backward(self, pk, tiles, Tfin, last, g_acc, g_T, g_pairs, g_packed):
        with _LAUNCH:
            numba.set_num_threads(_threads())
            _backward_kernel(pk.numpy(), tiles.box.numpy(), tiles.pair_gid.numpy(), tiles.tile_off.numpy(),
                             tiles.C, tiles.H, tiles.W, tiles.ts, tiles.tw, tiles.th, Tfin.numpy(), last.numpy(),
                             g_acc.numpy(), g_T.numpy(), g_pairs.numpy())
            _sum_pairs(tiles.pair_gid.numpy(), g_pairs.numpy(), g_packed.numpy())

    def pixel_walk(self, geo, consts, tiles, qx, qy, start, qi, gi, wi):
        nothing = np.zeros(0, np.int64)  # the kernel's count pass: no start, no outputs but the counts
        with _LAUNCH:
            numba.set_num_threads(_threads())
            _pixel_walk_kernel(geo.numpy(), consts.numpy(), tiles.box.numpy(), tiles.pair_gid.numpy(),
                               tiles.tile_off.numpy(), tiles.tw, tiles.ts, qx.numpy(), qy.numpy(),
                               nothing if start is None else start.numpy(), qi.numpy(),
                               nothing if gi is None else gi.numpy(),
                               np.zeros(0, geo.numpy().dtype) if wi is None else wi.numpy())


KERNELS = NumbaKernels()
