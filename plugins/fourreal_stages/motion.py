"""Stage `motion` (paper §3.4, Appendices C.2, D.2): temporal deformation w_t(x, t).

Phases (default, paper Appendix C.2; see configs.motion_phases):
  (a) ``motion``: fit w_t on the reference video, canonical Gaussians frozen;
  (b) ``growth``: add new Gaussians where the canonical ones' view-space gradients are high
      and grow only those (clone/split/prune with tau_alpha = 1e-2); canonical frozen;
  (c) ``joint``: Gaussians and w_t together on all frames (reference + freeze-time);
  (d) ``joint_sds``: + temporal and multi-view SDS (when those losses are configured).

Without a canonical PLY the Gaussians start from points and a phase with ``deform: false``
acts as a static warm-up: the D-NeRF recipe (monocular, camera moves every frame) is one
motion stage with phases warm-up -> joint.

Outputs (``stages/NN_motion/``)::

    scene4d.json + canonical.ply + motion_deformer.safetensors   the 4D scene (fourreal render/export/eval)
    reference_rerender.mp4      input | render, over the reference video
    heldout.mp4, metrics.json   held-out novel views at novel times, when the data has them
"""

from __future__ import annotations

import time

import torch

from fourreal_core.interfaces import Deformation, Stage
from fourreal_core.io import write_json
from fourreal_core.trainer import train

from .canonical import scaled_densify
from .common import (
    background_for,
    build_losses,
    deformer_lr,
    generation_prompt,
    initial_points,
    posed_input,
    psnr,
    random_init_points,
    read_json,
    scene_extent,
    load_training_state,
    sds_inputs,
    training_state,
    uses_sds,
    weighted_loss,
)
from .configs import MotionConfig
from .scene4d import Scene4D


def _frame_times(posed) -> torch.Tensor:
    n = len(posed)
    if posed.times is not None:
        return posed.times.float()
    return torch.linspace(0.0, 1.0, n) if n > 1 else torch.zeros(1)


class MotionStage(Stage):
    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg

    # ------------------------------------------------------------------------ inputs
    def _load(self, ctx):
        cfg = self.cfg
        ref = posed_input(ctx, cfg.reference, "reference/transforms.json", "reference video",
                          "params.reference", height=cfg.height, width=cfg.width)
        freeze = None
        fpath = ctx.resolve(cfg.freeze_time) if cfg.freeze_time else ctx.find_output("freeze_time/transforms.json")
        if fpath is not None:
            from fourreal_core.transforms_json import load_transforms

            freeze = load_transforms(fpath, height=ref.video.height, width=ref.video.width)
        return ref, freeze

    def _per_frame_deformer(self, ctx, freeze, device):
        """The canonical stage's w_mv (frozen), to keep absorbing freeze-time inconsistencies."""
        if not self.cfg.per_frame_deformer or freeze is None:
            return None
        wpath = ctx.find_output("per_frame_deformer.safetensors")
        jpath = ctx.find_output("per_frame_deformer.json")
        if wpath is None or jpath is None:
            return None
        from fourreal_core.io import load_tensors
        from fourreal_core.recipe import component_from_plain

        info = read_json(jpath)
        spec = component_from_plain("deformer", {"name": info["name"], "params": info["params"]}, ctx.registry,
                                    source=str(jpath))
        d = spec.build(ctx.registry)
        d.setup(num_frames=int(info["num_frames"]), canonical_index=int(info["canonical_index"]))
        tensors, _ = load_tensors(wpath)
        d.load_state_dict(tensors)
        d = d.to(device)
        for p in d.parameters():
            p.requires_grad_(False)
        return d

    # --------------------------------------------------------------------------- run
    def run(self, ctx) -> None:
        from fourreal_gaussians.densify import DensifyStrategy, spawn_from

        cfg = self.cfg
        dev = ctx.device
        ref, freeze = self._load(ctx)
        T = len(ref)
        ref_times = _frame_times(ref).to(dev)
        c = ref.anchor if ref.anchor is not None else T // 2
        t_c = float(ref_times[c])
        ref_frames = ref.video.frames.to(dev)
        ref_cams = ref.cameras.to(dev)
        bg = background_for(cfg.background, ref, dev)
        all_cams = ref.cameras if freeze is None else ref.cameras.__class__.cat([ref.cameras, freeze.cameras])
        extent = scene_extent(all_cams)

        model = cfg.representation.build(ctx.registry)
        canon_path = ctx.resolve(cfg.canonical) if cfg.canonical else ctx.find_output("canonical.ply")
        if canon_path is not None:
            model.load_ply(canon_path)
            model.scene_extent = extent
        else:
            pts = initial_points(ctx, cfg.init_points) or random_init_points(all_cams, cfg.num_random_points, ctx.seed)
            model.init_from_points(pts, extent)
        model = model.to(dev)
        if canon_path is not None:
            model.set_active_sh_degree(model.max_sh_degree)

        deformer = cfg.deformer.build(ctx.registry)
        deformer.setup(num_frames=T, canonical_index=c, canonical_means=model.params().means.detach())
        deformer = deformer.to(dev)
        w_mv = self._per_frame_deformer(ctx, freeze, dev)
        freeze_frames = freeze.video.frames.to(dev) if freeze is not None else None
        freeze_cams = freeze.cameras.to(dev) if freeze is not None else None
        K = len(freeze) if freeze is not None else 0

        scheduler = cfg.scheduler.build(ctx.registry).with_iterations_scale(ctx.iterations_scale)
        total = scheduler.total_steps
        def_opt = torch.optim.Adam(deformer.parameters(), lr=1e-3)
        losses = build_losses(cfg.losses, ctx.registry)
        from dataclasses import replace

        growth_cfg = replace(scaled_densify(model.cfg.densify, ctx.iterations_scale), prune_opacity=cfg.growth_opacity,
                             grad_threshold=cfg.growth_grad_threshold, start=0, stop=10**9)
        strategy = DensifyStrategy(growth_cfg, seed=ctx.seed)  # growth of new Gaussians (paper D.2)
        dstate = strategy.initialize_state(len(model), dev)
        standard = DensifyStrategy(scaled_densify(model.cfg.densify, ctx.iterations_scale), seed=ctx.seed)
        sstate = standard.initialize_state(len(model), dev)  # plain 3DGS densification (D-NeRF recipe)
        growth = scheduler.phase_named("growth")
        st = {"version": 0, "spawned": 0}
        dt = 1.0 / max(T - 1, 1)
        rasterizer = ctx.rasterizer
        prompt = generation_prompt(ctx)

        def sample(i: int, frames_kind: str):
            gen = torch.Generator().manual_seed(ctx.seed * 1_000_003 + i)
            if frames_kind == "freeze_time" and K:
                return "freeze", int(torch.randint(0, K, (1,), generator=gen))
            if frames_kind == "all" and K:
                j = int(torch.randint(0, T + K, (1,), generator=gen))
                return ("ref", j) if j < T else ("freeze", j - T)
            return "ref", int(torch.randint(0, T, (1,), generator=gen))

        def step(i: int) -> dict:
            phase = scheduler.phase_at(i)
            # growth phase start: freeze the canonical Gaussians, spawn new ones (paper D.2)
            if growth is not None and i == growth.start:
                model.freeze()
                mask = strategy.spawn_mask(model, dstate)
                cap = growth_cfg.max_gaussians
                if cap > 0 and int(mask.sum()) > max(cap - len(model), 0):  # keep the strongest gradients
                    grads = strategy.average_grads(dstate).to(mask.device).masked_fill(~mask, -1.0)
                    keep = torch.topk(grads, max(cap - len(model), 0)).indices
                    mask = torch.zeros_like(mask)
                    mask[keep] = True
                st["spawned"] = spawn_from(model, mask, generator=torch.Generator().manual_seed(ctx.seed))
                dstate.update(strategy.initialize_state(len(model), dev))
                st["version"] += 1
                ctx.log("growth_spawn", stage=ctx.name, step=i, added=st["spawned"], n=len(model))
            if growth is not None and i == growth.end:
                model.unfreeze()
            src, j = sample(i, phase.options.get("frames", "all"))
            if src == "ref":
                t, cam, target = float(ref_times[j]), ref_cams[j], ref_frames[j:j + 1]
            else:
                t, cam, target = t_c, freeze_cams[j], freeze_frames[j:j + 1]
            g0 = model.params(i)
            deform_on = phase.options.get("deform", True)
            d = d_prev = None
            g = g0
            if deform_on:
                x, q = g0.means.detach(), g0.quats.detach()
                d = deformer.deform(x, t, quats=q)
                d_prev = deformer.deform(x, t - dt if t - dt >= 0 else t + dt, quats=q)
                g = g0.deformed(d)
            if src == "freeze" and w_mv is not None:
                with torch.no_grad():
                    dmv = w_mv.deform(g0.means.detach(), j, quats=g0.quats.detach())
                g = g.deformed(Deformation(dmv.dx, dmv.dq, None))
            out = rasterizer.rasterize(g, cam, background=bg, render_depth=False)
            inputs = {"render": out, "target": target, "deformation": d, "deformation_prev": d_prev,
                      "canonical": g0, "gaussians_version": st["version"], "step": i, "time": t}
            active = tuple(n for n in phase.losses if d is not None or n not in ("norm", "diff", "rigid", "rot"))
            if uses_sds(active, losses):
                gen = torch.Generator().manual_seed(ctx.seed * 7_000_003 + i)

                def render_video(cams_m, times_m):
                    frames_m = []
                    for m in range(len(cams_m)):
                        gm = g0.deformed(deformer.deform(g0.means.detach(), float(times_m[m]), quats=g0.quats.detach()))
                        frames_m.append(rasterizer.rasterize(gm, cams_m[m], background=bg, render_depth=False).rgb)
                    return torch.cat(frames_m)

                inputs.update(sds_inputs(
                    render_video=render_video,
                    freeze_cameras=freeze_cams if freeze_cams is not None else ref_cams[c],
                    canonical_index=freeze.anchor if (freeze is not None and freeze.anchor is not None) else 0,
                    canonical_image=ref_frames[c], reference_camera=ref_cams[c], canonical_time=t_c,
                    phase=phase, step=i, prompt=prompt, gen=gen, active=active, losses=losses))
            loss, parts = weighted_loss(losses, active, inputs, i)
            loss.backward()
            model.update_learning_rate(i, total)
            if "gaussians" in phase.param_groups or "new_gaussians" in phase.param_groups:
                model.optimizer_step()  # frozen rows (canonical, in growth) never move
            else:
                model.zero_grad()
            if deform_on and "deformer" in phase.param_groups:
                for gp in def_opt.param_groups:
                    gp["lr"] = deformer_lr(cfg.deformer, i, total)
                def_opt.step()
            def_opt.zero_grad(set_to_none=True)
            # statistics for spawning at growth start; growth of new Gaussians only in its phase
            if growth is not None and i < growth.start:
                strategy.update_state(dstate, model, out)
            elif growth is not None and phase is growth:
                strategy.update_state(dstate, model, out)
                if (i - phase.start) > 0 and (i - phase.start) % strategy.cfg.every == 0:
                    strategy.refine(model, dstate, i)
                    st["version"] += 1
            elif phase.densify:
                rep = standard.step_post_backward(model, sstate, out, i)
                if rep["cloned"] or rep["split"] or rep["pruned"]:
                    st["version"] += 1
            return {"loss": float(loss.detach()), "psnr": psnr(out.rgb, target), "n": len(model), **parts}

        parts = ({"deformer": deformer}, {"deformer_opt": def_opt},
                 {"densify": (strategy, dstate), "densify_std": (standard, sstate)})

        def state() -> dict:
            return training_state(model, *parts)  # the frozen mask travels in the model's state

        def load(t: dict, meta: dict) -> None:
            load_training_state(t, model, *parts)
            st.update(meta)

        t0 = time.perf_counter()
        train(ctx, total, step, state, load, checkpoint_every=cfg.checkpoint_every, description="motion",
              meta=lambda: dict(st))
        model.unfreeze()
        scene = Scene4D(model, deformer, bg, times=ref_times.cpu(), canonical_index=c,
                        reference_camera=ref.cameras[c], freeze_cameras=None if freeze is None else freeze.cameras,
                        deformer_spec=cfg.deformer, representation_spec=cfg.representation)
        scene.save(ctx.out_dir)
        self._write_outputs(ctx, scene, ref, time.perf_counter() - t0, st["spawned"])

    # ---------------------------------------------------------------------- outputs
    @torch.no_grad()
    def _write_outputs(self, ctx, scene: Scene4D, ref, seconds: float, spawned: int) -> None:
        from fourreal_core.video_io import write_video

        from .evaluate import evaluate_views

        cfg = self.cfg
        out = ctx.out_dir
        preds = scene.render_each(ctx.rasterizer, ref.cameras, scene.times)
        write_video(out / "reference_rerender.mp4", torch.cat([ref.video.frames, preds], dim=2), fps=cfg.video_fps)
        metrics = {"num_gaussians": len(scene.model), "spawned_in_growth": spawned,
                   "reference_psnr": psnr(preds, ref.video.frames), "seconds": round(seconds, 2)}
        path = ctx.resolve(cfg.eval_views) if cfg.eval_views else ctx.find_output("test/transforms.json")
        if path is not None:
            from fourreal_core.transforms_json import load_transforms

            views = load_transforms(path, height=ref.video.height, width=ref.video.width)
            res = evaluate_views(scene, ctx.rasterizer, views, lpips=False)
            metrics.update({f"heldout_{k}": v for k, v in res["mean"].items()})
            write_video(out / "heldout.mp4", torch.cat([views.video.frames, res["renders"]], dim=2), fps=cfg.video_fps)
        write_json(out / "metrics.json", metrics)
        ctx.log("metrics", stage=ctx.name, **metrics)
