"""The ``ltx`` video prior: LTX-Video through diffusers (shared plumbing: :mod:`.base`)."""

from __future__ import annotations

import math

import torch

from fourreal_core.types import Video
from fourreal_media import resize_frames

from .base import DiffusersPrior, check_known, from_pixels, load_pipeline, on_device, paste, pipe_frames, place, sample_latents, to_pixels


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
