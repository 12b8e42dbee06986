"""Stage `motion` (paper §3.4, Appendices C.2, D.2): temporal deformation w_t(x, t).

Phases (default, paper Appendix C.2; see scheduler.motion_phases):
  (a) ``motion``: fit w_t on the reference video, canonical Gaussians frozen;
  (b) ``growth``: add new Gaussians where the canonical ones' view-space gradients are high
      and grow only those (clone/split/prune with tau_alpha = 1e-2); canonical frozen;
  (c) ``joint``: Gaussians and w_t together on all frames (reference + freeze-time);
  (d) ``joint_sds``: + temporal and multi-view SDS (when those losses are configured).

Without a canonical PLY the Gaussians start from points and a phase with ``deform: false``
acts as a static warm-up: the D-NeRF recipe (monocular, camera moves every frame) is one
motion stage with phases warm-up -> joint.

Outputs (``stages/NN_motion/``)::

    scene4d.json + canonical.ply + w_t.safetensors   the 4D scene (fourreal render/export/eval)
    reference_rerender.mp4      input | render, over the reference video
    heldout.mp4, metrics.json   held-out novel views at novel times, when the data has them
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch

from fourreal_core.config import Component, InputPath, Ramp, Steps, component_default, scale_steps, steps_floor
from fourreal_core.config import renamed as _renamed  # old recipes: one line saying what was renamed
from fourreal_core.interfaces import Deformation, Stage
from fourreal_core.io import write_json
from fourreal_formats.scene4d import Scene4D
from fourreal_media import psnr

from .common import (
    background_for,
    build_losses,
    freeze_prompt,
    generation_prompt,
    initial_points,
    posed_input,
    near_plane_for,
    random_init_points,
    read_json,
    scene_extent,
)
from .fit import Fit, Trainable, View, setup_deformer
from .scheduler import check_phases, motion_phases, scheduler_default


@dataclass
class MotionConfig:
    """Paper §3.4, Appendix C.2: temporal deformation w_t(x, t) fitted to the reference video.

    reference: the reference video's transforms.json (default: an earlier stage's
        ``reference/transforms.json``); per-frame ``time`` in [0,1] (else evenly spaced);
        its ``canonical_view`` is the canonical frame c (t_c = its time; w_t is zero at t_c). A
        monocular D-NeRF capture works the same way.
    freeze_time: the freeze-time video (default: the newest earlier ``freeze_time/transforms.json``,
        i.e. the canonical stage's refined cameras); used by phases with ``frames: all``.
    canonical: canonical Gaussians (default: an earlier stage's ``canonical.ply``; without one the
        Gaussians start from points, as in a plain dynamic reconstruction, e.g. D-NeRF).
    w_t: the temporal deformation field w_t(x, t), zero at t_c. (Was ``deformer``.)
    per_frame_deformer: keep applying the canonical stage's w_mv (frozen) to freeze-time frames.
    growth_opacity: tau_alpha for the growth phase (paper E.2: 1e-2).
    growth_budget: the growth phase may add at most this fraction of the canonical Gaussian
        count (0.25: up to 25% more); None: only the representation's ``max_gaussians`` caps
        it (the paper sets no cap). A CPU budget: at a low ``growth_grad_threshold`` growth
        otherwise fills any cap within a few hundred steps (docs/real-data.md).
    dynamic_region: w_t moves only the Gaussians whose centre projects into the reference
        camera's dynamic region (pixels that change over the reference video), dilated by this
        fraction of the image's long side (0.03: 8 px at 256); the others are static. For a
        fixed reference camera and a subject small in the frame it makes a motion step cheaper
        by the static share and keeps the background from drifting (region.py,
        docs/real-data.md). None: w_t moves every Gaussian (the paper).
    tracker: point tracks of the reference video -- ``{name: opencv}`` (tracked here from
        ``track_points`` corners at c, half in the moving region) or ``{name: tracks_file,
        params: {path: tracks.npz}}`` (CoTracker, TAPIR...) -- and ``track_weight`` the weight of
        the track loss (Shape of Motion's: the reference camera's render at c of where w_t puts
        each Gaussian at t must follow the track at t, where it is visible; and the same from the
        previous frame to t). On every reference frame of phases that deform. None: off. The
        tracks are written to ``tracks.npz``. ``track_points`` query points at
        ``track_query_frames`` frames (c and others spread over the video).
    """

    reference: Optional[InputPath] = None
    freeze_time: Optional[InputPath] = None
    canonical: Optional[InputPath] = None
    init_points: Optional[InputPath] = None
    eval_views: Optional[InputPath] = None
    width: Optional[int] = None
    height: Optional[int] = None
    background: Optional[list[float]] = None  # RGB behind the Gaussians; None: the data's (fourreal.background) or black
    # render (and train) with at least this near plane; None: the data's (fourreal.near_plane,
    # set by the multicam stage for cameras mounted in the scene's wall), else the rasterizer's
    near_plane: Optional[float] = None
    num_random_points: int = 20000
    per_frame_deformer: bool = True
    representation: Component("representation") = component_default("representation", "gaussians")  # type: ignore[valid-type]
    w_t: Component("deformer") = component_default("deformer", "mlp", time_input="time")  # type: ignore[valid-type]
    losses: list[Component("loss")] = field(  # type: ignore[valid-type]
        default_factory=lambda: [{"name": n, "params": {}} for n in ("align", "norm", "diff", "rigid", "rot")]
    )
    scheduler: Component("scheduler") = scheduler_default(motion_phases())  # type: ignore[valid-type]
    growth_opacity: float = 1e-2
    growth_grad_threshold: float = 2e-4
    growth_budget: Optional[float] = None
    dynamic_region: Optional[float] = None
    # reference frames a step samples: within a window around the canonical frame c that
    # widens linearly to the whole video over the stage's first ``time_window`` steps
    # (0: every frame from the start); see docs/real-data.md, "The moving subject"
    time_window: Steps = 0
    # point tracks of the reference video (a tracker plugin: opencv, tracks_file) supervise w_t
    # with Shape of Motion's track loss (tracks.py; docs/deformers-and-losses.md, "Point
    # tracks"); None: no tracks (the paper)
    tracker: Optional[Component("tracker")] = None  # type: ignore[valid-type]
    track_weight: Ramp = field(default_factory=lambda: Ramp(1.0))  # loss in image-size units (1 = the image's long side) per visible track
    track_points: int = 300  # query points (opencv tracker; a file brings its own), split over the query frames
    track_query_frames: int = 4  # frames the points are queried at: c and others spread over the video
    # before the phases, w_t regressed onto the tracks' lifted offsets (tracks.track_init):
    # steps and Adam learning rate; 0 steps: off
    track_init_steps: steps_floor(300, "an initialisation: w_t must reach the tracks' offsets "
                                       "however short the schedule") = 300  # type: ignore[valid-type]
    track_init_lr: float = 1e-3
    # the initialisation's targets as a rigid motion of each Gaussian's neighbourhood of lifted
    # tracks (a weighted Kabsch fit per Gaussian and frame: offset and rotation, w_t's dq
    # regressed too) instead of their mean offset -- a spinning subject turns, not only moves
    track_init_rigid: bool = False
    # during the phases, hold the camera depth of w_t's offsets near lifted tracks to what the
    # track initialisation assumed (tracks.TrackDepthPrior); 0: off
    track_depth_weight: float = 0.0
    checkpoint_every: Steps = 500
    video_fps: float = 8.0
    deformer: Any = None  # renamed w_t: kept only to say so

    #: what a phase's ``train`` may name here (no camera refinement in this stage)
    param_groups: ClassVar[tuple[str, ...]] = ("gaussians", "new_gaussians", "deformer")

    def __post_init__(self) -> None:
        if self.deformer is not None:
            _renamed("deformer", "w_t", "the motion stage's temporal deformation field")

    def check_recipe(self, registry: Any, label: str) -> None:
        check_phases(self, registry, label, self.param_groups, grows=True)


def growth_phase(phases):
    """The phase that grows new Gaussians: the one with ``grow: true``; for recipes written
    before the flag, a phase *named* ``growth`` when no phase sets it; else None."""
    flagged = [p for p in phases if getattr(p, "grow", False)]
    if flagged:
        return flagged[0]
    return next((p for p in phases if p.name == "growth"), None)


def _frame_times(posed) -> torch.Tensor:
    n = len(posed)
    if posed.times is not None:
        return posed.times.float()
    return torch.linspace(0.0, 1.0, n) if n > 1 else torch.zeros(1)


def time_window_frame(i: int, j: int, T: int, c: int, window: int, gen: torch.Generator) -> int:
    """The reference frame step ``i`` trains on: ``j`` if it lies in the step's time window,
    else one drawn uniformly inside it. The window holds the frames within ``r`` of the
    canonical frame c, ``r`` growing linearly from 1 to the whole video over the first
    ``window`` steps (``window <= 0``: no window). Motion far from t_c is then reached in
    small steps from motion already fitted, instead of from the canonical pose, where a
    subject that moved further than its own size gets no gradient toward where it went --
    only toward hiding it (docs/real-data.md, "The moving subject")."""
    if window <= 0 or i >= window or T <= 1:
        return j
    r = max(1, math.ceil((T - 1) * (i + 1) / window))
    lo, hi = max(0, c - r), min(T - 1, c + r)
    if lo <= j <= hi:
        return j
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


class MotionFit(Fit):
    """Paper §3.4 / C.2 on the engine: frames of the reference video (and, in phases with
    ``frames: all``, of the freeze-time video at t_c, with the canonical stage's frozen
    w_mv); w_t(x, t), zero at t_c, with ``deformation_prev`` at the previous frame time for
    the temporal regularisers; the growth phase as the representation's growth strategy;
    3DGS densification in other phases with ``densify: true`` (D-NeRF recipe); temporal
    and multi-view SDS render with w_t."""

    description = "motion"
    provides = ("deformation", "deformation_prev", "time", "dynamic_mask")

    def __init__(self, ctx, cfg: MotionConfig, model, w_t, w_mv, ref, freeze, c: int, **kw) -> None:
        super().__init__(ctx, model=model, **kw)
        dev = ctx.device
        self.cfg, self.w_t, self.w_mv, self.c = cfg, w_t, w_mv, c
        self.T = len(ref)
        self.ref_times = _frame_times(ref).to(dev)
        self.t_c = float(self.ref_times[c])
        self.ref_frames, self.ref_cams = ref.video.frames.to(dev), ref.cameras.to(dev)
        self.K = len(freeze) if freeze is not None else 0
        self.freeze_frames = freeze.video.frames.to(dev) if freeze is not None else None
        self.freeze_cams = freeze.cameras.to(dev) if freeze is not None else None
        self.k_c = freeze.canonical_view if (freeze is not None and freeze.canonical_view is not None) else 0
        # the data's supervision masks (mask_path): the ``mask`` input recon losses average over
        self.ref_masks = ref.masks.to(dev) if ref.masks is not None else None
        self.freeze_masks = freeze.masks.to(dev) if freeze is not None and freeze.masks is not None else None
        self.dt = 1.0 / max(self.T - 1, 1)
        # the reference video's dynamic region (pixels that change over a camera's own frames;
        # from the frames: PosedVideo.masks mean "supervise"), the ``dynamic_mask`` input of
        # reference views (losses with ``dynamic_weight`` read it) and the stage's
        # reference_dynamic_* scores; [T,H,W] bool, all False when no camera repeats (D-NeRF)
        from .evaluate import dynamic_masks

        self.ref_dynamic, _ = dynamic_masks(ref.video.frames, ref.cameras)
        self._dynamic_input = self.ref_dynamic[..., None].float().to(dev) if bool(self.ref_dynamic.any()) else None
        self.growth = growth_phase(self.scheduler.phases)
        self.meta = {"spawned": 0}
        self.track_loss, self._track_term = None, None  # point tracks (tracks.py); set by the stage
        self.track_depth_prior, self._track_depth = None, None  # set by tracks.track_init

    def sample(self, i, phase, gen) -> View:
        kind = phase.frames
        if kind == "freeze_time" and self.K:
            src, j = "freeze_time", int(torch.randint(0, self.K, (1,), generator=gen))
        elif kind == "all" and self.K:
            j = int(torch.randint(0, self.T + self.K, (1,), generator=gen))
            src, j = ("reference", j) if j < self.T else ("freeze_time", j - self.T)
        else:
            src, j = "reference", int(torch.randint(0, self.T, (1,), generator=gen))
        if src == "reference":
            j = time_window_frame(i, j, self.T, self.c, int(self.cfg.time_window), gen)
            t = float(self.ref_times[j])
            inputs = {"time": t}
            if self._dynamic_input is not None:
                inputs["dynamic_mask"] = self._dynamic_input[j:j + 1]
            if self.ref_masks is not None:
                inputs["mask"] = self.ref_masks[j:j + 1]
            return View(src, j, self.ref_frames[j:j + 1], t, self.ref_cams[j], inputs=inputs)
        inputs = {"time": self.t_c}
        if self.freeze_masks is not None:
            inputs["mask"] = self.freeze_masks[j:j + 1]
        return View(src, j, self.freeze_frames[j:j + 1], self.t_c, self.freeze_cams[j], inputs=inputs)

    def _deform_on(self, phase) -> bool:
        return phase.deform

    def deform(self, g0, view, phase):
        extra = {"deformation": None, "deformation_prev": None}
        g = g0
        if self._deform_on(phase):
            t = float(view.key)
            t_prev = t - self.dt if t - self.dt >= 0 else t + self.dt
            d, dp = self.w_t.deform_pair(g0.means.detach(), t, t_prev, quats=g0.quats.detach())
            g = g0.deformed(d)
            extra = {"deformation": d, "deformation_prev": dp}
            if self.track_loss is not None and view.source == "reference":  # added in weighted_loss
                prev = view.index - 1 if view.index > 0 else view.index + 1
                ok = 0 <= prev < self.T and abs(float(self.ref_times[prev]) - t_prev) < 1e-5
                self._track_term = self.track_loss(g0, g, view.index, g0.deformed(dp) if ok else None,
                                                   prev if ok else None)
                if self.track_depth_prior is not None and self.cfg.track_depth_weight != 0.0:
                    self._track_depth = self.track_depth_prior(g0.means, d.dx, view.index)
        if view.source == "freeze_time" and self.w_mv is not None:
            with torch.no_grad():
                dmv = self.w_mv.deform(g0.means.detach(), view.index, quats=g0.quats.detach())
            g = g.deformed(Deformation(dmv.dx, dmv.dq, None))
        return g, extra

    def weighted_loss(self, active, inputs, step):
        total, parts = super().weighted_loss(active, inputs, step)
        term, self._track_term = self._track_term, None
        if term is not None:
            w = self.cfg.track_weight.at(step)
            if w != 0.0:
                total = total + w * term
                parts["track"] = float(term.detach())
        depth, self._track_depth = self._track_depth, None
        if depth is not None:
            total = total + float(self.cfg.track_depth_weight) * depth
            parts["track_depth"] = float(depth.detach())
        return total, parts

    def sds_context(self, g0, i, gen):
        ras, bg, w_t = self.rasterizer, self.background, self.w_t
        x, q = g0.means.detach(), g0.quats.detach()

        def render_video(cams_m, times_m):
            frames_m = []
            for m in range(len(cams_m)):
                gm = g0.deformed(w_t.deform(x, float(times_m[m]), quats=q))
                frames_m.append(ras.rasterize(gm, cams_m[m], background=bg, render_depth=False).rgb)
            return torch.cat(frames_m)

        rng = torch.Generator().manual_seed(self.ctx.seed * 7_000_003 + i)
        return {
            "render_video": render_video,
            "freeze_cameras": self.freeze_cams if self.freeze_cams is not None else self.ref_cams[self.c],
            "canonical_view": self.k_c,
            "canonical_image": self.ref_frames[self.c],
            "reference_camera": self.ref_cams[self.c],
            "canonical_time": self.t_c,
            # issue 14: multi-view SDS at a sampled reference time t, frame 0 = the reference frame
            # at t (paper §3.4 item 2, D.1); temporal SDS frame 0 = the undeformed canonical render
            "reference_frames": self.ref_frames,
            "reference_times": self.ref_times,
            "reference_cameras": self.ref_cams,
            "render_canonical": lambda cams: ras.rasterize(g0, cams, background=bg, render_depth=False).rgb,
            "freeze_prompt": freeze_prompt(self.ctx),
        }, rng

    def modules(self):
        return {"deformer": Trainable(self.w_t, "deformer", self.w_t.learning_rate, active=self._deform_on)}

    def strategies(self):
        out = {}
        if self.growth is not None:  # growth of new Gaussians (paper D.2)
            kw = {}
            if self.cfg.growth_budget is not None:  # a total relative to the canonical count
                kw["max_gaussians"] = int(len(self.model) * (1.0 + float(self.cfg.growth_budget)))
            out["growth"] = self.model.growth_strategy(self.growth.start, self.growth.end,
                                                       grad_threshold=self.cfg.growth_grad_threshold,
                                                       prune_opacity=self.cfg.growth_opacity, seed=self.ctx.seed, **kw)
        if any(p.densify and p is not self.growth for p in self.scheduler.phases):
            out["densify"] = self.model.densify_strategy(seed=self.ctx.seed)  # plain 3DGS (D-NeRF recipe)
        return out

    def strategy_active(self, name, phase) -> bool:
        if name == "growth":
            return True  # its own window: statistics before, growth inside, nothing after
        return phase.densify and phase is not self.growth


class MotionStage(Stage):
    reads = ("reference/transforms.json", "freeze_time/transforms.json", "canonical.ply", "w_mv.safetensors",
             "w_mv.json", "per_frame_deformer.safetensors", "per_frame_deformer.json", "points.ply",
             "init_points.npz", "generation.json", "test/transforms.json")
    writes = ("canonical.ply", "scene4d.json", "w_t.safetensors", "reference_rerender.mp4", "metrics.json")
    may_write = ("motion_region.safetensors", "tracks.npz", "heldout.mp4")

    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg

    # ------------------------------------------------------------------------ inputs
    def _load(self, ctx, cfg):
        ref = posed_input(ctx, cfg.reference, "reference/transforms.json", "reference video",
                          "params.reference", height=cfg.height, width=cfg.width)
        freeze = None
        fpath = ctx.resolve(cfg.freeze_time) if cfg.freeze_time else ctx.find_output("freeze_time/transforms.json")
        if fpath is not None:
            from fourreal_formats.transforms import load_transforms

            freeze = load_transforms(fpath, height=ref.video.height, width=ref.video.width)
        return ref, freeze

    def _per_frame_deformer(self, ctx, cfg, freeze, device):
        """The canonical stage's w_mv (frozen), to keep absorbing freeze-time inconsistencies."""
        if not cfg.per_frame_deformer or freeze is None:
            return None
        wpath, jpath = ctx.find_output("w_mv.safetensors"), ctx.find_output("w_mv.json")
        if wpath is None or jpath is None:  # a canonical stage run before the files took the paper's name
            wpath, jpath = ctx.find_output("per_frame_deformer.safetensors"), ctx.find_output("per_frame_deformer.json")
        if wpath is None or jpath is None:
            return None
        from fourreal_core.io import load_tensors
        from fourreal_core.recipe import component_from_plain

        info = read_json(jpath)
        spec = component_from_plain("deformer", {"name": info["name"], "params": info["params"]}, ctx.registry,
                                    source=str(jpath))
        k_c = info.get("canonical_view", info.get("canonical_index"))  # canonical_index: before the rename
        d = spec.build(ctx.registry)
        d.setup(num_frames=int(info["num_frames"]), canonical=None if k_c is None else int(k_c))
        tensors, _ = load_tensors(wpath)
        d.load_state_dict(tensors)
        d = d.to(device)
        for p in d.parameters():
            p.requires_grad_(False)
        return d

    # --------------------------------------------------------------------------- run
    def run(self, ctx) -> None:
        cfg = scale_steps(self.cfg, ctx.iterations_scale)  # once, before anything is built
        dev = ctx.device
        ref, freeze = self._load(ctx, cfg)
        T = len(ref)
        c = ref.canonical_view if ref.canonical_view is not None else T // 2  # the canonical frame
        bg = background_for(cfg.background, ref, dev)
        all_cams = ref.cameras if freeze is None else ref.cameras.__class__.cat([ref.cameras, freeze.cameras])
        extent = scene_extent(all_cams)

        model = cfg.representation.build(ctx.registry)
        canon_path = ctx.resolve(cfg.canonical) if cfg.canonical else ctx.find_output("canonical.ply")
        if canon_path is not None:
            model.load_ply(canon_path)  # the active SH degree becomes the file's
            model.scene_extent = extent
        else:
            pts = initial_points(ctx, cfg.init_points) or random_init_points(all_cams, cfg.num_random_points, ctx.seed)
            model.init_from_points(pts, extent)
        model = model.to(dev)

        t_c = float(_frame_times(ref)[c])
        w_t = setup_deformer(cfg.w_t.build(ctx.registry), cfg.w_t, num_frames=T, canonical=t_c,
                             canonical_means=model.params().means.detach(), device=dev,
                             where=f"stage {ctx.name!r}: params.w_t")
        w_mv = self._per_frame_deformer(ctx, cfg, freeze, dev)
        scheduler = cfg.scheduler.build(ctx.registry)
        fit = MotionFit(ctx, cfg, model, w_t, w_mv, ref, freeze, c, scheduler=scheduler,
                        losses=build_losses(cfg.losses, ctx.registry), loss_specs=cfg.losses, background=bg,
                        checkpoint_every=cfg.checkpoint_every, prompt=generation_prompt(ctx),
                        near_plane=near_plane_for(cfg.near_plane, ref))
        if cfg.dynamic_region is not None:
            w_t = fit.w_t = self._in_dynamic_region(ctx, cfg, w_t, ref, c, fit)
        from .tracks import build_track_loss

        fit.track_loss = build_track_loss(ctx, cfg, ref, c, fit.ref_dynamic if bool(fit.ref_dynamic.any()) else None,
                                          fit.ref_cams, fit.rasterizer, ctx.out_dir)
        t0 = time.perf_counter()

        def before(start: int) -> None:  # after resuming: a resumed run keeps its trained w_t
            from .tracks import track_init, track_targets

            if fit.track_loss is None:
                return
            if start == 0 and cfg.track_init_steps > 0:
                fit.meta.update(track_init(ctx, fit, int(cfg.track_init_steps), float(cfg.track_init_lr),
                                           rigid=bool(cfg.track_init_rigid)))
            elif cfg.track_depth_weight != 0.0:
                track_targets(fit)  # the depth prior's targets, without the regression

        fit.run(before=before)
        scene = Scene4D(model, w_t, bg, times=fit.ref_times.cpu(), canonical_frame=c,
                        reference_camera=ref.cameras[c], freeze_cameras=None if freeze is None else freeze.cameras,
                        deformer_spec=cfg.w_t, representation_spec=cfg.representation, near_plane=fit.near_plane)
        scene.save(ctx.out_dir)
        self._write_outputs(ctx, cfg, scene, ref, time.perf_counter() - t0, int(fit.meta.get("spawned", 0)),
                            fit.ref_dynamic, {k: v for k, v in fit.meta.items() if k.startswith(("dynamic_region", "track_init"))})

    def _in_dynamic_region(self, ctx, cfg, w_t, ref, c, fit):
        """w_t wrapped in a :class:`~fourreal_formats.region.RegionDeformer` on the reference
        camera's dynamic region; w_t as it is (with a notice) when the reference camera moves or
        nothing in its video changes."""
        from .evaluate import camera_groups
        from fourreal_formats.region import RegionDeformer, region_mask

        if len(camera_groups(ref.cameras)) != 1:
            ctx.notice("dynamic_region needs a fixed reference camera; this one moves, so w_t moves every Gaussian")
            return w_t
        if not bool(fit.ref_dynamic.any()):
            ctx.notice("dynamic_region: nothing changes in the reference video; w_t moves every Gaussian")
            return w_t
        mask = region_mask(fit.ref_dynamic, cfg.dynamic_region)
        region = RegionDeformer(w_t, ref.cameras.viewmats[c], ref.cameras.Ks[c], mask).to(ctx.device)
        sel = region.selected(fit.model.params().means.detach())
        fit.meta["dynamic_region_pixels"] = round(float(mask.float().mean()), 4)
        fit.meta["dynamic_region_gaussians"] = round(float(sel.float().mean()), 4)
        ctx.log("dynamic_region", stage=ctx.name, pixels=fit.meta["dynamic_region_pixels"],
                gaussians=fit.meta["dynamic_region_gaussians"])
        return region

    # ---------------------------------------------------------------------- outputs
    @torch.no_grad()
    def _write_outputs(self, ctx, cfg, scene: Scene4D, ref, seconds: float, spawned: int,
                       ref_dynamic: torch.Tensor, extra: dict) -> None:
        from fourreal_media import write_video

        from .evaluate import evaluate_views

        out = ctx.out_dir
        preds = scene.render_each(ctx.rasterizer, ref.cameras, scene.times)
        write_video(out / "reference_rerender.mp4", torch.cat([ref.video.frames, preds], dim=2), fps=cfg.video_fps)
        metrics = {"num_gaussians": len(scene.model), "spawned_in_growth": spawned,
                   **extra,
                   "reference_psnr": psnr(preds, ref.video.frames), "seconds": round(seconds, 2)}
        # the reference video's own moving region: a scene that drops (or ghosts) its subject
        # scores badly here while the whole-image PSNR stays high
        from .evaluate import pooled_dynamic_scores

        metrics.update({f"reference_{k}": v for k, v in pooled_dynamic_scores(preds, ref.video.frames, ref_dynamic).items()})
        path = ctx.resolve(cfg.eval_views) if cfg.eval_views else ctx.find_output("test/transforms.json")
        if path is not None:
            from fourreal_formats.transforms import load_transforms

            views = load_transforms(path, height=ref.video.height, width=ref.video.width)
            res = evaluate_views(scene, ctx.rasterizer, views, lpips=False)
            metrics.update({f"heldout_{k}": v for k, v in res["mean"].items()})
            write_video(out / "heldout.mp4", torch.cat([views.video.frames, res["renders"]], dim=2), fps=cfg.video_fps)
        write_json(out / "metrics.json", metrics)
        ctx.log("metrics", stage=ctx.name, **metrics)
