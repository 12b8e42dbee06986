"""Registers the diffusers video priors ``ltx``, ``wan`` and ``cogvideox``.

Each loads a local diffusers pipeline folder (``model_path``); diffusers/transformers are
imported inside the factories (``pip install fourreal[video]``). See docs/priors.md.
"""

from __future__ import annotations

from fourreal_core import hookimpl

from .configs import CogVideoXPriorConfig, LTXPriorConfig, WanPriorConfig


@hookimpl
def fourreal_register(registry):
    registry.add(
        "video_prior", "ltx", "fourreal_diffusers.ltx:LTXPrior", config=LTXPriorConfig,
        description="LTX-Video (diffusers LTXConditionPipeline): text + known frames at any indices",
    )
    registry.add(
        "video_prior", "wan", "fourreal_diffusers.wan:WanPrior", config=WanPriorConfig,
        description="Wan 2.x (diffusers): text-to-video; known frames at any indices with a VACE checkpoint",
    )
    registry.add(
        "video_prior", "cogvideox", "fourreal_diffusers.cogvideox:CogVideoXPrior", config=CogVideoXPriorConfig,
        description="CogVideoX (diffusers): text-to-video; known first frame with the I2V checkpoint",
    )
