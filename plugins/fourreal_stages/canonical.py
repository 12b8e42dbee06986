"""Stage `canonical` (paper §3.3, Appendix C.1): canonical 3DGS from a freeze-time video.

The freeze-time video's multi-view inconsistencies are absorbed by a per-frame deformation
field w_mv(x, k) = (Δx_k, Δq_k), zero at the canonical frame c, learned jointly with the
canonical Gaussians and per-frame camera corrections, under the recon L1 (Eq. 2) and
small-motion (Eq. 3) losses (+ multi-view SDS late, when configured).

Outputs (``stages/NN_canonical/``)::

    canonical.ply                    the canonical Gaussians (standard 3DGS layout)
    per_frame_deformer.safetensors   w_mv weights (+ per_frame_deformer.json: how to rebuild it)
    freeze_time/transforms.json      refined cameras of the freeze-time video (+ images/)
    freeze_time_rerender.mp4         input | canonical render | per-frame deformed render
    metrics.json                     PSNRs, mean |Δx|, Gaussian count, timings
"""

from __future__ import annotations

import time

import torch

from fourreal_core.interfaces import Stage
from fourreal_core.io import save_tensors, write_json
from fourreal_core.trainer import train

from .common import (
    CameraRefiner,
    background_for,
    build_losses,
    deformer_lr,
    generation_prompt,
    initial_points,
    posed_input,
    psnr,
    random_init_points,
    scene_extent,
    load_training_state,
    sds_inputs,
    training_state,
    uses_sds,
    weighted_loss,
    write_component_json,
)
from .configs import CanonicalConfig


MIN_DENSIFY_EVERY = 10


def scaled_densify(cfg, scale: float):
    """The representation's densification schedule under ``iterations_scale``: start, stop
    and the opacity-reset interval scale; the refinement interval too, but never below
    ``MIN_DENSIFY_EVERY`` iterations (gradient statistics need several views to mean
    anything, and refining every step makes the Gaussian count explode)."""
    from dataclasses import replace

    def s(v: int) -> int:
        return 0 if v <= 0 else max(1, int(round(v * scale)))

    every = max(min(cfg.every, MIN_DENSIFY_EVERY), s(cfg.every)) if cfg.every > 0 else 0
    return replace(cfg, start=s(cfg.start), stop=s(cfg.stop), every=every,
                   reset_opacity_every=s(cfg.reset_opacity_every))


class CanonicalStage(Stage):
    def __init__(self, cfg: CanonicalConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        from fourreal_gaussians.densify import DensifyStrategy

        cfg = self.cfg
        dev = ctx.device
        data = posed_input(ctx, cfg.freeze_time, "freeze_time/transforms.json", "freeze-time video",
                           "params.freeze_time", height=cfg.height, width=cfg.width)
        K = len(data)
        c = data.anchor if data.anchor is not None else 0
        frames = data.video.frames.to(dev)
        bg = background_for(cfg.background, data, dev)
        cams0 = data.cameras.to(dev)
        extent = scene_extent(data.cameras)

        model = cfg.representation.build(ctx.registry)
        points = initial_points(ctx, cfg.init_points) or random_init_points(data.cameras, cfg.num_random_points, ctx.seed)
        model.init_from_points(points, extent)
        model = model.to(dev)

        deformer = None
        if cfg.deformer is not None:
            deformer = cfg.deformer.build(ctx.registry)
            deformer.setup(num_frames=K, canonical_index=c, canonical_means=model.params().means.detach())
            deformer = deformer.to(dev)
        refiner = CameraRefiner(cams0, fixed=c).to(dev)
        scheduler = cfg.scheduler.build(ctx.registry).with_iterations_scale(ctx.iterations_scale)
        total = scheduler.total_steps
        def_opt = torch.optim.Adam(deformer.parameters(), lr=1e-3) if deformer is not None else None
        cam_opt = torch.optim.Adam(refiner.parameters(), lr=1e-4)
        losses = build_losses(cfg.losses, ctx.registry)
        strategy = DensifyStrategy(scaled_densify(model.cfg.densify, ctx.iterations_scale), seed=ctx.seed)
        dstate = strategy.initialize_state(len(model), dev)
        version = [0]
        rasterizer = ctx.rasterizer
        prompt = generation_prompt(ctx)

        def step(i: int) -> dict:
            phase = scheduler.phase_at(i)
            gen = torch.Generator().manual_seed(ctx.seed * 1_000_003 + i)
            k = int(torch.randint(0, K, (1,), generator=gen))
            deform_on = deformer is not None and phase.options.get("deform", True)
            train_cams = cfg.refine_cameras and "cameras" in phase.param_groups
            cams = refiner(k) if train_cams else refiner.all()[k]
            g = model.params(i)
            d = None
            if deform_on:
                d = deformer.deform(g.means.detach(), k, quats=g.quats.detach())
                g = g.deformed(d)
            out = rasterizer.rasterize(g, cams, background=bg, render_depth=False)
            inputs = {"render": out, "target": frames[k:k + 1], "deformation": d, "step": i,
                      "gaussians_version": version[0], "frame": k, "canonical_index": c}
            active = tuple(n for n in phase.losses if d is not None or n != "small_motion")
            if uses_sds(active, losses):
                g_canon = model.params(i)  # Eq. 4: the canonical Gaussians, no per-frame deformation
                inputs.update(sds_inputs(
                    render_video=lambda cams_m, times_m: rasterizer.rasterize(
                        g_canon, cams_m, background=bg, render_depth=False).rgb,
                    freeze_cameras=refiner.all(), canonical_index=c, canonical_image=frames[c],
                    reference_camera=cams0[c], canonical_time=0.0, phase=phase, step=i, prompt=prompt,
                    gen=gen, active=active, losses=losses))
            loss, parts = weighted_loss(losses, active, inputs, i)
            loss.backward()
            # learning rates
            model.update_learning_rate(i, total)
            groups = None if "gaussians" in phase.param_groups else []
            if groups is None or groups:
                model.optimizer_step(groups)
            else:
                model.zero_grad()
            if def_opt is not None:
                if deform_on and "deformer" in phase.param_groups:
                    for gp in def_opt.param_groups:
                        gp["lr"] = deformer_lr(cfg.deformer, i, total)
                    def_opt.step()
                def_opt.zero_grad(set_to_none=True)
            if train_cams:
                for gp in cam_opt.param_groups:
                    gp["lr"] = scheduler.lr_at("cameras", i, gp["lr"])
                cam_opt.step()
            cam_opt.zero_grad(set_to_none=True)
            if phase.densify:
                rep = strategy.step_post_backward(model, dstate, out, i)
                if rep["cloned"] or rep["split"] or rep["pruned"]:
                    version[0] += 1
            return {"loss": float(loss.detach()), "psnr": psnr(out.rgb, frames[k:k + 1]), "n": len(model), **parts}

        parts = ({"cameras": refiner, **({"deformer": deformer} if deformer is not None else {})},
                 {"cameras_opt": cam_opt, **({"deformer_opt": def_opt} if def_opt is not None else {})},
                 {"densify": (strategy, dstate)})

        def state() -> dict:
            return training_state(model, *parts)

        def load(t: dict, meta: dict) -> None:
            load_training_state(t, model, *parts)
            version[0] = int(meta.get("version", 0))

        t0 = time.perf_counter()
        train(ctx, total, step, state, load, checkpoint_every=cfg.checkpoint_every,
              description="canonical", meta=lambda: {"version": version[0]})
        self._write_outputs(ctx, model, deformer, refiner, data, frames, bg, c, time.perf_counter() - t0)

    # ---------------------------------------------------------------------- outputs
    @torch.no_grad()
    def _write_outputs(self, ctx, model, deformer, refiner, data, frames, bg, c, seconds) -> None:
        from fourreal_core.transforms_json import write_transforms
        from fourreal_core.types import PosedVideo
        from fourreal_core.video_io import write_video

        cfg = self.cfg
        out = ctx.out_dir
        model.save_ply(out / "canonical.ply")
        cams = refiner.all()
        g = model.params()
        canon, deformed, dxs, dqs = [], [], [], []
        for k in range(len(data)):
            r = ctx.rasterizer.rasterize(g, cams[k], background=bg, render_depth=False).rgb[0]
            canon.append(r.clamp(0, 1).cpu())
            if deformer is not None:
                d = deformer.deform(g.means, k, quats=g.quats)
                dxs.append(d.dx.abs().sum(-1).mean().item())
                dqs.append(d.dq.abs().sum(-1).mean().item())
                r = ctx.rasterizer.rasterize(g.deformed(d), cams[k], background=bg, render_depth=False).rgb[0]
            deformed.append(r.clamp(0, 1).cpu())
        canon_t, deformed_t = torch.stack(canon), torch.stack(deformed)
        inputs = frames.cpu()
        write_video(out / "freeze_time_rerender.mp4", torch.cat([inputs, canon_t, deformed_t], dim=2), fps=cfg.video_fps)
        refined = PosedVideo(data.video, cams.to("cpu"), times=data.times, anchor=c)
        write_transforms(out / "freeze_time" / "transforms.json", refined)
        if deformer is not None:
            save_tensors(out / "per_frame_deformer.safetensors", deformer.state_dict(),
                         {"num_frames": str(len(data)), "canonical_index": str(c)})
            write_component_json(out / "per_frame_deformer.json", cfg.deformer,
                                 {"num_frames": len(data), "canonical_index": c})
        metrics = {
            "num_gaussians": len(model),
            "train_psnr_deformed": psnr(deformed_t, inputs),
            "train_psnr_canonical": psnr(canon_t, inputs),
            "anchor_psnr": psnr(canon_t[c], inputs[c]),
            "mean_abs_dx": (sum(dxs) / len(dxs)) if dxs else 0.0,
            "mean_abs_dq": (sum(dqs) / len(dqs)) if dqs else 0.0,
            "scene_extent": scene_extent(data.cameras),
            "seconds": round(seconds, 2),
        }
        held_out = self._eval_views(ctx)
        if held_out is not None:
            views = held_out.to(ctx.device)
            sc = views.cameras
            preds = torch.cat([ctx.rasterizer.rasterize(g, sc[i], background=bg, render_depth=False).rgb
                               for i in range(len(views))]).clamp(0, 1)
            metrics["heldout_static_psnr"] = psnr(preds, views.video.frames)
            write_video(out / "heldout_static.mp4", torch.cat([views.video.frames, preds], dim=2).cpu(),
                        fps=cfg.video_fps)
        write_json(out / "metrics.json", metrics)
        ctx.log("metrics", stage=ctx.name, **metrics)

    def _eval_views(self, ctx):
        from fourreal_core.transforms_json import load_transforms

        cfg = self.cfg
        path = ctx.resolve(cfg.eval_views) if cfg.eval_views else ctx.find_output("test_static/transforms.json")
        if path is None:
            return None
        return load_transforms(path, height=cfg.height, width=cfg.width)
