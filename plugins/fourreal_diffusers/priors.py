"""diffusers-based video priors: ``ltx``, ``wan``, ``cogvideox``.

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
import math
import json
import logging
import weakref
from pathlib import Path
from typing import Mapping, Optional

import torch

from fourreal_core.run import resolve_device
from fourreal_core.errors import FourRealError, InputError
from fourreal_core.interfaces import VideoPrior
from fourreal_core.types import Video
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


# ----------------------------------------------------------------------------------- LTX
def ltx_condition_plan(known_indices, r: int = 4) -> list[tuple[int, int]]:
    """How LTXConditionPipeline can hold known frames as firmly as it allows:
    ``[(frame_index, num_frames)]``, one condition each.

    Hard (in place, never denoised): a video condition at frame 0 puts all its latent
    frames in place, so a run of known frames starting at 0 goes in as one video of its
    longest ``r*k+1`` prefix; a video condition at ``f > 0`` (``f`` a multiple of ``r``, so
    latents align) puts all but its first two latent frames in place (those become keyframe
    tokens), worth it for runs of at least ``2r+1`` frames. Soft: every other known frame is
    a single-image keyframe condition at its own index (extra tokens placed there)."""
    idx = sorted(set(int(i) for i in known_indices))
    runs, cur = [], []
    for i in idx:
        if cur and i == cur[-1] + 1:
            cur.append(i)
        else:
            if cur:
                runs.append(cur)
            cur = [i]
    if cur:
        runs.append(cur)
    plan: list[tuple[int, int]] = []
    for run in runs:
        a, b = run[0], run[-1]
        f = a if a == 0 else -(-a // r) * r
        length = b - f + 1
        k = (length - 1) // r if length >= 1 else -1
        if (f == 0 and k >= 1) or (f > 0 and k >= 2):
            n = k * r + 1
            plan += [(i, 1) for i in range(a, f)]
            plan.append((f, n))
            plan += [(i, 1) for i in range(f + n, b + 1)]
        else:
            plan += [(i, 1) for i in run]
    return sorted(plan)


class LTXPrior(DiffusersPrior):
    """LTX-Video (LTXConditionPipeline). Conditioning: known frames at any indices.

    Known frames are held as firmly as the pipeline allows (:func:`ltx_condition_plan`): a
    run starting at frame 0 (a forward freeze-time window's context) is a video condition
    whose latent frames are replaced by the encoded frames and never denoised (they come
    back as their VAE round trip when ``image_cond_noise_scale`` is 0); the frames past its
    ``4k+1`` prefix, and isolated known frames, are keyframe conditions (extra tokens at
    their own index: soft). Context at the end of a window is soft in LTX, so the
    freeze-time extension hands LTX its backward windows time-reversed
    (``context_at_start = True``): every window's context is then at its start.
    """

    #: freeze-time extension: give this prior its context at the start of a window
    context_at_start = True

    what = "LTX-Video (LTXConditionPipeline)"
    example = "Lightricks/LTX-Video-0.9.5"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.pipe = load_pipeline(cfg.model_path, ("LTXConditionPipeline", "LTXPipeline", "LTXImageToVideoPipeline"),
                                  self.what, self.example, self.dtype)
        if type(self.pipe).__name__ != "LTXConditionPipeline":  # same components, the condition pipeline
            from diffusers import LTXConditionPipeline

            self.pipe = LTXConditionPipeline(**{k: getattr(self.pipe, k) for k in
                                                ("scheduler", "vae", "text_encoder", "tokenizer", "transformer")})
            self.pipe.set_progress_bar_config(disable=True)
        self._setup_loras([self.pipe])
        self.device = place(self.pipe, cfg)
        self.temporal_ratio = int(self.pipe.vae_temporal_compression_ratio)
        stride = int(self.pipe.vae_spatial_compression_ratio) * int(self.pipe.transformer_spatial_patch_size)
        self.spatial_multiple = stride * 32 // math.gcd(stride, 32)  # the pipeline demands /32

    def generate(self, prompt, num_frames, height, width, known_frames=None, seed=0) -> Video:
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        known = check_known(known_frames, num_frames)
        prompt = self._lora("freeze_time" if known else "reference", prompt)
        n, h, w = self._gen_shape(num_frames, height, width)
        conds = []
        for f, m in ltx_condition_plan(known, self.temporal_ratio):
            clip = resize_frames(torch.stack([known[f + j] for j in range(m)]), h, w).permute(0, 3, 1, 2)  # [m,3,h,w]
            if m == 1:
                conds.append(LTXVideoCondition(image=clip, frame_index=f, strength=1.0))
            else:
                conds.append(LTXVideoCondition(video=clip[None], frame_index=f, strength=1.0))
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        out = self.pipe(
            conditions=conds or None, prompt=prompt, negative_prompt=self.cfg.negative_prompt, height=h, width=w,
            num_frames=n, frame_rate=self.cfg.frame_rate, num_inference_steps=self.cfg.num_inference_steps,
            guidance_scale=self.cfg.guidance_scale, image_cond_noise_scale=self.cfg.image_cond_noise_scale,
            decode_timestep=self.cfg.decode_timestep, decode_noise_scale=self.cfg.decode_noise_scale,
            generator=gen, output_type="pt", max_sequence_length=self.cfg.max_sequence_length,
        )
        frames = resize_frames(pipe_frames(out)[:num_frames], height, width)
        if self.cfg.paste_known:
            frames = paste(frames, known)
        return Video(frames.contiguous(), fps=float(self.cfg.frame_rate))

    def _prompt_embeds(self, prompt: str, cfg_on: bool):
        def enc():
            with torch.no_grad():
                pe, pm, ne, nm = self.pipe.encode_prompt(
                    prompt=prompt, negative_prompt=self.cfg.negative_prompt, do_classifier_free_guidance=cfg_on,
                    max_sequence_length=self.cfg.max_sequence_length, device=self.device,
                )
            if cfg_on:
                return torch.cat([ne, pe]), torch.cat([nm, pm])
            return pe, pm

        return self._cached((prompt, cfg_on), enc)

    @torch.no_grad()
    def predict_x0(self, noisy, noise_level, known_frames=None, prompt="", generator=None, cameras=None, times=None):
        from .lora import sds_use

        prompt = self._lora(sds_use(cameras, times), prompt)
        pipe, dev = self.pipe, self.device
        sigma = self._noise_level(noise_level)
        x, known, F_, H, W = self._prep_frames(noisy, known_frames)
        n, h, w = x.shape[0], x.shape[1], x.shape[2]
        vae = pipe.vae
        off = self.cfg.cpu_offload and dev.type == "cuda"
        with on_device(vae, dev, off):
            lat = sample_latents(vae.encode(to_pixels(x, dev, vae.dtype)), generator).float()
            lat = pipe._normalize_latents(lat, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
            cond_tensors = [to_pixels(img[None], dev, vae.dtype) for _, img in sorted(known.items())]
            g = generator  # diffusers' randn_tensor accepts a CPU generator for any device
            latents, cmask, video_ids, n_extra = pipe.prepare_latents(
                cond_tensors, [1.0] * len(cond_tensors), [i for i, _ in sorted(known.items())], batch_size=1,
                num_channels_latents=pipe.transformer.config.in_channels, height=h, width=w, num_frames=n,
                sigma=torch.tensor(sigma), latents=lat, generator=g, device=dev, dtype=torch.float32,
            )
        cfg_on = self.cfg.x0_guidance_scale != 1.0
        pe, pm = self._prompt_embeds(prompt, cfg_on)
        coords = video_ids.float()
        coords[:, 0] = coords[:, 0] * (1.0 / self.cfg.frame_rate)
        t = torch.full((1, 1), sigma * 1000.0, device=dev)
        if cmask is not None:
            t = torch.minimum(t, (1.0 - cmask) * 1000.0)  # conditioning tokens are clean
        reps = 2 if cfg_on else 1
        with on_device(pipe.transformer, dev, off):
            v = pipe.transformer(
                hidden_states=latents.repeat(reps, 1, 1).to(pe.dtype), encoder_hidden_states=pe,
                timestep=t.expand(reps, t.shape[1]).float(), encoder_attention_mask=pm,
                video_coords=coords.repeat(reps, 1, 1), return_dict=False,
            )[0].float()
        if cfg_on:
            vu, vc = v.chunk(2)
            v = vu + self.cfg.x0_guidance_scale * (vc - vu)
        sig_tok = (t / 1000.0)[..., None] if t.shape[1] > 1 else torch.tensor(sigma, device=dev)
        x0_tok = latents - sig_tok * v
        x0_tok = x0_tok[:, n_extra:]
        lat_f = (n - 1) // pipe.vae_temporal_compression_ratio + 1
        x0 = pipe._unpack_latents(x0_tok, lat_f, h // pipe.vae_spatial_compression_ratio,
                                  w // pipe.vae_spatial_compression_ratio, pipe.transformer_spatial_patch_size,
                                  pipe.transformer_temporal_patch_size)
        x0 = pipe._denormalize_latents(x0, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        with on_device(vae, dev, off):
            temb = None
            if vae.config.timestep_conditioning:
                temb = torch.tensor([self.cfg.decode_timestep], device=dev, dtype=vae.dtype)
            video = vae.decode(x0.to(vae.dtype), temb, return_dict=False)[0]
        return self._finish(from_pixels(video), F_, H, W, known_frames, noisy.device)


# ----------------------------------------------------------------------------------- Wan
class WanPrior(DiffusersPrior):
    """Wan (WanPipeline / WanVACEPipeline / WanImageToVideoPipeline, from the folder)."""

    what = "Wan (WanPipeline / WanVACEPipeline / WanImageToVideoPipeline)"
    example = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.pipe = load_pipeline(cfg.model_path, ("WanPipeline", "WanVACEPipeline", "WanImageToVideoPipeline"),
                                  self.what, self.example, self.dtype)
        self.kind = type(self.pipe).__name__
        self._setup_loras([self.pipe])
        self.device = place(self.pipe, cfg)
        self.temporal_ratio = int(self.pipe.vae_scale_factor_temporal)
        tr = self.pipe.transformer if self.pipe.transformer is not None else self.pipe.transformer_2
        self.spatial_multiple = int(self.pipe.vae_scale_factor_spatial) * int(tr.config.patch_size[1])
        self._warned = False

    def _latent_stats(self, dev):
        zc = self.pipe.vae.config
        mean = torch.tensor(zc.latents_mean, device=dev).view(1, zc.z_dim, 1, 1, 1)
        std = torch.tensor(zc.latents_std, device=dev).view(1, zc.z_dim, 1, 1, 1)
        return mean, std

    def generate(self, prompt, num_frames, height, width, known_frames=None, seed=0) -> Video:
        from PIL import Image

        from fourreal_media import to_uint8

        known = check_known(known_frames, num_frames)
        prompt = self._lora("freeze_time" if known else "reference", prompt)
        n, h, w = self._gen_shape(num_frames, height, width)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        common = dict(prompt=prompt, negative_prompt=self.cfg.negative_prompt or None, height=h, width=w, num_frames=n,
                      num_inference_steps=self.cfg.num_inference_steps, guidance_scale=self.cfg.guidance_scale,
                      generator=gen, output_type="pt", max_sequence_length=self.cfg.max_sequence_length)

        def pil(img):
            return Image.fromarray(to_uint8(resize_frames(img[None], h, w)[0]))

        if self.kind == "WanVACEPipeline":
            if known:
                grey = Image.new("RGB", (w, h), (128, 128, 128))
                video = [pil(known[i]) if i in known else grey for i in range(n)]
                mask = [Image.new("L", (w, h), 0 if i in known else 255) for i in range(n)]
                out = self.pipe(video=video, mask=mask, **common)
            else:
                out = self.pipe(**common)
        elif self.kind == "WanImageToVideoPipeline":
            bad = [i for i in known if i not in (0, num_frames - 1)]
            if 0 not in known or bad:
                raise FourRealError(
                    f"{self.cfg.model_path}: a Wan image-to-video checkpoint conditions on the first frame (and "
                    f"optionally the last) only, got known frames {sorted(known)}; use a VACE checkpoint "
                    "(WanVACEPipeline) for known frames at other positions"
                )
            last = pil(known[num_frames - 1]) if num_frames - 1 in known and num_frames > 1 else None
            if last is not None and n != num_frames:
                raise FourRealError(f"Wan I2V: a known last frame needs num_frames of the form 4k+1, got {num_frames}")
            out = self.pipe(image=pil(known[0]), last_image=last, **common)
        else:
            if known:
                raise FourRealError(
                    f"{self.cfg.model_path}: this Wan checkpoint (WanPipeline) is text-to-video only and cannot "
                    f"condition on known frames {sorted(known)}; use a VACE checkpoint (e.g. "
                    "Wan-AI/Wan2.1-VACE-1.3B-diffusers) or another prior"
                )
            out = self.pipe(**common)
        frames = resize_frames(pipe_frames(out)[:num_frames], height, width)
        if self.cfg.paste_known:
            frames = paste(frames, known)
        return Video(frames.contiguous(), fps=16.0)

    def _prompt_embeds(self, prompt: str, cfg_on: bool):
        def enc():
            with torch.no_grad():
                pe, ne = self.pipe.encode_prompt(
                    prompt=prompt, negative_prompt=self.cfg.negative_prompt, do_classifier_free_guidance=cfg_on,
                    max_sequence_length=self.cfg.max_sequence_length, device=self.device,
                )
            return (pe, ne)

        return self._cached((prompt, cfg_on), enc)

    @torch.no_grad()
    def predict_x0(self, noisy, noise_level, known_frames=None, prompt="", generator=None, cameras=None, times=None):
        from .lora import sds_use

        prompt = self._lora(sds_use(cameras, times), prompt)
        pipe, dev = self.pipe, self.device
        if self.kind == "WanImageToVideoPipeline":
            raise FourRealError(
                f"{self.cfg.model_path}: SDS (predict_x0) with a Wan image-to-video checkpoint is not supported; use a "
                "VACE checkpoint (WanVACEPipeline) or a text-to-video one"
            )
        sigma = self._noise_level(noise_level)
        x, known, F_, H, W = self._prep_frames(noisy, known_frames)
        n, h, w = x.shape[:3]
        vae = pipe.vae
        off = self.cfg.cpu_offload and dev.type == "cuda"
        mean, std = self._latent_stats(dev)
        with on_device(vae, dev, off):
            lat = sample_latents(vae.encode(to_pixels(x, dev, vae.dtype)), generator).float()
            lat = (lat - mean) / std
            control = None
            if self.kind == "WanVACEPipeline":
                video = torch.zeros(1, 3, n, h, w, device=dev)
                mask = torch.ones(1, 3, n, h, w, device=dev)
                for i, img in known.items():
                    video[0, :, i] = img.permute(2, 0, 1).to(dev) * 2.0 - 1.0
                    mask[0, :, i] = 0.0
                g = generator
                control = pipe.prepare_video_latents(video, mask, [[]], g, dev)
                control = torch.cat([control, pipe.prepare_masks(mask, [[]], g)], dim=1)
            elif known and not self._warned:
                log.warning("%s: text-to-video Wan checkpoint: known frames cannot condition predict_x0 "
                            "(they are only pasted into the output)", self.cfg.model_path)
                self._warned = True
        eps = randn(lat.shape, generator, dev)
        x_t = (1.0 - sigma) * lat + sigma * eps
        cfg_on = self.cfg.x0_guidance_scale != 1.0
        pe, ne = self._prompt_embeds(prompt, cfg_on)
        tr = pipe.transformer
        ts = torch.full((1,), sigma * 1000.0, device=dev)
        kwargs = {}
        if control is not None:
            kwargs = {"control_hidden_states": control.to(tr.dtype),
                      "control_hidden_states_scale": torch.ones(len(tr.config.vace_layers), device=dev)}
        with on_device(tr, dev, off):
            v = tr(hidden_states=x_t.to(tr.dtype), timestep=ts, encoder_hidden_states=pe, return_dict=False,
                   **kwargs)[0].float()
            if cfg_on:
                vu = tr(hidden_states=x_t.to(tr.dtype), timestep=ts, encoder_hidden_states=ne, return_dict=False,
                        **kwargs)[0].float()
                v = vu + self.cfg.x0_guidance_scale * (v - vu)
        x0 = (x_t - sigma * v) * std + mean
        with on_device(vae, dev, off):
            video = vae.decode(x0.to(vae.dtype), return_dict=False)[0]
        return self._finish(from_pixels(video), F_, H, W, known_frames, noisy.device)


# ----------------------------------------------------------------------------- CogVideoX
class CogVideoXPrior(DiffusersPrior):
    """CogVideoX: text-to-video (CogVideoXPipeline) and first-frame image-to-video
    (CogVideoXImageToVideoPipeline). Known frames at other indices are an error."""

    what = "CogVideoX (CogVideoXPipeline / CogVideoXImageToVideoPipeline)"
    example = "THUDM/CogVideoX-5b"
    #: first frame only: the freeze-time extension reverses backward windows (overlap 1)
    context_at_start = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        allowed = ("CogVideoXPipeline", "CogVideoXImageToVideoPipeline")
        self.t2v = self.i2v = None
        for path in filter(None, (cfg.model_path, cfg.i2v_model_path)):
            pipe = load_pipeline(path, allowed, self.what, self.example, self.dtype)
            if type(pipe).__name__ == "CogVideoXPipeline":
                self.t2v = pipe
            else:
                self.i2v = pipe
        self._setup_loras([self.t2v, self.i2v])
        self.device = None
        for pipe in (self.t2v, self.i2v):
            if pipe is not None:
                self.device = place(pipe, cfg)
        ref = self.t2v or self.i2v
        self.temporal_ratio = int(ref.vae_scale_factor_temporal)
        self.spatial_multiple = int(ref.vae_scale_factor_spatial) * int(ref.transformer.config.patch_size)

    def _pipe(self, known: dict):
        if known:
            bad = sorted(i for i in known if i != 0)
            if bad:
                raise FourRealError(
                    f"CogVideoX conditions on the first frame only (CogVideoXImageToVideoPipeline); got known frames "
                    f"at {bad}. Use the ltx, wan (VACE) or masked prior for known frames at other positions (for "
                    "freeze-time extension with CogVideoX set freeze_overlap: 1)"
                )
            if self.i2v is None:
                raise FourRealError(
                    f"{self.cfg.model_path}: a known first frame needs a CogVideoX image-to-video checkpoint; set "
                    "i2v_model_path (e.g. a local copy of THUDM/CogVideoX-5b-I2V)"
                )
            return self.i2v
        if self.t2v is None:
            raise FourRealError(
                f"{self.cfg.model_path}: holds only a CogVideoX image-to-video checkpoint; text-to-video (no known "
                "frame) needs a CogVideoXPipeline folder as model_path"
            )
        return self.t2v

    def generate(self, prompt, num_frames, height, width, known_frames=None, seed=0) -> Video:
        known = check_known(known_frames, num_frames)
        pipe = self._pipe(known)
        prompt = self._lora("freeze_time" if known else "reference", prompt)
        n, h, w = self._gen_shape(num_frames, height, width)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        kwargs = dict(prompt=prompt, negative_prompt=self.cfg.negative_prompt or None, height=h, width=w, num_frames=n,
                      num_inference_steps=self.cfg.num_inference_steps, guidance_scale=self.cfg.guidance_scale,
                      generator=gen, output_type="pt", max_sequence_length=self.cfg.max_sequence_length)
        if known:
            kwargs["image"] = resize_frames(known[0][None], h, w)[0].permute(2, 0, 1)[None]
        out = pipe(**kwargs)
        frames = resize_frames(pipe_frames(out)[:num_frames], height, width)
        if self.cfg.paste_known:
            frames = paste(frames, known)
        return Video(frames.contiguous(), fps=8.0)

    @torch.no_grad()
    def predict_x0(self, noisy, noise_level, known_frames=None, prompt="", generator=None, cameras=None, times=None):
        from .lora import sds_use

        prompt = self._lora(sds_use(cameras, times), prompt)
        t = self._noise_level(noise_level)
        x, known, F_, H, W = self._prep_frames(noisy, known_frames)
        pipe = self._pipe(known)
        dev = self.device
        n, h, w = x.shape[:3]
        vae, tr, sch = pipe.vae, pipe.transformer, pipe.scheduler
        off = self.cfg.cpu_offload and dev.type == "cuda"
        sf = pipe.vae_scaling_factor_image
        with on_device(vae, dev, off):
            lat = sample_latents(vae.encode(to_pixels(x, dev, vae.dtype)), generator).float() * sf
            lat = lat.permute(0, 2, 1, 3, 4)  # [B,F,C,h,w]
            image_latents = None
            if known:  # as CogVideoXImageToVideoPipeline.prepare_latents, with our generator
                il = sample_latents(vae.encode(to_pixels(known[0][None], dev, vae.dtype)), generator).float()
                il = il.permute(0, 2, 1, 3, 4)  # [1,1,C,h,w]
                il = il / sf if vae.config.invert_scale_latents else il * sf
                image_latents = torch.cat([il, torch.zeros_like(lat[:, 1:])], dim=1)
        pt = tr.config.patch_size_t
        pad = 0
        if pt is not None and lat.shape[1] % pt:  # CogVideoX 1.5: latent frames divisible by patch_size_t
            pad = pt - lat.shape[1] % pt
            lat = torch.cat([lat, lat[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
            if image_latents is not None:
                image_latents = torch.cat([image_latents, torch.zeros_like(image_latents[:, :pad])], dim=1)
        T = int(sch.config.num_train_timesteps)
        tau = int(round(t * (T - 1)))
        ab = sch.alphas_cumprod[tau].to(dev).float()
        eps = randn(lat.shape, generator, dev)
        x_t = ab.sqrt() * lat + (1 - ab).sqrt() * eps
        inp = x_t
        if image_latents is not None:
            inp = torch.cat([x_t, image_latents], dim=2)
        cfg_on = self.cfg.x0_guidance_scale != 1.0

        def enc():
            pe, ne = pipe.encode_prompt(prompt=prompt, negative_prompt=self.cfg.negative_prompt,
                                        do_classifier_free_guidance=cfg_on,
                                        max_sequence_length=self.cfg.max_sequence_length, device=dev)
            return torch.cat([ne, pe]) if cfg_on else pe

        pe = self._cached((id(pipe), prompt, cfg_on), enc)
        rot = (pipe._prepare_rotary_positional_embeddings(h, w, inp.shape[1], dev)
               if tr.config.use_rotary_positional_embeddings else None)
        ofs = None if getattr(tr.config, "ofs_embed_dim", None) is None else inp.new_full((1,), 2.0)
        reps = 2 if cfg_on else 1
        with on_device(tr, dev, off):
            out = tr(hidden_states=inp.repeat(reps, 1, 1, 1, 1).to(pe.dtype), encoder_hidden_states=pe,
                     timestep=torch.full((reps,), tau, device=dev, dtype=torch.long), ofs=ofs,
                     image_rotary_emb=rot, return_dict=False)[0].float()
        if cfg_on:
            ou, oc = out.chunk(2)
            out = ou + self.cfg.x0_guidance_scale * (oc - ou)
        if sch.config.prediction_type == "v_prediction":
            x0 = ab.sqrt() * x_t - (1 - ab).sqrt() * out
        elif sch.config.prediction_type == "epsilon":
            x0 = (x_t - (1 - ab).sqrt() * out) / ab.sqrt().clamp(min=1e-4)
        else:
            x0 = out
        if pad:
            x0 = x0[:, : x0.shape[1] - pad]
        with on_device(vae, dev, off):
            video = pipe.decode_latents(x0.to(vae.dtype))
        return self._finish(from_pixels(video), F_, H, W, known_frames, noisy.device)
