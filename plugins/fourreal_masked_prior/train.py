"""Training the masked video prior (paper Appendix A): ``train_prior(videos_dir, out_dir, cfg)``.

Data: every video file (mp4, mov, webm, ...) and every folder of frames directly inside
``videos_dir`` (read with :func:`fourreal_media.read_video`), centre-cropped to the
model's aspect ratio and resized to its ``height x width``. Prompts come from
``videos_dir/prompts.json`` (``{"name or file name": "prompt"}``), else a sidecar
``NAME.txt``, else the empty prompt. Each step samples random clips of ``num_frames``
frames with a random temporal stride in ``[1, max_stride]`` and random horizontal flips.

Masking (one strategy per batch element, probabilities from :class:`MaskingConfig`):

* unconditional (0.6): no known frame;
* Bernoulli (0.3): each frame known with probability 1/F (on average one);
* interpolation (0.075): frames at a regular interval ``k`` (random in [2, F-1], random
  phase) known;
* extension (0.075): the first ``F - N`` frames known, the last ``N`` (random in
  [1, F-1]) masked -- mirrored (last frames known) half of the time, because freeze-time
  generation extends videos backwards as well as forwards.

Objective: rectified flow, ``x_t = (1-t) x0 + t eps`` with ``t`` logit-normal(0, 1);
MSE between the predicted and true velocity ``eps - x0`` on the unknown frames.

Outputs in ``out_dir``: ``config.json`` + ``model.safetensors`` (EMA and raw weights,
see :mod:`.prior`), ``train_state.safetensors`` (optimizer etc.: rerunning the same command
resumes), ``train_log.jsonl`` (one line per ``log_every`` steps).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Union

import torch

from fourreal_core.errors import InputError

from .configs import MaskedModelConfig, MaskingConfig, TrainPriorConfig  # noqa: F401 (re-exported for the CLI)
from .model import MaskedVideoTransformer, num_parameters, tokenize
from .prior import resolve_device, save_checkpoint

STATE = "train_state.safetensors"


# ------------------------------------------------------------------------------ masking
def sample_masks(batch: int, num_frames: int, cfg: MaskingConfig, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """``[batch, num_frames]`` float masks (1 = known frame) and the strategy of each row."""
    probs = torch.tensor([cfg.unconditional, cfg.bernoulli, cfg.interpolation, cfg.extension], dtype=torch.float64)
    if (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"masking probabilities must be >= 0 and not all zero, got {cfg}")
    names = ["unconditional", "bernoulli", "interpolation", "extension"]
    choice = torch.multinomial(probs / probs.sum(), batch, replacement=True, generator=generator)
    F = num_frames
    masks = torch.zeros(batch, F)
    kinds = []
    for b in range(batch):
        kind = names[int(choice[b])]
        kinds.append(kind)
        if kind == "bernoulli":
            masks[b] = (torch.rand(F, generator=generator) < 1.0 / F).float()
        elif kind == "interpolation" and F >= 3:
            k = int(torch.randint(2, F, (1,), generator=generator))
            phase = int(torch.randint(0, k, (1,), generator=generator))
            masks[b] = ((torch.arange(F) - phase) % k == 0).float()
        elif kind == "extension" and F >= 2:
            n = int(torch.randint(1, F, (1,), generator=generator))
            if bool(torch.rand(1, generator=generator) < 0.5):
                masks[b, : F - n] = 1.0  # forward: the last n frames are generated
            else:
                masks[b, n:] = 1.0  # backward: the first n frames are generated
    return masks, kinds


# --------------------------------------------------------------------------------- data
def _crop_resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre-crop ``[N,H,W,3]`` to the aspect ratio ``height/width``, then resize."""
    from fourreal_media import resize_frames

    N, H, W, _ = frames.shape
    target = height / width
    if H / W > target:  # too tall
        h = max(1, int(round(W * target)))
        top = (H - h) // 2
        frames = frames[:, top : top + h]
    elif H / W < target:  # too wide
        w = max(1, int(round(H / target)))
        left = (W - w) // 2
        frames = frames[:, :, left : left + w]
    return resize_frames(frames.contiguous(), height, width)


def _prompt_for(path: Path, prompts: dict) -> str:
    for key in (path.name, path.stem):
        if key in prompts:
            return str(prompts[key])
    side = path.with_suffix(".txt") if path.is_file() else path.parent / f"{path.name}.txt"
    if side.is_file():
        return side.read_text().strip()
    return ""


def load_videos(
    videos_dir: Union[str, Path], num_frames: int, height: int, width: int, max_videos: int = 0
) -> tuple[list[torch.Tensor], list[str]]:
    """Read every video in ``videos_dir``: clips ``[N_i,height,width,3]`` and prompts.

    Raises:
        InputError: missing folder, no readable video, or none with ``num_frames`` frames.
    """
    from fourreal_media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_frames, natural_key, read_video

    root = Path(videos_dir)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder of training videos")
    prompts: dict = {}
    pj = root / "prompts.json"
    if pj.is_file():
        try:
            prompts = json.loads(pj.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{pj}: not valid JSON ({e})") from None
    entries = []
    for p in sorted(root.iterdir(), key=lambda q: natural_key(q.name)):
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            entries.append(p)
        elif p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in list_frames(p)):
            entries.append(p)
    if max_videos > 0:
        entries = entries[:max_videos]
    if not entries:
        raise InputError(f"{root}: holds no videos (mp4/mov/webm/... files or folders of png/jpg frames)")
    videos, texts, short = [], [], []
    for p in entries:
        v = read_video(p)
        if len(v) < num_frames:
            short.append(p.name)
            continue
        videos.append(_crop_resize(v.frames, height, width))
        texts.append(_prompt_for(p, prompts))
    if not videos:
        raise InputError(
            f"{root}: no video has the {num_frames} frames a training clip needs "
            f"(too short: {', '.join(short[:5])}{'...' if len(short) > 5 else ''})"
        )
    return videos, texts


def sample_clips(
    videos: list[torch.Tensor], prompts: list[str], batch: int, num_frames: int, max_stride: int, hflip: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, list[str]]:
    """``[batch, num_frames, H, W, 3]`` random clips (in [0,1]) and their prompts."""
    clips, texts = [], []
    for _ in range(batch):
        i = int(torch.randint(0, len(videos), (1,), generator=generator))
        v = videos[i]
        n = v.shape[0]
        s_max = max(1, min(max_stride, (n - 1) // max(1, num_frames - 1)))
        s = int(torch.randint(1, s_max + 1, (1,), generator=generator))
        span = (num_frames - 1) * s + 1
        start = int(torch.randint(0, n - span + 1, (1,), generator=generator))
        clip = v[start : start + span : s]
        if hflip and bool(torch.rand(1, generator=generator) < 0.5):
            clip = clip.flip(2)
        clips.append(clip)
        texts.append(prompts[i])
    return torch.stack(clips), texts


# ---------------------------------------------------------------------------- objective
def flow_loss(
    model: MaskedVideoTransformer, x0: torch.Tensor, masks: torch.Tensor, text_ids: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Rectified-flow loss on unknown frames. ``x0`` ``[B,F,H,W,3]`` in [-1,1], masks ``[B,F]``."""
    B = x0.shape[0]
    dev = x0.device
    t = torch.sigmoid(torch.randn(B, generator=generator)).to(dev)  # logit-normal(0,1)
    eps = torch.randn(x0.shape, generator=generator).to(dev)
    tb = t[:, None, None, None, None]
    x_t = (1 - tb) * x0 + tb * eps
    v = model(x_t, x0, masks, t, text_ids)
    err = ((v - (eps - x0)) ** 2).mean(dim=(2, 3, 4))  # [B,F]
    w = 1.0 - masks
    return (err * w).sum() / w.sum().clamp(min=1.0)


# ------------------------------------------------------------------------- state I/O
def _save_state(path: Path, step: int, model, ema, opt, gen: torch.Generator) -> None:
    from fourreal_core.io import save_tensors

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = torch.as_tensor(v)
    tensors["rng"] = gen.get_state()
    save_tensors(path, tensors, {"step": str(step), "param_groups": json.dumps(sd["param_groups"])})


def _load_state(path: Path, model, ema, opt, gen: torch.Generator) -> int:
    from fourreal_core.io import load_tensors

    tensors, meta = load_tensors(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None and any(k.startswith("ema.") for k in tensors):
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    dev = next(model.parameters()).device
    state = {i: {k: (v if k == "step" else v.to(dev)) for k, v in st.items()} for i, st in state.items()}
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    gen.set_state(tensors["rng"].to(torch.uint8))
    return int(meta.get("step", 0))


# ------------------------------------------------------------------------------ train
def train_prior(
    videos_dir: Union[str, Path],
    out_dir: Union[str, Path],
    cfg: Optional[TrainPriorConfig] = None,
    progress: bool = True,
) -> dict:
    """Train (or resume training) a masked video prior on the videos in ``videos_dir``.

    Args:
        videos_dir: folder of video files and/or frame folders (+ optional prompts.json).
        out_dir: checkpoint folder (loadable as ``video_prior: {name: masked, params:
            {checkpoint: out_dir}}``); an existing ``train_state.safetensors`` resumes.
        cfg: :class:`TrainPriorConfig`.
        progress: show a rich progress bar (loss, it/s).

    Returns:
        ``{"out_dir", "steps", "start_step", "losses": [per-step loss of this call],
        "parameters", "seconds"}``.
    """
    import copy

    from fourreal_core.run import Progress

    cfg = cfg or TrainPriorConfig()
    mc = cfg.model
    if mc.height % mc.patch or mc.width % mc.patch:
        raise InputError(f"model size {mc.height}x{mc.width} must be a multiple of patch {mc.patch}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    videos, prompts = load_videos(videos_dir, mc.num_frames, mc.height, mc.width, cfg.max_videos)
    model = MaskedVideoTransformer(mc).to(dev)
    ema = copy.deepcopy(model).eval() if cfg.ema > 0 else None
    if ema is not None:
        for p in ema.parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    start = 0
    if (out / STATE).is_file():
        saved = json.loads((out / "config.json").read_text()).get("model", {}) if (out / "config.json").is_file() else {}
        if saved and saved != asdict(mc):
            diff = ", ".join(f"{k}: {saved.get(k)} -> {v}" for k, v in asdict(mc).items() if saved.get(k) != v)
            raise InputError(
                f"{out}: holds a training run of a different model ({diff}); choose another --out to start afresh"
            )
        start = _load_state(out / STATE, model, ema, opt, gen)

    def lr_at(step: int) -> float:
        if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        return cfg.lr

    losses: list[float] = []
    log_path = out / "train_log.jsonl"
    t0 = time.perf_counter()
    info = {
        "videos": len(videos), "videos_dir": str(videos_dir), "steps": cfg.steps,
        "config": asdict(cfg),
    }
    bar_cm = Progress(cfg.steps, "train-prior", start=start) if progress else None
    if bar_cm is not None:
        bar_cm.__enter__()
    try:
        model.train()
        for step in range(start, cfg.steps):
            clips, texts = sample_clips(videos, prompts, cfg.batch_size, mc.num_frames, cfg.max_stride, cfg.hflip, gen)
            drop = torch.rand(len(texts), generator=gen) < cfg.prompt_dropout
            texts = ["" if d else s for d, s in zip(drop.tolist(), texts)]
            masks, _ = sample_masks(cfg.batch_size, mc.num_frames, cfg.masking, gen)
            x0 = clips.to(dev) * 2.0 - 1.0
            ids = tokenize(texts, mc.text_vocab, mc.text_len, device=dev)
            loss = flow_loss(model, x0, masks.to(dev), ids, gen)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                decay = min(cfg.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    for pe, pm in zip(ema.parameters(), model.parameters()):
                        pe.lerp_(pm, 1.0 - decay)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                from fourreal_core.trainer import NonFiniteError

                raise NonFiniteError(f"train-prior step {step}: the loss became non-finite ({lv}); lower --lr "
                                     "(the last checkpoint is kept)")
            losses.append(lv)
            if bar_cm is not None:
                bar_cm.update(1, loss=lv)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                with open(log_path, "a") as f:
                    f.write(json.dumps({"step": done, "loss": lv, "lr": lr_at(step)}) + "\n")
            if done % cfg.save_every == 0 or done == cfg.steps:
                model.eval()
                save_checkpoint(out, model, ema, {**info, "step": done})
                _save_state(out / STATE, done, model, ema, opt, gen)
                model.train()
    finally:
        if bar_cm is not None:
            bar_cm.__exit__(None, None, None)
    model.eval()
    return {
        "out_dir": str(out), "steps": cfg.steps, "start_step": start, "losses": losses,
        "parameters": num_parameters(model), "seconds": time.perf_counter() - t0,
    }
