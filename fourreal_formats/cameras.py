"""Camera helpers shared by the stages, pose estimators, the synthetic scenes and the viewer:
cameras on a sphere or an orbit around a point (z up by default, any axis-aligned up), the
cameras that see a point, and the orbit of an existing camera about a 4D scene.

Conventions (docs/conventions.md): OpenCV world-to-camera viewmats, square pixels, the
principal point at the image centre, a horizontal field of view ``fov_deg``; azimuth runs
from ``e1`` toward ``e2`` of :func:`up_basis` (from +x toward +y for ``up="+z"``), elevation
is the angle above the plane orthogonal to ``up``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from fourreal_core.types import Cameras

if TYPE_CHECKING:
    from .scene4d import Scene4D

__all__ = ["up_basis", "orbit_azimuths", "cameras_at", "orbit_cameras", "points_in_view",
           "look_at_target", "scene_up", "orbit_about"]

_AXES = {"x": 0, "y": 1, "z": 2}


def up_basis(up: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(e1, e2, u)`` float64 ``[3]`` each: a right-handed basis (``e1 x e2 = u``) whose
    ``u`` is the axis named by ``up`` (``"+z"``, ``"-y"``...). Azimuth runs from ``e1``
    toward ``e2``; ``"+z"`` gives ``(x, y, z)``."""
    if len(up) != 2 or up[0] not in "+-" or up[1] not in _AXES:
        raise ValueError(f"up must be one of +x -x +y -y +z -z, got {up!r}")
    i = _AXES[up[1]]
    eye = torch.eye(3, dtype=torch.float64)
    u = eye[i] * (1.0 if up[0] == "+" else -1.0)
    e1 = eye[(i + 1) % 3]
    e2 = torch.linalg.cross(u, e1)
    return e1, e2, u


def orbit_azimuths(n: int, arc_deg: float, start_azimuth_deg: float) -> torch.Tensor:
    """``[n]`` float64 azimuths in degrees: ``start .. start + arc`` inclusive, or, for a
    full orbit (``|arc| >= 360``), ``n`` evenly spaced angles without the duplicate end."""
    if n == 1:
        return torch.tensor([float(start_azimuth_deg)], dtype=torch.float64)
    full = abs(arc_deg) >= 360.0
    step = arc_deg / (n if full else n - 1)
    return start_azimuth_deg + step * torch.arange(n, dtype=torch.float64)


def cameras_at(
    azimuths_deg: Sequence[float] | torch.Tensor,
    elevations_deg: Sequence[float] | torch.Tensor | float,
    radius: float | Sequence[float] | torch.Tensor,
    center: Sequence[float] | torch.Tensor,
    width: int,
    height: int,
    fov_deg: float,
    up: str = "+z",
) -> Cameras:
    """Cameras on a sphere around ``center`` looking at it (OpenCV world-to-camera).

    Args:
        azimuths_deg: ``[C]`` angle from ``e1`` toward ``e2`` of :func:`up_basis`.
        elevations_deg: ``[C]`` or scalar angle above the plane orthogonal to ``up``.
        radius: distance(s) to ``center``, world units.
        width, height: image size in pixels.
        fov_deg: horizontal field of view; square pixels, principal point at the centre.
        up: world up axis, e.g. ``"+z"``.
    """
    e1, e2, u = up_basis(up)
    az = torch.as_tensor(azimuths_deg, dtype=torch.float64).reshape(-1) * (math.pi / 180)
    el = torch.as_tensor(elevations_deg, dtype=torch.float64).reshape(-1).expand_as(az) * (math.pi / 180)
    r = torch.as_tensor(radius, dtype=torch.float64).reshape(-1).expand_as(az)
    c = torch.as_tensor(center, dtype=torch.float64).reshape(3)
    dirs = ((torch.cos(el) * torch.cos(az))[:, None] * e1 + (torch.cos(el) * torch.sin(az))[:, None] * e2
            + torch.sin(el)[:, None] * u)
    eyes = c + r[:, None] * dirs
    viewmats = Cameras.look_at(eyes.float(), c.float(), tuple(float(x) for x in u))
    fx = 0.5 * width / math.tan(0.5 * math.radians(fov_deg))
    K = Cameras.intrinsics(fx, fx, width / 2.0, height / 2.0)
    return Cameras(viewmats, K, width, height)


def orbit_cameras(
    n: int,
    width: int,
    height: int,
    radius: float,
    elevation_deg: float,
    arc_deg: float,
    start_azimuth_deg: float,
    look_at,
    fov_deg: float,
    up: str = "+z",
) -> Cameras:
    """``n`` cameras on a circular arc around ``look_at``, looking at it: azimuths
    :func:`orbit_azimuths`, one elevation and radius (see :func:`cameras_at`).

    Returns:
        :class:`Cameras` with ``n`` viewmats ``[n,4,4]`` and Ks ``[n,3,3]``.
    """
    az = orbit_azimuths(n, arc_deg, start_azimuth_deg)
    return cameras_at(az, elevation_deg, radius, look_at, width, height, fov_deg, up)


def points_in_view(points: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """``[P]`` int: in how many of ``cameras`` each point ``[P,3]`` projects inside the image
    in front of the camera."""
    uv, z = cameras.project(points.double())
    u, v = uv[..., 0], uv[..., 1]
    inside = (z > 1e-6) & (u >= 0) & (u < cameras.width) & (v >= 0) & (v < cameras.height)
    return inside.sum(0)


# ------------------------------------------------------------- orbits about a 4D scene
def _rotation_about(axis: torch.Tensor, angle: float) -> torch.Tensor:
    axis = axis / axis.norm()
    x, y, z = axis.tolist()
    c, s = math.cos(angle), math.sin(angle)
    C = 1 - c
    return torch.tensor([
        [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
        [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
        [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
    ], dtype=torch.float32)


def look_at_target(scene: "Scene4D", camera: Cameras) -> torch.Tensor:
    """The point an orbit turns around: on the camera's axis at the median depth of the
    Gaussians it sees."""
    g = scene.model.params()
    vm = camera.viewmats[0].to(g.means.device)
    pc = g.means @ vm[:3, :3].T + vm[:3, 3]
    z = pc[:, 2]
    depth = z[z > 0].median().item() if bool((z > 0).any()) else 1.0
    c2w = torch.linalg.inv(vm.cpu())
    return c2w[:3, 3] + c2w[:3, 2] * depth


def scene_up(scene: "Scene4D", camera: Cameras) -> torch.Tensor:
    """The world's up direction: the mean image-up of the freeze-time cameras (an orbit turns
    about it), else world +z when the camera is roughly upright in a z-up world (synthetic,
    D-NeRF, normalised COLMAP), else the camera's own up."""
    def ups(c: Cameras) -> torch.Tensor:
        return -torch.linalg.inv(c.viewmats.cpu())[:, :3, 1]

    if scene.freeze_cameras is not None and len(scene.freeze_cameras) > 1:
        return torch.nn.functional.normalize(ups(scene.freeze_cameras).mean(0), dim=0)
    up = ups(camera[:1])[0]
    z = torch.tensor([0.0, 0.0, 1.0])
    return z if float(up @ z) > 0.5 else up


def orbit_about(camera: Cameras, target: torch.Tensor, angles_deg, up: Optional[torch.Tensor] = None) -> Cameras:
    """``camera`` (one) rotated by each of ``angles_deg`` about the axis through ``target``
    along ``up`` (default: the camera's own up)."""
    c2w = torch.linalg.inv(camera.viewmats[0].cpu())
    up = -c2w[:3, 1] if up is None else up
    mats = []
    for a in angles_deg:
        R = _rotation_about(up, math.radians(float(a)))
        m = torch.eye(4)
        m[:3, :3] = R @ c2w[:3, :3]
        m[:3, 3] = R @ (c2w[:3, 3] - target) + target
        mats.append(torch.linalg.inv(m))
    n = len(mats)
    return Cameras(torch.stack(mats), camera.Ks[:1].cpu().expand(n, 3, 3).clone(), camera.width, camera.height)
