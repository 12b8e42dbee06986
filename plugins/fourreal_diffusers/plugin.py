"""Registers the diffusers video priors ``ltx``, ``wan`` and ``cogvideox``.

Each loads a local diffusers pipeline folder (``model_path``); diffusers/transformers are
imported inside the factories (``pip install fourreal[video]``). See docs/priors.md.
"""

from __future__ import annotations

from fourreal_core import hookimpl

from .configs import CogVideoXPriorConfig, LTXPriorConfig, WanPriorConfig


def _ltx(cfg: LTXPriorConfig):
    from .priors import LTXPrior

    return LTXPrior(cfg)


def _wan(cfg: WanPriorConfig):
    from .priors import WanPrior

    return WanPrior(cfg)


def _cogvideox(cfg: CogVideoXPriorConfig):
    from .priors import CogVideoXPrior

    return CogVideoXPrior(cfg)


@hookimpl
def fourreal_register(registry):
    registry.add(
        "video_prior", "ltx", _ltx, config=LTXPriorConfig,
        description="LTX-Video (diffusers LTXConditionPipeline): text + known frames at any indices",
    )
    registry.add(
        "video_prior", "wan", _wan, config=WanPriorConfig,
        description="Wan 2.x (diffusers): text-to-video; known frames at any indices with a VACE checkpoint",
    )
    registry.add(
        "video_prior", "cogvideox", _cogvideox, config=CogVideoXPriorConfig,
        description="CogVideoX (diffusers): text-to-video; known first frame with the I2V checkpoint",
    )
