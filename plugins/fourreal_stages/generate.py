"""Stage ``generate`` (paper §3.2): prompt -> reference video -> freeze-time video.

1. ``prior.generate(prompt)`` makes the reference video (``num_frames`` frames) -- or,
   with ``reference: clip.mp4`` (a video file or a folder of frames), the user's own clip
   is the reference video and only the freeze-time video is generated (monocular video ->
   4D, what CAT4D and Free4D offer; ``recipes/clip-to-4d.yaml``).
2. Frame ``c = canonical_frame`` of it seeds the freeze-time video: the prompt is rewritten
   ("Camera circulating around ..., time elapse", action verbs dropped; or ``freeze_prompt``
   verbatim, or any ``prompt_rewriter`` function), and the video is extended
   autoregressively (8 known + 8 new frames per step, both directions) to ``freeze_frames``
   frames; the canonical view k_c (where frame c sits in it) is recorded. LoRAs of the prior are
   switched per use (``reference`` for step 1, ``freeze_time`` for step 2; their trigger
   words are added to the freeze-time prompt).
3. The freeze-time usability report (``freeze_time_report.json`` + one summary line,
   :mod:`fourreal_stages.freeze_report`) is computed on the result.

Outputs (``ctx.out_dir``)::

    reference.mp4  reference/00000.png ...     the reference video (frames are lossless)
    freeze_time.mp4  freeze_time/00000.png ...  the freeze-time video
    generation.json  {prompt, freeze_prompt, canonical_frame, canonical_view, fps,
                      prior, num_frames, freeze_frames, height, width, seed, windows,
                      reference_source, loras}
    freeze_time_report.json                    the usability report

The ``poses`` stage reads ``reference.mp4``, ``freeze_time.mp4`` and ``generation.json``.
torch and the prior's libraries are imported inside :meth:`GenerateStage.run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from fourreal_core.config import Component, InputPath, component_default
from fourreal_core.errors import FourRealError, InputError
from fourreal_core.interfaces import Stage

_REWRITER = "fourreal_stages.freeze_time:rewrite_prompt_for_freeze_time"


@dataclass
class GenerateConfig:
    """Prompt -> reference video + freeze-time video (paper §3.2).

    prior: the video prior for both videos (``freeze_prior`` overrides it for the
        freeze-time video, e.g. a model tuned for orbiting cameras).
    num_frames / height / width: the reference video (default: the prior's native shape).
    canonical_frame: reference frame c that seeds the freeze-time video (negative counts
        from the end).
    freeze_frames: length K of the freeze-time video; ``freeze_window`` frames per prior
        call (default the prior's), ``freeze_overlap`` of them known when extending.
    freeze_prompt: used verbatim when set; else ``prompt_rewriter`` (a dotted function path,
        ``str -> str``) rewrites ``prompt``.
    seed: default the run's stage seed.
    reference: a video file or frame folder used as the reference video instead of
        generating one (``num_frames`` caps its length, ``reference_stride`` keeps every
        n-th frame; ``height``/``width`` default to the prior's).
    report: write the freeze-time usability report (needs OpenCV).
    """

    prompt: str = "a corgi running on a sunny beach"
    prior: Component("video_prior") = component_default("video_prior", "masked")  # type: ignore[valid-type]
    freeze_prior: Optional[Component("video_prior")] = None  # type: ignore[valid-type]
    num_frames: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    canonical_frame: int = 0
    freeze_frames: int = 32
    freeze_window: Optional[int] = None
    freeze_overlap: int = 8
    freeze_direction: Literal["both", "forward", "backward"] = "both"
    freeze_prompt: str = ""
    prompt_rewriter: str = _REWRITER
    seed: Optional[int] = None
    fps: float = 8.0
    reference: Optional[InputPath] = None
    reference_stride: int = 1
    report: bool = True


def _model_folder_check(spec, stage: str, field: str) -> None:
    """One-line error naming a prior's missing weights folder and the --set that fixes it."""
    params = getattr(spec, "params", None)
    for key in ("model_path", "checkpoint", "i2v_model_path"):
        value = getattr(params, key, None)
        if value and not Path(value).expanduser().exists():
            raise InputError(
                f"{value}: the {spec.name} video prior's {key} folder does not exist; put the model there or point "
                f"the recipe at it with --set stages.{stage}.params.{field}.params.{key}=/path/to/folder"
            )


class GenerateStage(Stage):
    """See the module docstring."""

    writes = ("reference.mp4", "reference/*.png", "freeze_time.mp4", "freeze_time/*.png", "generation.json")
    may_write = ("freeze_time_report.json",)

    def __init__(self, cfg: Optional[GenerateConfig] = None) -> None:
        self.cfg = cfg or GenerateConfig()

    def run(self, ctx) -> None:
        import torch

        from fourreal_core.io import write_json
        from fourreal_media import write_frames, write_video
        from .freeze_time import generate_freeze_time, load_function
        from fourreal_diffusers.lora import add_triggers, describe, lora_use

        cfg = self.cfg
        if not cfg.prompt.strip():
            raise FourRealError(f"stage {ctx.name}: params.prompt is empty")
        _model_folder_check(cfg.prior, ctx.name, "prior")
        prior = cfg.prior.build(ctx.registry)
        if cfg.freeze_prior is not None:
            _model_folder_check(cfg.freeze_prior, ctx.name, "freeze_prior")
            freeze_prior = cfg.freeze_prior.build(ctx.registry)
        else:
            freeze_prior = prior
        if prior.device is not None and str(ctx.device) != "cpu":
            try:
                prior.to(ctx.device)
            except Exception:  # noqa: BLE001 - diffusers priors place themselves
                pass
        seed = ctx.seed if cfg.seed is None else int(cfg.seed)
        H = int(cfg.height or prior.height)
        W = int(cfg.width or prior.width)
        clip = None
        if cfg.reference:
            from fourreal_media import read_video

            src = ctx.resolve(cfg.reference)
            clip = read_video(src, height=H, width=W, stride=max(1, int(cfg.reference_stride)),
                              max_frames=cfg.num_frames, min_frames=1).frames.float().cpu()
            T = len(clip)
        else:
            T = int(cfg.num_frames or prior.num_frames)
        c = cfg.canonical_frame if cfg.canonical_frame >= 0 else T + cfg.canonical_frame
        if not 0 <= c < T:
            raise InputError(f"stage {ctx.name}: params.canonical_frame {cfg.canonical_frame} is outside the "
                             f"{T}-frame reference video")

        if clip is not None:
            ctx.log("generate_reference_clip", stage=ctx.name, source=str(cfg.reference), frames=T, height=H, width=W)
            ref = clip
        else:
            ctx.log("generate_reference", stage=ctx.name, prompt=cfg.prompt, frames=T, height=H, width=W)
            with torch.no_grad(), lora_use(prior, "reference"):
                ref = prior.generate(cfg.prompt, T, H, W, known_frames=None, seed=seed).frames.float().cpu()
        if ref.shape != (T, H, W, 3):
            raise FourRealError(f"video prior {cfg.prior.name!r} returned frames {tuple(ref.shape)}, "
                                f"expected {(T, H, W, 3)}")

        freeze_prompt = cfg.freeze_prompt.strip() or str(load_function(cfg.prompt_rewriter)(cfg.prompt))
        fl = freeze_prior.loras
        if fl is not None:  # the freeze-time LoRAs' trigger words
            freeze_prompt = add_triggers(freeze_prompt, fl.triggers("freeze_time"))
        ctx.log("generate_freeze_time", stage=ctx.name, prompt=freeze_prompt, frames=cfg.freeze_frames,
                canonical_frame=c)
        window = int(cfg.freeze_window or freeze_prior.num_frames)
        new = max(0, max(cfg.freeze_frames, window) - window)
        fwd = {"both": (new + 1) // 2, "forward": new, "backward": 0}[cfg.freeze_direction]
        step = max(1, window - cfg.freeze_overlap)
        total = 1 + -(-fwd // step) + -(-(new - fwd) // step)
        with ctx.progress(total, "freeze-time windows") as bar:
            def on_window(i: int, n: int) -> None:
                bar.update(1)

            with torch.no_grad(), lora_use(freeze_prior, "freeze_time"):
                res = generate_freeze_time(
                    freeze_prior, ref[c], freeze_prompt, cfg.freeze_frames, window=cfg.freeze_window,
                    overlap=cfg.freeze_overlap, height=H, width=W, direction=cfg.freeze_direction, seed=seed + 1000,
                    on_window=on_window,
                )

        out = Path(ctx.out_dir)
        write_video(out / "reference.mp4", ref, fps=cfg.fps)
        write_frames(out / "reference", ref)
        write_video(out / "freeze_time.mp4", res.video.frames, fps=cfg.fps)
        write_frames(out / "freeze_time", res.video.frames)
        write_json(out / "generation.json", {
            "prompt": cfg.prompt,
            "freeze_prompt": freeze_prompt,
            "canonical_frame": c,
            "canonical_view": res.canonical_view,  # k_c (was freeze_time_anchor)
            "fps": cfg.fps,
            "prior": cfg.prior.name,
            "freeze_prior": (cfg.freeze_prior or cfg.prior).name,
            "num_frames": T,
            "freeze_frames": len(res.video),
            "height": H,
            "width": W,
            "seed": seed,
            "windows": res.windows,
            "reference_source": str(cfg.reference) if cfg.reference else "generated",
            "loras": {"prior": describe(prior.loras), "freeze_prior": describe(fl)},
        })
        if cfg.report:
            from .freeze_report import write_report

            write_report(out, res.video.frames, cameras=None, canonical_view=res.canonical_view, windows=res.windows,
                         source="generate: freeze_time.mp4", ctx=ctx)
        ctx.log("generate_done", stage=ctx.name, reference_frames=T, freeze_frames=len(res.video),
                canonical_view=res.canonical_view)

