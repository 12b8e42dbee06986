"""Config dataclasses of the diffusers video priors (no torch/diffusers import).

Every prior loads a diffusers pipeline folder (``model_index.json`` + component folders, as
written by ``save_pretrained`` or ``huggingface-cli download REPO --local-dir DIR``) from
``model_path``; nothing is downloaded at run time. ``num_frames/height/width`` are the
prior's native shape: what SDS downsamples renders to and what ``generate`` defaults to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from fourreal_core.config import InputPath

LoraUse = Literal["reference", "freeze_time", "sds_multiview", "sds_temporal"]


@dataclass
class LoraSpec:
    """A LoRA for the prior's transformer, from a local ``.safetensors`` file (or a folder
    holding exactly one), loaded with diffusers' ``load_lora_weights`` once and switched on
    per use with ``set_adapters`` (docs/priors.md#loras). ``trigger`` is added to the prompt
    of every call the LoRA is active for (the freeze-time prompt for a freeze-time LoRA)."""

    file: InputPath = ""  # (`path` is a reserved key in recipes)
    scale: float = 1.0
    trigger: str = ""
    # what it is active for: a bullet-time / orbit LoRA helps freeze-time generation and
    # multi-view SDS, not the reference video or temporal SDS
    uses: list[LoraUse] = field(default_factory=lambda: ["freeze_time", "sds_multiview"])


Dtype = Literal["float32", "float16", "bfloat16"]
Device = Literal["auto", "cpu", "cuda", "mps"]


@dataclass
class LTXPriorConfig:
    """LTX-Video through ``LTXConditionPipeline`` (e.g. Lightricks/LTX-Video-0.9.5 or later):
    text-to-video and known frames at any indices (``LTXVideoCondition``)."""

    model_path: InputPath = "models/LTX-Video"
    torch_dtype: Dtype = "bfloat16"
    cpu_offload: bool = False  # enable_model_cpu_offload (CUDA): fits small GPUs, slower
    device: Device = "auto"
    num_inference_steps: int = 40
    guidance_scale: float = 3.0
    x0_guidance_scale: float = 3.0  # classifier-free guidance inside predict_x0 (SDS; 1: off): its sampling default
    negative_prompt: str = "worst quality, inconsistent motion, blurry, jittery, distorted"
    num_frames: int = 16  # run as the next 8k+1 (17) and trimmed
    height: int = 512  # multiples of 32
    width: int = 768
    # SDS working size (renders are only downsampled to it, cut -- never stretched -- to its
    # aspect): the smallest 16:9 size in LTX's multiples of 32
    sds_height: int = 288
    sds_width: int = 512
    frame_rate: int = 25
    image_cond_noise_scale: float = 0.15  # pipeline default: noise on hard-conditioned latents
    decode_timestep: float = 0.05  # for timestep-conditioned VAEs (0.9.1+); ignored otherwise
    decode_noise_scale: Optional[float] = 0.025
    max_sequence_length: int = 256
    paste_known: bool = True  # write known frames into the output exactly (VideoPrior contract)
    loras: list[LoraSpec] = field(default_factory=list)


@dataclass
class WanPriorConfig:
    """Wan 2.1/2.2 through the pipeline class named in the folder's ``model_index.json``:

    * ``WanPipeline`` (e.g. Wan2.1-T2V-1.3B-Diffusers): text-to-video only;
    * ``WanVACEPipeline`` (e.g. Wan2.1-VACE-1.3B-diffusers): text-to-video and known frames
      at any indices (VACE video + mask conditioning);
    * ``WanImageToVideoPipeline`` (e.g. Wan2.1-I2V-14B-480P-Diffusers): first frame (and
      last frame) only; generation only (no predict_x0).
    """

    model_path: InputPath = "models/Wan2.1-VACE-1.3B-diffusers"
    torch_dtype: Dtype = "bfloat16"
    cpu_offload: bool = False
    device: Device = "auto"
    num_inference_steps: int = 40
    guidance_scale: float = 5.0
    x0_guidance_scale: float = 5.0  # SDS classifier-free guidance (1: off): its sampling default
    negative_prompt: str = ""
    num_frames: int = 16  # run as the next 4k+1 (17) and trimmed
    height: int = 480  # multiples of 16
    width: int = 832
    sds_height: int = 480  # SDS working size: Wan 2.1's smallest trained size (480p), multiples of 16
    sds_width: int = 832
    max_sequence_length: int = 512
    paste_known: bool = True
    loras: list[LoraSpec] = field(default_factory=list)


@dataclass
class CogVideoXPriorConfig:
    """CogVideoX: ``CogVideoXPipeline`` for text-to-video and ``CogVideoXImageToVideoPipeline``
    for a known first frame. ``model_path`` is either kind (detected from
    ``model_index.json``); ``i2v_model_path`` optionally adds the other one."""

    model_path: InputPath = "models/CogVideoX-5b"
    i2v_model_path: Optional[InputPath] = None
    torch_dtype: Dtype = "bfloat16"
    cpu_offload: bool = False
    device: Device = "auto"
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    x0_guidance_scale: float = 6.0  # SDS classifier-free guidance (1: off): its sampling default
    negative_prompt: str = ""
    num_frames: int = 49  # 4k+1 (CogVideoX 1.0: 49 frames)
    height: int = 480  # multiples of 16
    width: int = 720
    sds_height: int = 480  # SDS working size: CogVideoX 1.0's only trained size, multiples of 16
    sds_width: int = 720
    max_sequence_length: int = 226
    paste_known: bool = True
    loras: list[LoraSpec] = field(default_factory=list)
