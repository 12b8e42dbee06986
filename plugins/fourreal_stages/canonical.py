"""Stage `canonical` (paper §3.3, Appendix C.1): canonical 3DGS from a freeze-time video.

The freeze-time video's multi-view inconsistencies are absorbed by a per-frame deformation
field w_mv(x, k) = (Δx_k, Δq_k), zero at the canonical frame c, learned jointly with the
canonical Gaussians and per-frame camera corrections, under the recon L1 (Eq. 2) and
small-motion (Eq. 3) losses (+ multi-view SDS late, when configured).

Outputs (``stages/NN_canonical/``)::

    canonical.ply                    the canonical Gaussians (standard 3DGS layout)
    w_mv.safetensors   w_mv weights (+ w_mv.json: how to rebuild it)
    freeze_time/transforms.json      refined cameras of the freeze-time video (+ images/)
    freeze_time_rerender.mp4         input | canonical render | per-frame deformed render
    metrics.json                     PSNRs, mean |Δx|, Gaussian count, timings
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

import torch

from fourreal_core.config import Component, InputPath, Steps, component_default, scale_steps
from fourreal_core.config import renamed as _renamed  # old recipes: one line saying what was renamed
from fourreal_core.interfaces import Stage, log_linear_decay
from fourreal_formats.scene4d import with_near_plane
from fourreal_media import psnr

from .common import (
    CameraRefiner,
    background_for,
    build_losses,
    freeze_prompt,
    generation_prompt,
    initial_points,
    near_plane_for,
    posed_input,
    random_init_points,
    scene_extent,
    write_component_json,
)
from .fit import Fit, Trainable, View, setup_deformer
from .scheduler import canonical_phases, check_phases, scheduler_default


@dataclass
class CanonicalConfig:
    """Paper §3.3: canonical 3DGS + per-frame deformation w_mv(x, k) from a freeze-time video.

    freeze_time: the freeze-time video's transforms.json (default: an earlier stage's
        ``freeze_time/transforms.json``). Its ``canonical_view`` is k_c: the freeze-time
        frame that shows the canonical frame c of the reference video.
    init_points: sparse points (.ply/.npz; default: an earlier stage's ``points.ply`` or
        ``init_points.npz``; else ``num_random_points`` random points).
    w_mv: the per-frame deformation field w_mv(x, k), zero at k_c; ``null`` turns it off
        (ablation). (Was ``deformer``.)
    losses: the loss terms; phases name which are active. Turn the small-motion loss off
        (ablation) by removing it or setting its weight to 0.
    refine_cameras: fine-tune per-frame camera poses (frame c fixed).
    eval_views: held-out views of the static scene to score (default: an earlier stage's
        ``test_static/transforms.json`` when present).
    """

    freeze_time: Optional[InputPath] = None
    init_points: Optional[InputPath] = None
    eval_views: Optional[InputPath] = None
    width: Optional[int] = None
    height: Optional[int] = None
    background: Optional[list[float]] = None  # RGB behind the Gaussians; None: the data's (fourreal.background) or black
    # training renders over ``fixed`` (the background above) or ``random`` (a new colour each
    # step, nerfstudio splatfacto's ``random``): for full-frame captures, where every pixel is
    # scene, so a semi-transparent fit can never match the target (docs/real-data.md)
    train_background: Literal["fixed", "random"] = "fixed"
    # render (and train) with at least this near plane; None: the data's (fourreal.near_plane,
    # set by the multicam stage for cameras mounted in the scene's wall), else the rasterizer's
    near_plane: Optional[float] = None
    num_random_points: int = 20000
    # without points: ``frustum`` -- random points over every camera's view frustum and the
    # scene's depth range (background included; fourreal_poses.triangulate.frustum_points),
    # coloured from the frames; ``box`` -- a cube around where the optical axes meet
    random_init: Literal["frustum", "box"] = "frustum"
    representation: Component("representation") = component_default("representation", "gaussians")  # type: ignore[valid-type]
    w_mv: Optional[Component("deformer")] = component_default(  # type: ignore[valid-type]
        "deformer", "mlp", time_input="frame_code", predict_scale=False
    )
    losses: list[Component("loss")] = field(  # type: ignore[valid-type]
        default_factory=lambda: [{"name": "l1", "params": {}}, {"name": "small_motion", "params": {}}]
    )
    scheduler: Component("scheduler") = scheduler_default(canonical_phases())  # type: ignore[valid-type]
    refine_cameras: bool = True
    # the per-frame camera corrections' learning rate, decayed log-linearly to camera_lr_final
    # over the stage (it was the scheduler's; recipes that set it there are told so)
    camera_lr: float = 1e-4
    camera_lr_final: float = 1e-6
    checkpoint_every: Steps = 500
    video_fps: float = 8.0
    deformer: Any = None  # renamed w_mv: kept only to say so

    #: what a phase's ``train`` may name here (``new_gaussians`` is every Gaussian: all are new)
    param_groups: ClassVar[tuple[str, ...]] = ("gaussians", "new_gaussians", "deformer", "cameras")

    def __post_init__(self) -> None:
        if self.deformer is not None:
            _renamed("deformer", "w_mv", "the canonical stage's per-frame deformation field")

    def check_recipe(self, registry: Any, label: str) -> None:
        check_phases(self, registry, label, self.param_groups)


#: metrics.json warns when w_mv's mean |dx| exceeds this fraction of the scene extent
W_MV_WARN_FRACTION = 0.01


class CanonicalFit(Fit):
    """Paper §3.3 on the engine: frames of the freeze-time video; w_mv(x, k) (zero at the
    canonical view k_c) and per-frame camera corrections train with the Gaussians; 3DGS
    densification in phases with ``densify: true``; multi-view SDS renders the canonical
    Gaussians, undeformed (Eq. 4)."""

    description = "canonical"
    provides = ("deformation", "frame", "canonical_view")

    def __init__(self, ctx, cfg: CanonicalConfig, data, frames, model, w_mv, refiner, k_c: int, **kw) -> None:
        super().__init__(ctx, model=model, **kw)
        self.cfg, self.data, self.frames = cfg, data, frames
        # the data's supervision masks (mask_path): the ``mask`` input recon losses average over
        self.masks = data.masks.to(frames.device) if data.masks is not None else None
        self.w_mv, self.refiner, self.k_c = w_mv, refiner, k_c
        self.cameras0 = refiner.base

    def sample(self, i, phase, gen) -> View:
        k = int(torch.randint(0, len(self.data), (1,), generator=gen))
        inputs = {"frame": k, "canonical_view": self.k_c}
        if self.masks is not None:
            inputs["mask"] = self.masks[k:k + 1]
        return View("freeze_time", k, self.frames[k:k + 1], k, inputs=inputs)

    def _train_cameras(self, phase) -> bool:
        return self.cfg.refine_cameras and "cameras" in phase.param_groups

    def camera(self, view, phase):
        if self._train_cameras(phase):
            return self.refiner(view.index)
        with torch.no_grad():
            return self.refiner(view.index)

    def _deform_on(self, phase) -> bool:
        return self.w_mv is not None and phase.deform

    def deform(self, g0, view, phase):
        if not self._deform_on(phase):
            return g0, {"deformation": None}
        d = self.w_mv.deform(g0.means.detach(), view.key, quats=g0.quats.detach())
        return g0.deformed(d), {"deformation": d}

    def sds_context(self, g0, i, gen):
        ras, bg = self.rasterizer, self.background
        return {
            # Eq. 4: the canonical Gaussians, no per-frame deformation
            "render_video": lambda cams_m, times_m: ras.rasterize(g0, cams_m, background=bg, render_depth=False).rgb,
            "freeze_cameras": self.refiner.all(),
            "canonical_view": self.k_c,
            "canonical_image": self.frames[self.k_c],
            "reference_camera": self.cameras0[self.k_c],
            # the time the freeze-time video shows (t_c), when it says
            "canonical_time": float(self.data.times[self.k_c]) if self.data.times is not None else 0.0,
            "freeze_prompt": freeze_prompt(self.ctx),
        }, gen

    def modules(self):
        out = {"cameras": Trainable(self.refiner, "cameras",
                                    lambda i, total: log_linear_decay(i, total, self.cfg.camera_lr, self.cfg.camera_lr_final),
                                    active=self._train_cameras)}
        if self.w_mv is not None:
            out["deformer"] = Trainable(self.w_mv, "deformer", self.w_mv.learning_rate, active=self._deform_on)
        return out

    def strategies(self):
        return {"densify": self.model.densify_strategy(seed=self.ctx.seed)}

    def strategy_active(self, name, phase) -> bool:
        return phase.densify


class CanonicalStage(Stage):
    reads = ("freeze_time/transforms.json", "points.ply", "init_points.npz", "generation.json",
             "test_static/transforms.json")
    # freeze_time/transforms.json holds the refined cameras; scene4d.json the canonical scene as a static one
    writes = ("canonical.ply", "scene4d.json", "freeze_time/transforms.json", "freeze_time_rerender.mp4", "metrics.json")
    may_write = ("w_mv.safetensors", "w_mv.json", "heldout_static.mp4")

    def __init__(self, cfg: CanonicalConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        cfg = scale_steps(self.cfg, ctx.iterations_scale)  # once, before anything is built
        dev = ctx.device
        data = posed_input(ctx, cfg.freeze_time, "freeze_time/transforms.json", "freeze-time video",
                           "params.freeze_time", height=cfg.height, width=cfg.width)
        K = len(data)
        k_c = data.canonical_view if data.canonical_view is not None else 0
        frames = data.video.frames.to(dev)
        bg = background_for(cfg.background, data, dev)
        cams0 = data.cameras.to(dev)
        extent = scene_extent(data.cameras)

        model = cfg.representation.build(ctx.registry)
        points = initial_points(ctx, cfg.init_points)
        if points is None and cfg.random_init == "frustum":  # scenes: every view and its background
            from fourreal_poses.triangulate import colour_from_frames, frustum_points

            points = colour_from_frames(frustum_points(data.cameras, cfg.num_random_points, seed=ctx.seed),
                                        data.video.frames, data.cameras)
        elif points is None:
            points = random_init_points(data.cameras, cfg.num_random_points, ctx.seed)
        model.init_from_points(points, extent)
        model = model.to(dev)

        w_mv = None
        if cfg.w_mv is not None:
            w_mv = setup_deformer(cfg.w_mv.build(ctx.registry), cfg.w_mv, num_frames=K, canonical=int(k_c),
                                  canonical_means=model.params().means.detach(), device=dev,
                                  where=f"stage {ctx.name!r}: params.w_mv")
        refiner = CameraRefiner(cams0, fixed=k_c).to(dev)
        scheduler = cfg.scheduler.build(ctx.registry)
        fit = CanonicalFit(ctx, cfg, data, frames, model, w_mv, refiner, k_c, scheduler=scheduler,
                           losses=build_losses(cfg.losses, ctx.registry), loss_specs=cfg.losses, background=bg,
                           checkpoint_every=cfg.checkpoint_every, prompt=generation_prompt(ctx),
                           near_plane=near_plane_for(cfg.near_plane, data),
                           random_background=cfg.train_background == "random")
        t0 = time.perf_counter()
        fit.run()
        self._write_outputs(ctx, cfg, model, w_mv, refiner, data, frames, bg, k_c, time.perf_counter() - t0,
                            fit.rasterizer)

    # ---------------------------------------------------------------------- outputs
    @torch.no_grad()
    def _write_outputs(self, ctx, cfg, model, deformer, refiner, data, frames, bg, k_c, seconds, rasterizer) -> None:
        from fourreal_core.io import save_tensors, write_json
        from fourreal_formats.transforms import write_transforms
        from fourreal_core.types import PosedVideo
        from fourreal_media import write_video

        out = ctx.out_dir
        model.save_ply(out / "canonical.ply")
        cams = refiner.all()
        g = model.params()
        canon, deformed, dxs, dqs = [], [], [], []
        for k in range(len(data)):
            r = rasterizer.rasterize(g, cams[k], background=bg, render_depth=False).rgb[0]
            canon.append(r.clamp(0, 1).cpu())
            if deformer is not None:
                d = deformer.deform(g.means, k, quats=g.quats)
                dxs.append(d.dx.abs().sum(-1).mean().item())
                dqs.append(d.dq.abs().sum(-1).mean().item())
                r = rasterizer.rasterize(g.deformed(d), cams[k], background=bg, render_depth=False).rgb[0]
            deformed.append(r.clamp(0, 1).cpu())
        canon_t, deformed_t = torch.stack(canon), torch.stack(deformed)
        inputs = frames.cpu()
        write_video(out / "freeze_time_rerender.mp4", torch.cat([inputs, canon_t, deformed_t], dim=2), fps=cfg.video_fps)
        refined = PosedVideo(data.video, cams.to("cpu"), times=data.times, canonical_view=k_c)
        write_transforms(out / "freeze_time" / "transforms.json", refined)
        if deformer is not None:
            save_tensors(out / "w_mv.safetensors", deformer.state_dict(),
                         {"num_frames": str(len(data)), "canonical_view": str(k_c)})
            write_component_json(out / "w_mv.json", self.cfg.w_mv,
                                 {"num_frames": len(data), "canonical_view": k_c})
        metrics = {
            "num_gaussians": len(model),
            "train_psnr_deformed": psnr(deformed_t, inputs),
            "train_psnr_canonical": psnr(canon_t, inputs),
            "canonical_view_psnr": psnr(canon_t[k_c], inputs[k_c]),
            "mean_abs_dx": (sum(dxs) / len(dxs)) if dxs else 0.0,
            "mean_abs_dq": (sum(dqs) / len(dqs)) if dqs else 0.0,
            "scene_extent": scene_extent(data.cameras),
            "seconds": round(seconds, 2),
        }
        # w_mv must not stand in for the scene: on a static capture the per-frame deformation
        # stays a small residue (< 1% of the scene extent); more means the canonical Gaussians
        # alone do not explain the frames (issue 32)
        extent = metrics["scene_extent"]
        frac = metrics["mean_abs_dx"] / extent if extent > 0 else 0.0
        metrics["mean_abs_dx_fraction"] = frac
        warnings = []
        if deformer is not None and frac > W_MV_WARN_FRACTION:
            warnings.append(
                f"w_mv moves the Gaussians by {100 * frac:.1f}% of the scene extent on average (more than "
                f"{100 * W_MV_WARN_FRACTION:g}%): the per-frame deformation stands in for the canonical scene, whose "
                "own renders score train_psnr_canonical; raise the small_motion loss's weight or start w_mv later "
                "(docs/real-data.md)")
        held_out = self._eval_views(ctx, cfg)
        if held_out is not None:
            views = held_out.to(ctx.device)
            sc = views.cameras
            ras = with_near_plane(rasterizer, near_plane_for(cfg.near_plane, views))
            preds = torch.cat([ras.rasterize(g, sc[i], background=bg, render_depth=False).rgb
                               for i in range(len(views))]).clamp(0, 1)
            metrics["heldout_static_psnr"] = psnr(preds, views.video.frames)
            metrics["heldout_static_frames"] = len(views)
            write_video(out / "heldout_static.mp4", torch.cat([views.video.frames, preds], dim=2).cpu(),
                        fps=cfg.video_fps)
        # the canonical scene as a static scene: render / export / eval / view open a run that
        # stops here (the motion stage's scene4d.json, in a later folder, supersedes it)
        from fourreal_formats.scene4d import Scene4D

        Scene4D(model, None, bg, reference_camera=cams[k_c].to("cpu"), freeze_cameras=cams.to("cpu"),
                representation_spec=cfg.representation,
                near_plane=near_plane_for(cfg.near_plane, data)).save(out)
        if warnings:
            metrics["warnings"] = warnings
            for w in warnings:
                ctx.notice(f"WARNING: {w}")
        write_json(out / "metrics.json", metrics)
        ctx.log("metrics", stage=ctx.name, **{k: v for k, v in metrics.items() if k != "warnings"})

    def _eval_views(self, ctx, cfg):
        from fourreal_formats.transforms import load_transforms

        path = ctx.resolve(cfg.eval_views) if cfg.eval_views else ctx.find_output("test_static/transforms.json")
        if path is None:
            return None
        return load_transforms(path, height=cfg.height, width=cfg.width)
