"""The ``oracle`` video prior: a test instrument for the SDS machinery, not a video model.

``predict_x0(frames, noise_level, ..., cameras=, times=)`` ignores the frames' content and
returns the procedural scene's *ground truth* rendered at the given cameras and times, at
its working size of 36x64 (the paper's SDS size), blurred with a Gaussian of
``sigma = 1 + 2 * noise_level`` pixels at that size (fixed, so results are comparable).
An SDS loss that hands the prior the right cameras and times therefore pulls the scene
towards the truth -- blurred, as a one-step x0 of a real model is -- and one that hands it
wrong cameras or times pulls it towards a wrong image. That makes the oracle the measure
of whether the SDS plumbing (trajectories, time sampling, preprocessing, camera bookkeeping)
carries signal at all, independently of any learned model's quality
(tests/test_sds_faithful.py, bench/sds_ablation.py). Each call records the PSNR of its
blurred output against the sharp ground truth in :attr:`OraclePrior.last` (and every
call's in :attr:`OraclePrior.psnrs`).

It cannot generate videos, and it reads no prompt (classifier-free guidance does not
apply). The scene is rebuilt from ``scene``/``seed``/``detail``, which must match the
``synthetic`` stage that made the data, in the same world frame (known poses).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import torch

from fourreal_core.errors import FourRealError
from fourreal_core.interfaces import VideoPrior
from fourreal_core.types import Cameras
from fourreal_media import psnr

#: blur sigma in pixels at the working size: BLUR_BASE + BLUR_SLOPE * noise_level
BLUR_BASE = 1.0
BLUR_SLOPE = 2.0


def gaussian_blur(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[F,H,W,3]`` blurred with an isotropic Gaussian of ``sigma`` pixels (separable,
    kernel radius ``ceil(3 sigma)``, edge pixels replicated)."""
    if sigma <= 0:
        return frames
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-r, r + 1, dtype=frames.dtype, device=frames.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    img = frames.permute(0, 3, 1, 2)  # [F,3,H,W]
    C = img.shape[1]
    img = torch.nn.functional.pad(img, (r, r, r, r), mode="replicate")
    img = torch.nn.functional.conv2d(img, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    img = torch.nn.functional.conv2d(img, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)
    return img.permute(0, 2, 3, 1)


class OraclePrior(VideoPrior):
    """Ground truth of a procedural scene as a :class:`VideoPrior` (see the module doc)."""

    conditions = frozenset({"cameras", "times"})  # predict_x0 takes where and when each frame was rendered

    def __init__(self, cfg) -> None:
        from .scenes import make_scene

        self.cfg = cfg
        self.scene = make_scene(cfg.scene, seed=int(cfg.seed), detail=int(cfg.detail))
        self.num_frames = int(cfg.num_frames)
        self.height = self.sds_height = int(cfg.height)
        self.width = self.sds_width = int(cfg.width)
        self.last: dict = {}
        self.psnrs: list[float] = []
        self.times_seen: list[tuple] = []  # the times of each call (the last 10,000)

    def sds_size(self) -> tuple[int, int, int]:
        return self.height, self.width, 1

    def generate(self, prompt, num_frames, height, width, known_frames=None, seed=0):
        raise FourRealError("the oracle prior is a test instrument for SDS (ground truth of a procedural scene); "
                            "it cannot generate videos -- use a video model prior for the generate stage")

    def ground_truth(self, cameras: Cameras, times: torch.Tensor) -> torch.Tensor:
        """``[F,H,W,3]`` sharp truth: frame i from camera i at time i (frames that share a
        time are rendered together)."""
        times = torch.as_tensor(times).detach().float().reshape(-1).cpu()
        out: list[Optional[torch.Tensor]] = [None] * len(times)
        for t in torch.unique(times).tolist():
            idx = [i for i in range(len(times)) if float(times[i]) == t]
            cams = cameras[torch.tensor(idx)]
            rgb = self.scene.render(cams, float(t))
            for j, i in enumerate(idx):
                out[i] = rgb[j]
        return torch.stack(out)  # type: ignore[arg-type]

    @torch.no_grad()
    def predict_x0(
        self,
        noisy: torch.Tensor,
        noise_level: "torch.Tensor | float",
        known_frames: Optional[Mapping[int, torch.Tensor]] = None,
        prompt: str = "",
        generator: Optional[torch.Generator] = None,
        cameras: Optional[Cameras] = None,
        times: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The truth at ``cameras`` (F, resized to the frames' size) and ``times`` ``[F]``,
        blurred with sigma ``1 + 2 * noise_level`` px (scaled by ``width / 64`` when the frames
        are not at the working size). Known frames are returned exactly."""
        if cameras is None or times is None:
            raise FourRealError("the oracle prior needs the cameras and times of the frames it scores "
                                "(predict_x0(..., cameras=, times=); the SDS losses pass them)")
        if noisy.ndim != 4 or noisy.shape[-1] != 3:
            raise ValueError(f"predict_x0 expects [F,H,W,3] frames, got {tuple(noisy.shape)}")
        Fr, H, W, _ = noisy.shape
        if len(cameras) != Fr or len(torch.as_tensor(times).reshape(-1)) != Fr:
            raise FourRealError(f"oracle prior: {Fr} frames but {len(cameras)} cameras and "
                                f"{len(torch.as_tensor(times).reshape(-1))} times")
        cams = cameras.to("cpu")
        if (cams.width, cams.height) != (W, H):
            Ks = cams.Ks.clone()
            Ks[:, 0] *= W / cams.width
            Ks[:, 1] *= H / cams.height
            cams = Cameras(cams.viewmats, Ks, W, H)
        t = float(torch.as_tensor(noise_level).float().mean())
        sigma = (BLUR_BASE + BLUR_SLOPE * t) * (W / self.width)
        sharp = self.ground_truth(cams, times)
        out = gaussian_blur(sharp, sigma).clamp(0.0, 1.0)
        tl = [float(v) for v in torch.as_tensor(times).reshape(-1)]
        self.last = {"psnr": psnr(out, sharp), "sigma": sigma, "noise_level": t, "times": tl}
        self.psnrs.append(self.last["psnr"])
        self.times_seen.append(tuple(tl))
        del self.psnrs[:-10000], self.times_seen[:-10000]
        for i, img in (known_frames or {}).items():
            out[int(i) % Fr] = torch.as_tensor(img).detach().float().cpu()
        return out.to(noisy.device)
