"""Compiled CPU compositing in C (``rasterize_native.c``), built on first use with the system's
C compiler and loaded with :mod:`ctypes`.

Why C and not only numba: numba compiles the compositing loops to scalar code (its LLVM does not
vectorise the short per-row loops, and ``math.exp`` is a libm call), about 17 ns per (pixel,
Gaussian) evaluation; on real footage that is no faster than the torch path
(docs/benchmarks.md, "On a real scene"). The C kernels run each 16-pixel tile row as one masked
vector (``#pragma omp simd``, ``-march=native``) with a polynomial ``exp``: 17x the numba
forward kernel on dome27's reference view, one thread. Why a plain C file through ``ctypes``
and not a ``torch.utils.cpp_extension``: it needs only ``cc`` (no torch headers, no ninja), it
builds in a quarter of a second, and it links no OpenMP runtime (threads are Python threads:
``ctypes`` releases the GIL; the numba OpenMP layer's spinning workers once starved torch's ops).
Where no compiler works, :func:`available` is False with the reason, and ``auto`` uses numba.

The build is cached under ``$FOURREAL_CACHE`` (default ``~/.cache/fourreal``)/``native``,
keyed by the source, the flags, the compiler's version and the CPU; it is written to a
temporary file and renamed, so concurrent processes (pytest-xdist workers) never load half a
library. ``FOURREAL_NATIVE=0`` turns the path off; ``CC`` picks the compiler.

Compiled: the compositing (forward, backward), the depth-sorted tile lists, and the projection
where no gradient is wanted (the track loss's pixel weights). A render's projection (EWA) and SH
are the torch code of :mod:`.rasterize_torch` (as with numba), so autograd carries the gradients
of the packed ``(means2d, conic, opacity, features)`` back to every parameter and to ``means2d``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch

from .rasterize_torch import ALPHA_THRESHOLD, TileKernels, TileLists, _raster_threads

SOURCE = Path(__file__).with_name("rasterize_native.c")
#: the kernels' tile edge (their rows are 16-lane vectors); the rasterizer's tile_size must match
TILE = 16
FLAGS = ["-O3", "-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"]
ARCH_FLAGS = [["-march=native"], ["-mcpu=native"], []]  # the first that builds (x86 / arm / plain)

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_why: Optional[str] = None
_pool: Optional[ThreadPoolExecutor] = None
_pool_n = 0
_pool_pid = 0  # a forked child gets its own pool (the parent's threads do not exist there)


def _cache_dir() -> Path:
    root = os.environ.get("FOURREAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fourreal")
    return Path(root) / "native"


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            lines = [ln for ln in fh if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compile(cc: str, src: Path, out: Path) -> Optional[str]:
    """Build ``out``; None when it built, else the compiler's last line."""
    err = ""
    for arch in ARCH_FLAGS:
        tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            res = subprocess.run([cc, *FLAGS, *arch, "-o", str(tmp), str(src), "-lm"], capture_output=True,
                                 text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{cc}: {exc}"
        if res.returncode == 0:
            os.replace(tmp, out)  # atomic: another process loads either nothing or the whole library
            return None
        tmp.unlink(missing_ok=True)
        err = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
    return f"{cc}: {err}"


def _load() -> Optional[ctypes.CDLL]:
    global _lib, _why
    with _lock:
        if _lib is not None or _why is not None:
            return _lib
        if os.environ.get("FOURREAL_NATIVE", "1") == "0":
            _why = "turned off by FOURREAL_NATIVE=0"
            return None
        cc = os.environ.get("CC", "cc")
        try:
            ver = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            _why = f"no C compiler ({cc}: {exc.__class__.__name__}); set CC or install one"
            return None
        src = SOURCE.read_bytes()
        key = hashlib.sha256(src + " ".join(FLAGS).encode() + ver.encode() + _cpu_id().encode()).hexdigest()[:16]
        out = _cache_dir() / f"rasterize_native_{key}{'.dll' if os.name == 'nt' else '.so'}"
        if not out.exists():
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                _why = f"cache folder {out.parent}: {exc}"
                return None
            why = _compile(cc, SOURCE, out)
            if why is not None:
                _why = f"the C kernels did not build ({why})"
                return None
        try:
            lib = ctypes.CDLL(str(out))
        except OSError as exc:
            _why = f"{out}: {exc}"
            return None
        for sfx in ("f32", "f64"):
            for name in ("forward", "backward", "sum_pairs", "pixel_walk", "project", "project_bwd"):
                getattr(lib, f"{name}_{sfx}").restype = None
            getattr(lib, f"bin_count_{sfx}").restype = ctypes.c_int64
            getattr(lib, f"bin_fill_{sfx}").restype = ctypes.c_int
        _lib = lib
        return _lib


def available() -> bool:
    """True when the C kernels are built (or build now) and load."""
    return _load() is not None


def unavailable_reason() -> Optional[str]:
    """Why :func:`available` is False (None when it is True)."""
    _load()
    return _why


def _threads() -> int:
    n = _raster_threads() or torch.get_num_threads()
    return max(1, int(n))


def _run(fn, args: tuple, n: int) -> None:
    """``fn(*args, first, step)`` on ``n`` threads (each does every n-th tile or query)."""
    global _pool, _pool_n, _pool_pid
    if n <= 1:
        fn(*args, ctypes.c_int64(0), ctypes.c_int64(1))
        return
    with _lock:
        if _pool is None or _pool_n < n or _pool_pid != os.getpid():
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fourreal-raster")
            _pool_n, _pool_pid = n, os.getpid()
        pool = _pool
    futures = [pool.submit(fn, *args, ctypes.c_int64(w), ctypes.c_int64(n)) for w in range(n)]
    for f in futures:
        f.result()


def _p(a: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.data_ptr())


def _i(v) -> ctypes.c_int64:
    return ctypes.c_int64(int(v))


def _real(dtype: torch.dtype):
    """The ctypes scalar of the kernels' REAL for ``dtype``."""
    return ctypes.c_float if dtype == torch.float32 else ctypes.c_double


def _suffix(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return "f32"
    if dtype == torch.float64:
        return "f64"
    raise TypeError(f"the native rasterizer composites float32 or float64, got {dtype}")


class NativeKernels(TileKernels):
    """The C kernels behind the shared compositing (:func:`.rasterize_torch.composite_tiles`)."""

    name = "native"

    def check(self, packed, tile_size):
        if _load() is None:
            raise ImportError(f"the native rasterizer is not available: {_why}")
        super().check(packed, tile_size)
        if int(tile_size) != TILE:
            raise ValueError(f"the native rasterizer's kernels use {TILE}x{TILE} tiles; tile_size is {tile_size}")

    def forward(self, pk, consts, tiles, acc, Tfin, last):
        _run(getattr(_lib, f"forward_{_suffix(pk.dtype)}"),
             (_p(pk), _i(pk.shape[1]), _p(consts), _p(tiles.box), _p(tiles.pair_gid), _p(tiles.tile_off),
              _i(tiles.C), _i(tiles.H), _i(tiles.W), _i(tiles.tw), _i(tiles.th), _p(acc), _p(Tfin), _p(last)),
             _threads())

    def backward(self, pk, tiles, Tfin, last, g_acc, g_T, g_pairs, g_packed):
        sfx, F = _suffix(pk.dtype), pk.shape[1]
        _run(getattr(_lib, f"backward_{sfx}"),
             (_p(pk), _i(F), _p(tiles.box), _p(tiles.pair_gid), _p(tiles.tile_off), _i(tiles.C), _i(tiles.H),
              _i(tiles.W), _i(tiles.tw), _i(tiles.th), _p(Tfin), _p(last), _p(g_acc), _p(g_T), _p(g_pairs)),
             _threads())
        getattr(_lib, f"sum_pairs_{sfx}")(_p(tiles.pair_gid), _i(tiles.n_pairs), _i(F), _p(g_pairs), _p(g_packed))

    def pixel_walk(self, geo, consts, tiles, qx, qy, start, qi, gi, wi):
        null = ctypes.c_void_p(None)  # the C kernel's count pass: start == NULL
        getattr(_lib, f"pixel_walk_{_suffix(geo.dtype)}")(
            _p(geo), _p(consts), _p(tiles.box), _p(tiles.pair_gid), _p(tiles.tile_off), _i(tiles.tw), _p(qx), _p(qy),
            _i(len(qx)), null if start is None else _p(start), _p(qi), null if gi is None else _p(gi),
            null if wi is None else _p(wi), _i(0), _i(1))

    def bin_tiles(self, means2d, cov2d, opacities, radii, depths, width, height, tile_size):
        """:func:`.rasterize_torch.bin_tiles` in C: the same lists (same expressions, no fused
        multiply-adds; a stable radix sort by depth), without torch's dozen passes over the data."""
        if _load() is None or means2d.device.type != "cpu" or means2d.dtype not in (torch.float32, torch.float64):
            return super().bin_tiles(means2d, cov2d, opacities, radii, depths, width, height, tile_size)
        sfx, dt = _suffix(means2d.dtype), means2d.dtype
        C, N = radii.shape
        ts = int(tile_size)
        tw, th = -(-int(width) // ts), -(-int(height) // ts)
        m2 = means2d.detach().to(dt).reshape(C * N, 2).contiguous()
        cv = cov2d.detach().to(dt).reshape(C * N, 3).contiguous()
        op = opacities.detach().to(dt).expand(C, N).reshape(C * N).contiguous()
        rd = radii.to(torch.int32).reshape(C * N).contiguous()
        dp = depths.detach().to(dt).reshape(C * N).contiguous()
        box = torch.empty(C * N, 4, dtype=torch.int64)
        rect = torch.empty(C * N, 4, dtype=torch.int64)
        tpg = torch.empty(C * N, dtype=torch.int64)
        cnt = torch.empty(C * N, dtype=torch.int64)
        n_pairs = getattr(_lib, f"bin_count_{sfx}")(
            _p(m2), _p(cv), _p(op), _p(rd), _i(C * N), _i(width), _i(height), _i(ts),
            _real(dt)(ALPHA_THRESHOLD), _p(box), _p(rect),
            _p(tpg), _p(cnt))
        tile_off = torch.empty(C * th * tw + 1, dtype=torch.int64)
        pair_gid = torch.empty(int(n_pairs), dtype=torch.int64)
        if getattr(_lib, f"bin_fill_{sfx}")(_p(dp), _p(cnt), _p(rect), _i(C * N), _i(N), _i(tw), _i(th),
                                             _p(tile_off), _p(pair_gid)):
            raise MemoryError("the native rasterizer's tile lists: out of memory")
        tpg = tpg.view(C, N)
        return TileLists(C, int(height), int(width), ts, pair_gid, tile_off, int(tpg.sum()), tpg, box)

    def project(self, means, quats, scales, viewmat, K, width, height, eps2d, near_plane, far_plane):
        """:func:`.rasterize_torch.project_gaussians` into one camera in C, without gradient."""
        dt = means.dtype
        if _load() is None or means.device.type != "cpu" or dt not in (torch.float32, torch.float64):
            return super().project(means, quats, scales, viewmat, K, width, height, eps2d, near_plane, far_plane)
        N = means.shape[0]
        real = _real(dt)
        c = lambda a: a.detach().to(dt).contiguous()  # noqa: E731
        ins = [c(means), c(quats), c(scales), c(viewmat), c(K)]
        out = {"means2d": torch.empty(N, 2, dtype=dt), "conics": torch.empty(N, 3, dtype=dt),
               "cov2d": torch.empty(N, 3, dtype=dt), "depths": torch.empty(N, dtype=dt),
               "radii": torch.empty(N, dtype=torch.int32)}
        getattr(_lib, f"project_{_suffix(dt)}")(
            *[_p(a) for a in ins], _i(N), _i(width), _i(height), real(eps2d), real(near_plane), real(far_plane),
            _p(out["means2d"]), _p(out["conics"]), _p(out["cov2d"]), _p(out["depths"]), _p(out["radii"]))
        return {k: v[None] for k, v in out.items()}

    def project_all(self, means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane,
                    antialiased):
        """The render's projection with its backward in C (:class:`_Project`), where it applies:
        CPU float32/float64 tensors, intrinsics without gradient (viewmats may have one: a
        camera-optimising phase); the antialiased mode, which differentiates cov2d, takes the
        torch code."""
        dt = means.dtype
        ok = (_load() is not None and not antialiased and means.device.type == "cpu"
              and dt in (torch.float32, torch.float64)
              and all(t.dtype == dt for t in (quats, scales, viewmats, Ks)) and not Ks.requires_grad)
        if not ok:
            return super().project_all(means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane,
                                       far_plane, antialiased)
        m2, con, cov, dep, rad = _Project.apply(means, quats, scales, viewmats, Ks, int(width), int(height),
                                                float(eps2d), float(near_plane), float(far_plane))
        return {"means2d": m2, "conics": con, "cov2d": cov, "depths": dep, "radii": rad}


class _Project(torch.autograd.Function):
    """EWA projection of N Gaussians into C cameras, forward and backward in C (``project`` /
    ``project_bwd``): the outputs of :func:`.rasterize_torch.project_gaussians` (``cov2d`` and
    ``radii`` without gradient) and the gradients of means, quats, scales and viewmats that
    autograd takes of it (tests/test_rasterizer.py). A render's dozens of small torch ops on [C,N] tensors, and
    their autograd records, become one pass over the Gaussians each way."""

    @staticmethod
    def forward(ctx, means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane):
        outs = [KERNELS.project(means, quats, scales, viewmats[c], Ks[c], width, height, eps2d, near_plane, far_plane)
                for c in range(viewmats.shape[0])]
        cat = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        ctx.save_for_backward(means, quats, scales, viewmats, Ks)
        ctx.args = (width, height, eps2d, near_plane, far_plane)
        ctx.mark_non_differentiable(cat["cov2d"], cat["radii"])
        return cat["means2d"], cat["conics"], cat["cov2d"], cat["depths"], cat["radii"]

    @staticmethod
    def backward(ctx, g_m2, g_con, _g_cov, g_dep, _g_rad):
        means, quats, scales, viewmats, Ks = ctx.saved_tensors
        width, height, eps2d, near_plane, far_plane = ctx.args
        dt, N, C = means.dtype, means.shape[0], viewmats.shape[0]
        real = _real(dt)
        c = lambda a: a.detach().to(dt).contiguous()  # noqa: E731
        zeros = lambda *shape: torch.zeros(*shape, dtype=dt)  # noqa: E731
        g_m2 = c(g_m2) if g_m2 is not None else zeros(C, N, 2)
        g_con = c(g_con) if g_con is not None else zeros(C, N, 3)
        g_dep = c(g_dep) if g_dep is not None else None
        gm, gq, gs = zeros(N, 3), zeros(N, 4), zeros(N, 3)
        gv = torch.zeros(C, 4, 4, dtype=torch.float64) if ctx.needs_input_grad[3] else None
        ins = [c(means), c(quats), c(scales)]
        fn = getattr(_lib, f"project_bwd_{_suffix(dt)}")
        for k in range(C):
            # every tensor whose pointer goes to C is held by a name until the call returns (a
            # temporary from .contiguous() would be freed, and its memory reused, before it)
            vk, kk, gmk, gck = c(viewmats[k]), c(Ks[k]), g_m2[k].contiguous(), g_con[k].contiguous()
            gdk = None if g_dep is None else g_dep[k].contiguous()
            fn(*[_p(a) for a in ins], _p(vk), _p(kk), _i(N), _i(width), _i(height), real(eps2d), real(near_plane),
               real(far_plane), _p(gmk), _p(gck), ctypes.c_void_p(None) if gdk is None else _p(gdk), _p(gm), _p(gq),
               _p(gs), ctypes.c_void_p(None) if gv is None else ctypes.c_void_p(gv[k].data_ptr()))
        return gm, gq, gs, None if gv is None else gv.to(dt), None, None, None, None, None, None


KERNELS = NativeKernels()
