"""Frames for the viewer: a browser camera (viser's pose + vertical field of view, OpenCV
axes as in gsplat: +x right, +y down, +z forward) -> the project's own rasterizer.

The deformed Gaussians of the last (time, canonical) are cached, so moving the camera at a
fixed time costs one rasterization per frame; the deformer runs again only when the time
changes (the play button, the slider). Kept free of viser, so ``bench/viewer.py`` times
exactly this path.
"""

from __future__ import annotations

import math
import threading
from typing import Optional

import numpy as np
import torch

from fourreal_core.types import Cameras


def pose_to_viewmat(wxyz, position) -> torch.Tensor:
    """viser's camera pose (camera-to-world rotation as wxyz, position) -> world-to-camera 4x4."""
    from fourreal_formats.quaternions import quat_to_matrix

    R = quat_to_matrix(torch.as_tensor(np.asarray(wxyz, dtype=np.float64), dtype=torch.float64))
    t = torch.as_tensor(np.asarray(position, dtype=np.float64), dtype=torch.float64)
    vm = torch.eye(4, dtype=torch.float64)
    vm[:3, :3] = R.T
    vm[:3, 3] = -R.T @ t
    return vm.float()


def viewmat_to_pose(viewmat: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera 4x4 -> (wxyz, position) of the camera in the world."""
    from fourreal_formats.quaternions import matrix_to_quat

    c2w = torch.linalg.inv(viewmat.detach().cpu().double())
    q = matrix_to_quat(c2w[:3, :3]).reshape(4)
    return q.numpy(), c2w[:3, 3].numpy()


def fov_y(camera: Cameras) -> float:
    """Vertical field of view (radians) of ``camera[0]``."""
    return 2.0 * math.atan(camera.height / (2.0 * float(camera.Ks[0, 1, 1])))


def intrinsics(fov: float, width: int, height: int) -> torch.Tensor:
    """Pinhole K with the given vertical field of view, square pixels, centred."""
    f = height / (2.0 * math.tan(fov / 2.0))
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def size_for(height: int, aspect: float) -> tuple[int, int]:
    """(width, height) at ``height`` rows and the browser's aspect ratio (width / height)."""
    height = max(8, int(height))
    return max(8, int(round(height * max(aspect, 1e-3)))), height


class FrameRenderer:
    """Renders one scene for any browser camera and time; thread-safe (one frame at a time)."""

    def __init__(self, scene, rasterizer) -> None:
        self.scene = scene
        self.rasterizer = rasterizer
        self._lock = threading.Lock()
        self._key: Optional[tuple] = None
        self._gaussians = None

    @torch.no_grad()
    def gaussians(self, t: float, canonical: bool):
        """The Gaussians at time ``t`` (or undeformed), cached for the last (t, canonical)."""
        key = (round(float(t), 6), bool(canonical) or self.scene.deformer is None)
        if key != self._key:
            self._gaussians = self.scene.model.params() if key[1] else self.scene.gaussians_at(key[0])
            self._key = key
        return self._gaussians

    @torch.no_grad()
    def render(self, viewmat: torch.Tensor, fov: float, width: int, height: int, t: float,
               canonical: bool = False) -> np.ndarray:
        """``uint8 [height,width,3]``: the scene at time ``t`` from the camera ``viewmat``."""
        with self._lock:
            g = self.gaussians(t, canonical)
            dev = self.scene.device
            cam = Cameras(viewmat[None].to(dev), intrinsics(fov, width, height)[None].to(dev), int(width), int(height))
            from fourreal_formats.scene4d import with_near_plane

            ras = with_near_plane(self.rasterizer, getattr(self.scene, "near_plane", None))
            out = ras.rasterize(g, cam, background=self.scene.background)
            return (out.rgb[0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
