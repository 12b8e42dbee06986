"""Synthetic 4Real datasets from procedural scenes, and the ``synthetic`` stage.

:func:`make_dataset` renders, from the TRUE scene, everything the 4Real pipeline consumes
and everything needed to score it::

    OUT/
      scene.json              scene + dataset description (cameras, times, c, k_c, imperfections)
      init_points.npz         points [P,3] / colors [P,3] on the true surface at t_c (no COLMAP needed)
      reference/              fixed camera, t = 0..1 (T frames)           transforms.json + images/
      freeze_time/            orbit >= 120 deg at t_c with imperfections   transforms.json + images/
      test/                   held-out cameras at held-out times (truth)   transforms.json + images/
                              (+ masks/: the true moving region of each view, which eval scores)
      test_static/            held-out cameras at t_c, no imperfections    transforms.json + images/
      reference.mp4 freeze_time.mp4 test.mp4 test_static.mp4

Geometry: the reference camera is fixed; the freeze-time orbit keeps its radius and
elevation and sweeps the azimuth so that its frame ``canonical_view`` IS the
reference camera (identical matrix), so both videos share one world frame, and that frame
shows the scene exactly as reference frame ``canonical_frame`` (c) does (time t_c, no
imperfection). Both ``transforms.json`` record ``canonical_view``: k_c in the freeze-time
one, c in the reference one. Every ``transforms.json`` also carries, under ``"fourreal"``:
``split``, ``t_c``, ``canonical_frame`` and the scene's ``background`` colour; ``scene.json``
has both indices. (``canonical_frame`` / ``canonical_view`` were ``anchor_index`` /
``freeze_anchor_index``.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from fourreal_core.interfaces import Stage
from fourreal_core.io import atomic_path, write_json
from fourreal_formats.transforms import write_transforms
from fourreal_core.types import Cameras, PointCloud, PosedVideo, Video
from fourreal_media import write_video

from .scenes import Imperfections, ProceduralScene, cameras_at, make_scene

__all__ = ["SyntheticDataset", "make_dataset", "load_init_points", "SyntheticStage"]

SPLITS = ("reference", "freeze_time", "test", "test_static")


@dataclass
class SyntheticDataset:
    """What :func:`make_dataset` wrote (and the same data in memory).

    Attributes:
        root: the output folder.
        scene: the true scene (without imperfections).
        reference / freeze_time / test / test_static: the posed videos as written.
        points: coloured points on the true surface at ``t_c``.
        canonical_frame: reference frame c; ``t_c = times[c]``.
        canonical_view: the freeze-time frame equal to reference frame c.
        t_c: the canonical time.
        info: the content of ``scene.json``.
    """

    root: Path
    scene: ProceduralScene
    reference: PosedVideo
    freeze_time: PosedVideo
    test: PosedVideo
    test_static: PosedVideo
    points: PointCloud
    canonical_frame: int
    canonical_view: int
    t_c: float
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> PosedVideo:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; one of {', '.join(SPLITS)}")
        return getattr(self, name)


def load_init_points(path: Union[str, Path]) -> PointCloud:
    """Read ``init_points.npz`` (``points [P,3]``, ``colors [P,3]`` float32)."""
    import numpy as np

    with np.load(Path(path)) as z:
        return PointCloud(torch.from_numpy(z["points"].copy()), torch.from_numpy(z["colors"].copy()))


def _render_each(scene, cameras, times, rasterizer, frames=None, on_frame=None) -> torch.Tensor:
    """One render per camera with its own time (and freeze frame index): ``[N,H,W,3]``."""
    out = []
    for i in range(len(cameras)):
        f = None if frames is None else frames[i]
        out.append(scene.render(cameras[i], float(times[i]), rasterizer=rasterizer, frame=f)[0].cpu())
        if on_frame is not None:
            on_frame()
    return torch.stack(out)


def make_dataset(
    scene: Union[ProceduralScene, str],
    out_dir: Union[str, Path],
    width: int = 96,
    height: int = 96,
    num_reference_frames: int = 16,
    num_freeze_frames: int = 16,
    canonical_frame: Optional[int] = None,
    canonical_view: int = 0,
    orbit_arc_deg: float = 150.0,
    num_test_views: int = 4,
    num_test_static_views: int = 4,
    imperfections: Optional[Imperfections] = None,
    wobble: float = 0.0,
    moving_object: float = 0.0,
    flicker: float = 0.0,
    wobble_radius: Optional[float] = None,
    num_init_points: int = 4000,
    seed: int = 0,
    fps: float = 8.0,
    rasterizer=None,
    device: Union[str, torch.device] = "cpu",
    write_videos: bool = True,
    on_frame: Optional[Callable[[], None]] = None,
) -> SyntheticDataset:
    """Render a complete synthetic 4Real dataset from a procedural scene into ``out_dir``.

    Args:
        scene: a :class:`ProceduralScene` or a scene name for :func:`make_scene` (``seed``).
        out_dir: folder to write (created; existing files of the same names are replaced).
        width, height: image size in pixels.
        num_reference_frames: T, frames of the fixed-camera reference video, times
            ``i/(T-1)``.
        num_freeze_frames: K, frames of the freeze-time orbit.
        canonical_frame: reference frame c whose time ``t_c`` the freeze-time video shows
            (default ``T // 2``).
        canonical_view: index of the freeze-time frame taken from the reference camera
            (0: the orbit starts at the reference view, as the paper's freeze-time videos do).
        orbit_arc_deg: azimuth span of the freeze-time orbit (>= 120 recommended).
        num_test_views: held-out views of the true scene at held-out cameras and times.
        num_test_static_views: held-out views of the true scene at ``t_c``.
        imperfections: freeze-time inconsistencies; its ``canonical_view``/``num_frames`` are set
            here. Or pass ``wobble``/``wobble_radius``/``moving_object``/``flicker`` (see
            :class:`Imperfections`).
        num_init_points: size of the ``init_points.npz`` surface sample at ``t_c``.
        seed: scene seed (when ``scene`` is a name) and held-out view sampling.
        fps: frame rate written to the mp4s and transforms.json.
        rasterizer: any :class:`~fourreal_core.interfaces.Rasterizer`; default the torch one.
        device: where to render.
        write_videos: also write the ``.mp4`` of each split.
        on_frame: called after each rendered frame (progress bars).

    Returns:
        :class:`SyntheticDataset` with the posed videos as written.
    """
    T, K = int(num_reference_frames), int(num_freeze_frames)
    if T < 2 or K < 2:
        raise ValueError(f"need at least 2 reference and 2 freeze-time frames, got {T} and {K}")
    c = T // 2 if canonical_frame is None else int(canonical_frame)
    k_c = int(canonical_view)
    if not 0 <= c < T:
        raise ValueError(f"canonical_frame {c} outside the {T} reference frames")
    if not 0 <= k_c < K:
        raise ValueError(f"canonical_view {k_c} outside the {K} freeze-time frames")
    if orbit_arc_deg <= 0:
        raise ValueError(f"orbit_arc_deg must be positive, got {orbit_arc_deg}")
    if isinstance(scene, str):
        scene = make_scene(scene, seed=seed)
    if imperfections is None:
        imperfections = Imperfections(wobble=wobble, wobble_radius=wobble_radius, moving_object=moving_object,
                                      flicker=flicker, seed=seed)
    imperfections = Imperfections(**{**asdict(imperfections), "canonical_view": k_c, "num_frames": K})
    truth = scene.with_imperfections(Imperfections(canonical_view=k_c, num_frames=K))  # none
    imperfect = scene.with_imperfections(imperfections)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    g = torch.Generator().manual_seed(int(seed) * 1009 + 11)

    # ---- reference: fixed camera, t = i/(T-1) ------------------------------------------
    ref_cam = scene.reference_camera(width, height)
    ref_times = torch.arange(T, dtype=torch.float32) / (T - 1)
    t_c = float(ref_times[c])
    ref_cams = Cameras(ref_cam.viewmats.expand(T, 4, 4).clone(), ref_cam.Ks.expand(T, 3, 3).clone(),
                       width, height)
    ref_frames = _render_each(truth, ref_cams.to(dev), ref_times, rasterizer, on_frame=on_frame)
    reference = PosedVideo(Video(ref_frames, fps=fps), ref_cams, times=ref_times, canonical_view=c,
                           meta={"split": "reference"})

    # ---- freeze-time: orbit through the reference camera at frame k_c, time t_c --------
    step = orbit_arc_deg / (K - 1)
    az = scene.ref_azimuth_deg + step * (torch.arange(K, dtype=torch.float64) - k_c)
    fz_cams = cameras_at(az, scene.ref_elevation_deg, scene.ref_radius, scene.center, width, height,
                         scene.fov_deg)
    fz_cams.viewmats[k_c] = ref_cam.viewmats[0]  # exactly the reference camera
    fz_times = torch.full((K,), t_c)
    fz_frames = _render_each(imperfect, fz_cams.to(dev), fz_times, rasterizer, frames=list(range(K)),
                             on_frame=on_frame)
    freeze = PosedVideo(Video(fz_frames, fps=fps), fz_cams, times=fz_times, canonical_view=k_c,
                        meta={"split": "freeze_time"})

    # ---- held-out views ------------------------------------------------------------------
    az_lo, az_hi = float(az.min()), float(az.max())

    def held_out_cams(n: int) -> Cameras:
        # azimuths in the orbit's span, half a step off the training azimuths, plus jitter;
        # elevations and radii off the training circle
        slots = torch.randint(0, K - 1, (n,), generator=g).double()
        a = az_lo + step * (slots + 0.5) + step * 0.3 * (torch.rand(n, generator=g).double() - 0.5)
        el = scene.ref_elevation_deg + (torch.rand(n, generator=g).double() * 16.0 - 6.0)
        r = scene.ref_radius * (0.92 + 0.16 * torch.rand(n, generator=g).double())
        return cameras_at(a.clamp(az_lo, az_hi), el, r, scene.center, width, height, scene.fov_deg)

    n_t = int(num_test_views)
    test_cams = held_out_cams(n_t) if n_t > 0 else None
    # times half-way between reference frames (never a training time)
    test_times = ((torch.randint(0, T - 1, (max(n_t, 1),), generator=g).float() + 0.5) / (T - 1))[:n_t]
    n_s = int(num_test_static_views)
    static_cams = held_out_cams(n_s) if n_s > 0 else None
    static_times = torch.full((n_s,), t_c)

    splits = {"reference": reference, "freeze_time": freeze}
    for name, cams, times in (("test", test_cams, test_times), ("test_static", static_cams, static_times)):
        if cams is None:
            empty = Cameras(torch.zeros(0, 4, 4), torch.zeros(0, 3, 3), width, height)
            splits[name] = PosedVideo(Video(torch.zeros(0, height, width, 3), fps=fps), empty,
                                      times=torch.zeros(0), meta={"split": name})
            continue
        frames = _render_each(truth, cams.to(dev), times, rasterizer, on_frame=on_frame)
        masks = None
        if name == "test":  # the true moving region: eval scores whether the moving subject was kept
            masks = torch.stack([truth.moving_mask(cams[i:i + 1].to(dev), float(times[i]), rasterizer)[0]
                                 for i in range(len(cams))])[..., None].float()
            if not bool(masks.any()):
                masks = None
        splits[name] = PosedVideo(Video(frames, fps=fps), cams, times=times, dynamic_masks=masks,
                                  meta={"split": name})

    # ---- files ------------------------------------------------------------------------
    for name, pv in splits.items():
        if len(pv) == 0:
            continue
        write_transforms(out / name / "transforms.json", pv, extra={
            "split": name, "t_c": t_c, "canonical_frame": c,
            "background": [float(x) for x in scene.background],
        })
        if write_videos:
            write_video(out / f"{name}.mp4", pv.video, fps=fps)

    points = truth.point_cloud(t_c, num_points=num_init_points, seed=seed)
    import numpy as np

    with atomic_path(out / "init_points.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, points=points.points.numpy().astype(np.float32),
                     colors=points.colors.numpy().astype(np.float32))

    info = {
        "scene": scene.describe(),
        "width": int(width),
        "height": int(height),
        "fps": float(fps),
        "seed": int(seed),
        "num_reference_frames": T,
        "num_freeze_frames": K,
        "canonical_frame": c,  # the names the poses stage uses
        "canonical_view": k_c,
        "t_c": t_c,
        "orbit_arc_deg": float(orbit_arc_deg),
        "freeze_azimuths_deg": [float(x) for x in az],
        "imperfections": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(imperfections).items()},
        "splits": {
            name: {
                "transforms": f"{name}/transforms.json",
                "video": f"{name}.mp4" if write_videos and len(pv) else None,
                "num_frames": len(pv),
                "times": [float(t) for t in pv.times] if pv.times is not None else None,
            }
            for name, pv in splits.items()
        },
        "init_points": {"file": "init_points.npz", "count": len(points)},
        "conventions": "transforms.json: camera-to-world OpenGL (nerfstudio/D-NeRF); world z-up; t in [0,1]",
    }
    write_json(out / "scene.json", info)
    return SyntheticDataset(
        root=out, scene=scene, reference=reference, freeze_time=freeze, test=splits["test"],
        test_static=splits["test_static"], points=points, canonical_frame=c,
        canonical_view=k_c, t_c=t_c, info=info,
    )


class SyntheticStage(Stage):
    """The ``synthetic`` stage: writes a procedural dataset (see :func:`make_dataset`) into
    the stage folder, so later stages read ``reference/``, ``freeze_time/`` and
    ``init_points.npz`` as if a video model and COLMAP had produced them."""

    writes = ("reference/transforms.json", "freeze_time/transforms.json", "init_points.npz", "scene.json")
    may_write = ("test/transforms.json", "test_static/transforms.json", "*.mp4")  # splits with views; write_videos

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        cfg = self.cfg
        seed = ctx.seed if cfg.seed is None else cfg.seed
        scene = make_scene(cfg.scene, seed=seed, detail=cfg.detail, **cfg.scene_options())
        imp = cfg.imperfections
        imperfections = Imperfections(
            wobble=imp.wobble,
            wobble_radius=imp.wobble_radius,
            moving_object=imp.moving_object,
            flicker=imp.flicker,
            seed=seed if imp.seed is None else imp.seed,
        )
        if cfg.rasterizer == "recipe" and ctx.rasterizer_spec is not None:
            rasterizer = ctx.rasterizer
        else:
            from .scenes import default_rasterizer

            rasterizer = default_rasterizer()
        total = (cfg.num_reference_frames + cfg.num_freeze_frames + cfg.num_test_views
                 + cfg.num_test_static_views)
        ctx.log("synthetic_start", scene=cfg.scene, num_gaussians=len(scene), frames=total,
                width=cfg.width, height=cfg.height)
        with ctx.progress(total, f"render {cfg.scene}") as bar:
            ds = make_dataset(
                scene,
                ctx.out_dir,
                width=cfg.width,
                height=cfg.height,
                num_reference_frames=cfg.num_reference_frames,
                num_freeze_frames=cfg.num_freeze_frames,
                canonical_frame=cfg.canonical_frame,
                canonical_view=cfg.canonical_view,
                orbit_arc_deg=cfg.orbit_arc_deg,
                num_test_views=cfg.num_test_views,
                num_test_static_views=cfg.num_test_static_views,
                imperfections=imperfections,
                num_init_points=cfg.num_init_points,
                seed=seed,
                fps=cfg.fps,
                rasterizer=rasterizer,
                device=ctx.device,
                write_videos=cfg.write_videos,
                on_frame=lambda: bar.update(1),
            )
        ctx.log("synthetic_done", canonical_frame=ds.canonical_frame, t_c=ds.t_c,
                canonical_view=ds.canonical_view, num_init_points=len(ds.points))
