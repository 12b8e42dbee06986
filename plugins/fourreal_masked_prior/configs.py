"""Config dataclasses of the masked pixel-space video prior (no torch import).

* :class:`MaskedPriorConfig` -- the ``video_prior`` named ``masked``: a checkpoint written
  by ``fourreal train-prior`` (or :func:`fourreal_masked_prior.train.train_prior`).
* :class:`MaskedModelConfig` -- the network's shape (stored in the checkpoint's
  ``config.json``, so a checkpoint rebuilds itself).
* :class:`TrainPriorConfig` -- training options of ``train_prior``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fourreal_core.config import InputPath


@dataclass
class MaskedModelConfig:
    """Shape of the masked video diffusion transformer (paper Appendix A, compact).

    Per frame the input has 7 channels: the noisy frame (3), the known frame (3, zero
    where unknown) and the known-frame mask (1). Frames are cut into ``patch x patch``
    patches; all space-time tokens plus the prompt's hashed word tokens attend jointly.
    """

    num_frames: int = 16  # native clip length F
    height: int = 36  # native size (the paper's low-resolution stage is 36x64)
    width: int = 64
    patch: int = 4  # spatial patch size; height and width must be multiples of it
    dim: int = 256  # token width
    depth: int = 8  # transformer blocks
    heads: int = 8
    mlp_ratio: float = 4.0
    text_vocab: int = 4096  # hash buckets for prompt words (0 is padding)
    text_len: int = 32  # prompt words kept


@dataclass
class MaskedPriorConfig:
    """The ``masked`` video prior: generation from text + known frames at any positions,
    one-step x0 for SDS. Flow-matching (rectified flow) in pixel space, see docs/priors.md.
    """

    checkpoint: InputPath = "checkpoints/masked_prior"  # folder with model.safetensors + config.json
    num_inference_steps: int = 32  # Euler steps of generate()
    guidance_scale: float = 1.0  # classifier-free guidance of generate() (1: off)
    x0_guidance_scale: float = 3.0  # classifier-free guidance of predict_x0() (SDS; 1: off); trained with prompt dropout
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    use_ema: bool = True  # load the EMA weights when the checkpoint has them


@dataclass
class MaskingConfig:
    """Probabilities of the four masking strategies of paper Appendix A (sum to 1)."""

    unconditional: float = 0.6  # no known frame
    bernoulli: float = 0.3  # each frame masked with prob 1 - 1/F: on average one known frame
    interpolation: float = 0.075  # frames at a regular interval known
    extension: float = 0.075  # the first F - N frames known, the last N masked


@dataclass
class TrainPriorConfig:
    """Options of :func:`fourreal_masked_prior.train.train_prior`."""

    model: MaskedModelConfig = field(default_factory=MaskedModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    steps: int = 20000
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema: float = 0.999  # EMA decay of the saved weights (0: no EMA)
    prompt_dropout: float = 0.1  # train unconditionally this often (for classifier-free guidance)
    max_stride: int = 2  # clips sample every s-th frame, s uniform in [1, max_stride]
    hflip: bool = True  # random horizontal flips
    save_every: int = 1000  # checkpoint (and resumable state) every this many steps
    log_every: int = 50
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    max_videos: int = 0  # read at most this many videos (0: all)
