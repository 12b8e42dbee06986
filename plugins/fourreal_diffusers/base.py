"""Shared plumbing of the diffusers-based video priors, one file each as diffusers keeps
its pipelines: ``ltx`` (:mod:`.ltx`), ``wan`` (:mod:`.wan`), ``cogvideox`` (:mod:`.cogvideox`).
A new diffusers model is a file with a :class:`DiffusersPrior` subclass and a line in
``plugin.py`` (docs/plugins.md).

Each loads a local pipeline folder with ``<Pipeline>.from_pretrained(path, torch_dtype=...,
local_files_only=True)`` and implements :class:`~fourreal_core.interfaces.VideoPrior`:

``generate``
    runs the real pipeline (``__call__``) with the prior's native conditioning, at the
    requested size rounded up to what the model accepts (frames ``r*k+1`` for temporal
    compression ``r``, height/width multiples of VAE stride x patch), then resizes and trims
    the output. Known frames are then written into the output exactly (``paste_known``):
    latent models reproduce conditioning frames only up to the VAE's reconstruction error
    (and soft conditioning, e.g. LTX keyframes away from frame 0 or VACE, only
    approximately), while the VideoPrior contract asks for the frames themselves.

``predict_x0(frames, noise_level, known_frames, prompt, generator=None)``
    ``frames`` ``[F,H,W,3]`` in [0,1] are *clean* renders: they are resized to the model's
    grid, encoded with the VAE, noised at ``noise_level`` in latent space, denoised with one
    transformer call (with the prompt embeddings, cached per prompt, and the known-frame
    conditioning), decoded and returned ``[F,H,W,3]`` in [0,1] (known frames pasted).
    ``noise_level`` is a diffusion time ``t`` in [0,1]: for the flow-matching priors (LTX,
    Wan) the flow sigma, ``x_t = (1 - t) x0 + t eps``, model velocity ``v = eps - x0``,
    ``x0 = x_t - t v``; for CogVideoX (DDPM/DDIM, v-prediction) the training timestep
    ``round(t (T-1))``, ``x_t = sqrt(a) x0 + sqrt(1-a) eps``, ``x0 = sqrt(a) x_t - sqrt(1-a) v``
    (or the eps formula when the scheduler says ``epsilon``). All randomness (VAE posterior
    sample, noise) comes from ``generator``: a fixed seed gives a fixed result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import weakref
from pathlib import Path
from typing import Mapping, Optional

import torch

from fourreal_core.run import resolve_device
from fourreal_core.errors import FourRealError, InputError
from fourreal_core.interfaces import VideoPrior
from fourreal_media import resize_frames

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ------------------------------------------------------------------------------ helpers
def missing_model_message(path: Path, what: str, example: str) -> str:
    return (
        f"{path}: no {what} model folder there (model_index.json missing); download the weights "
        f"(e.g. `huggingface-cli download {example} --local-dir {path}`) and point the recipe at the folder "
        f"with --set stages.<stage>.params.prior.params.model_path=/path/to/folder"
    )


def pipeline_class_name(path: Path) -> str:
    """``_class_name`` of a diffusers pipeline folder's ``model_index.json``."""
    try:
        return str(json.loads((path / "model_index.json").read_text())["_class_name"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path / 'model_index.json'}: not a diffusers pipeline index ({exc})") from None


#: pipelines alive in this process, by (folder, class, dtype): two priors of one model (e.g.
#: the generate stage's prior and freeze_prior, or SDS priors differing only in their LoRA
#: uses) share ONE copy of the weights; LoRAs are adapters switched per call (lora.py)
_PIPELINES: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()


def load_pipeline(path: str, allowed: tuple[str, ...], what: str, example: str, dtype: torch.dtype):
    """``<class>.from_pretrained(path, torch_dtype=dtype)`` for the pipeline class the folder
    names, which must be one of ``allowed``. Local files only; a pipeline already loaded in
    this process from the same folder at the same dtype is reused."""
    p = Path(path).expanduser()
    key = (str(p.resolve()), str(dtype))
    if key in _PIPELINES:
        return _PIPELINES[key]
    if not (p / "model_index.json").is_file():
        raise InputError(missing_model_message(p, what, example))
    name = pipeline_class_name(p)
    if name not in allowed:
        raise InputError(f"{p}: holds a {name}, expected one of {', '.join(allowed)} for the {what} prior")
    try:
        import diffusers
    except ImportError:
        raise FourRealError("the diffusers priors need `pip install fourreal[video]` (diffusers, transformers)") from None
    cls = getattr(diffusers, name)
    try:
        # safetensors only: a pickled .bin in a model folder is never unpickled
        pipe = cls.from_pretrained(str(p), torch_dtype=dtype, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot load {name} ({str(exc).splitlines()[0][:200]})") from None
    pipe.set_progress_bar_config(disable=True)
    _PIPELINES[key] = pipe
    return pipe


def place(pipe, cfg) -> torch.device:
    """Move ``pipe`` to the configured device, or enable model CPU offload. Returns the
    device computations run on. A shared pipeline already placed so is left alone."""
    dev = resolve_device(cfg.device)
    where = (str(dev), bool(cfg.cpu_offload and dev.type == "cuda"))
    if pipe.__dict__.get("_fourreal_placed") == where:
        return dev
    pipe.__dict__["_fourreal_placed"] = where
    if cfg.cpu_offload and dev.type == "cuda":
        pipe.enable_model_cpu_offload(device=dev)
    else:
        pipe.to(dev)
    return dev


@contextlib.contextmanager
def on_device(module, device: torch.device, offload: bool):
    """Run ``module`` on ``device`` (moving it there and back under CPU offload, because
    offload hooks only wrap ``forward``, not e.g. ``vae.encode``)."""
    if not offload:
        yield module
        return
    module.to(device)
    try:
        yield module
    finally:
        module.to("cpu")


def round_frames(n: int, r: int) -> int:
    """The smallest ``r*k+1 >= n``."""
    return max(1, -(-(max(1, n) - 1) // r) * r + 1)


def round_up(v: int, m: int) -> int:
    return max(m, -(-int(v) // m) * m)


def pipe_frames(out) -> torch.Tensor:
    """A pipeline's ``output_type="pt"`` frames -> ``[F,H,W,3]`` float in [0,1]."""
    fr = out.frames if hasattr(out, "frames") else out[0]
    fr = fr[0] if isinstance(fr, (list, tuple)) else fr
    fr = torch.as_tensor(fr)
    if fr.ndim == 5:
        fr = fr[0]
    if fr.shape[-1] != 3:  # [F,C,H,W]
        fr = fr.permute(0, 2, 3, 1)
    return fr.float().clamp(0, 1).cpu()


def to_pixels(frames: torch.Tensor, device, dtype) -> torch.Tensor:
    """``[F,H,W,3]`` in [0,1] -> VAE input ``[1,3,F,H,W]`` in [-1,1]."""
    return (frames.permute(3, 0, 1, 2)[None] * 2.0 - 1.0).to(device=device, dtype=dtype)


def from_pixels(video: torch.Tensor) -> torch.Tensor:
    """VAE output ``[1,3,F,H,W]`` in [-1,1] -> ``[F,H,W,3]`` in [0,1] float32."""
    return ((video[0].float().permute(1, 2, 3, 0) + 1.0) * 0.5).clamp(0, 1)


def sample_latents(encoded, generator: Optional[torch.Generator]) -> torch.Tensor:
    dist = getattr(encoded, "latent_dist", None)
    if dist is None:
        return encoded.latents
    if generator is None:
        return dist.mode()
    # draw the posterior noise on the generator's device (CPU generators stay valid on GPU)
    eps = torch.randn(dist.mean.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return dist.mean + dist.std * eps.to(dist.mean.device, dist.mean.dtype)


def randn(shape, generator: Optional[torch.Generator], device, dtype=torch.float32) -> torch.Tensor:
    gdev = generator.device if generator is not None else "cpu"
    return torch.randn(shape, generator=generator, device=gdev, dtype=torch.float32).to(device, dtype)


def paste(frames: torch.Tensor, known: Optional[Mapping[int, torch.Tensor]]) -> torch.Tensor:
    """Write known frames (resized) into ``frames`` ``[F,H,W,3]``."""
    if not known:
        return frames
    frames = frames.clone()
    F_, H, W, _ = frames.shape
    for i, img in known.items():
        frames[int(i) % F_] = resize_frames(torch.as_tensor(img).detach().float().cpu()[None], H, W)[0].to(frames)
    return frames


def check_known(known: Optional[Mapping[int, torch.Tensor]], n: int) -> dict[int, torch.Tensor]:
    out = {}
    for i, img in (known or {}).items():
        i = int(i)
        if not -n <= i < n:
            raise FourRealError(f"known frame index {i} is outside a {n}-frame video")
        img = torch.as_tensor(img).detach().float().cpu()
        if img.ndim != 3 or img.shape[-1] != 3:
            raise FourRealError(f"known frame {i} must be [H,W,3], got {tuple(img.shape)}")
        out[i % n] = img
    return out


class DiffusersPrior(VideoPrior):
    """Shared plumbing: config, device, prompt-embedding cache, sizes."""

    #: SDS passes where and when each frame was rendered (they choose the LoRA use: sds_use)
    conditions = frozenset({"cameras", "times"})

    what = ""
    example = ""
    temporal_ratio = 4
    spatial_multiple = 16

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.dtype = _DTYPES[cfg.torch_dtype]
        self.num_frames = int(cfg.num_frames)
        self.height = int(cfg.height)
        self.width = int(cfg.width)
        self.sds_height = int(cfg.sds_height)
        self.sds_width = int(cfg.sds_width)
        self._embeds: dict = {}
        self._use: Optional[str] = None
        self.loras = None

    # -- LoRAs (lora.py): one base model, adapters switched per use -----------------------
    def _setup_loras(self, pipes: list) -> None:
        from .lora import LoraSet

        self.loras = LoraSet(getattr(self.cfg, "loras", None) or [], pipes, self.what)

    @contextlib.contextmanager
    def use(self, name: str):
        """``with prior.use("freeze_time"): ...``: the LoRAs of that use are active inside."""
        prev, self._use = self._use, name
        try:
            yield self
        finally:
            self._use = prev

    def _lora(self, default_use: str, prompt: str) -> str:
        """Activate the LoRAs of the current use (``default_use`` when no caller named one)
        and return ``prompt`` with their trigger words."""
        if self.loras is None:
            return prompt
        use = self._use or default_use
        self.loras.activate(use)
        return self.loras.prompt(prompt, use)

    def sds_size(self) -> tuple[int, int, int]:
        """SDS works at ``sds_height x sds_width`` (config), sizes multiples of the model's
        spatial multiple (VAE stride x patch). ``cameras``/``times`` given to ``predict_x0``
        are accepted and unused (these models are not camera-conditioned)."""
        return self.sds_height, self.sds_width, int(self.spatial_multiple)

    def _gen_shape(self, n: int, h: int, w: int) -> tuple[int, int, int]:
        return round_frames(n, self.temporal_ratio), round_up(h, self.spatial_multiple), round_up(w, self.spatial_multiple)

    def _pipe_kwargs(self, prompt: str, n: int, h: int, w: int, seed: int) -> dict:
        """The keyword arguments every text-to-video call of a diffusers pipeline takes
        (prompt, negative prompt, size, steps, guidance, a seeded CPU generator, tensor output)."""
        return dict(prompt=prompt, negative_prompt=self.cfg.negative_prompt or None, height=h, width=w, num_frames=n,
                    num_inference_steps=self.cfg.num_inference_steps, guidance_scale=self.cfg.guidance_scale,
                    generator=torch.Generator(device="cpu").manual_seed(int(seed)), output_type="pt",
                    max_sequence_length=self.cfg.max_sequence_length)

    def _cached(self, key, fn):
        if key not in self._embeds:
            if len(self._embeds) >= 8:
                self._embeds.pop(next(iter(self._embeds)))
            self._embeds[key] = fn()
        return self._embeds[key]

    @staticmethod
    def _noise_level(noise_level) -> float:
        t = float(torch.as_tensor(noise_level).float().mean())
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"noise_level must be a diffusion time in [0,1], got {t}")
        return t

    def _prep_frames(self, frames: torch.Tensor, known) -> tuple[torch.Tensor, dict, int, int, int]:
        """Resize/pad clean frames to the model grid: ``(frames [F',h,w,3], known, F, H, W)``."""
        frames = frames.detach().float().cpu()
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"predict_x0 expects [F,H,W,3] frames, got {tuple(frames.shape)}")
        F_, H, W, _ = frames.shape
        n, h, w = self._gen_shape(F_, H, W)
        x = resize_frames(frames, h, w)
        if n > F_:  # pad by repeating the last frame
            x = torch.cat([x, x[-1:].expand(n - F_, h, w, 3)], dim=0)
        known = {i: resize_frames(img[None], h, w)[0] for i, img in check_known(known, F_).items()}
        return x, known, F_, H, W

    def _finish(self, x0: torch.Tensor, F_: int, H: int, W: int, known, out_device) -> torch.Tensor:
        out = resize_frames(x0[:F_].float().cpu(), H, W)
        out = paste(out, {i: img for i, img in check_known(known, F_).items()})
        return out.to(out_device)
