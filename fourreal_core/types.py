"""Core data types shared by every stage and plugin.

Conventions (one set, everywhere; see docs/conventions.md):

* Cameras are OpenCV: x right, y down, z forward. ``viewmats`` are world-to-camera
  ``[N,4,4]``, ``Ks`` are pinhole intrinsics ``[N,3,3]`` in pixels; one image size for all
  cameras. This is exactly gsplat's convention.
* Images are float32 ``[N,H,W,3]`` in [0,1].
* Quaternions are ``wxyz``.
* Time ``t`` is in [0,1] over the reference video.

Conversions from other conventions (nerfstudio / D-NeRF / instant-ngp camera-to-world
OpenGL, COLMAP) happen only at the boundary, through the functions in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:  # torch is imported lazily so `fourreal plugins` stays fast
    import torch

# OpenGL camera axes (x right, y up, z backward) -> OpenCV (x right, y down, z forward)
_GL_TO_CV_DIAG = (1.0, -1.0, -1.0, 1.0)


def _torch():
    import torch

    return torch


@dataclass
class Cameras:
    """A batch of N pinhole cameras sharing one image size.

    Attributes:
        viewmats: ``[N,4,4]`` float32 world-to-camera matrices, OpenCV axes.
        Ks: ``[N,3,3]`` float32 intrinsics in pixels (fx, fy, cx, cy).
        width: image width in pixels.
        height: image height in pixels.
    """

    viewmats: "torch.Tensor"
    Ks: "torch.Tensor"
    width: int
    height: int

    def __post_init__(self) -> None:
        torch = _torch()
        self.viewmats = torch.as_tensor(self.viewmats, dtype=torch.float32)
        self.Ks = torch.as_tensor(self.Ks, dtype=torch.float32, device=self.viewmats.device)
        if self.viewmats.ndim == 2:
            self.viewmats = self.viewmats[None]
        if self.Ks.ndim == 2:
            self.Ks = self.Ks[None].expand(self.viewmats.shape[0], 3, 3).clone()
        if self.viewmats.shape[-2:] != (4, 4):
            raise ValueError(f"viewmats must be [N,4,4], got {tuple(self.viewmats.shape)}")
        if self.Ks.shape != (self.viewmats.shape[0], 3, 3):
            raise ValueError(
                f"Ks must be [N,3,3] with N={self.viewmats.shape[0]}, got {tuple(self.Ks.shape)}"
            )
        self.width = int(self.width)
        self.height = int(self.height)

    # -- container protocol -------------------------------------------------
    def __len__(self) -> int:
        return int(self.viewmats.shape[0])

    def __getitem__(self, idx: Union[int, slice, "torch.Tensor", list]) -> "Cameras":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        return Cameras(self.viewmats[idx], self.Ks[idx], self.width, self.height)

    @property
    def device(self) -> "torch.device":
        return self.viewmats.device

    def to(self, device) -> "Cameras":
        return Cameras(self.viewmats.to(device), self.Ks.to(device), self.width, self.height)

    @staticmethod
    def cat(cams: list["Cameras"]) -> "Cameras":
        torch = _torch()
        if not cams:
            raise ValueError("Cameras.cat needs at least one Cameras")
        w, h = cams[0].width, cams[0].height
        for c in cams:
            if (c.width, c.height) != (w, h):
                raise ValueError("Cameras.cat: all cameras must share one image size")
        return Cameras(
            torch.cat([c.viewmats for c in cams]), torch.cat([c.Ks for c in cams]), w, h
        )

    # -- derived quantities ---------------------------------------------------
    @property
    def camtoworlds(self) -> "torch.Tensor":
        """``[N,4,4]`` camera-to-world, OpenCV axes."""
        return _torch().linalg.inv(self.viewmats)

    @property
    def centers(self) -> "torch.Tensor":
        """``[N,3]`` camera centres in world coordinates."""
        return self.camtoworlds[:, :3, 3]

    def project(self, points: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """World points ``[P,3]`` in every camera: pixel coordinates ``[N,P,2]`` (pixel (0,0)
        covers [0,1)^2) and depths ``[N,P]`` (> 0 in front), in the points' dtype."""
        torch = _torch()
        V, K = self.viewmats.to(points), self.Ks.to(points)
        cam = torch.einsum("cij,pj->cpi", V[:, :3, :3], points) + V[:, None, :3, 3]
        z = cam[..., 2]
        uv = torch.einsum("cij,cpj->cpi", K, cam)[..., :2] / z.clamp_min(1e-12)[..., None]
        return uv, z

    def scaled(self, factor: float) -> "Cameras":
        """The same cameras for an image resized by ``factor`` (e.g. 0.5 halves W and H).

        Pixel-centre convention: the continuous image plane is scaled, so
        cx' = cx * factor holds for images whose pixel (0,0) covers [0,1)^2.
        """
        w = int(round(self.width * factor))
        h = int(round(self.height * factor))
        sx, sy = w / self.width, h / self.height
        Ks = self.Ks.clone()
        Ks[:, 0, :] *= sx
        Ks[:, 1, :] *= sy
        return Cameras(self.viewmats.clone(), Ks, w, h)

    # -- boundary conversions -------------------------------------------------
    @staticmethod
    def from_c2w_opengl(c2w, Ks, width: int, height: int) -> "Cameras":
        """From camera-to-world matrices in OpenGL axes (nerfstudio, D-NeRF, instant-ngp).

        Args:
            c2w: ``[N,4,4]`` or ``[N,3,4]`` camera-to-world, OpenGL axes (y up, z backward).
            Ks: ``[N,3,3]`` or ``[3,3]`` intrinsics in pixels.
        """
        torch = _torch()
        c2w = torch.as_tensor(c2w, dtype=torch.float32)
        if c2w.ndim == 2:
            c2w = c2w[None]
        if c2w.shape[-2:] == (3, 4):
            bottom = torch.tensor([0, 0, 0, 1], dtype=c2w.dtype).expand(c2w.shape[0], 1, 4)
            c2w = torch.cat([c2w, bottom], dim=1)
        flip = torch.diag(torch.tensor(_GL_TO_CV_DIAG, dtype=c2w.dtype))
        c2w_cv = c2w @ flip
        return Cameras(torch.linalg.inv(c2w_cv), Ks, width, height)

    def to_c2w_opengl(self) -> "torch.Tensor":
        """``[N,4,4]`` camera-to-world in OpenGL axes (for transforms.json)."""
        torch = _torch()
        flip = torch.diag(torch.tensor(_GL_TO_CV_DIAG, dtype=self.viewmats.dtype))
        return self.camtoworlds @ flip.to(self.viewmats.device)

    @staticmethod
    def intrinsics(fx: float, fy: float, cx: float, cy: float) -> "torch.Tensor":
        """A ``[3,3]`` pinhole K."""
        torch = _torch()
        return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)

    @staticmethod
    def look_at(eyes, targets, ups=(0.0, 0.0, 1.0)) -> "torch.Tensor":
        """``[N,4,4]`` OpenCV world-to-camera matrices looking from ``eyes`` to ``targets``.

        Args:
            eyes: ``[N,3]`` camera centres.
            targets: ``[N,3]`` or ``[3]`` points looked at.
            ups: ``[3]`` world up direction (the image's up is its projection).
        """
        torch = _torch()
        eyes = torch.as_tensor(eyes, dtype=torch.float32).reshape(-1, 3)
        targets = torch.as_tensor(targets, dtype=torch.float32).reshape(-1, 3).expand_as(eyes)
        up = torch.as_tensor(ups, dtype=torch.float32).reshape(-1, 3).expand_as(eyes)
        z = torch.nn.functional.normalize(targets - eyes, dim=-1)  # forward
        x = torch.nn.functional.normalize(torch.cross(z, up, dim=-1), dim=-1)  # right
        y = torch.cross(z, x, dim=-1)  # down
        R = torch.stack([x, y, z], dim=1)  # rows: camera axes in world coords
        vm = torch.eye(4).repeat(eyes.shape[0], 1, 1)
        vm[:, :3, :3] = R
        vm[:, :3, 3] = -(R @ eyes[:, :, None])[:, :, 0]
        return vm


@dataclass
class Video:
    """A clip of frames.

    Attributes:
        frames: ``[N,H,W,3]`` float32 in [0,1].
        fps: frames per second (for writing mp4s; no effect on training).
    """

    frames: "torch.Tensor"
    fps: float = 8.0

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"Video frames must be [N,H,W,3], got {tuple(self.frames.shape)}")

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def to(self, device) -> "Video":
        return replace(self, frames=self.frames.to(device))


@dataclass
class PosedVideo:
    """A video with one camera per frame and, optionally, one time per frame.

    Attributes:
        video: the frames.
        cameras: ``len(video)`` cameras, image size equal to the frames'.
        times: ``[N]`` float32 in [0,1] or None (a freeze-time video has one time).
        canonical_view: index of the frame that shows the canonical frame c from the
            reference camera (at t_c), or None: the canonical view k_c of a freeze-time video;
            in the reference video it is the canonical frame c itself. (Was ``anchor``.)
        masks: optional ``[N,H,W,1]`` float32 in [0,1]: which pixels to supervise
            (nerfstudio's ``mask_path``).
        dynamic_masks: optional ``[N,H,W,1]`` float32: the moving region (1 where the moving
            subject is in that frame; ``dynamic_mask_path``), NaN for a frame whose moving
            region is not known. Scores only; never what is supervised.
    """

    video: Video
    cameras: Cameras
    times: Optional["torch.Tensor"] = None
    canonical_view: Optional[int] = None
    masks: Optional["torch.Tensor"] = None
    meta: dict = field(default_factory=dict)
    dynamic_masks: Optional["torch.Tensor"] = None

    def __post_init__(self) -> None:
        if len(self.cameras) != len(self.video):
            raise ValueError(
                f"PosedVideo: {len(self.video)} frames but {len(self.cameras)} cameras"
            )
        if (self.cameras.width, self.cameras.height) != (self.video.width, self.video.height):
            raise ValueError(
                f"PosedVideo: frames are {self.video.width}x{self.video.height} but cameras are "
                f"{self.cameras.width}x{self.cameras.height}"
            )
        if self.times is not None and len(self.times) != len(self.video):
            raise ValueError(f"PosedVideo: {len(self.video)} frames but {len(self.times)} times")
        for name in ("masks", "dynamic_masks"):
            m = getattr(self, name)
            if m is not None and tuple(m.shape) != (len(self.video), self.video.height, self.video.width, 1):
                raise ValueError(f"PosedVideo: {name} are {tuple(m.shape)}, expected "
                                 f"{(len(self.video), self.video.height, self.video.width, 1)}")

    def __len__(self) -> int:
        return len(self.video)

    def to(self, device) -> "PosedVideo":
        return replace(
            self,
            video=self.video.to(device),
            cameras=self.cameras.to(device),
            times=None if self.times is None else self.times.to(device),
            masks=None if self.masks is None else self.masks.to(device),
            dynamic_masks=None if self.dynamic_masks is None else self.dynamic_masks.to(device),
        )


@dataclass
class PointCloud:
    """Coloured sparse points (e.g. from SfM) used to initialise Gaussians.

    Attributes:
        points: ``[P,3]`` float32 world positions.
        colors: ``[P,3]`` float32 in [0,1].
    """

    points: "torch.Tensor"
    colors: "torch.Tensor"

    def __len__(self) -> int:
        return int(self.points.shape[0])
