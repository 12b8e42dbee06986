"""Registers the ``masked`` video prior (paper Appendix A: a masked pixel-space video
diffusion transformer conditioned on text and known frames at any positions).

Train one with ``fourreal train-prior VIDEOS_DIR --out DIR`` and use it with
``video_prior: {name: masked, params: {checkpoint: DIR}}``. torch is imported inside the
factory only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fourreal_core import hookimpl

from .configs import MaskedPriorConfig


@hookimpl
def fourreal_register(registry):
    registry.add(
        "video_prior", "masked", "fourreal_masked_prior.prior:MaskedPrior.from_checkpoint", config=MaskedPriorConfig,
        description="Masked pixel-space video diffusion transformer (text + known frames at any "
        "positions; train with `fourreal train-prior`)",
    )


# ------------------------------------------------------------------------------- command
DEBUG_HELP = "Show Python tracebacks instead of one-line errors."


def train_prior(
    videos_dir: Path = typer.Argument(..., help="Folder of training videos (mp4s and/or frame folders; optional prompts.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder (rerun the same command to resume)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Clips per step."),
    lr: Optional[float] = typer.Option(None, "--lr", help="AdamW learning rate."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Clip length F of the model."),
    height: Optional[int] = typer.Option(None, "--height", help="Model frame height (multiple of --patch)."),
    width: Optional[int] = typer.Option(None, "--width", help="Model frame width (multiple of --patch)."),
    patch: Optional[int] = typer.Option(None, "--patch", help="Spatial patch size."),
    dim: Optional[int] = typer.Option(None, "--dim", help="Transformer width."),
    depth: Optional[int] = typer.Option(None, "--depth", help="Transformer blocks."),
    heads: Optional[int] = typer.Option(None, "--heads", help="Attention heads."),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="Checkpoint every N steps."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | mps"),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Train the masked pixel-space video prior (video_prior `masked`) on a folder of videos."""
    from dataclasses import replace

    from rich.console import Console
    from rich.markup import escape

    from . import train as entry

    console = Console(stderr=False)
    cfg = entry.TrainPriorConfig()
    top = {"steps": steps, "batch_size": batch_size, "lr": lr, "save_every": save_every, "seed": seed, "device": device}
    model = {"num_frames": frames, "height": height, "width": width, "patch": patch, "dim": dim, "depth": depth,
             "heads": heads}
    cfg = replace(cfg, **{k: v for k, v in top.items() if v is not None},
                  model=replace(cfg.model, **{k: v for k, v in model.items() if v is not None}))
    res = entry.train_prior(videos_dir, out, cfg)
    last = res["losses"][-min(50, len(res["losses"])):] if res["losses"] else []
    console.print(
        f"[bold green]done[/bold green]: {res['steps']} steps ({res['parameters']:,} parameters), "
        + (f"final loss {sum(last) / len(last):.4f}, " if last else "")
        + f"checkpoint in {escape(str(out))} -- use it with "
        f"video_prior: {{name: masked, params: {{checkpoint: {escape(str(out))}}}}}"
    )


@hookimpl
def fourreal_register_commands(app):
    app.command(name="train-prior")(train_prior)
