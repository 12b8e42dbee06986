"""The ``wan`` video prior: Wan 2.1 (VACE for known frames) through diffusers (shared plumbing: :mod:`.base`)."""

from __future__ import annotations


import torch

from fourreal_core.errors import FourRealError
from fourreal_core.types import Video
from fourreal_media import resize_frames

from .base import DiffusersPrior, check_known, from_pixels, load_pipeline, log, on_device, paste, pipe_frames, place, randn, sample_latents, to_pixels


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
        common = self._pipe_kwargs(prompt, n, h, w, seed)

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
