"""Registers the gaussians family: representation `gaussians`; rasterizers `torch`, `numba`,
`gsplat`, `auto`. Implementations are imported inside the factories."""

from __future__ import annotations

from fourreal_core import hookimpl

from .configs import (
    AutoRasterizerConfig,
    GaussiansConfig,
    GsplatRasterizerConfig,
    NumbaRasterizerConfig,
    TorchRasterizerConfig,
)


def _gaussians(cfg: GaussiansConfig):
    from .model import GaussianModel

    return GaussianModel(cfg)


def _torch_rasterizer(cfg: TorchRasterizerConfig):
    from .rasterizers import TorchRasterizer

    return TorchRasterizer(cfg)


def _numba_rasterizer(cfg: NumbaRasterizerConfig):
    from .rasterizers import NumbaRasterizer

    return NumbaRasterizer(cfg)


def _gsplat_rasterizer(cfg: GsplatRasterizerConfig):
    from .rasterizers import GsplatRasterizer

    return GsplatRasterizer(cfg)


def _auto_rasterizer(cfg: AutoRasterizerConfig):
    from .rasterizers import make_auto_rasterizer

    return make_auto_rasterizer(cfg)


@hookimpl
def fourreal_register(registry):
    registry.add(
        "representation", "gaussians", _gaussians, config=GaussiansConfig,
        description="3D Gaussians with SH colour, 3DGS densification and PLY I/O",
    )
    registry.add(
        "rasterizer", "torch", _torch_rasterizer, config=TorchRasterizerConfig,
        description="Portable differentiable tile-based rasterizer in pure PyTorch (CPU, CUDA, MPS)",
    )
    registry.add(
        "rasterizer", "numba", _numba_rasterizer, config=NumbaRasterizerConfig,
        description="The torch rasterizer with compiled multi-threaded CPU compositing (numba); CPU only",
    )
    registry.add(
        "rasterizer", "gsplat", _gsplat_rasterizer, config=GsplatRasterizerConfig,
        description="gsplat's CUDA rasterizer (pip install fourreal[cuda])",
    )
    registry.add(
        "rasterizer", "auto", _auto_rasterizer, config=AutoRasterizerConfig,
        description="gsplat on CUDA when installed, numba on the CPU, torch elsewhere",
    )
