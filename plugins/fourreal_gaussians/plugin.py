"""Registers the gaussians family: representation `gaussians`; rasterizers `torch`, `numba`,
`native`, `gsplat`, `auto`. Implementations are imported inside the factories."""

from __future__ import annotations

from fourreal_core import hookimpl

from .configs import (
    AutoRasterizerConfig,
    GaussiansConfig,
    GsplatRasterizerConfig,
    NativeRasterizerConfig,
    NumbaRasterizerConfig,
    TorchRasterizerConfig,
)


@hookimpl
def fourreal_register(registry):
    registry.add(
        "representation", "gaussians", "fourreal_gaussians.model:GaussianModel", config=GaussiansConfig,
        description="3D Gaussians with SH colour, 3DGS densification and PLY I/O",
    )
    registry.add(
        "rasterizer", "torch", "fourreal_gaussians.rasterizers:TorchRasterizer", config=TorchRasterizerConfig,
        description="Portable differentiable tile-based rasterizer in pure PyTorch (CPU, CUDA, MPS)",
    )
    registry.add(
        "rasterizer", "numba", "fourreal_gaussians.rasterizers:NumbaRasterizer", config=NumbaRasterizerConfig,
        description="The torch rasterizer with compiled multi-threaded CPU compositing (numba); CPU only",
    )
    registry.add(
        "rasterizer", "native", "fourreal_gaussians.rasterizers:NativeRasterizer", config=NativeRasterizerConfig,
        description="The torch rasterizer with vectorised C compositing, built on first use with the system's cc; CPU only",
    )
    registry.add(
        "rasterizer", "gsplat", "fourreal_gaussians.rasterizers:GsplatRasterizer", config=GsplatRasterizerConfig,
        description="gsplat's CUDA rasterizer (pip install fourreal[cuda])",
    )
    registry.add(
        "rasterizer", "auto", "fourreal_gaussians.rasterizers:make_auto_rasterizer", config=AutoRasterizerConfig,
        description="gsplat on CUDA when installed, native (else numba) on the CPU, torch elsewhere",
    )
