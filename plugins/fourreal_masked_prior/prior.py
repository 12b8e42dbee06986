"""The ``masked`` video prior: checkpoint I/O, generation with known frames, one-step x0.

Checkpoint layout (a folder; ``checkpoint:`` may name the folder or its
``model.safetensors``)::

    config.json          {"format": "fourreal-masked-prior", "version": 1,
                          "model": {MaskedModelConfig fields}, "has_ema": bool, "train": {...}}
    model.safetensors    "model.<param>" (raw weights) and, with EMA, "ema.<param>"

Noise level (``predict_x0``): the flow-matching diffusion time ``t`` in [0,1] (0 clean,
1 pure noise), ``x_t = (1 - t) x0 + t eps`` with frames scaled to [-1,1].
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from fourreal_core.run import resolve_device
from fourreal_core.errors import InputError
from fourreal_core.interfaces import VideoPrior
from fourreal_core.types import Video
from fourreal_media import resize_frames

from .configs import MaskedModelConfig, MaskedPriorConfig
from .model import MaskedVideoTransformer, tokenize

FORMAT = "fourreal-masked-prior"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def _model_config(d: Mapping) -> MaskedModelConfig:
    names = {f.name for f in fields(MaskedModelConfig)}
    return MaskedModelConfig(**{k: v for k, v in d.items() if k in names})


def save_checkpoint(
    folder: Union[str, Path],
    model: MaskedVideoTransformer,
    ema: Optional[MaskedVideoTransformer] = None,
    train_info: Optional[dict] = None,
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``folder`` (atomically each)."""
    from fourreal_core.io import save_tensors, write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    save_tensors(folder / WEIGHTS, tensors, {"format": FORMAT})
    write_json(
        folder / CONFIG,
        {"format": FORMAT, "version": 1, "model": asdict(model.cfg), "has_ema": ema is not None,
         "train": dict(train_info or {})},
    )
    return folder


def checkpoint_folder(path: Union[str, Path]) -> Path:
    """The checkpoint folder for ``path`` (the folder itself or its ``model.safetensors``)."""
    p = Path(path).expanduser()
    folder = p.parent if p.is_file() else p
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise InputError(
            f"{p}: not a masked-prior checkpoint (needs {CONFIG} and {WEIGHTS}); train one with "
            f"`fourreal train-prior VIDEOS_DIR --out DIR` and point the recipe at it with "
            f"--set <...>.prior.params.checkpoint=DIR"
        )
    return folder


def load_checkpoint(
    path: Union[str, Path], use_ema: bool = True, device: Union[str, torch.device] = "cpu"
) -> tuple[MaskedVideoTransformer, dict]:
    """Rebuild the network from a checkpoint. Returns ``(model in eval mode, config.json dict)``."""
    from fourreal_core.io import load_tensors

    folder = checkpoint_folder(path)
    meta = json.loads((folder / CONFIG).read_text())
    if meta.get("format") != FORMAT:
        raise InputError(f"{folder / CONFIG}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    model = MaskedVideoTransformer(_model_config(meta.get("model", {})))
    tensors, _ = load_tensors(folder / WEIGHTS)
    prefix = "ema." if use_ema and meta.get("has_ema") else "model."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1,1] -> [0,1] (clamped)."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


class MaskedPrior(VideoPrior):
    """A trained :class:`MaskedVideoTransformer` as a :class:`VideoPrior`.

    ``num_frames/height/width`` are the trained (native) clip shape.
    """

    conditions = frozenset({"cameras", "times"})  # predict_x0 takes where and when each frame was rendered

    def __init__(self, model: MaskedVideoTransformer, cfg: Optional[MaskedPriorConfig] = None) -> None:
        self.cfg = cfg or MaskedPriorConfig()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.num_frames = model.cfg.num_frames
        self.height = model.cfg.height
        self.width = model.cfg.width

    @classmethod
    def from_checkpoint(cls, cfg: MaskedPriorConfig) -> "MaskedPrior":
        model, _ = load_checkpoint(cfg.checkpoint, use_ema=cfg.use_ema, device=resolve_device(cfg.device))
        return cls(model, cfg)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "MaskedPrior":
        self.model.to(device)
        return self

    def sds_size(self) -> tuple[int, int, int]:
        """SDS works at the trained clip size (the paper's low-resolution stage: 36x64),
        smaller sizes in multiples of the patch."""
        return self.height, self.width, int(self.model.cfg.patch)

    # ------------------------------------------------------------------ internals
    def _work_size(self, height: int, width: int) -> tuple[int, int]:
        p = self.model.cfg.patch
        return max(p, -(-height // p) * p), max(p, -(-width // p) * p)

    def _conditioning(
        self, known_frames: Optional[Mapping[int, torch.Tensor]], num_frames: int, h: int, w: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``known [1,F,h,w,3]`` in [-1,1] and ``mask [1,F]`` from ``{index: [H,W,3]}``."""
        dev = self.device
        known = torch.zeros(1, num_frames, h, w, 3, device=dev)
        mask = torch.zeros(1, num_frames, device=dev)
        for idx, img in (known_frames or {}).items():
            i = int(idx)
            if not -num_frames <= i < num_frames:
                raise ValueError(f"known frame index {i} is outside a {num_frames}-frame video")
            i %= num_frames
            img = torch.as_tensor(img, dtype=torch.float32, device=dev).detach()
            if img.ndim != 3 or img.shape[-1] != 3:
                raise ValueError(f"known frame {i} must be [H,W,3], got {tuple(img.shape)}")
            known[0, i] = resize_frames(img[None], h, w)[0] * 2.0 - 1.0
            mask[0, i] = 1.0
        return known, mask

    def _velocity(self, x_t, known, mask, t: float, ids, ids_null, guidance: float) -> torch.Tensor:
        tt = torch.full((x_t.shape[0],), float(t), device=x_t.device)
        if guidance == 1.0 or ids_null is None:
            return self.model(x_t, known, mask, tt, ids)
        v = self.model(
            torch.cat([x_t, x_t]), torch.cat([known, known]), torch.cat([mask, mask]),
            torch.cat([tt, tt]), torch.cat([ids, ids_null]),
        )
        v_c, v_u = v.chunk(2)
        return v_u + guidance * (v_c - v_u)

    # ------------------------------------------------------------------ VideoPrior
    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        num_frames: int,
        height: int,
        width: int,
        known_frames: Optional[Mapping[int, torch.Tensor]] = None,
        seed: int = 0,
    ) -> Video:
        """Sample ``[num_frames, height, width, 3]`` with the Euler sampler of the flow ODE
        (``num_inference_steps`` steps from t=1 to t=0). Known frames condition the model at
        their indices and are written into the output exactly."""
        h, w = self._work_size(height, width)
        known, mask = self._conditioning(known_frames, num_frames, h, w)
        dev = self.device
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        x = torch.randn(1, num_frames, h, w, 3, generator=gen).to(dev)
        cfgm = self.model.cfg
        ids = tokenize([prompt], cfgm.text_vocab, cfgm.text_len, device=dev)
        ids_null = tokenize([""], cfgm.text_vocab, cfgm.text_len, device=dev) if self.cfg.guidance_scale != 1.0 else None
        steps = max(1, int(self.cfg.num_inference_steps))
        ts = torch.linspace(1.0, 0.0, steps + 1).tolist()
        for t, t_next in zip(ts[:-1], ts[1:]):
            v = self._velocity(x, known, mask, t, ids, ids_null, self.cfg.guidance_scale)
            x = x + (t_next - t) * v
        out = resize_frames(_to_unit(x[0]), height, width)
        out = self._paste(out, known_frames, height, width)
        return Video(out.float().cpu().contiguous(), fps=8.0)

    @torch.no_grad()
    def predict_x0(
        self,
        noisy: torch.Tensor,
        noise_level: "torch.Tensor | float",
        known_frames: Optional[Mapping[int, torch.Tensor]] = None,
        prompt: str = "",
        generator: Optional[torch.Generator] = None,
        cameras=None,
        times=None,
    ) -> torch.Tensor:
        """One-step x0 of frames ``noisy`` ``[F,H,W,3]`` in [0,1] (clean renders: the noise is
        added here): ``x_t = (1-t) x + t eps``, ``x0 = x_t - t v``. ``noise_level`` is the
        flow time ``t`` in [0,1]. Returns ``[F,H,W,3]`` in [0,1] (detached); known frames
        are returned exactly. ``generator`` (CPU) draws ``eps`` (deterministic per seed).
        Classifier-free guidance with ``x0_guidance_scale`` (1: the conditional prediction
        alone, one network call). ``cameras``/``times`` are accepted and unused (the model is
        not camera-conditioned)."""
        frames = noisy.detach().float()
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"predict_x0 expects [F,H,W,3] frames, got {tuple(frames.shape)}")
        t = float(torch.as_tensor(noise_level).float().mean())
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"noise_level must be a flow time in [0,1], got {t}")
        Fr, H, W, _ = frames.shape
        h, w = self._work_size(H, W)
        dev = self.device
        x0 = resize_frames(frames.to(dev), h, w)[None] * 2.0 - 1.0
        eps = torch.randn(x0.shape, generator=generator, device="cpu" if generator is None else generator.device)
        eps = eps.to(dev)
        x_t = (1.0 - t) * x0 + t * eps
        known, mask = self._conditioning(known_frames, Fr, h, w)
        cfgm = self.model.cfg
        ids = tokenize([prompt], cfgm.text_vocab, cfgm.text_len, device=dev)
        g = self.cfg.x0_guidance_scale
        ids_null = tokenize([""], cfgm.text_vocab, cfgm.text_len, device=dev) if g != 1.0 else None
        v = self._velocity(x_t, known, mask, t, ids, ids_null, g)
        pred = resize_frames(_to_unit(x_t - t * v)[0], H, W)
        return self._paste(pred, known_frames, H, W).to(noisy.device)

    @staticmethod
    def _paste(frames: torch.Tensor, known_frames, height: int, width: int) -> torch.Tensor:
        """Write known frames (resized to ``height x width``) into ``frames`` ``[F,H,W,3]``."""
        if not known_frames:
            return frames
        frames = frames.clone()
        for idx, img in known_frames.items():
            img = torch.as_tensor(img, dtype=torch.float32).detach().to(frames.device)
            frames[int(idx) % frames.shape[0]] = resize_frames(img[None], height, width)[0].clamp(0.0, 1.0)
        return frames
