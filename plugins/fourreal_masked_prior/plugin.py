"""Registers the ``masked`` video prior (paper Appendix A: a masked pixel-space video
diffusion transformer conditioned on text and known frames at any positions).

Train one with ``fourreal train-prior VIDEOS_DIR --out DIR`` and use it with
``video_prior: {name: masked, params: {checkpoint: DIR}}``. torch is imported inside the
factory only.
"""

from __future__ import annotations

from fourreal_core import hookimpl

from .configs import MaskedPriorConfig


def _masked(cfg: MaskedPriorConfig):
    from .prior import MaskedPrior

    return MaskedPrior.from_checkpoint(cfg)


@hookimpl
def fourreal_register(registry):
    registry.add(
        "video_prior", "masked", _masked, config=MaskedPriorConfig,
        description="Masked pixel-space video diffusion transformer (text + known frames at any "
        "positions; train with `fourreal train-prior`)",
    )
