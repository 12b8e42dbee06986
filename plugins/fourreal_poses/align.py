"""Similarity alignment of trajectories and small pose utilities.

* :func:`umeyama` -- the least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991).
* :func:`apply_similarity`, :func:`transform_cameras` -- move points / cameras by one.
* :func:`align_cameras`, :func:`alignment_report` -- compare an estimated trajectory with a
  reference one (e.g. COLMAP against a transforms.json) up to a similarity, which is all a
  monocular reconstruction can recover.
* :func:`interpolate_missing_poses` -- fill the cameras of frames that failed to register
  from their registered neighbours in the same video (slerp rotations, lerp centres).

Everything is computed in float64 and accepts tensors or anything ``torch.as_tensor``
takes. Cameras follow :mod:`fourreal_core.types`: OpenCV world-to-camera ``viewmats``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from fourreal_formats import quaternions
from fourreal_core.types import Cameras

__all__ = [
    "umeyama",
    "apply_similarity",
    "similarity_matrix",
    "transform_cameras",
    "align_cameras",
    "alignment_report",
    "path_extent",
    "rotation_angle_deg",
    "matrix_to_quat",
    "quat_to_matrix",
    "slerp",
    "interpolate_missing_poses",
    "neighbour_rotations_deg",
    "camera_path_jumps",
]


def _f64(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(dtype=torch.float64, device="cpu")


# ================================================================================ similarity
def umeyama(src, dst, with_scale: bool = True) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The similarity that best maps ``src`` onto ``dst`` in the least-squares sense.

    Finds ``s, R, t`` minimising ``sum_i ||dst_i - (s R src_i + t)||^2`` with ``R`` a proper
    rotation (det +1), following Umeyama, "Least-squares estimation of transformation
    parameters between two point patterns" (PAMI 1991).

    Args:
        src: ``[N,3]`` points (N >= 3, not all collinear, for a unique rotation).
        dst: ``[N,3]`` corresponding points.
        with_scale: estimate the scale; if False ``s`` is 1 (a rigid alignment).

    Returns:
        ``(s, R, t)``: float scale, ``[3,3]`` float64 rotation, ``[3]`` float64 translation.
    """
    X, Y = _f64(src), _f64(dst)
    if X.ndim != 2 or X.shape[1] != 3 or X.shape != Y.shape:
        raise ValueError(f"umeyama: src and dst must both be [N,3], got {tuple(X.shape)} and {tuple(Y.shape)}")
    if X.shape[0] < 3:
        raise ValueError(f"umeyama: needs at least 3 point pairs, got {X.shape[0]}")
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    cov = Yc.T @ Xc / X.shape[0]  # [3,3]
    U, D, Vt = torch.linalg.svd(cov)
    S = torch.eye(3, dtype=torch.float64)
    if torch.det(U) * torch.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    var_x = (Xc**2).sum(1).mean()
    if with_scale:
        if var_x <= 0:
            raise ValueError("umeyama: src points are all identical; the scale is undefined")
        s = float((D * S.diagonal()).sum() / var_x)
    else:
        s = 1.0
    t = my - s * (R @ mx)
    return s, R, t


def apply_similarity(points, s: float, R, t) -> torch.Tensor:
    """``s R p + t`` for every point.

    Args:
        points: ``[...,3]``.
        s, R, t: scale, ``[3,3]`` rotation, ``[3]`` translation (e.g. from :func:`umeyama`).

    Returns:
        ``[...,3]`` in the dtype and device of ``points`` (float32 if it was not floating).
    """
    p = torch.as_tensor(points)
    dtype = p.dtype if p.is_floating_point() else torch.float32
    out = s * (_f64(p) @ _f64(R).T) + _f64(t)
    return out.to(dtype=dtype, device=p.device)


def similarity_matrix(s: float, R, t) -> torch.Tensor:
    """The ``[4,4]`` float64 matrix of ``p -> s R p + t``."""
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3] = s * _f64(R)
    M[:3, 3] = _f64(t)
    return M


def transform_cameras(cameras: Cameras, s: float, R, t) -> Cameras:
    """The same cameras in a world moved by ``X' = s R X + t``.

    The images do not change: every camera sees the moved world exactly as it saw the old
    one (intrinsics unchanged; camera centres move to ``s R C + t``).

    Returns:
        new :class:`Cameras` (float32, same device).
    """
    V = _f64(cameras.viewmats)  # [N,4,4] world-to-camera
    R, t = _f64(R), _f64(t)
    Rc, tc = V[:, :3, :3], V[:, :3, 3]
    out = torch.eye(4, dtype=torch.float64).repeat(V.shape[0], 1, 1)
    Rn = Rc @ R.T  # x_cam = Rc R^T (X' - t) / s + tc, scaled by s (depth scale is invisible)
    out[:, :3, :3] = Rn
    out[:, :3, 3] = s * tc - (Rn @ t)
    return Cameras(
        out.to(dtype=torch.float32, device=cameras.device), cameras.Ks.clone(), cameras.width, cameras.height
    )


# ================================================================================ comparison
def path_extent(centres, kind: Literal["max_pairwise", "bbox_diagonal"] = "max_pairwise") -> float:
    """Size of a camera path ``[N,3]``: the largest distance between two centres
    (``max_pairwise``) or the diagonal of their axis-aligned bounding box."""
    C = _f64(centres)
    if C.shape[0] == 0:
        return 0.0
    if kind == "max_pairwise":
        return float(torch.cdist(C, C).max())
    if kind == "bbox_diagonal":
        return float((C.max(0).values - C.min(0).values).norm())
    raise ValueError(f"path_extent: unknown kind {kind!r}")


def rotation_angle_deg(Ra, Rb) -> torch.Tensor:
    """Angle in degrees of ``Ra^T Rb`` for batches of rotations ``[...,3,3]``."""
    Ra, Rb = _f64(Ra), _f64(Rb)
    rel = Ra.transpose(-1, -2) @ Rb
    cos = (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    # sin from the skew part: atan2 stays accurate for tiny angles, where acos does not
    skew = torch.stack(
        [rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0], rel[..., 1, 0] - rel[..., 0, 1]], -1
    )
    sin = skew.norm(dim=-1) / 2
    return torch.rad2deg(torch.atan2(sin, cos))


def align_cameras(est: Cameras, ref: Cameras, with_scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Align estimated camera centres onto reference ones with :func:`umeyama`.

    Args:
        est: N estimated cameras (any world frame).
        ref: the same N cameras in the reference world frame.
        with_scale: allow a scale (True for monocular SfM, whose scale is arbitrary).

    Returns:
        ``(aligned [N,3], errors [N])``: the estimated centres mapped into the reference
        frame and their distances to the reference centres (reference units), float64.
    """
    if len(est) != len(ref):
        raise ValueError(f"align_cameras: {len(est)} estimated vs {len(ref)} reference cameras")
    ce, cr = _f64(est.centers), _f64(ref.centers)
    s, R, t = umeyama(ce, cr, with_scale)
    aligned = apply_similarity(ce, s, R, t)
    return aligned, (aligned - cr).norm(dim=-1)


def alignment_report(est: Cameras, ref: Cameras, with_scale: bool = True) -> dict:
    """Everything worth knowing about how well ``est`` matches ``ref`` up to a similarity.

    Returns a JSON-friendly dict: ``num``, ``scale``, centre errors (``mean``/``median``/
    ``max``, reference units), the path extent (``extent_max_pairwise``,
    ``extent_bbox_diagonal``), the errors in percent of the max-pairwise extent
    (``mean_pct``, ``max_pct``) and camera orientation errors after the alignment's
    rotation (``rot_mean_deg``, ``rot_max_deg``).
    """
    ce, cr = _f64(est.centers), _f64(ref.centers)
    s, R, t = umeyama(ce, cr, with_scale)
    err = (apply_similarity(ce, s, R, t) - cr).norm(dim=-1)
    ext = path_extent(cr, "max_pairwise")
    # camera-to-world rotations: est's, rotated into the reference frame, vs ref's
    Re = _f64(est.camtoworlds)[:, :3, :3]
    Rr = _f64(ref.camtoworlds)[:, :3, :3]
    rot = rotation_angle_deg(R @ Re, Rr)
    return {
        "num": int(ce.shape[0]),
        "scale": s,
        "mean": float(err.mean()),
        "median": float(err.median()),
        "max": float(err.max()),
        "extent_max_pairwise": ext,
        "extent_bbox_diagonal": path_extent(cr, "bbox_diagonal"),
        "mean_pct": 100.0 * float(err.mean()) / ext if ext > 0 else float("nan"),
        "max_pct": 100.0 * float(err.max()) / ext if ext > 0 else float("nan"),
        "rot_mean_deg": float(rot.mean()),
        "rot_max_deg": float(rot.max()),
    }


# ================================================================================ rotations
def matrix_to_quat(R) -> torch.Tensor:
    """Rotations ``[...,3,3]`` -> unit quaternions ``[...,4]`` (wxyz, w >= 0), float64."""
    return quaternions.matrix_to_quat(_f64(R))


def quat_to_matrix(q) -> torch.Tensor:
    """Quaternions ``[...,4]`` wxyz (any norm) -> rotations ``[...,3,3]``, float64."""
    return quaternions.quat_to_matrix(_f64(q))


def slerp(q0, q1, w) -> torch.Tensor:
    """Spherical linear interpolation of unit quaternions ``[...,4]`` (wxyz) at ``w`` in
    [0,1] (broadcast); takes the short way round. Returns float64 ``[...,4]``."""
    return quaternions.slerp(_f64(q0), _f64(q1), _f64(w))


def interpolate_missing_poses(viewmats, valid: Sequence[bool] | torch.Tensor) -> torch.Tensor:
    """Fill the poses of invalid frames of ONE video from its valid neighbours.

    A missing frame ``i`` between valid frames ``a < i < b`` gets the camera-to-world
    rotation slerped and the camera centre lerped at ``w = (i - a) / (b - a)``; missing
    frames before the first or after the last valid frame copy its pose (no extrapolation
    of motion, which would run away on noisy ends).

    Args:
        viewmats: ``[N,4,4]`` world-to-camera matrices; rows of invalid frames are ignored.
        valid: ``[N]`` bool, True where the pose is known. At least one must be True.

    Returns:
        ``[N,4,4]`` world-to-camera matrices (dtype and device of ``viewmats``); valid
        frames are returned unchanged.
    """
    V = torch.as_tensor(viewmats)
    ok = torch.as_tensor(valid, dtype=torch.bool).reshape(-1).cpu()
    if V.ndim != 3 or V.shape[1:] != (4, 4) or V.shape[0] != ok.shape[0]:
        raise ValueError(
            f"interpolate_missing_poses: viewmats [N,4,4] and valid [N], got {tuple(V.shape)} and {tuple(ok.shape)}"
        )
    if not bool(ok.any()):
        raise ValueError("interpolate_missing_poses: no valid pose to interpolate from")
    if bool(ok.all()):
        return V.clone()
    c2w = torch.linalg.inv(_f64(V))
    quats = matrix_to_quat(c2w[:, :3, :3])
    centres = c2w[:, :3, 3]
    idx = torch.nonzero(ok).reshape(-1).tolist()
    out = _f64(V).clone()
    for i in torch.nonzero(~ok).reshape(-1).tolist():
        prev = [j for j in idx if j < i]
        nxt = [j for j in idx if j > i]
        if prev and nxt:
            a, b = prev[-1], nxt[0]
            w = (i - a) / (b - a)
            q = slerp(quats[a], quats[b], torch.tensor(w, dtype=torch.float64))
            c = (1 - w) * centres[a] + w * centres[b]
            Rcw = quat_to_matrix(q)  # camera-to-world rotation
            m = torch.eye(4, dtype=torch.float64)
            m[:3, :3] = Rcw.T
            m[:3, 3] = -(Rcw.T @ c)
            out[i] = m
        else:
            out[i] = out[prev[-1] if prev else nxt[0]]
    return out.to(dtype=V.dtype if V.is_floating_point() else torch.float32, device=V.device)


def _up_rotation(up_from, up_to=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """The smallest rotation ``[3,3]`` taking direction ``up_from`` to ``up_to``."""
    a = torch.nn.functional.normalize(_f64(up_from), dim=0)
    b = torch.nn.functional.normalize(_f64(up_to), dim=0)
    v = torch.linalg.cross(a, b)
    c = float(a @ b)
    if c < -1 + 1e-12:  # opposite: rotate by pi about any axis orthogonal to a
        helper = torch.tensor([1.0, 0, 0], dtype=torch.float64)
        if abs(float(a @ helper)) > 0.9:
            helper = torch.tensor([0, 1.0, 0], dtype=torch.float64)
        axis = torch.nn.functional.normalize(torch.linalg.cross(a, helper), dim=0)
        return 2 * torch.outer(axis, axis) - torch.eye(3, dtype=torch.float64)
    K = torch.tensor(
        [[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], dtype=torch.float64
    )
    return torch.eye(3, dtype=torch.float64) + K + K @ K / (1 + c)


def neighbour_rotations_deg(cameras: Cameras) -> torch.Tensor:
    """``[N-1]`` angles (degrees) of the relative rotation between each two neighbouring
    cameras (world-to-camera rotations ``R_k``: the angle of ``R_{k+1} R_k^T``)."""
    R = cameras.viewmats[:, :3, :3].double()
    if len(R) < 2:
        return torch.zeros(0, dtype=torch.float64)
    rel = R[1:] @ R[:-1].transpose(1, 2)
    cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def camera_path_jumps(cameras: Cameras, max_step_deg: float = 30.0, factor: float = 4.0) -> list[dict]:
    """Neighbouring frames of a video whose cameras turn implausibly far: more than
    ``max_step_deg`` AND more than ``factor`` x the median step of the path. A handheld orbit
    turns a few degrees per frame; a pose that flips (SfM's mirror ambiguity, a frame placed
    in a wrong cluster) turns by tens to 180 degrees in one step. Returns ``[{"frames": [k,
    k+1], "deg": angle}]`` (indices into ``cameras``)."""
    steps = neighbour_rotations_deg(cameras)
    if not len(steps):
        return []
    limit = max(float(max_step_deg), float(factor) * float(steps.median()))
    return [{"frames": [k, k + 1], "deg": round(float(a), 2)} for k, a in enumerate(steps.tolist()) if a > limit]
