"""Procedural training videos: coloured Gaussian blobs moving on a smooth background.

Used by the tests and by CPU demos to train a tiny masked prior in seconds. Each video
has a vertical colour gradient background and ``blobs`` soft discs moving on straight
lines (bouncing off the borders), so frames are strongly correlated in time: a model
that learned the data predicts unknown frames far better than noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch


def blob_video(num_frames: int, height: int, width: int, generator: torch.Generator, blobs: int = 2) -> torch.Tensor:
    """One ``[num_frames, height, width, 3]`` float32 video in [0,1]."""
    g = generator
    top = torch.rand(3, generator=g) * 0.5
    bottom = torch.rand(3, generator=g) * 0.5
    yy = torch.linspace(0, 1, height)[:, None, None]
    bg = (top * (1 - yy) + bottom * yy).expand(height, width, 3)
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    frames = bg[None].repeat(num_frames, 1, 1, 1).clone()
    for _ in range(blobs):
        colour = 0.4 + 0.6 * torch.rand(3, generator=g)
        radius = (0.12 + 0.1 * float(torch.rand(1, generator=g))) * min(height, width)
        pos = torch.rand(2, generator=g) * torch.tensor([height - 1.0, width - 1.0])
        vel = (torch.rand(2, generator=g) - 0.5) * 2.0 * min(height, width) / max(num_frames, 1) * 0.8
        for f in range(num_frames):
            p = pos + vel * f
            # bounce off the borders (reflect into range)
            for d, size in enumerate((height - 1.0, width - 1.0)):
                period = 2 * size
                q = torch.remainder(p[d], period)
                p[d] = size - torch.abs(q - size)
            d2 = (ys - p[0]) ** 2 + (xs - p[1]) ** 2
            a = torch.exp(-d2 / (2 * radius**2))[..., None]
            frames[f] = frames[f] * (1 - a) + colour * a
    return frames.clamp(0, 1)


def blob_videos(n: int, num_frames: int = 8, height: int = 16, width: int = 16, seed: int = 0) -> torch.Tensor:
    """``[n, num_frames, height, width, 3]`` procedural videos (deterministic per seed)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([blob_video(num_frames, height, width, g) for _ in range(n)])


def write_blob_dataset(
    folder: Union[str, Path], n: int, num_frames: int = 8, height: int = 16, width: int = 16, seed: int = 0,
    prompt: str = "coloured blobs moving",
) -> Path:
    """Write ``n`` procedural videos as frame folders ``folder/video_XXX/00000.png`` and a
    ``prompts.json`` giving each the same ``prompt``. Returns ``folder``."""
    from fourreal_core.io import write_json
    from fourreal_media import write_frames

    folder = Path(folder)
    vids = blob_videos(n, num_frames, height, width, seed)
    prompts = {}
    for i, v in enumerate(vids):
        name = f"video_{i:03d}"
        write_frames(folder / name, v)
        prompts[name] = prompt
    write_json(folder / "prompts.json", prompts)
    return folder
