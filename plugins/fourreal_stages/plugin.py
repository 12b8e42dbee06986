"""Registers the 4Real stages (generate, poses, multicam, canonical, motion, export, eval, render) and the
`stagewise` scheduler. Each is named by lazy targets, its component and its config alike, so registering
imports none of their modules (nor torch)."""

from __future__ import annotations

from fourreal_core import hookimpl


@hookimpl
def fourreal_register(registry):
    registry.add("scheduler", "stagewise", "fourreal_stages.scheduler:StagewiseScheduler",
                 config="fourreal_stages.scheduler:StagewiseConfig",
                 description="Named phases (paper Appendix C) run in order")
    registry.add("stage", "generate", "fourreal_stages.generate:GenerateStage",
                 config="fourreal_stages.generate:GenerateConfig",
                 description="Prompt -> reference video -> freeze-time video (paper 3.2) with any video prior")
    registry.add("stage", "poses", "fourreal_stages.poses:PosesStage",
                 config="fourreal_stages.poses:PosesConfig",
                 description="Cameras for the reference and freeze-time videos in one world frame (+ points)")
    registry.add("stage", "multicam", "fourreal_stages.multicam:MulticamStage",
                 config="fourreal_stages.multicam:MulticamConfig",
                 description="Synchronized multi-camera capture -> 4Real setting (freeze-time + reference + "
                             "held-out) or all views")
    registry.add("stage", "canonical", "fourreal_stages.canonical:CanonicalStage",
                 config="fourreal_stages.canonical:CanonicalConfig",
                 description="Canonical 3DGS + per-frame deformation from a freeze-time video (paper 3.3)")
    registry.add("stage", "motion", "fourreal_stages.motion:MotionStage",
                 config="fourreal_stages.motion:MotionConfig",
                 description="Temporal deformation fitted to the reference video (paper 3.4, App. C.2)")
    registry.add("stage", "export", "fourreal_stages.export:ExportStage",
                 config="fourreal_stages.export:ExportConfig",
                 description="PLY per time, canonical + deformer + manifest, bullet-time/fixed/spiral videos, grid")
    registry.add("stage", "eval", "fourreal_stages.evaluate:EvalStage",
                 config="fourreal_stages.evaluate:EvalConfig",
                 description="PSNR / SSIM / LPIPS on held-out views at their cameras and times")
    registry.add("stage", "render", "fourreal_stages.render:RenderStage",
                 config="fourreal_stages.render:RenderConfig",
                 description="Render a 4D scene at any camera and time to PNGs")
