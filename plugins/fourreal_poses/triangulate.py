"""Sparse points for cameras that are already known: triangulation and frustum sampling.

Two ways to get the initial points a scene (not an object) needs when the cameras come
from a calibration rather than from SfM:

* :func:`triangulate_known` -- COLMAP's *point triangulator* with the poses held fixed:
  SIFT on every frame, matching of the frames whose cameras overlap (optical axes within
  ``max_pair_angle_deg``, the ``pairs_per_frame`` closest ones), geometric verification,
  then ``pycolmap.triangulate_points`` on a reconstruction that holds the known cameras
  and poses. Returns coloured points in the cameras' own world frame.
* :func:`frustum_points` -- random points that cover every camera's view frustum over the
  scene's depth range (so the background is covered too, unlike a cube that every camera
  sees): each point is a random pixel of a random camera, lifted to a depth drawn
  log-uniformly in ``[near, far]``. ``near``/``far`` come from the sparse points' depths
  in that camera when there are some, else from the cameras' geometry
  (:func:`depth_range`).

:func:`scene_points` combines them: file / triangulated points, topped up with frustum
points when fewer than ``min_points`` were found (docs/real-data.md).
"""

from __future__ import annotations

import tempfile
import time
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fourreal_core.errors import FourRealError
from fourreal_core.types import Cameras, PointCloud

__all__ = [
    "camera_pairs",
    "depth_range",
    "frustum_points",
    "merge_points",
    "points_beside",
    "read_points_file",
    "scene_points",
    "triangulate_known",
]


# ================================================================================ pairs
def camera_pairs(cameras: Cameras, max_angle_deg: float = 75.0, per_frame: int = 8,
                 min_baseline: float = 1e-6) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of cameras whose views overlap: optical axes within
    ``max_angle_deg`` of each other and centres at least ``min_baseline`` x the rig's size
    apart (no baseline, nothing to triangulate); each camera keeps its ``per_frame``
    smallest-angle partners (0: all)."""
    c2w = torch.linalg.inv(cameras.viewmats.double())
    fwd = torch.nn.functional.normalize(c2w[:, :3, 2], dim=-1)
    ctr = c2w[:, :3, 3]
    n = len(cameras)
    size = float((ctr - ctr.mean(0)).norm(dim=-1).max()) if n > 1 else 0.0
    ang = torch.rad2deg(torch.arccos((fwd @ fwd.T).clamp(-1, 1)))
    dist = torch.cdist(ctr, ctr)
    ok = (ang <= max_angle_deg) & (dist > max(min_baseline * size, 1e-9))
    ok.fill_diagonal_(False)
    pairs: set[tuple[int, int]] = set()
    for i in range(n):
        js = torch.nonzero(ok[i]).reshape(-1)
        if per_frame > 0 and len(js) > per_frame:
            js = js[torch.argsort(ang[i, js], stable=True)[:per_frame]]
        for j in js.tolist():
            pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


# ======================================================================== triangulation
def triangulate_known(frames: torch.Tensor, cameras: Cameras, *, max_image_size: int = 1024,
                      max_num_features: int = 4096, max_pair_angle_deg: float = 75.0,
                      pairs_per_frame: int = 8, min_num_matches: int = 15, min_track_length: int = 2,
                      max_reproj_error_px: float = 4.0, num_threads: int = -1, seed: int = 0,
                      workspace: Optional[str] = None, verbose: bool = False) -> tuple[Optional[PointCloud], dict]:
    """Triangulate sparse points from frames whose cameras are known (poses held fixed).

    Args:
        frames: ``[N,H,W,3]`` in [0,1], one per camera.
        cameras: the ``N`` known OpenCV cameras (intrinsics in pixels of ``frames``).
        max_image_size, max_num_features: SIFT (as the `colmap` estimator).
        max_pair_angle_deg, pairs_per_frame: which frames are matched (:func:`camera_pairs`).
        min_num_matches: verified matches for a pair to count.
        min_track_length: keep points seen in at least this many frames.
        max_reproj_error_px: keep points whose mean reprojection error is below this.
        workspace: keep COLMAP's files here (default: a temporary folder).

    Returns:
        ``(points or None, report)``; the report says how many pairs, matches and points.

    Raises:
        PluginError: pycolmap missing. FourRealError: a COLMAP step failed.
    """
    from .colmap import _quiet, import_pycolmap

    pc = import_pycolmap()
    t0 = time.perf_counter()
    pairs = camera_pairs(cameras, max_pair_angle_deg, pairs_per_frame)
    report: dict = {"method": "triangulate", "frames": int(len(cameras)), "num_pairs": len(pairs)}
    if not pairs:
        report.update(num_points=0, why="no two cameras overlap with a baseline")
        return None, report
    if workspace:
        ws_ctx = None
        ws = Path(workspace).expanduser().resolve()
        ws.mkdir(parents=True, exist_ok=True)
        for stale in ("database.db", "pairs.txt"):
            (ws / stale).unlink(missing_ok=True)
    else:
        ws_ctx = tempfile.TemporaryDirectory(prefix="fourreal-triangulate-")
        ws = Path(ws_ctx.name)
    try:
        with _quiet(pc, verbose):
            pts, rep = _triangulate(pc, frames, cameras, pairs, ws, max_image_size, max_num_features,
                                    min_num_matches, min_track_length, max_reproj_error_px, num_threads, seed)
    finally:
        if ws_ctx is not None:
            ws_ctx.cleanup()
    report.update(rep)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return pts, report


def _step(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except FourRealError:
        raise
    except Exception as exc:  # pycolmap raises plain RuntimeError / ValueError
        raise FourRealError(f"COLMAP {what} (triangulation from known cameras) failed: "
                            f"{' '.join(str(exc).split())}") from exc


def _triangulate(pc, frames, cameras, pairs, ws: Path, max_image_size, max_num_features, min_num_matches,
                 min_track_length, max_reproj_error_px, num_threads, seed):
    from PIL import Image

    image_dir = ws / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    arr = (frames.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    names = []
    for k in range(arr.shape[0]):
        name = f"{k:05d}.jpg"
        Image.fromarray(arr[k]).save(image_dir / name, quality=95, subsampling=0)
        names.append(name)
    db_path = ws / "database.db"
    if hasattr(pc, "set_random_seed"):
        pc.set_random_seed(int(seed))
    reader = pc.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    extraction = pc.FeatureExtractionOptions()
    extraction.max_image_size = int(max_image_size)
    extraction.num_threads = int(num_threads)
    extraction.sift.max_num_features = int(max_num_features)
    _step("feature extraction", pc.extract_features, str(db_path), str(image_dir), image_names=names,
          camera_mode=pc.CameraMode.PER_IMAGE, reader_options=reader, extraction_options=extraction)

    # the known intrinsics replace the guessed ones, so verification and triangulation use them
    Ks = cameras.Ks.detach().double().cpu().numpy()
    V = cameras.viewmats.detach().double().cpu().numpy()
    db = pc.Database.open(str(db_path))
    try:
        by_name = {}
        for img in db.read_all_images():
            by_name[img.name] = img
        cams = {}
        for k, name in enumerate(names):
            img = by_name[name]
            cam = db.read_camera(img.camera_id)
            cam.params = np.array([Ks[k, 0, 0], Ks[k, 1, 1], Ks[k, 0, 2], Ks[k, 1, 2]], dtype=np.float64)
            cam.has_prior_focal_length = True
            db.update_camera(cam)
            cams[k] = cam
        n_kp = float(db.num_keypoints()) / max(len(names), 1)
    finally:
        db.close()

    pairs_file = ws / "pairs.txt"
    pairs_file.write_text("".join(f"{names[i]} {names[j]}\n" for i, j in pairs))
    matching = pc.FeatureMatchingOptions()
    matching.num_threads = int(num_threads)
    verification = pc.TwoViewGeometryOptions()
    verification.min_num_inliers = int(min_num_matches)
    pairing = pc.ImportedPairingOptions()
    pairing.match_list_path = str(pairs_file)
    _step("matching", pc.match_image_pairs, str(db_path), matching_options=matching, pairing_options=pairing,
          verification_options=verification)
    db = pc.Database.open(str(db_path))
    try:
        inliers = int(db.num_inlier_matches())
        verified = int(db.num_verified_image_pairs()) if hasattr(db, "num_verified_image_pairs") else -1
    finally:
        db.close()
    rep = {"keypoints_per_frame": round(n_kp, 1), "verified_pairs": verified, "inlier_matches": inliers}
    if inliers == 0:
        rep.update(num_points=0, why="no verified matches between overlapping cameras")
        return None, rep

    rec = pc.Reconstruction()
    for k, name in enumerate(names):
        rec.add_camera_with_trivial_rig(cams[k])
    for k, name in enumerate(names):
        img = by_name[name]
        new = pc.Image(name=name, camera_id=img.camera_id, image_id=img.image_id)
        rec.add_image_with_trivial_frame(new, pc.Rigid3d(V[k, :3, :4]))
    opts = pc.IncrementalPipelineOptions()
    opts.num_threads = int(num_threads)
    opts.min_num_matches = int(min_num_matches)
    opts.extract_colors = True
    if hasattr(opts, "random_seed"):
        opts.random_seed = int(seed)
    out_dir = ws / "triangulated"
    out_dir.mkdir(exist_ok=True)
    rec = _step("point triangulation", pc.triangulate_points, rec, str(db_path), str(image_dir), str(out_dir),
                clear_points=True, options=opts, refine_intrinsics=False)
    xyz, rgb, kept = [], [], 0
    total = len(rec.points3D)
    for p in rec.points3D.values():
        if p.track.length() < min_track_length or not (p.error <= max_reproj_error_px):
            continue
        xyz.append(np.asarray(p.xyz, dtype=np.float64))
        rgb.append(np.asarray(p.color, dtype=np.float64) / 255.0)
        kept += 1
    rep.update(num_triangulated=int(total), num_points=int(kept))
    if not kept:
        return None, rep
    P = torch.from_numpy(np.stack(xyz)).float()
    C = torch.from_numpy(np.stack(rgb)).float().clamp(0, 1)
    # the poses were fixed, so the points are in the cameras' frame; check a few project
    return PointCloud(P, C), rep


# ============================================================================ depth range
def _cam_space(points: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    V = cameras.viewmats.double()
    return torch.einsum("cij,pj->cpi", V[:, :3, :3], points.double()) + V[:, None, :3, 3]


def depth_range(cameras: Cameras, points: Optional[torch.Tensor] = None, near_quantile: float = 0.02,
                far_quantile: float = 0.98, margin: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(near [C], far [C])``: the depth range of the scene in each camera.

    With at least 20 points in front of a camera and inside its image: the ``near_quantile``
    / ``far_quantile`` depths of those points, widened by ``margin`` (near / margin,
    far * margin). Otherwise from the cameras alone: ``d`` = the distance from the camera
    to the point nearest to all optical axes (what the rig looks at), near = 0.2 d,
    far = 3 d (a background up to twice as far behind the subject as the subject is from
    the camera); a single camera (or parallel axes) uses the rig size or 1 unit for ``d``.
    """
    from .known import _focus_point

    C = len(cameras)
    focus, dist = _focus_point(cameras) if C > 1 else (None, 1.0)
    centres = cameras.centers.double()
    if focus is not None:
        d = (centres - focus).norm(dim=-1).clamp_min(1e-6)
    else:
        d = torch.full((C,), float(dist), dtype=torch.float64)
    near, far = 0.2 * d, 3.0 * d
    if points is not None and len(points) >= 20:
        cam = _cam_space(points, cameras)
        z = cam[..., 2]
        K = cameras.Ks.double()
        uv = torch.einsum("cij,cpj->cpi", K, cam)
        u, v = uv[..., 0] / z.clamp_min(1e-12), uv[..., 1] / z.clamp_min(1e-12)
        inside = (z > 1e-6) & (u >= 0) & (u < cameras.width) & (v >= 0) & (v < cameras.height)
        for c in range(C):
            zc = z[c][inside[c]]
            if len(zc) >= 20:
                near[c] = torch.quantile(zc, near_quantile) / margin
                far[c] = torch.quantile(zc, far_quantile) * margin
    return near, torch.maximum(far, near * 1.5)


def frustum_points(cameras: Cameras, n: int, seed: int = 0, points: Optional[torch.Tensor] = None,
                   near: Optional[torch.Tensor] = None, far: Optional[torch.Tensor] = None) -> PointCloud:
    """``n`` random points covering every camera's view frustum over the scene's depth range.

    Each point: a camera (round robin, so every view gets ``n / C``), a uniform random
    pixel, a depth log-uniform in that camera's ``[near, far]`` (:func:`depth_range` from
    ``points`` when not given) -- log-uniform so that the density per pixel falls off with
    depth no faster than the pixels' footprint grows. Colours are random (the canonical fit
    overwrites them within a few hundred steps); use :func:`colour_from_frames` to start
    from the pixels' colours instead.
    """
    g = torch.Generator().manual_seed(int(seed))
    C = len(cameras)
    if near is None or far is None:
        near, far = depth_range(cameras, points)
    cam_idx = torch.arange(n) % C
    u = torch.rand(n, generator=g, dtype=torch.float64) * cameras.width
    v = torch.rand(n, generator=g, dtype=torch.float64) * cameras.height
    s = torch.rand(n, generator=g, dtype=torch.float64)
    ln, lf = torch.log(near.double())[cam_idx], torch.log(far.double())[cam_idx]
    z = torch.exp(ln + s * (lf - ln))
    K = cameras.Ks.double()[cam_idx]
    x = (u - K[:, 0, 2]) / K[:, 0, 0] * z
    y = (v - K[:, 1, 2]) / K[:, 1, 1] * z
    p_cam = torch.stack([x, y, z], -1)
    c2w = torch.linalg.inv(cameras.viewmats.double())[cam_idx]
    p = torch.einsum("nij,nj->ni", c2w[:, :3, :3], p_cam) + c2w[:, :3, 3]
    cols = torch.rand(n, 3, generator=g)
    return PointCloud(p.float(), cols)


@torch.no_grad()
def sweep_points(frames: torch.Tensor, cameras: Cameras, n: int, *, depths: int = 48, min_views: int = 3,
                 max_cost: float = 0.06, points: Optional[torch.Tensor] = None, seed: int = 0,
                 near: Optional[torch.Tensor] = None, far: Optional[torch.Tensor] = None,
                 chunk: int = 2048) -> tuple[PointCloud, dict]:
    """Up to ``n`` points where the training views agree: a winner-take-all plane sweep.

    For random pixels of every camera (round robin), ``depths`` candidate depths along the ray
    (log-spaced over the camera's ``[near, far]``, :func:`depth_range`) are projected into
    every other camera; a candidate's cost is the mean L1 colour difference, over the cameras
    that see it, between the pixel (colours blurred by a 3x3 box so that a one-pixel miss is
    not a mismatch) and what those cameras see there. The ray keeps its cheapest candidate if
    at least ``min_views`` other cameras see it and the cost is below ``max_cost``.

    Why: random frustum points (:func:`frustum_points`) are placed at random depths, so most
    sit in empty space in front of the other cameras; the fit then explains each training
    view with its own floaters -- the grey fog that unseen cameras see. A point chosen where
    several cameras see the same colour is where a surface can be. No library here does this
    without a GPU (COLMAP's patch-match stereo needs CUDA; OpenCV's stereo matchers need
    rectified pairs), and a pixel-wise sweep over calibrated cameras is a few tensor ops.

    Returns ``(points, report)`` with colours from the pixels.
    """
    C, H, W = frames.shape[0], frames.shape[1], frames.shape[2]
    g = torch.Generator().manual_seed(int(seed))
    img = frames.float()
    if img.max() > 1.5:
        img = img / 255.0
    blur = torch.nn.functional.avg_pool2d(img.permute(0, 3, 1, 2), 3, stride=1, padding=1,
                                          count_include_pad=False)  # [C,3,H,W]
    if near is None or far is None:
        near, far = depth_range(cameras, points)
    K = cameras.Ks.double()
    V = cameras.viewmats.double()
    c2w = torch.linalg.inv(V)
    zs = torch.linspace(0, 1, depths, dtype=torch.float64)
    kept, cols, costs = [], [], []
    n_rays = 0
    per_cam = max(1, -(-n // C)) * 2  # rays per camera: twice what is kept on average
    for c in range(C):
        u = torch.rand(per_cam, generator=g, dtype=torch.float64) * W
        v = torch.rand(per_cam, generator=g, dtype=torch.float64) * H
        n_rays += per_cam
        ref = blur[c][:, v.long().clamp(0, H - 1), u.long().clamp(0, W - 1)].t()  # [R,3]
        z = torch.exp(torch.log(near[c].double()) + zs * (torch.log(far[c].double()) - torch.log(near[c].double())))
        dirs = torch.stack([(u - K[c, 0, 2]) / K[c, 0, 0], (v - K[c, 1, 2]) / K[c, 1, 1], torch.ones_like(u)], -1)
        others = [o for o in range(C) if o != c]
        for r0 in range(0, per_cam, chunk):
            d = dirs[r0:r0 + chunk]
            R = d.shape[0]
            pc = d[:, None, :] * z[None, :, None]  # [R,D,3] camera space
            pw = pc @ c2w[c, :3, :3].T + c2w[c, :3, 3]  # [R,D,3] world
            tot = torch.zeros(R, depths, dtype=torch.float32)
            cnt = torch.zeros(R, depths, dtype=torch.float32)
            for o in others:
                q = pw @ V[o, :3, :3].T + V[o, :3, 3]
                zq = q[..., 2]
                uq = K[o, 0, 0] * q[..., 0] / zq.clamp_min(1e-9) + K[o, 0, 2]
                vq = K[o, 1, 1] * q[..., 1] / zq.clamp_min(1e-9) + K[o, 1, 2]
                ok = (zq > 1e-6) & (uq >= 0) & (uq < W) & (vq >= 0) & (vq < H)
                if not ok.any():
                    continue
                grid = torch.stack([uq / W * 2 - 1, vq / H * 2 - 1], -1).float()[None]  # [1,R,D,2]
                seen = torch.nn.functional.grid_sample(blur[o:o + 1], grid, align_corners=False)[0]  # [3,R,D]
                diff = (seen.permute(1, 2, 0) - ref[r0:r0 + R, None, :].float()).abs().mean(-1)
                tot += diff * ok
                cnt += ok.float()
            cost = torch.where(cnt >= min_views, tot / cnt.clamp_min(1), torch.full_like(tot, float("inf")))
            best, bi = cost.min(dim=1)
            good = best < max_cost
            if good.any():
                kept.append(pw[torch.arange(R)[good], bi[good]].float())
                cols.append(ref[r0:r0 + R][good].float())
                costs.append(best[good])
    if kept:
        pts, col, cost = torch.cat(kept), torch.cat(cols), torch.cat(costs)
        if len(pts) > n:
            keep = torch.argsort(cost)[:n]  # the most consistent
            pts, col = pts[keep], col[keep]
    else:
        pts, col = torch.zeros(0, 3), torch.zeros(0, 3)
    report = {"rays": n_rays, "kept": len(pts), "depths": depths, "min_views": min_views, "max_cost": max_cost}
    return PointCloud(pts, col.clamp(0, 1)), report


def colour_from_frames(points: PointCloud, frames: torch.Tensor, cameras: Cameras) -> PointCloud:
    """Points coloured by the first frame that sees each of them (random colour kept where
    none does). ``frames [C,H,W,3]`` match ``cameras``."""
    cam = _cam_space(points.points, cameras)
    z = cam[..., 2]
    uv = torch.einsum("cij,cpj->cpi", cameras.Ks.double(), cam)
    u, v = uv[..., 0] / z.clamp_min(1e-12), uv[..., 1] / z.clamp_min(1e-12)
    inside = (z > 1e-6) & (u >= 0) & (u < cameras.width) & (v >= 0) & (v < cameras.height)
    cols = points.colors.clone()
    done = torch.zeros(len(points), dtype=torch.bool)
    for c in range(len(cameras)):
        m = inside[c] & ~done
        if m.any():
            ui = u[c][m].long().clamp(0, cameras.width - 1)
            vi = v[c][m].long().clamp(0, cameras.height - 1)
            cols[m] = frames[c, vi, ui].float().cpu()
            done |= m
    return PointCloud(points.points, cols)


def merge_points(*clouds: Optional[PointCloud]) -> Optional[PointCloud]:
    parts = [c for c in clouds if c is not None and len(c)]
    if not parts:
        return None
    return PointCloud(torch.cat([p.points.float() for p in parts]), torch.cat([p.colors.float() for p in parts]))


# ================================================================================ files
#: file names looked for beside a transforms.json / capture (first found wins)
POINT_FILES = ("sparse_pc.ply", "points3D.ply", "points.ply", "init_pt_cld.npz", "init_points.npz",
               "sparse/0/points3D.bin", "colmap/sparse/0/points3D.bin")


def points_beside(path: Path) -> Optional[Path]:
    """A points file for the data at ``path`` (a transforms.json or a folder): the
    nerfstudio ``ply_file_path`` of the transforms.json when set, else the first of
    :data:`POINT_FILES` in its folder."""
    import json

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    tj = path if path.is_file() else folder / "transforms.json"
    if tj.is_file() and tj.suffix == ".json":
        try:
            ply = json.loads(tj.read_text()).get("ply_file_path")
        except (OSError, ValueError, AttributeError):
            ply = None
        if isinstance(ply, str) and ply:
            p = (folder / ply) if not Path(ply).is_absolute() else Path(ply)
            if p.is_file():
                return p
    for name in POINT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def read_points_file(path: Path) -> PointCloud:
    """Points from a PLY (x,y,z [+ red,green,blue]), a fourreal ``.npz`` (points, colors),
    a Dynamic-3D-Gaussians ``init_pt_cld.npz`` (``data [N,7]``: xyz, rgb in [0,1], seg) or
    a COLMAP ``points3D.bin``."""
    from fourreal_core.errors import InputError

    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path) as z:
                if "data" in z and "points" not in z:
                    d = z["data"].astype(np.float32)
                    if d.ndim != 2 or d.shape[1] < 6:
                        raise InputError(f"{path}: 'data' must be [N,>=6] (xyz, rgb), got {list(d.shape)}")
                    pts, cols = d[:, :3], d[:, 3:6]
                else:
                    pts, cols = z["points"].astype(np.float32), z["colors"].astype(np.float32)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            why = (str(exc).splitlines() or [""])[0][:120]
            raise InputError(f"{path}: cannot read points ({type(exc).__name__}: {why})") from None
        if pts.ndim != 2 or pts.shape[1] != 3 or cols.shape != pts.shape:
            raise InputError(f"{path}: points must be [N,3] with colors [N,3], got {list(pts.shape)} and {list(cols.shape)}")
        if not len(pts):
            raise InputError(f"{path}: holds no points")
        if not np.isfinite(pts).all():
            raise InputError(f"{path}: points hold non-finite coordinates")
        if not np.isfinite(cols).all():
            raise InputError(f"{path}: colors hold non-finite values")
        cols = cols / 255.0 if cols.max() > 1.0 else cols
        return PointCloud(torch.from_numpy(pts), torch.from_numpy(np.clip(cols, 0, 1)))
    if path.suffix == ".bin":
        from .colmap import import_pycolmap

        pc = import_pycolmap()
        rec = pc.Reconstruction()
        try:
            rec.read_binary(str(path.parent))
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path}: cannot read COLMAP model ({' '.join(str(exc).split())})") from None
        xyz = np.array([p.xyz for p in rec.points3D.values()], dtype=np.float32).reshape(-1, 3)
        rgb = np.array([p.color for p in rec.points3D.values()], dtype=np.float32).reshape(-1, 3) / 255.0
        return PointCloud(torch.from_numpy(xyz), torch.from_numpy(rgb))
    from fourreal_formats.points import read_points

    return read_points(path)


# =============================================================================== combined
def scene_points(frames: Optional[torch.Tensor], cameras: Cameras, *, mode: str = "auto",
                 points_file: Optional[Path] = None, min_points: int = 1000, fill_points: int = 20000,
                 seed: int = 0, triangulate_kw: Optional[dict] = None,
                 transform=None) -> tuple[Optional[PointCloud], dict]:
    """Initial points for known cameras (see the module docstring).

    mode: ``auto`` -- ``points_file`` when given, else triangulate (when pycolmap is
    installed and frames are given); then, with fewer than ``min_points``, add
    ``fill_points`` :func:`frustum_points`. ``triangulate`` -- the same but a failed
    triangulation is an error. ``file`` -- the file only. ``frustum`` -- frustum points only.
    ``none`` -- no points. ``transform(points [P,3]) -> [P,3]`` maps file points into the
    cameras' frame (e.g. the transforms.json's own conversion), when needed.
    """
    from fourreal_core.errors import PluginError

    rep: dict = {"mode": mode}
    if mode == "none":
        return None, rep
    found: Optional[PointCloud] = None
    if mode in ("auto", "file") and points_file is not None:
        found = read_points_file(points_file)
        if transform is not None:
            found = PointCloud(transform(found.points), found.colors)
        rep.update(source="file", file=str(points_file), num_file_points=len(found))
    elif mode == "file":
        raise FourRealError("points: file: no points file beside the data (sparse_pc.ply, points3D.ply, "
                            "init_pt_cld.npz... or ply_file_path in transforms.json)")
    elif mode in ("auto", "triangulate") and frames is not None:
        try:
            found, trep = triangulate_known(frames, cameras, seed=seed, **(triangulate_kw or {}))
            rep.update(source="triangulate", triangulation=trep)
        except PluginError as exc:
            if mode == "triangulate":
                raise
            rep.update(triangulation={"skipped": str(exc)})
        if mode == "triangulate" and (found is None or not len(found)):
            why = rep.get("triangulation", {}).get("why", "no points")
            raise FourRealError(f"points: triangulate: {why} ({rep['triangulation'].get('num_pairs', 0)} camera "
                                "pairs); set points: auto to fall back to random points in the cameras' frusta")
    n_found = 0 if found is None else len(found)
    fill = None
    if mode == "frustum" or (mode in ("auto",) and n_found < min_points and fill_points > 0):
        fill = frustum_points(cameras, fill_points, seed=seed, points=None if found is None else found.points)
        if frames is not None:
            fill = colour_from_frames(fill, frames, cameras)
        rep["num_frustum_points"] = len(fill)
    pts = merge_points(found, fill)
    rep["num_points"] = 0 if pts is None else len(pts)
    return pts, rep
