"""Registers the 4Real stages (poses, canonical, motion, export, eval, generate) and the
`stagewise` scheduler. Implementations are imported inside the factories."""

from __future__ import annotations

from fourreal_core import hookimpl

from .generate import GenerateConfig  # torch-free module top

from .configs import (
    CanonicalConfig,
    EvalConfig,
    ExportConfig,
    MotionConfig,
    PosesConfig,
    RenderConfig,
    StagewiseConfig,
)


def _stagewise(cfg: StagewiseConfig):
    from .scheduler import StagewiseScheduler

    return StagewiseScheduler(cfg)


def _canonical(cfg: CanonicalConfig):
    from .canonical import CanonicalStage

    return CanonicalStage(cfg)


def _motion(cfg: MotionConfig):
    from .motion import MotionStage

    return MotionStage(cfg)


def _poses(cfg: PosesConfig):
    from .io_stages import PosesStage

    return PosesStage(cfg)


def _export(cfg: ExportConfig):
    from .io_stages import ExportStage

    return ExportStage(cfg)


def _eval(cfg: EvalConfig):
    from .io_stages import EvalStage

    return EvalStage(cfg)


def _generate(cfg):
    from .generate import make_generate

    return make_generate(cfg)


def _render(cfg: RenderConfig):
    from .io_stages import RenderStage

    return RenderStage(cfg)


@hookimpl
def fourreal_register(registry):
    registry.add("scheduler", "stagewise", _stagewise, config=StagewiseConfig,
                 description="Named phases (paper Appendix C) with exponential lr decay")
    registry.add("stage", "generate", _generate, config=GenerateConfig,
                 description="Prompt -> reference video -> freeze-time video (paper 3.2) with any video prior")
    registry.add("stage", "poses", _poses, config=PosesConfig,
                 description="Cameras for the reference and freeze-time videos in one world frame (+ points)")
    registry.add("stage", "canonical", _canonical, config=CanonicalConfig,
                 description="Canonical 3DGS + per-frame deformation from a freeze-time video (paper 3.3)")
    registry.add("stage", "motion", _motion, config=MotionConfig,
                 description="Temporal deformation fitted to the reference video (paper 3.4, App. C.2)")
    registry.add("stage", "export", _export, config=ExportConfig,
                 description="PLY per time, canonical + deformer + manifest, bullet-time/fixed/spiral videos, grid")
    registry.add("stage", "eval", _eval, config=EvalConfig,
                 description="PSNR / SSIM / LPIPS on held-out views at their cameras and times")
    registry.add("stage", "render", _render, config=RenderConfig,
                 description="Render a 4D scene at any camera and time to PNGs")
