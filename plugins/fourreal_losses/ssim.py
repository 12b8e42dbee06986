"""Differentiable SSIM (Wang et al. 2004) as 3D Gaussian Splatting computes it.

Per channel, local statistics under an 11x11 Gaussian window (sigma 1.5, normalised to sum
1), zero padding of ``window // 2`` so the map has the image size (3DGS ``ssim()``;
``padding="valid"`` keeps only fully inside windows, as scikit-image's
``gaussian_weights=True, use_sample_covariance=False`` does up to its border crop):

    mu_x = w * x,  sigma_x^2 = w * x^2 - mu_x^2,  sigma_xy = w * (x y) - mu_x mu_y
    SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

with ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` and data range ``L = 1``.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F

C1 = 0.01**2
C2 = 0.03**2


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    """``[size]`` 1D Gaussian weights summing to 1 (the 2D window is their outer product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _filter(x: torch.Tensor, g: torch.Tensor, pad: int) -> torch.Tensor:
    """Separable Gaussian filter of ``x [B,C,H,W]`` (depthwise), zero padding ``pad``."""
    c = x.shape[1]
    kh = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    x = F.conv2d(x, kh, padding=(pad, 0), groups=c)
    return F.conv2d(x, kw, padding=(0, pad), groups=c)


def ssim_map(
    a: torch.Tensor,
    b: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    padding: Literal["same", "valid"] = "same",
) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of images ``a``, ``b`` ``[B,H,W,C]`` in [0,1].

    Returns:
        ``[B,H,W,C]`` for ``padding="same"``; ``[B,H-window+1,W-window+1,C]`` for ``"valid"``.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two [B,H,W,C] images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    x = a.permute(0, 3, 1, 2)
    y = b.permute(0, 3, 1, 2)
    g = gaussian_window(window, sigma, dtype=x.dtype, device=x.device)
    pad = window // 2 if padding == "same" else 0
    mu_x = _filter(x, g, pad)
    mu_y = _filter(y, g, pad)
    sxx = _filter(x * x, g, pad) - mu_x * mu_x
    syy = _filter(y * y, g, pad) - mu_y * mu_y
    sxy = _filter(x * y, g, pad) - mu_x * mu_y
    num = (2 * mu_x * mu_y + C1) * (2 * sxy + C2)
    den = (mu_x * mu_x + mu_y * mu_y + C1) * (sxx + syy + C2)
    return (num / den).permute(0, 2, 3, 1)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    window: int = 11,
    sigma: float = 1.5,
    padding: Literal["same", "valid"] = "same",
) -> torch.Tensor:
    """Mean SSIM of ``a``, ``b`` ``[B,H,W,C]`` (scalar; 1 for identical images).

    ``mask`` ``[B,H,W,1]`` (``"same"`` padding only) weights the per-pixel map.
    """
    m = ssim_map(a, b, window, sigma, padding)
    if mask is None:
        return m.mean()
    if padding != "same":
        raise ValueError("a mask needs padding='same'")
    w = mask.to(m.dtype).expand_as(m)
    return (m * w).sum() / w.sum().clamp_min(1e-8)
