"""The ``cogvideox`` video prior: CogVideoX through diffusers (shared plumbing: :mod:`.base`)."""

from __future__ import annotations


import torch

from fourreal_core.errors import FourRealError
from fourreal_core.types import Video
from fourreal_media import resize_frames

from .base import DiffusersPrior, check_known, from_pixels, load_pipeline, on_device, paste, pipe_frames, place, randn, sample_latents, to_pixels


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
        kwargs = self._pipe_kwargs(prompt, n, h, w, seed)
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
