"""Rasterizer plugins of the gaussians family: ``torch``, ``numba``, ``native``, ``gsplat`` and ``auto``.

All five implement :class:`fourreal_core.interfaces.Rasterizer` and return the same
:class:`~fourreal_core.interfaces.RenderOutput` (``rgb`` with the background composited,
``alpha``, expected ``depth``, ``means2d`` ``[C,N,2]`` retaining its grad, ``radii``
``[C,N]`` int32), so stages never care which one runs.
"""

from __future__ import annotations

from typing import Optional

import torch

from fourreal_core.errors import PluginError
from fourreal_core.interfaces import GaussianParams, Rasterizer, RenderOutput
from fourreal_core.types import Cameras

from .configs import (AutoRasterizerConfig, GsplatRasterizerConfig, NativeRasterizerConfig, NumbaRasterizerConfig,
                      TorchRasterizerConfig)
from .rasterize_torch import pixel_weights as pixel_weights_torch
from .rasterize_torch import rasterize as rasterize_torch

_GSPLAT_HINT = "install it with `pip install fourreal[cuda]` or use `rasterizer: torch`"


def _backgrounds(background: Optional[torch.Tensor], C: int, ref: torch.Tensor) -> Optional[torch.Tensor]:
    """``[3]`` / ``[C,3]`` / None -> ``[C,3]`` on ref's device and dtype, or None."""
    if background is None:
        return None
    bg = torch.as_tensor(background, dtype=ref.dtype, device=ref.device)
    if bg.dim() == 1:
        bg = bg[None].expand(C, -1)
    if bg.shape != (C, 3):
        raise ValueError(f"background must be [3] or [C,3] with C={C}, got {tuple(bg.shape)}")
    return bg.contiguous()


def _check_inputs(g: GaussianParams, cameras: Cameras) -> None:
    N = len(g)
    if g.sh_degree is None and g.colors.shape != (N, 3):
        raise ValueError(f"colors must be [N,3] RGB when sh_degree is None, got {tuple(g.colors.shape)}")
    if g.sh_degree is not None and (g.colors.dim() != 3 or g.colors.shape[0] != N or g.colors.shape[2] != 3):
        raise ValueError(f"colors must be [N,K,3] SH coefficients, got {tuple(g.colors.shape)}")


class TorchRasterizer(Rasterizer):
    """The portable tile-based rasterizer (:mod:`.rasterize_torch`): CPU, CUDA and MPS."""

    name = "torch"
    compositor = "torch"

    def __init__(self, cfg: Optional[TorchRasterizerConfig] = None):
        self.cfg = cfg or TorchRasterizerConfig()

    def rasterize(
        self,
        gaussians: GaussianParams,
        cameras: Cameras,
        background: Optional[torch.Tensor] = None,
        render_depth: bool = True,
    ) -> RenderOutput:
        g = gaussians
        _check_inputs(g, cameras)
        dev, dt = g.means.device, g.means.dtype
        viewmats = cameras.viewmats.to(device=dev, dtype=dt)
        Ks = cameras.Ks.to(device=dev, dtype=dt)
        rgb, alpha, depth, meta = rasterize_torch(
            g.means, g.quats, g.scales, g.opacities, g.colors, viewmats, Ks,
            cameras.width, cameras.height,
            sh_degree=g.sh_degree,
            backgrounds=_backgrounds(background, len(cameras), g.means),
            near_plane=self.cfg.near_plane,
            far_plane=self.cfg.far_plane,
            eps2d=self.cfg.eps2d,
            tile_size=self.cfg.tile_size,
            render_depth=render_depth,
            compositor=self.compositor,
            antialiased=self.cfg.antialiased,
        )
        extras = {k: meta[k] for k in ("depths", "conics", "tiles_per_gauss", "n_isects", "n_pairs", "n_evals")}
        extras["backend"] = self.name
        return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, means2d=meta["means2d"],
                            radii=meta["radii"], extras=extras)

    def pixel_weights(self, gaussians: GaussianParams, camera: Cameras, pixels: torch.Tensor):
        """The compositing weights at ``pixels`` (:func:`.rasterize_torch.pixel_weights`; the
        same culling and thresholds as both compositors, so also the ``numba`` rasterizer's)."""
        g = gaussians
        dev, dt = g.means.device, g.means.dtype
        return pixel_weights_torch(
            g.means.detach(), g.quats.detach(), g.scales.detach(), g.opacities.detach(),
            camera.viewmats[0].to(device=dev, dtype=dt), camera.Ks[0].to(device=dev, dtype=dt),
            camera.width, camera.height, pixels, near_plane=self.cfg.near_plane, far_plane=self.cfg.far_plane,
            eps2d=self.cfg.eps2d, tile_size=self.cfg.tile_size, antialiased=self.cfg.antialiased,
            compositor=self.compositor)


class _CompiledCPURasterizer(TorchRasterizer):
    """The torch rasterizer with a compiled CPU compositor (``compositor``): CPU tensors only."""

    def rasterize(self, gaussians: GaussianParams, cameras: Cameras, background: Optional[torch.Tensor] = None,
                  render_depth: bool = True) -> RenderOutput:
        if gaussians.means.device.type != "cpu":
            raise PluginError(f"rasterizer {self.name}: the Gaussians are on {gaussians.means.device}; it runs on "
                              f"the CPU only -- use `rasterizer: auto` (gsplat on CUDA) or `torch`")
        return super().rasterize(gaussians, cameras, background, render_depth)


class NumbaRasterizer(_CompiledCPURasterizer):
    """The same projection, binning rules and outputs as ``torch``, with the compositing (forward
    and backward) compiled by numba and run on all CPU cores (:mod:`.rasterize_numba`). CPU only."""

    name = "numba"
    compositor = "numba"

    def __init__(self, cfg: Optional[NumbaRasterizerConfig] = None):
        from . import rasterize_numba

        if not rasterize_numba.available():
            raise PluginError("rasterizer numba: numba is not importable; `pip install numba` or use "
                              "`rasterizer: torch`")
        self.cfg = cfg or NumbaRasterizerConfig()


class NativeRasterizer(_CompiledCPURasterizer):
    """The same projection, binning rules and outputs as ``torch``, with the compositing (forward
    and backward) in vectorised C kernels built on first use with the system's C compiler
    (:mod:`.rasterize_native`). CPU only."""

    name = "native"
    compositor = "native"

    def __init__(self, cfg: Optional[NativeRasterizerConfig] = None):
        from . import rasterize_native

        if not rasterize_native.available():
            raise PluginError(f"rasterizer native: {rasterize_native.unavailable_reason()}; use `rasterizer: numba` "
                              f"or `torch`")
        self.cfg = cfg or NativeRasterizerConfig()


def native_available() -> bool:
    """True when the C kernels build (or are built) and load."""
    from . import rasterize_native

    return rasterize_native.available()


def numba_available() -> bool:
    """True when the compiled CPU rasterizer can run (numba imports)."""
    from . import rasterize_numba

    return rasterize_numba.available()


def _import_gsplat():
    """gsplat, or a PluginError saying what is missing and how to fix it."""
    try:
        import gsplat  # noqa: F401
    except Exception as exc:  # ImportError, or a broken CUDA build raising at import
        raise PluginError(f"rasterizer gsplat: gsplat is not importable ({exc.__class__.__name__}: {exc}); "
                          f"{_GSPLAT_HINT}") from None
    return gsplat


def gsplat_available() -> bool:
    """True when CUDA is available and gsplat imports."""
    if not torch.cuda.is_available():
        return False
    try:
        _import_gsplat()
    except PluginError:
        return False
    return True


class GsplatRasterizer(Rasterizer):
    """gsplat's CUDA rasterizer (``gsplat.rasterization(..., render_mode="RGB+ED")``)."""

    name = "gsplat"

    def __init__(self, cfg: Optional[GsplatRasterizerConfig] = None):
        self.cfg = cfg or GsplatRasterizerConfig()
        if not torch.cuda.is_available():
            raise PluginError("rasterizer gsplat needs a CUDA GPU and torch.cuda is not available; "
                              "use `rasterizer: torch` (or `auto`)")
        self._gsplat = _import_gsplat()

    def rasterize(
        self,
        gaussians: GaussianParams,
        cameras: Cameras,
        background: Optional[torch.Tensor] = None,
        render_depth: bool = True,
    ) -> RenderOutput:
        g = gaussians
        _check_inputs(g, cameras)
        if g.means.device.type != "cuda":
            raise PluginError(f"rasterizer gsplat: the Gaussians are on {g.means.device}, gsplat needs CUDA "
                              f"tensors; move them to cuda or use `rasterizer: torch`")
        dev, dt = g.means.device, g.means.dtype
        C, N = len(cameras), len(g)
        viewmats = cameras.viewmats.to(device=dev, dtype=dt)
        Ks = cameras.Ks.to(device=dev, dtype=dt)
        colors, alphas, meta = self._gsplat.rasterization(
            means=g.means, quats=g.quats, scales=g.scales, opacities=g.opacities, colors=g.colors,
            viewmats=viewmats, Ks=Ks, width=cameras.width, height=cameras.height,
            near_plane=self.cfg.near_plane, far_plane=self.cfg.far_plane, eps2d=self.cfg.eps2d,
            sh_degree=g.sh_degree, packed=self.cfg.packed,
            backgrounds=_backgrounds(background, C, g.means),
            render_mode="RGB+ED" if render_depth else "RGB",
            rasterize_mode="antialiased" if self.cfg.antialiased else "classic",
        )
        rgb = colors[..., :3]
        depth = colors[..., 3:4] if render_depth else None
        radii = meta["radii"]
        if radii.dim() == 3 or (self.cfg.packed and radii.dim() == 2):
            radii = radii.max(dim=-1).values  # gsplat >= 1.5: per-axis radii [..., 2]
        means2d = meta["means2d"]
        if self.cfg.packed:
            # [nnz, ...] indexed by (camera_ids, gaussian_ids): scatter to [C, N, ...]
            cid, gid = meta["camera_ids"].long(), meta["gaussian_ids"].long()
            full_radii = torch.zeros(C, N, dtype=torch.int32, device=dev)
            full_radii[cid, gid] = radii.to(torch.int32)
            radii = full_radii
            means2d = self._scatter_means2d(means2d, cid, gid, C, N)
        else:
            if means2d.requires_grad:
                means2d.retain_grad()
        extras = {"depths": meta.get("depths"), "conics": meta.get("conics"), "backend": "gsplat",
                  "gsplat_meta": meta}
        return RenderOutput(rgb=rgb, alpha=alphas, depth=depth, means2d=means2d,
                            radii=radii.to(torch.int32), extras=extras)

    @staticmethod
    def _scatter_means2d(packed_m2d: torch.Tensor, cid, gid, C: int, N: int) -> torch.Tensor:
        """A ``[C,N,2]`` view of packed means2d whose ``.grad`` is filled by a backward hook."""
        full = torch.zeros(C, N, 2, dtype=packed_m2d.dtype, device=packed_m2d.device)
        full[cid, gid] = packed_m2d.detach()
        if packed_m2d.requires_grad:
            full.requires_grad_(True)

            def _hook(grad: torch.Tensor) -> None:
                g = torch.zeros_like(full)
                g[cid, gid] = grad
                full.grad = g if full.grad is None else full.grad + g

            packed_m2d.register_hook(_hook)
        return full


class AutoRasterizer(Rasterizer):
    """gsplat when the Gaussians are on CUDA and gsplat imports; on the CPU ``native`` when its C
    kernels build, else ``numba`` when numba imports; the portable torch rasterizer otherwise
    (decided on every call from the device)."""

    name = "auto"

    def __init__(self, cfg: Optional[AutoRasterizerConfig] = None):
        self.cfg = cfg or AutoRasterizerConfig()
        self._torch = TorchRasterizer(TorchRasterizerConfig(
            tile_size=self.cfg.tile_size, near_plane=self.cfg.near_plane,
            far_plane=self.cfg.far_plane, eps2d=self.cfg.eps2d,
            antialiased=self.cfg.antialiased,
        ))
        self._gsplat: Optional[GsplatRasterizer] = None
        self._gsplat_ok: Optional[bool] = None
        self._numba: Optional[TorchRasterizer] = None  # the compiled CPU backend: native, else numba
        if self.cfg.tile_size == 16 and native_available():
            self._numba = NativeRasterizer(NativeRasterizerConfig(
                near_plane=self.cfg.near_plane, far_plane=self.cfg.far_plane, eps2d=self.cfg.eps2d,
                antialiased=self.cfg.antialiased,
            ))
        elif numba_available():
            self._numba = NumbaRasterizer(NumbaRasterizerConfig(
                tile_size=self.cfg.tile_size, near_plane=self.cfg.near_plane,
                far_plane=self.cfg.far_plane, eps2d=self.cfg.eps2d, antialiased=self.cfg.antialiased,
            ))

    def backend_for(self, device: torch.device) -> Rasterizer:
        """The rasterizer used for tensors on ``device``."""
        kind = torch.device(device).type
        if kind == "cpu" and self._numba is not None:
            return self._numba
        if kind != "cuda":
            return self._torch
        if self._gsplat_ok is None:
            self._gsplat_ok = gsplat_available()
            if self._gsplat_ok:
                self._gsplat = GsplatRasterizer(GsplatRasterizerConfig(
                    near_plane=self.cfg.near_plane, far_plane=self.cfg.far_plane, eps2d=self.cfg.eps2d,
                    antialiased=self.cfg.antialiased,
                ))
        return self._gsplat if self._gsplat_ok else self._torch

    def rasterize(
        self,
        gaussians: GaussianParams,
        cameras: Cameras,
        background: Optional[torch.Tensor] = None,
        render_depth: bool = True,
    ) -> RenderOutput:
        return self.backend_for(gaussians.means.device).rasterize(gaussians, cameras, background, render_depth)

    def pixel_weights(self, gaussians: GaussianParams, camera: Cameras, pixels: torch.Tensor):
        return self.backend_for(gaussians.means.device).pixel_weights(gaussians, camera, pixels)


def make_auto_rasterizer(cfg: Optional[AutoRasterizerConfig] = None) -> AutoRasterizer:
    """Factory of the ``auto`` rasterizer."""
    return AutoRasterizer(cfg)
