"""Registers the losses family. Config dataclasses live here (torch-free); implementations
are imported inside the factories.

Every loss is a :class:`fourreal_core.interfaces.Loss` with ``requires`` (the input keys it
reads) and ``weight`` (a :class:`~fourreal_core.config.Ramp`; the trainer multiplies the
unweighted value by ``weight.at(step)``). Default weights follow the paper (Appendix E.1):
reconstruction 1, each regulariser 0.01.

Input keys (a stage fills those its losses require):

==================== ==================================================================
``render``           :class:`RenderOutput`; ``render.rgb [C,H,W,3]``
``target``           ``[C,H,W,3]`` target images in [0,1]
``mask``             optional ``[C,H,W,1]``, 1 where a pixel is supervised (recon losses)
``deformation``      :class:`Deformation` of all N Gaussians at the current time t / frame k
``deformation_prev`` :class:`Deformation` of the same N Gaussians at the previous time t-1
``canonical``        :class:`GaussianParams` of the canonical Gaussians (``means [N,3]``,
                     ``quats [N,4]``) -- the positions kNN and Eq. 9 weights use
``gaussians_version`` int the stage increments whenever densification changes the
                     Gaussians; ``rigid``/``rot`` recompute kNN only when it changes
``step``             int, the iteration
``background``       ``[3]`` the colour this step's render was composited over
==================== ==================================================================

Losses: ``l1`` (Eq. 2), ``ssim`` (1 - SSIM), ``align`` (Sec. 3.4: L1 + lambda (1 - SSIM)),
``small_motion`` (Eq. 3), ``opacity`` / ``scale`` (3DGS-MCMC's regularisers of the
canonical Gaussians), ``norm`` (Eq. 7), ``diff`` (Eq. 8), ``rigid`` (Eqs. 9-11),
``rot`` (Eq. 12).

Adding a loss (also from another module of this package): define its config dataclass and
factory and decorate the factory with ``@register_loss(name, Config, description)``
anywhere in this module -- the hook below registers everything in :data:`LOSSES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from fourreal_core import hookimpl
from fourreal_core.config import Ramp

#: (name, lazy target "module:Class", config dataclass, description) of every loss this module registers
LOSSES: list[tuple[str, str, type, str]] = []


def register_loss(name: str, config: type, description: str, target: str) -> None:
    """Add the loss ``target`` (``"module:Class"``, built with a ``config`` instance) to
    :data:`LOSSES` under ``name``."""
    LOSSES.append((name, target, config, description))


@hookimpl
def fourreal_register(registry):
    for name, target, config, description in LOSSES:
        registry.add("loss", name, target, config=config, description=description)


def _w(value: float):
    return field(default_factory=lambda: Ramp(value))


# ====================================================================== reconstruction
@dataclass
class L1Config:
    """Mean absolute error between the render and the target (paper Eq. 2)."""

    weight: Ramp = _w(1.0)
    use_mask: bool = True  # average over ``mask`` pixels when the stage provides a mask
    # pixels of the video's dynamic region (input ``dynamic_mask``, the motion stage's
    # reference frames) count 1 + dynamic_weight times: a small moving subject is not
    # outweighed by the static background (docs/real-data.md, "The moving subject")
    dynamic_weight: float = 0.0


@dataclass
class SSIMConfig:
    """1 - SSIM (11x11 Gaussian window, sigma 1.5, as 3DGS)."""

    weight: Ramp = _w(1.0)
    use_mask: bool = True
    window: int = 11
    sigma: float = 1.5


@dataclass
class AlignConfig:
    """Image alignment of the motion stage (paper Sec. 3.4): L1 + ssim_lambda * (1 - SSIM).

    The paper adds the two terms with equal weight, hence ``ssim_lambda: 1``; 3DGS's
    ``0.8 L1 + 0.2 (1 - SSIM)`` is ``weight: 0.8, ssim_lambda: 0.25``.
    """

    weight: Ramp = _w(1.0)
    ssim_lambda: float = 1.0
    use_mask: bool = True
    dynamic_weight: float = 0.0  # as l1's: the dynamic region counts 1 + dynamic_weight times
    window: int = 11
    sigma: float = 1.5


register_loss("l1", L1Config, "L1 photometric reconstruction loss (paper Eq. 2)", "fourreal_losses.recon:L1Loss")
register_loss("ssim", SSIMConfig, "1 - SSIM (11x11 Gaussian window, as 3DGS)", "fourreal_losses.recon:SSIMLoss")
register_loss("align", AlignConfig, "L1 + lambda (1 - SSIM) image alignment loss (paper Sec. 3.4)", "fourreal_losses.recon:AlignLoss")


# ======================================================================== regularisers
@dataclass
class SmallMotionConfig:
    """mean |dx|_1 + |dq|_1 of the per-frame deformation (paper Eq. 3)."""

    weight: Ramp = _w(0.01)


@dataclass
class OpacityRegConfig:
    """mean opacity of the canonical Gaussians (3DGS-MCMC's opacity regulariser)."""

    weight: Ramp = _w(0.01)


@dataclass
class ScaleRegConfig:
    """mean |scale|_1 of the canonical Gaussians in world units (3DGS-MCMC's scale regulariser)."""

    weight: Ramp = _w(0.01)


@dataclass
class NormConfig:
    """mean |dx| + |dq| + |ds| of the temporal deformation (paper Eq. 7)."""

    weight: Ramp = _w(0.01)


@dataclass
class DiffConfig:
    """mean |dx_t - dx_{t-1}| (paper Eq. 8)."""

    weight: Ramp = _w(0.01)


@dataclass
class RigidConfig:
    """Local rigidity over k nearest canonical neighbours (paper Eqs. 9-11).

    ``lambda_w``: weight scale of Eq. 9 in 1/world-units^2; null (default) adapts it to the
    scene, ``1 / mean squared kNN distance`` (Dynamic 3DGS used 2000 on metre-scale scenes).
    """

    weight: Ramp = _w(0.01)
    k: int = 20
    lambda_w: Optional[float] = None
    sample: float = 1.0  # fraction of Gaussians averaged over per step (fresh random subset; 1: all)

    def __post_init__(self) -> None:
        if not 0.0 < self.sample <= 1.0:
            raise ValueError(f"sample must be in (0, 1], got {self.sample}")


@dataclass
class RotConfig:
    """Neighbours rotate alike between t-1 and t (paper Eq. 12); kNN and weights as
    ``rigid``."""

    weight: Ramp = _w(0.01)
    k: int = 20
    lambda_w: Optional[float] = None
    sample: float = 1.0  # as rigid's

    def __post_init__(self) -> None:
        if not 0.0 < self.sample <= 1.0:
            raise ValueError(f"sample must be in (0, 1], got {self.sample}")
register_loss("small_motion", SmallMotionConfig, "L1 magnitude of the per-frame deformation (paper Eq. 3)", "fourreal_losses.regularizers:SmallMotionLoss")
register_loss("opacity", OpacityRegConfig, "Mean opacity of the Gaussians (3DGS-MCMC regulariser)", "fourreal_losses.regularizers:OpacityLoss")
register_loss("scale", ScaleRegConfig, "Mean |scale| of the Gaussians (3DGS-MCMC regulariser)", "fourreal_losses.regularizers:ScaleLoss")
register_loss("norm", NormConfig, "Norm of the deformation dx, dq, ds (paper Eq. 7)", "fourreal_losses.regularizers:NormLoss")
register_loss("diff", DiffConfig, "Temporal smoothness |dx_t - dx_(t-1)| (paper Eq. 8)", "fourreal_losses.regularizers:DiffLoss")
register_loss("rigid", RigidConfig, "kNN local-rigidity loss (Dynamic 3DGS; paper Eqs. 9-11)", "fourreal_losses.regularizers:RigidLoss")
register_loss("rot", RotConfig, "kNN rotation-consistency loss (Dynamic 3DGS; paper Eq. 12)", "fourreal_losses.regularizers:RotLoss")


# ============================================================ further losses (append here)


# ------------------------------------------------------------------ video SDS (sds.py)
from .sds_configs import SDSMultiViewConfig, SDSTemporalConfig  # noqa: E402


register_loss("sds_multiview", SDSMultiViewConfig,
               "Multi-view video SDS: orbit from the canonical camera, I_c known (paper Eqs. 4-6, D.1)", "fourreal_losses.sds:SDSMultiViewLoss")
register_loss("sds_temporal", SDSTemporalConfig,
               "Temporal video SDS: fixed reference camera, times from the canonical frame (paper 3.4, D.1)", "fourreal_losses.sds:SDSTemporalLoss")
