"""Config dataclasses of the gaussians plugin family (no torch import: validation stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fourreal_core.config import ConfigValueError, Steps, above, at_least, steps_floor

#: the refinement interval's floor under iterations_scale: gradient statistics need several
#: views to mean anything, and refining every step or two makes the Gaussian count explode
MIN_DENSIFY_EVERY = 10


# ----------------------------------------------------------------------------- rasterizers
@dataclass
class TorchRasterizerConfig:
    """Portable tile-based rasterizer (CPU, CUDA, MPS)."""

    tile_size: int = 16
    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3  # low-pass filter added to the 2D covariance (3DGS / gsplat)
    # gsplat's rasterize_mode="antialiased" (Mip-Splatting's 2D filter): opacity scaled by
    # sqrt(det(Sigma2d) / det(Sigma2d + eps2d I)) so the low-pass adds no weight (docs/rasterizer.md)
    antialiased: bool = False


@dataclass
class NumbaRasterizerConfig:
    """The tile-based rasterizer with compiled, multi-threaded CPU compositing (numba)."""

    tile_size: int = 16
    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3
    antialiased: bool = False  # as the torch rasterizer's


@dataclass
class NativeRasterizerConfig:
    """The tile-based rasterizer with its compositing in vectorised C (built on first use with the
    system's C compiler; ``rasterize_native.py``). The kernels' tiles are 16x16."""

    tile_size: int = 16
    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3
    antialiased: bool = False  # as the torch rasterizer's

    def __post_init__(self) -> None:
        if self.tile_size != 16:
            raise ConfigValueError("tile_size", f"the native kernels use 16x16 tiles, got {self.tile_size}")


@dataclass
class GsplatRasterizerConfig:
    """gsplat's CUDA rasterizer."""

    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3
    packed: bool = False
    antialiased: bool = False  # rasterize_mode="antialiased"


@dataclass
class AutoRasterizerConfig:
    """gsplat on CUDA when it is installed; on the CPU the ``native`` C kernels when they build,
    else the ``numba`` ones when numba imports; the portable ``torch`` rasterizer elsewhere (MPS)."""

    tile_size: int = 16
    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3
    antialiased: bool = False  # Mip-Splatting's 2D filter on every backend (gsplat: rasterize_mode)


# --------------------------------------------------------------------------- densification
@dataclass
class DensifyConfig:
    """3DGS adaptive density control (clone / split / prune / opacity reset).

    Steps are iterations of the stage (``Steps``: ``iterations_scale`` multiplies them;
    ``every`` never below :data:`MIN_DENSIFY_EVERY`). Thresholds per paper Appendix E.2.
    """

    grad_threshold: float = 2e-4  # tau_grad, on the accumulated view-space gradient
    prune_opacity: float = 5e-3  # tau_alpha (1e-2 for the motion stage's growth)
    grow_scale3d: float = 0.01  # clone below / split above this fraction of scene extent
    prune_scale3d: float = 0.1  # prune Gaussians larger than this fraction of scene extent
    prune_screen_radius: float = 0.0  # prune if 2D radius > this fraction of image size (0: off)
    start: Steps = 500
    stop: Steps = 15000
    every: steps_floor(MIN_DENSIFY_EVERY, "gradient statistics need several views; refining "  # type: ignore[valid-type]
                       "every step makes the Gaussian count explode") = 100
    reset_opacity_every: Steps = 3000
    reset_opacity_value: float = 0.01
    split_into: int = 2
    max_gaussians: int = 0  # 0: unlimited
    # ``default``: the 3DGS heuristics above; ``mcmc``: 3DGS-MCMC as gsplat's MCMCStrategy
    # (dead Gaussians -- opacity <= prune_opacity -- relocated onto live ones, +5% per
    # refinement up to max_gaussians, SGLD position noise; densify.MCMCStrategy)
    strategy: Literal["default", "mcmc"] = "default"
    noise_lr: float = 5e5  # mcmc: position noise scale (times the position lr), gsplat's default

    def __post_init__(self) -> None:
        at_least(self, grad_threshold=0, prune_opacity=0, grow_scale3d=0, prune_scale3d=0, prune_screen_radius=0,
                 split_into=2, max_gaussians=0)
        above(self, reset_opacity_value=0)
        if self.strategy == "mcmc" and int(self.max_gaussians) <= 0:
            raise ValueError("strategy mcmc needs a hard cap: set max_gaussians > 0")


# --------------------------------------------------------------------------- representation
@dataclass
class GaussiansConfig:
    """3D Gaussians with SH colour; learning rates per 3DGS and the paper (Appendix D.4)."""

    sh_degree: int = 3
    sh_degree_interval: Steps = 1000  # raise the active SH degree every this many steps
    init: Literal["points", "box"] = "points"
    init_num_points: int = 100_000  # for init: box
    init_extent: float = 1.0  # half-size of the box for init: box
    init_opacity: float = 0.1
    init_scale: float = 1.0  # multiplies the kNN-distance initial scale
    means_lr: float = 1.6e-4  # times scene extent; decays exponentially to means_lr_final
    means_lr_final: float = 1.6e-6
    scales_lr: float = 1e-3
    quats_lr: float = 1e-3
    opacities_lr: float = 5e-2
    sh0_lr: float = 2.5e-3
    shN_lr: float = 2.5e-3 / 20
    densify: DensifyConfig = field(default_factory=DensifyConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.sh_degree, bool) and isinstance(self.sh_degree, int) and not 0 <= self.sh_degree <= 3:
            raise ConfigValueError("sh_degree", f"must be 0, 1, 2 or 3 (fourreal_gaussians.sh.MAX_SH_DEGREE), got {self.sh_degree}")
        at_least(self, init_num_points=1)
        above(self, init_extent=0, init_scale=0, init_opacity=0)
        if isinstance(self.init_opacity, (int, float)) and not self.init_opacity < 1:
            raise ConfigValueError("init_opacity", f"must be < 1 (an opacity), got {self.init_opacity}")
