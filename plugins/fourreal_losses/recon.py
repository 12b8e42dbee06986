"""Image losses: ``l1`` (paper Eq. 2), ``ssim`` (1 - SSIM) and ``align`` (Sec. 3.4:
L1 + lambda (1 - SSIM)); and :class:`BaseLoss`, the base of every loss in this package.

Inputs: ``render`` (:class:`~fourreal_core.interfaces.RenderOutput`, ``render.rgb
[C,H,W,3]``), ``target [C,H,W,3]``, optional ``mask [C,H,W,1]`` (1 = supervised pixel).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from fourreal_core.config import Ramp
from fourreal_core.interfaces import Loss

from .ssim import ssim


class BaseLoss(Loss):
    """A loss built from its config: keeps ``cfg`` and exposes ``weight`` (a :class:`Ramp`;
    the trainer multiplies the loss by ``weight.at(step)``)."""

    requires: tuple[str, ...] = ()

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.weight = Ramp(cfg.weight)

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        missing = [k for k in self.requires if inputs.get(k) is None]
        if missing:
            raise KeyError(
                f"loss {type(self).__name__} needs input(s) {', '.join(missing)}; "
                f"got {', '.join(sorted(k for k, v in inputs.items() if v is not None)) or 'none'}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight.to_yaml()!r})"


def _pixel_map(x: torch.Tensor, pred: torch.Tensor, name: Optional[str] = None) -> torch.Tensor:
    """A per-pixel ``[C,H,W]`` or ``[C,H,W,1]`` map as ``[...,1]`` in ``pred``'s dtype and
    device; with ``name``, it must match the render's ``[C,H,W]`` exactly."""
    x = x.to(pred.device, pred.dtype)
    if x.ndim == 3:
        x = x[..., None]
    if name is not None and x.shape[:3] != pred.shape[:3]:
        raise ValueError(f"{name} {tuple(x.shape)} does not match render.rgb {tuple(pred.shape)}")
    return x


def _images(inputs: Mapping[str, Any], use_mask: bool,
            dynamic_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``(render, target, pixel weights or None)``: the stage's ``mask`` (when ``use_mask``)
    times ``1 + dynamic_weight`` on the ``dynamic_mask`` pixels (when given)."""
    pred = inputs["render"].rgb
    target = inputs["target"].to(pred.device, pred.dtype)
    if pred.shape != target.shape:
        raise ValueError(f"render.rgb {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    mask = inputs.get("mask") if use_mask else None
    if mask is not None:
        mask = _pixel_map(mask, pred)
    dyn = inputs.get("dynamic_mask") if dynamic_weight else None
    if dyn is not None:
        w = 1.0 + float(dynamic_weight) * _pixel_map(dyn, pred, "dynamic_mask")
        mask = w if mask is None else mask * w
    return pred, target, mask


def l1(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean absolute error of ``[C,H,W,3]`` images, over masked pixels when ``mask
    [C,H,W,1]`` is given."""
    err = (pred - target).abs()
    if mask is None:
        return err.mean()
    w = mask.expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1e-8)


class L1Loss(BaseLoss):
    """``mean |render.rgb - target|`` (paper Eq. 2, averaged instead of summed)."""

    requires = ("render", "target")

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        self.check_inputs(inputs)
        return l1(*_images(inputs, self.cfg.use_mask, self.cfg.dynamic_weight))


class SSIMLoss(BaseLoss):
    """``1 - SSIM(render.rgb, target)`` (11x11 Gaussian window, sigma 1.5, as 3DGS)."""

    requires = ("render", "target")

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        self.check_inputs(inputs)
        pred, target, mask = _images(inputs, self.cfg.use_mask)
        return 1.0 - ssim(pred, target, mask, self.cfg.window, self.cfg.sigma)


class AlignLoss(BaseLoss):
    """Image alignment loss of the motion stage (paper Sec. 3.4):
    ``L1 + ssim_lambda * (1 - SSIM)``."""

    requires = ("render", "target")

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        self.check_inputs(inputs)
        pred, target, mask = _images(inputs, self.cfg.use_mask, self.cfg.dynamic_weight)
        loss = l1(pred, target, mask)
        if self.cfg.ssim_lambda:
            loss = loss + self.cfg.ssim_lambda * (1.0 - ssim(pred, target, mask, self.cfg.window, self.cfg.sigma))
        return loss
