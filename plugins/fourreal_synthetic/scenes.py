"""Procedural animated 4D scenes made of 3D Gaussians, with known ground truth.

A :class:`ProceduralScene` is a set of named *parts* (ground, wall, props, movers), each a
batch of Gaussians laid on a parametric surface with a procedural colour texture and an
optional motion ``t -> (means, quats)``. Because the scene is made of Gaussians, rendering
it with the project's rasterizer is exact ground truth at any camera and any time, and
fitting Gaussians to those renders is a well-posed test of the whole pipeline.

Conventions: z-up world, OpenCV cameras (see :mod:`fourreal_core.types`), time ``t`` in
[0,1] over the reference video (motions are defined for any real ``t``), colours plain RGB
in [0,1] (``GaussianParams.sh_degree`` is None).

Scenes (``make_scene(name)``):

* ``"object"`` -- one static textured torus (colour bands, checker and noise detail) on a
  plain white background; a few thousand Gaussians. Used by multi-view fitting tests.
* ``"garden"`` -- textured ground plane and backdrop wall, a static box and sphere, a
  column that bends non-rigidly over time, and a ball that translates.
* ``"articulated"`` -- a base block and a three-segment arm whose joints rotate over time
  (rigid parts). :meth:`ProceduralScene.bone_transforms` and
  :attr:`ProceduralScene.bone_weights` give the ground-truth skinning.

Imperfections of generated freeze-time videos (:class:`Imperfections`), applied when a
freeze-time frame index ``frame=k`` is passed and all zero at the canonical view k_c:

* ``wobble`` -- a smooth, spatially varying displacement field over a region, different
  for every frame ``k`` (geometric inconsistency that is temporally smooth);
* ``moving_object`` -- the scene's "mover" part keeps moving during the freeze-time video;
* ``flicker`` -- per-frame colour gain/bias on the rendered image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

import torch

from fourreal_formats.quaternions import matrix_to_quat, quat_multiply, quat_to_matrix  # noqa: F401 (re-exported)

from fourreal_core.interfaces import GaussianParams
from fourreal_core.types import Cameras, PointCloud
from fourreal_formats.cameras import cameras_at, orbit_cameras

__all__ = [
    "SCENES",
    "Imperfections",
    "Part",
    "ProceduralScene",
    "make_scene",
]

Motion = Callable[["Part", float], tuple[torch.Tensor, torch.Tensor]]


# =============================================================================== geometry
def _normalize(v: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(v, dim=-1)


def axis_angle_to_matrix(axis: Sequence[float] | torch.Tensor, angle: float | torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotation ``[...,3,3]`` by ``angle`` radians about unit ``axis`` ``[3]``."""
    axis = _normalize(torch.as_tensor(axis, dtype=torch.float32))
    angle = torch.as_tensor(angle, dtype=torch.float32)
    K = torch.zeros(3, 3)
    K[0, 1], K[0, 2], K[1, 0] = -axis[2], axis[1], axis[2]
    K[1, 2], K[2, 0], K[2, 1] = -axis[0], -axis[1], axis[0]
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    return torch.eye(3) + s * K + (1 - c) * (K @ K)


def _frame_quats(t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """Quaternions of orthonormal frames whose local x, y follow tangents ``t1``, ``t2``
    ``[N,3]`` and whose local z is the surface normal ``t1 x t2``."""
    x = _normalize(t1)
    z = _normalize(torch.cross(x, t2, dim=-1))
    y = torch.cross(z, x, dim=-1)
    return matrix_to_quat(torch.stack([x, y, z], dim=-1))  # columns = local axes


# =============================================================================== textures
class _Noise:
    """Smooth deterministic 3D value field: a sum of random sinusoids, roughly in [-1,1]."""

    def __init__(self, gen: torch.Generator, num: int = 8, freq: float = 3.0, channels: int = 1):
        self.dirs = _normalize(torch.randn(channels, num, 3, generator=gen))
        self.freqs = freq * (0.5 + torch.rand(channels, num, generator=gen))
        self.phases = 2 * math.pi * torch.rand(channels, num, generator=gen)
        self.scale = math.sqrt(2.0 / num)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """``[N,3]`` points -> ``[N,channels]`` values."""
        arg = torch.einsum("nd,ckd->nck", p, self.dirs) * self.freqs + self.phases
        return torch.sin(arg).sum(-1) * self.scale


def _checker(u: torch.Tensor, v: torch.Tensor, cells_u: float, cells_v: float) -> torch.Tensor:
    """``[N]`` in {0,1}: parity of the checker cell containing (u, v) in [0,1]^2."""
    return ((torch.floor(u * cells_u) + torch.floor(v * cells_v)) % 2).float()


def _mix(a: Sequence[float], b: Sequence[float], w: torch.Tensor) -> torch.Tensor:
    a_ = torch.tensor(a, dtype=torch.float32)
    b_ = torch.tensor(b, dtype=torch.float32)
    return a_ + (b_ - a_) * w[:, None]


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``[N]`` hue in [0,1), saturation, value -> ``[N,3]`` RGB."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], -1)
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


# ================================================================================== parts
@dataclass
class Part:
    """One named piece of a scene: N Gaussians at rest plus an optional motion.

    Attributes:
        name: unique within the scene.
        means: ``[N,3]`` rest positions (world units).
        quats: ``[N,4]`` rest rotations, wxyz, unit.
        scales: ``[N,3]`` standard deviations (world units).
        opacities: ``[N]`` in (0,1).
        colors: ``[N,3]`` RGB in [0,1].
        motion: ``motion(part, t) -> (means [N,3], quats [N,4])`` at time ``t``; None if static.
        params: free-form values the motion uses (pivot, amplitude...).
    """

    name: str
    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor
    motion: Optional[Motion] = None
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def is_static(self) -> bool:
        return self.motion is None

    def at(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(means [N,3], quats [N,4])`` at time ``t``."""
        if self.motion is None:
            return self.means, self.quats
        return self.motion(self, float(t))


def _surface_part(
    name: str,
    points: torch.Tensor,
    t1: torch.Tensor,
    t2: torch.Tensor,
    s1: torch.Tensor | float,
    s2: torch.Tensor | float,
    colors: torch.Tensor,
    opacity: float = 0.97,
    thickness: float = 0.15,
) -> Part:
    """Flat Gaussians on a surface: in-plane std ``s1``/``s2`` along tangents ``t1``/``t2``,
    normal std ``thickness * min(s1, s2)``."""
    n = points.shape[0]
    s1 = torch.as_tensor(s1, dtype=torch.float32).expand(n)
    s2 = torch.as_tensor(s2, dtype=torch.float32).expand(n)
    scales = torch.stack([s1, s2, thickness * torch.minimum(s1, s2)], -1)
    return Part(
        name=name,
        means=points.float().contiguous(),
        quats=_frame_quats(t1.float(), t2.float()),
        scales=scales.contiguous(),
        opacities=torch.full((n,), opacity),
        colors=colors.clamp(0.0, 1.0).float().contiguous(),
    )


def _grid(nu: int, nv: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centred parameters ``u, v`` ``[nu*nv]`` in (0,1)."""
    u = (torch.arange(nu, dtype=torch.float32) + 0.5) / nu
    v = (torch.arange(nv, dtype=torch.float32) + 0.5) / nv
    uu, vv = torch.meshgrid(u, v, indexing="ij")
    return uu.reshape(-1), vv.reshape(-1)


def _plane(
    name: str,
    origin: Sequence[float],
    axis_u: Sequence[float],
    axis_v: Sequence[float],
    nu: int,
    nv: int,
    texture: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    overlap: float = 0.65,
) -> Part:
    """A rectangle ``origin + u*axis_u + v*axis_v``, u,v in [0,1], as a ``nu x nv`` grid.

    ``texture(u, v, points) -> [N,3]``. The normal is ``axis_u x axis_v``.
    """
    o = torch.tensor(origin, dtype=torch.float32)
    au = torch.tensor(axis_u, dtype=torch.float32)
    av = torch.tensor(axis_v, dtype=torch.float32)
    u, v = _grid(nu, nv)
    pts = o + u[:, None] * au + v[:, None] * av
    n = pts.shape[0]
    return _surface_part(
        name, pts, au.expand(n, 3), av.expand(n, 3),
        overlap * au.norm() / nu, overlap * av.norm() / nv, texture(u, v, pts),
    )


def _box(
    name: str,
    center: Sequence[float],
    size: Sequence[float],
    per_unit: float,
    texture: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> Part:
    """An axis-aligned box (six outward-facing textured faces), ``per_unit`` Gaussians per
    world unit along each edge (at least 3 per face edge)."""
    c = torch.tensor(center, dtype=torch.float32)
    sx, sy, sz = size
    faces = []
    ex, ey, ez = torch.eye(3)
    half = torch.tensor(size, dtype=torch.float32) / 2
    # (origin corner offset, axis_u, axis_v) with axis_u x axis_v pointing outward
    specs = [
        (-half + ex * sx, ey * sy, ez * sz),  # +x face
        (-half, ez * sz, ey * sy),  # -x face
        (-half, ex * sx, ez * sz),  # -y face (x cross z = -y)
        (-half + ey * sy, ez * sz, ex * sx),  # +y face
        (-half + ez * sz, ex * sx, ey * sy),  # +z face
        (-half, ey * sy, ex * sx),  # -z face
    ]
    for i, (o, au, av) in enumerate(specs):
        nu = max(3, int(round(float(au.norm()) * per_unit)))
        nv = max(3, int(round(float(av.norm()) * per_unit)))
        faces.append(_plane(f"{name}.{i}", (c + o).tolist(), au.tolist(), av.tolist(), nu, nv, texture))
    return _cat_parts(name, faces)


def _fibonacci_sphere(n: int) -> torch.Tensor:
    """``[n,3]`` nearly uniform unit vectors."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    phi = torch.acos(1 - 2 * i / n)
    theta = math.pi * (1 + 5**0.5) * i
    return torch.stack(
        [torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], -1
    ).float()


def _sphere(
    name: str,
    center: Sequence[float],
    radius: float,
    n: int,
    texture: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> Part:
    """A sphere of ``n`` flat Gaussians (Fibonacci lattice); ``texture(u=lon, v=lat, dirs)``."""
    d = _fibonacci_sphere(n)
    helper = torch.where(d[:, 2:3].abs() > 0.9, torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 1.0]))
    t1 = _normalize(torch.cross(helper, d, dim=-1))
    t2 = torch.cross(d, t1, dim=-1)
    spacing = radius * math.sqrt(4 * math.pi / n)
    lon = (torch.atan2(d[:, 1], d[:, 0]) / (2 * math.pi)) % 1.0
    lat = torch.acos(d[:, 2].clamp(-1, 1)) / math.pi
    pts = torch.tensor(center, dtype=torch.float32) + radius * d
    return _surface_part(name, pts, t1, t2, 0.7 * spacing, 0.7 * spacing, texture(lon, lat, d))


def _cylinder(
    name: str,
    base: Sequence[float],
    radius: float,
    height: float,
    n_around: int,
    n_up: int,
    texture: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> Part:
    """A vertical open cylinder with a cap on top; ``texture(u=angle, v=height fraction)``."""
    u, v = _grid(n_around, n_up)
    ang = 2 * math.pi * u
    b = torch.tensor(base, dtype=torch.float32)
    radial = torch.stack([torch.cos(ang), torch.sin(ang), torch.zeros_like(ang)], -1)
    pts = b + radius * radial + torch.stack([0 * u, 0 * u, v * height], -1)
    tangent = torch.stack([-torch.sin(ang), torch.cos(ang), torch.zeros_like(ang)], -1)
    up = torch.tensor([0.0, 0, 1]).expand_as(tangent)
    side = _surface_part(
        name + ".side", pts, tangent, up,
        0.7 * 2 * math.pi * radius / n_around, 0.7 * height / n_up, texture(u, v, pts),
    )
    cap_d = _fibonacci_sphere(2 * n_around)
    cap_d = cap_d[cap_d[:, 2] > 0]
    r = torch.sqrt((1 - cap_d[:, 2]).clamp_min(0) * 2).clamp(max=1.0) * radius  # area-uniform disk
    a = torch.atan2(cap_d[:, 1], cap_d[:, 0])
    cap_pts = b + torch.stack([r * torch.cos(a), r * torch.sin(a), torch.full_like(r, height)], -1)
    m = cap_pts.shape[0]
    cap_spacing = radius * math.sqrt(math.pi / m)
    cap = _surface_part(
        name + ".cap", cap_pts, torch.tensor([1.0, 0, 0]).expand(m, 3),
        torch.tensor([0.0, 1, 0]).expand(m, 3), 0.8 * cap_spacing, 0.8 * cap_spacing,
        texture((a / (2 * math.pi)) % 1, torch.ones(m), cap_pts),
    )
    return _cat_parts(name, [side, cap])


def _cat_parts(name: str, parts: list[Part]) -> Part:
    return Part(
        name=name,
        means=torch.cat([p.means for p in parts]),
        quats=torch.cat([p.quats for p in parts]),
        scales=torch.cat([p.scales for p in parts]),
        opacities=torch.cat([p.opacities for p in parts]),
        colors=torch.cat([p.colors for p in parts]),
    )


# ================================================================================ motions
def _rigid(part: Part, R: torch.Tensor, pivot: torch.Tensor, offset: torch.Tensor):
    """Rotate ``part`` about ``pivot`` by ``R`` ``[3,3]`` then translate by ``offset``."""
    means = (part.means - pivot) @ R.T + pivot + offset
    quats = quat_multiply(matrix_to_quat(R)[None], part.quats)
    return means, quats


def _translate_motion(part: Part, t: float):
    """Moves along ``params['path'](t) -> [3]`` offset, spinning about z."""
    p = part.params
    off = p["path"](t)
    R = axis_angle_to_matrix((0.0, 0.0, 1.0), p.get("spin", 0.0) * t)
    return _rigid(part, R, p["pivot"], off)


def _bend_motion(part: Part, t: float):
    """A column anchored at its base bends: x,y offset grows as (h/H)^2, quats follow the
    slope. Amplitude ``params['amp']`` (world units at the top), direction ``params['dir']``."""
    p = part.params
    base, height = p["base"], p["height"]
    h = ((part.means[:, 2] - base[2]) / height).clamp(0, 1)
    a = p["amp"] * math.sin(2 * math.pi * (p["freq"] * t) + p["phase"])
    a2 = 0.5 * p["amp2"] * math.sin(2 * math.pi * (2 * p["freq"] * t) + p["phase"])
    d = p["dir"]
    d2 = torch.stack([-d[1], d[0], torch.tensor(0.0)])
    disp = (a * d)[None] * (h**2)[:, None] + (a2 * d2)[None] * (h**3)[:, None]
    means = part.means + disp
    # slope of the bend -> rotation about (z x dir) by atan(d disp / dz)
    slope1 = a * 2 * h / height
    slope2 = a2 * 3 * h**2 / height
    axis1 = torch.cross(torch.tensor([0.0, 0, 1]), d, dim=0)
    axis2 = torch.cross(torch.tensor([0.0, 0, 1]), d2, dim=0)
    q1 = _axis_angle_quat(axis1, torch.atan(slope1))
    q2 = _axis_angle_quat(axis2, torch.atan(slope2))
    quats = quat_multiply(quat_multiply(q2, q1), part.quats)
    return means, quats


def _axis_angle_quat(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``[N,4]`` wxyz quaternions for rotations by ``angle`` ``[N]`` about ``axis`` ``[3]``."""
    axis = _normalize(axis.float())
    half = angle / 2
    return torch.cat([torch.cos(half)[:, None], torch.sin(half)[:, None] * axis[None]], -1)


def _arm_joint_angles(params: dict, t: float) -> list[float]:
    return [
        amp * math.sin(2 * math.pi * freq * t + ph)
        for amp, freq, ph in zip(params["amps"], params["freqs"], params["phases"])
    ]


def _arm_bones(params: dict, t: float) -> torch.Tensor:
    """``[B,4,4]`` rest->posed rigid transforms of the arm segments at ``t``."""
    out = []
    T = torch.eye(4)
    for pivot, axis, ang in zip(params["pivots"], params["axes"], _arm_joint_angles(params, t)):
        R = axis_angle_to_matrix(axis, ang)
        J = torch.eye(4)
        J[:3, :3] = R
        J[:3, 3] = pivot - R @ pivot  # rotate about the joint's rest position
        T = T @ J
        out.append(T.clone())
    return torch.stack(out)


def _arm_motion(part: Part, t: float):
    """Segment ``i`` moves rigidly with bone ``i``; ``params['bone_of']`` ``[N]`` long."""
    bones = _arm_bones(part.params, t)
    idx = part.params["bone_of"]
    Rs, ts = bones[idx, :3, :3], bones[idx, :3, 3]
    means = (Rs @ part.means[:, :, None])[:, :, 0] + ts
    quats = quat_multiply(matrix_to_quat(Rs), part.quats)
    return means, quats


# ========================================================================= imperfections
@dataclass
class Imperfections:
    """Inconsistencies injected into a freeze-time video, all zero at frame ``canonical_view``.

    Attributes:
        canonical_view: k_c, the freeze-time frame where the video equals the true scene.
        num_frames: freeze-time video length K (sets how fast effects vary with ``k``).
        wobble: peak displacement of the wobble field, as a fraction of the wobble
            region's radius (0 disables; 0.1 moves points by up to ~10% of the radius).
        wobble_center: ``[3]`` world centre of the wobbling region (None: the scene's default).
        wobble_radius: radius of the region in world units (None: the scene's default).
        moving_object: how far (in reference-video time units) the scene's mover part
            advances over the whole freeze-time video (0 disables). E.g. 0.3: the mover
            is rendered at ``t_c + 0.3 * (k - canonical_view) / (K - 1)``.
        flicker: peak per-channel colour gain deviation (bias is half of it; 0 disables).
        seed: randomness of the fields (independent of the scene seed).
    """

    canonical_view: int = 0
    num_frames: int = 16
    wobble: float = 0.0
    wobble_center: Optional[tuple[float, float, float]] = None
    wobble_radius: Optional[float] = None
    moving_object: float = 0.0
    flicker: float = 0.0
    seed: int = 0

    @property
    def any(self) -> bool:
        return self.wobble != 0 or self.moving_object != 0 or self.flicker != 0

    def _phase(self, frame: int) -> float:
        """Signed normalised distance from the canonical view, in [-1, 1]."""
        return (frame - self.canonical_view) / max(self.num_frames - 1, 1)

    def flicker_gain_bias(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``gain [3]`` and ``bias [3]`` for freeze frame ``frame``; (1, 0) at the
        canonical view. Smooth in ``frame``."""
        if self.flicker == 0:
            return torch.ones(3), torch.zeros(3)
        g = torch.Generator().manual_seed(self.seed * 7919 + 17)
        omega = 2 * math.pi * (0.7 + 1.3 * torch.rand(2, 3, generator=g))
        ph = self._phase(frame)
        # the sin of phase 0 is exactly zero -> identity at the canonical view
        gain = 1 + self.flicker * torch.sin(omega[0] * ph * 2)
        bias = 0.5 * self.flicker * torch.sin(omega[1] * ph * 3)
        return gain, bias


# ================================================================================= scenes
@dataclass
class ProceduralScene:
    """An animated scene of Gaussians with known truth. Build with :func:`make_scene`.

    Attributes:
        name: scene name.
        seed: the seed it was built with (same seed -> identical Gaussians).
        parts: the named parts, concatenated in this order by :meth:`gaussians`.
        background: ``[3]`` RGB in [0,1] rendered where no Gaussian covers a pixel.
        center: ``[3]`` world point the cameras look at.
        extent: radius (world units) of a sphere around ``center`` holding every Gaussian
            centre at every time in [0,1] (computed by :func:`make_scene`).
        ref_azimuth_deg / ref_elevation_deg / ref_radius / fov_deg: the fixed reference
            camera (see :meth:`reference_camera`); azimuth is measured in the xy plane from
            +x toward +y, elevation above the xy plane, ``fov_deg`` is horizontal.
        mover: name of the part the ``moving_object`` imperfection keeps moving.
        imperfections: freeze-time inconsistencies applied when ``frame`` is given.
    """

    name: str
    seed: int
    parts: list[Part]
    background: torch.Tensor
    center: torch.Tensor
    extent: float
    ref_azimuth_deg: float = -90.0
    ref_elevation_deg: float = 20.0
    ref_radius: float = 3.0
    fov_deg: float = 50.0
    mover: Optional[str] = None
    wobble_center: Optional[torch.Tensor] = None
    wobble_radius: Optional[float] = None
    imperfections: Imperfections = field(default_factory=Imperfections)
    info: dict = field(default_factory=dict)

    # -- structure ------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    @property
    def num_gaussians(self) -> int:
        return len(self)

    def part_slices(self) -> dict[str, slice]:
        """Name -> slice of that part's rows in :meth:`gaussians`' output."""
        out, i = {}, 0
        for p in self.parts:
            out[p.name] = slice(i, i + len(p))
            i += len(p)
        return out

    def static_mask(self) -> torch.Tensor:
        """``[N]`` bool: Gaussians that never move in the true scene."""
        return torch.cat([torch.full((len(p),), p.is_static) for p in self.parts])

    def with_imperfections(self, imperfections: Optional[Imperfections] = None, **kwargs) -> "ProceduralScene":
        """A copy of the scene whose freeze-time frames carry ``imperfections``
        (or ``Imperfections(**kwargs)``)."""
        imp = imperfections if imperfections is not None else Imperfections(**kwargs)
        return replace(self, imperfections=imp)

    # -- Gaussians ------------------------------------------------------------------
    def gaussians(self, t: float, frame: Optional[int] = None) -> GaussianParams:
        """All Gaussians at time ``t`` (float; [0,1] spans the reference video).

        With ``frame=k`` (a freeze-time frame index) the scene's :attr:`imperfections`
        are applied for frame ``k``: the wobble field displaces Gaussians in the wobble
        region and the mover part is evaluated at a time that keeps advancing with ``k``.
        Both vanish at ``imperfections.canonical_view``. Colour flicker is applied by
        :meth:`render`, not here.

        Returns:
            :class:`GaussianParams` with N Gaussians, plain RGB colours (``sh_degree=None``):
            means ``[N,3]``, quats ``[N,4]`` (unit, wxyz), scales ``[N,3]``, opacities ``[N]``,
            colors ``[N,3]``.
        """
        imp = self.imperfections if frame is not None else None
        means, quats = [], []
        for p in self.parts:
            tp = t
            if imp is not None and imp.moving_object != 0 and p.name == self.mover:
                tp = t + imp.moving_object * imp._phase(frame)
            m, q = p.at(tp)
            if imp is not None and imp.moving_object != 0 and p.name == self.mover and p.is_static:
                # a static mover (object scene) drifts sideways instead
                drift = torch.tensor([1.0, 0.5, 0.25]) * self.extent * imp.moving_object * imp._phase(frame)
                m = m + drift
            means.append(m)
            quats.append(q)
        means_t = torch.cat(means)
        quats_t = torch.cat(quats)
        if imp is not None and imp.wobble != 0:
            means_t = means_t + self.wobble_field(means_t, frame)
        return GaussianParams(
            means=means_t,
            quats=quats_t,
            scales=torch.cat([p.scales for p in self.parts]),
            opacities=torch.cat([p.opacities for p in self.parts]),
            colors=torch.cat([p.colors for p in self.parts]),
            sh_degree=None,
        )

    def wobble_field(self, points: torch.Tensor, frame: int) -> torch.Tensor:
        """The wobble displacement ``[N,3]`` (world units) at ``points`` ``[N,3]`` for
        freeze frame ``frame``: a smooth random vector field (sum of sinusoids) times a
        Gaussian falloff around the wobble centre, times per-frame coefficients that are
        smooth in ``frame`` and exactly zero at the canonical view."""
        imp = self.imperfections
        if imp.wobble == 0:
            return torch.zeros_like(points)
        center = torch.as_tensor(
            imp.wobble_center if imp.wobble_center is not None else self.wobble_center, dtype=torch.float32
        )
        radius = float(imp.wobble_radius if imp.wobble_radius is not None else self.wobble_radius)
        g = torch.Generator().manual_seed(imp.seed * 104729 + 3)
        J = 4
        dirs = _normalize(torch.randn(J, 3, generator=g))  # displacement directions
        kvec = _normalize(torch.randn(J, 3, generator=g)) * (1.5 / radius)  # spatial freq
        phase = 2 * math.pi * torch.rand(J, generator=g)
        omega = math.pi * (1.0 + 2.0 * torch.rand(J, generator=g))  # temporal freq
        ph = imp._phase(frame)
        coef = torch.sin(omega * ph * 2)  # [J], zero at the canonical view
        spatial = torch.sin(points @ kvec.T + phase)  # [N,J]
        falloff = torch.exp(-((points - center) ** 2).sum(-1) / (radius**2))  # [N]
        disp = (spatial * coef[None]) @ dirs / math.sqrt(J)
        return imp.wobble * radius * falloff[:, None] * disp

    # -- rendering ------------------------------------------------------------------
    @torch.no_grad()
    def moving_mask(self, cameras: Cameras, t: float, rasterizer=None, threshold: float = 0.5,
                    part: Optional[str] = None) -> torch.Tensor:
        """``[C,H,W]`` bool: the pixels where the scene's moving parts (or the one ``part``, e.g.
        ``scene.mover``) are seen at time ``t`` -- the true moving region of a held-out view.
        Rendered with those Gaussians white, the others black and a black background (so
        occlusion is the scene's own); a pixel is in the mask when more than ``threshold`` of
        its colour comes from them."""
        if rasterizer is None:
            rasterizer = default_rasterizer()
        dev = cameras.device
        gs = self.gaussians(t)
        if part is None:
            moving = (~self.static_mask()).to(dev)
        else:
            moving = torch.zeros(len(gs.means), dtype=torch.bool, device=dev)
            moving[self.part_slices()[part]] = True
        cols = moving[:, None].float().expand(-1, 3).contiguous()
        gs = GaussianParams(gs.means.to(dev), gs.quats.to(dev), gs.scales.to(dev), gs.opacities.to(dev), cols, None)
        out = []
        for i in range(len(cameras)):
            r = rasterizer.rasterize(gs, cameras[i], background=torch.zeros(3, device=dev), render_depth=False)
            out.append(r.rgb[0, ..., 0] > threshold)
        return torch.stack(out).cpu() if out else torch.zeros(0, cameras.height, cameras.width, dtype=torch.bool)

    def render(
        self,
        cameras: Cameras,
        t: float,
        rasterizer=None,
        background: Optional[torch.Tensor] = None,
        frame: Optional[int] = None,
        return_alpha: bool = False,
        chunk: int = 8,
    ):
        """Render the scene at time ``t`` from every camera.

        Args:
            cameras: C cameras (OpenCV); the render lives on ``cameras.device``.
            t: time in [0,1] (any float works).
            rasterizer: a :class:`fourreal_core.interfaces.Rasterizer`; default the torch
                rasterizer with default settings.
            background: ``[3]`` RGB; default :attr:`background`.
            frame: freeze-time frame index: apply :attr:`imperfections` (incl. flicker).
            return_alpha: also return the ``[C,H,W,1]`` accumulated opacity.
            chunk: cameras rendered per rasterizer call.

        Returns:
            ``[C,H,W,3]`` float32 RGB in [0,1] (and alpha if asked).
        """
        if rasterizer is None:
            rasterizer = default_rasterizer()
        dev = cameras.device
        gs = self.gaussians(t, frame)
        gs = GaussianParams(
            gs.means.to(dev), gs.quats.to(dev), gs.scales.to(dev), gs.opacities.to(dev),
            gs.colors.to(dev), None,
        )
        bg = (self.background if background is None else torch.as_tensor(background)).float().to(dev)
        rgbs, alphas = [], []
        with torch.no_grad():
            for i in range(0, len(cameras), chunk):
                cams = cameras[i : i + chunk]
                out = rasterizer.rasterize(
                    gs, cams, background=bg.expand(len(cams), 3).contiguous(), render_depth=False
                )
                rgbs.append(out.rgb.detach())
                alphas.append(out.alpha.detach())
        rgb = torch.cat(rgbs)
        if frame is not None and self.imperfections.flicker != 0:
            gain, bias = self.imperfections.flicker_gain_bias(frame)
            rgb = rgb * gain.to(dev) + bias.to(dev)
        rgb = rgb.clamp(0.0, 1.0)
        return (rgb, torch.cat(alphas)) if return_alpha else rgb

    @torch.no_grad()
    def point_tracks(self, camera: Cameras, times, index: torch.Tensor, rasterizer=None,
                     depth_tolerance: float = 0.03):
        """The true 2D tracks of Gaussians ``index`` ``[Q]`` seen by ``camera`` (one camera, or
        one per time) at ``times`` ``[T]``: ``(tracks [Q,T,2], visible [Q,T])``, pixel
        coordinates with the centre of the top-left pixel at (0, 0) (as OpenCV and
        :class:`fourreal_core.interfaces.Tracks`). A point is visible where it projects inside
        the image and its depth is within ``depth_tolerance`` (relative) of the rendered
        expected depth at its pixel (nothing in front of it)."""
        if rasterizer is None:
            rasterizer = default_rasterizer()
        times = [float(t) for t in times]
        index = torch.as_tensor(index).long()
        out_uv, out_vis = [], []
        for k, t in enumerate(times):
            cam = camera[k] if len(camera) > 1 else camera
            gs = self.gaussians(t)
            uv, z = cam.project(gs.means[index].to(cam.viewmats))
            uv, z = uv[0].float().cpu(), z[0].float().cpu()
            r = rasterizer.rasterize(gs, cam, background=torch.zeros(3), render_depth=True)
            depth = r.depth[0, ..., 0].cpu()
            H, W = depth.shape
            ix, iy = uv[:, 0].floor().long(), uv[:, 1].floor().long()
            inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H) & (z > 0)
            d = depth[iy.clamp(0, H - 1), ix.clamp(0, W - 1)]
            vis = inside & (z <= d * (1 + depth_tolerance))
            out_uv.append(uv - 0.5)
            out_vis.append(vis)
        return torch.stack(out_uv, dim=1), torch.stack(out_vis, dim=1)

    # -- cameras --------------------------------------------------------------------
    def reference_camera(self, width: int, height: int) -> Cameras:
        """The fixed reference-video camera (one camera)."""
        return cameras_at(
            [self.ref_azimuth_deg], [self.ref_elevation_deg], self.ref_radius, self.center,
            width, height, self.fov_deg,
        )

    def orbit(
        self,
        n: int,
        width: int,
        height: int,
        arc_deg: float = 360.0,
        elevation_deg: Optional[float] = None,
        radius: Optional[float] = None,
        start_azimuth_deg: Optional[float] = None,
    ) -> Cameras:
        """``n`` cameras orbiting :attr:`center` (defaults: the reference camera's radius,
        elevation and azimuth as the start)."""
        return orbit_cameras(
            n, width, height,
            radius=self.ref_radius if radius is None else radius,
            elevation_deg=self.ref_elevation_deg if elevation_deg is None else elevation_deg,
            arc_deg=arc_deg,
            start_azimuth_deg=self.ref_azimuth_deg if start_azimuth_deg is None else start_azimuth_deg,
            look_at=self.center,
            fov_deg=self.fov_deg,
        )

    # -- ground truth -------------------------------------------------------------------
    def point_cloud(self, t: float, num_points: Optional[int] = None, seed: int = 0) -> PointCloud:
        """Coloured points on the true surface at ``t`` (the Gaussian centres), optionally a
        random subset of ``num_points`` -- an SfM stand-in for initialising Gaussians."""
        gs = self.gaussians(t)
        pts, cols = gs.means, gs.colors
        if num_points is not None and num_points < len(pts):
            g = torch.Generator().manual_seed(seed)
            idx = torch.randperm(len(pts), generator=g)[:num_points].sort().values
            pts, cols = pts[idx], cols[idx]
        return PointCloud(pts.clone(), cols.clone())

    def bone_transforms(self, t: float) -> torch.Tensor:
        """``[B,4,4]`` rest->posed rigid transforms of the articulated scene's bones
        (bone 0 is the static base, identity). Raises for scenes without bones."""
        if "arm" not in self.info:
            raise ValueError(f"scene {self.name!r} has no bones")
        arm = self.info["arm"]
        return torch.cat([torch.eye(4)[None], _arm_bones(arm, t)])

    @property
    def bone_weights(self) -> torch.Tensor:
        """``[N,B]`` one-hot skinning weights of the articulated scene (column 0: base)."""
        if "bone_index" not in self.info:
            raise ValueError(f"scene {self.name!r} has no bones")
        idx = self.info["bone_index"]
        return torch.nn.functional.one_hot(idx, int(idx.max()) + 1).float()

    def describe(self) -> dict:
        """JSON-friendly summary (for ``scene.json``)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "num_gaussians": len(self),
            "parts": {p.name: {"count": len(p), "static": p.is_static} for p in self.parts},
            "background": [float(x) for x in self.background],
            "center": [float(x) for x in self.center],
            "extent": float(self.extent),
            "reference_camera": {
                "azimuth_deg": self.ref_azimuth_deg,
                "elevation_deg": self.ref_elevation_deg,
                "radius": self.ref_radius,
                "fov_deg": self.fov_deg,
            },
            "mover": self.mover,
            "up": [0.0, 0.0, 1.0],
        }


# ================================================================================ cameras
def default_rasterizer():
    """The portable torch rasterizer with default settings (cached)."""
    global _DEFAULT_RASTERIZER
    if _DEFAULT_RASTERIZER is None:
        from fourreal_gaussians.configs import TorchRasterizerConfig
        from fourreal_gaussians.rasterizers import TorchRasterizer

        _DEFAULT_RASTERIZER = TorchRasterizer(TorchRasterizerConfig())
    return _DEFAULT_RASTERIZER


_DEFAULT_RASTERIZER = None


# ============================================================================ scene makers
def _make_object(seed: int, detail: int = 1) -> ProceduralScene:
    """A textured, tilted torus with bumpy radius: colour bands around the ring, a checker
    in (u, v) and smooth noise; white background."""
    g = torch.Generator().manual_seed(seed)
    noise = _Noise(g, num=8, freq=4.0, channels=3)
    hue0 = float(torch.rand(1, generator=g))
    R, r = 0.6, 0.25
    nu, nv = 64 * detail, 22 * detail
    u, v = _grid(nu, nv)
    a, b = 2 * math.pi * u, 2 * math.pi * v
    bump = 1.0 + 0.08 * torch.sin(3 * a) * torch.cos(2 * b)
    rr = r * bump
    ring = torch.stack([torch.cos(a), torch.sin(a), torch.zeros_like(a)], -1)
    zhat = torch.tensor([0.0, 0, 1]).expand_as(ring)
    normal0 = torch.cos(b)[:, None] * ring + torch.sin(b)[:, None] * zhat
    pts = R * ring + rr[:, None] * normal0
    # tangents by finite differences of the parametrisation (exact enough for orientation)
    du = torch.stack([-torch.sin(a), torch.cos(a), torch.zeros_like(a)], -1) * (R + rr * torch.cos(b))[:, None]
    dv = -torch.sin(b)[:, None] * ring * rr[:, None] + torch.cos(b)[:, None] * zhat * rr[:, None]
    # colour: hue bands around the ring, checker in (u,v), noise
    hue = (hue0 + u * 2.0 + 0.05 * noise(pts * 1.0)[:, 0]) % 1.0
    sat = 0.55 + 0.25 * torch.sin(2 * math.pi * 3 * v)
    val = 0.6 + 0.25 * _checker(u, v, 11, 4) + 0.1 * noise(pts)[:, 1]
    colors = _hsv_to_rgb(hue, sat.clamp(0, 1), val.clamp(0, 1))
    # thin dark stripes for high-frequency detail
    stripe = (torch.sin(2 * math.pi * 11 * u) > 0.6).float()
    colors = colors * (1 - 0.6 * stripe[:, None])
    su = 0.65 * (2 * math.pi * (R + rr * torch.cos(b))) / nu
    sv = 0.65 * (2 * math.pi * rr) / nv
    torus = _surface_part("torus", pts, du, dv, su, sv, colors, opacity=0.98)
    # tilt the object so no view sees it edge-on only, and raise it
    tilt = axis_angle_to_matrix((1.0, 0.3, 0.0), math.radians(35))
    torus.means = torus.means @ tilt.T
    torus.quats = quat_multiply(matrix_to_quat(tilt)[None], torus.quats)
    return ProceduralScene(
        name="object",
        seed=seed,
        parts=[torus],
        background=torch.tensor([1.0, 1.0, 1.0]),
        center=torch.zeros(3),
        extent=0.0,  # measured by make_scene
        ref_azimuth_deg=-90.0,
        ref_elevation_deg=25.0,
        ref_radius=2.6,
        fov_deg=45.0,
        mover="torus",
        wobble_center=torch.tensor([R, 0.0, 0.0]) @ tilt.T,
        wobble_radius=0.35,
    )


def _arena_ground(name: str, radius: float, spacing: float, texture) -> Part:
    """A disk of flat Gaussians (square grid clipped to ``radius``) on z = 0."""
    n = int(math.ceil(2 * radius / spacing))
    u, v = _grid(n, n)
    xy = (torch.stack([u, v], -1) - 0.5) * (n * spacing)
    keep = xy.norm(dim=-1) <= radius
    xy = xy[keep]
    pts = torch.cat([xy, torch.zeros(len(xy), 1)], -1)
    m = len(pts)
    uu = (xy[:, 0] / (2 * radius)) + 0.5
    vv = (xy[:, 1] / (2 * radius)) + 0.5
    return _surface_part(
        name, pts, torch.tensor([1.0, 0, 0]).expand(m, 3), torch.tensor([0.0, 1, 0]).expand(m, 3),
        0.65 * spacing, 0.65 * spacing, texture(uu, vv, pts),
    )


def _arena_wall(name: str, radius: float, height: float, spacing: float, texture) -> Part:
    """An inward-facing cylindrical backdrop around the z axis, from z = 0 to ``height``;
    ``texture(u=angle/2pi, v=z/height)``."""
    n_around = int(math.ceil(2 * math.pi * radius / spacing))
    n_up = int(math.ceil(height / spacing))
    u, v = _grid(n_around, n_up)
    ang = 2 * math.pi * u
    radial = torch.stack([torch.cos(ang), torch.sin(ang), torch.zeros_like(ang)], -1)
    pts = radius * radial + torch.stack([0 * u, 0 * u, v * height], -1)
    tangent = torch.stack([torch.sin(ang), -torch.cos(ang), torch.zeros_like(ang)], -1)
    up = torch.tensor([0.0, 0, 1]).expand_as(tangent)  # normal tangent x up = -radial (inward)
    return _surface_part(
        name, pts, tangent, up, 0.65 * 2 * math.pi * radius / n_around, 0.65 * height / n_up,
        texture(u, v, pts),
    )


def _zigzag(travel: float, half: float):
    """A path along x of length ``travel`` over t in [0,1], folded into [-half, half] (it
    turns back at each end): a subject that moves ``travel / (T - 1)`` per reference frame
    whatever its speed, and stays in view."""

    def x(t: float) -> float:
        s = (travel * t) % (4 * half)
        return -half + (s if s <= 2 * half else 4 * half - s)

    return x


def _make_garden(seed: int, detail: int = 1, mover: str = "ball", travel: Optional[float] = None) -> ProceduralScene:
    """A small arena: textured ground disk, cylindrical brick backdrop (so every orbit
    azimuth sees a background), a static box and sphere, a column that bends non-rigidly
    and a ball that translates (the mover).

    ``mover="cart"`` puts a second kind of subject in the ball's place: a flat textured block
    (0.24 long) that slides without turning. ``travel``: the mover's path length in world
    units over t in [0,1], zig-zagging in x over [-1.2, 1.2] (None: the ball's own sweep,
    -1.2 -> 1.2 with a bounce) -- large-motion benchmarks set it from a speed in sizes per
    frame (:data:`MOVER_SIZE`)."""
    if mover not in MOVER_SIZE:
        raise ValueError(f"garden: unknown mover {mover!r}; choose one of: {', '.join(MOVER_SIZE)}")
    g = torch.Generator().manual_seed(seed)
    n_ground = _Noise(g, num=8, freq=1.5, channels=3)
    n_wall = _Noise(g, num=8, freq=1.5, channels=3)
    n_prop = _Noise(g, num=6, freq=5.0, channels=3)
    jitter = lambda: float(torch.rand(1, generator=g)) - 0.5  # noqa: E731

    def ground_tex(u, v, p):
        base = _mix((0.36, 0.55, 0.25), (0.55, 0.45, 0.30), _checker(u, v, 16, 16))
        return base + 0.12 * n_ground(p)

    def wall_tex(u, v, p):
        rows = 6
        shift = 0.5 * (torch.floor(v * rows) % 2) / 40
        bricks = _checker(u + shift, v, 40, rows)
        base = _mix((0.75, 0.42, 0.35), (0.88, 0.78, 0.62), bricks)
        hue = _hsv_to_rgb(u % 1.0, torch.full_like(u, 0.35), torch.full_like(u, 0.9))
        return 0.75 * base + 0.25 * hue + 0.08 * n_wall(p)

    def box_tex(u, v, p):
        return _mix((0.20, 0.35, 0.80), (0.95, 0.85, 0.25), _checker(u, v, 3, 3)) + 0.08 * n_prop(p)

    def sphere_tex(u, v, p):
        return _hsv_to_rgb((u * 3) % 1.0, torch.full_like(u, 0.6), 0.55 + 0.35 * _checker(u, v, 8, 4))

    def column_tex(u, v, p):
        return _mix((0.90, 0.30, 0.55), (0.98, 0.95, 0.90), _checker(u, v, 6, 8)) + 0.05 * n_prop(p)

    def ball_tex(u, v, p):
        return _mix((0.95, 0.45, 0.10), (0.15, 0.15, 0.20), _checker(u, v, 6, 3))

    d = detail
    ground = _arena_ground("ground", 4.8, 0.2 / d, ground_tex)
    wall = _arena_wall("wall", 4.8, 2.4, 0.2 / d, wall_tex)
    box = _box("box", (0.9 + 0.1 * jitter(), 0.5, 0.3), (0.6, 0.6, 0.6), 12 * d, box_tex)
    sphere = _sphere("sphere", (-0.9, 0.8, 0.35), 0.35, 420 * d, sphere_tex)
    column = _cylinder("column", (0.0, 0.2, 0.0), 0.12, 1.2, 16 * d, 24 * d, column_tex)
    column.motion = _bend_motion
    column.params = {
        "base": torch.tensor([0.0, 0.2, 0.0]),
        "height": 1.2,
        "amp": 0.35,
        "amp2": 0.15,
        "freq": 1.0,
        "phase": 0.3 + jitter(),
        "dir": torch.tensor([1.0, 0.0, 0.0]),
    }
    if mover == "ball":
        ball = _sphere("ball", (0.0, 0.0, 0.18), 0.18, 160 * d, ball_tex)
        ball.motion = _translate_motion
        if travel is None:
            # x sweeps -1.2 -> 1.2 over t in [0,1] in front of the props, with a small bounce
            path = lambda t: torch.tensor([-1.2 + 2.4 * t, -0.7, 0.15 * abs(math.sin(3 * math.pi * t))])  # noqa: E731
        else:
            zx = _zigzag(float(travel), 1.2)
            path = lambda t: torch.tensor([zx(t), -0.7, 0.0])  # noqa: E731
        ball.params = {"pivot": torch.tensor([0.0, 0.0, 0.18]), "path": path, "spin": 2.0 * math.pi}
    else:
        def cart_tex(u, v, p):
            return _mix((0.10, 0.65, 0.70), (0.95, 0.95, 0.95), _checker(u, v, 4, 2)) + 0.06 * n_prop(p)

        ball = _box("cart", (0.0, 0.0, 0.08), (0.24, 0.16, 0.16), 60 * d, cart_tex)
        ball.motion = _translate_motion
        zx = _zigzag(2.4 if travel is None else float(travel), 1.2)
        ball.params = {"pivot": torch.tensor([0.0, 0.0, 0.08]), "path": lambda t: torch.tensor([zx(t), -0.7, 0.0]),
                       "spin": 0.0}
    return ProceduralScene(
        name="garden",
        seed=seed,
        parts=[ground, wall, box, sphere, column, ball],
        background=torch.tensor([0.62, 0.78, 0.95]),  # sky
        center=torch.tensor([0.0, 0.1, 0.45]),
        extent=0.0,  # measured by make_scene
        ref_azimuth_deg=-90.0,
        ref_elevation_deg=22.0,
        ref_radius=3.4,
        fov_deg=60.0,
        mover=mover,
        wobble_center=torch.tensor([-0.9, 0.8, 0.35]),  # around the sphere
        wobble_radius=0.6,
    )


def _make_articulated(seed: int, detail: int = 1) -> ProceduralScene:
    """A base block and a 3-segment arm (z-up chain of boxes) with rotating joints."""
    g = torch.Generator().manual_seed(seed)
    n_tex = _Noise(g, num=6, freq=5.0, channels=3)
    palette = [(0.85, 0.25, 0.2), (0.2, 0.6, 0.85), (0.95, 0.75, 0.2), (0.4, 0.8, 0.35)]

    def tex_for(i):
        c0 = palette[i]
        c1 = tuple(0.35 * x for x in c0)
        return lambda u, v, p: _mix(c0, c1, _checker(u, v, 3, 3)) + 0.06 * n_tex(p)

    d = detail
    base = _box("base", (0.0, 0.0, 0.15), (0.7, 0.7, 0.3), 14 * d, tex_for(3))
    seg_len = [0.7, 0.55, 0.4]
    seg_w = [0.22, 0.18, 0.14]
    segs, pivots = [], []
    z = 0.3
    for i, (L, w) in enumerate(zip(seg_len, seg_w)):
        pivots.append(torch.tensor([0.0, 0.0, z]))
        segs.append(_box(f"seg{i}", (0.0, 0.0, z + L / 2), (w, w, L), 18 * d, tex_for(i)))
        z += L
    arm = _cat_parts("arm", segs)
    bone_of = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(segs)])
    arm.motion = _arm_motion
    jit = torch.rand(3, generator=g)
    arm.params = {
        "pivots": pivots,
        "axes": [torch.tensor([0.0, 0, 1.0]), torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1.0, 0])],
        "amps": [0.9, 0.6, 0.8],
        "freqs": [1.0, 1.0, 2.0],
        "phases": (2 * math.pi * jit).tolist(),
        "bone_of": bone_of,
    }
    # joint 0 rotates about z (yaw), then the others bend; all rotate about their pivots
    bone_index = torch.cat([torch.zeros(len(base), dtype=torch.long), bone_of + 1])
    ground = _plane(
        "ground", (-1.2, -1.2, 0.0), (2.4, 0, 0), (0, 2.4, 0), 24 * d, 24 * d,
        lambda u, v, p: _mix((0.55, 0.55, 0.55), (0.8, 0.8, 0.8), _checker(u, v, 6, 6)),
    )
    bone_index = torch.cat([torch.zeros(len(ground), dtype=torch.long), bone_index])
    return ProceduralScene(
        name="articulated",
        seed=seed,
        parts=[ground, base, arm],
        background=torch.tensor([0.95, 0.95, 0.95]),
        center=torch.tensor([0.0, 0.0, 0.7]),
        extent=0.0,  # measured by make_scene
        ref_azimuth_deg=-90.0,
        ref_elevation_deg=15.0,
        ref_radius=3.6,
        fov_deg=50.0,
        mover="arm",
        wobble_center=torch.tensor([0.0, 0.0, 1.2]),
        wobble_radius=0.4,
        info={"arm": arm.params, "bone_index": bone_index},
    )


def _bounding_radius(scene: ProceduralScene, samples: int = 21) -> float:
    """Radius around ``scene.center`` holding every Gaussian centre over t in [0,1]
    (sampled), plus 2%."""
    r = 0.0
    for p in scene.parts:
        for t in torch.linspace(0, 1, samples if p.motion is not None else 1).tolist():
            r = max(r, float((p.at(t)[0] - scene.center).norm(dim=-1).max()))
    return round(1.02 * r, 4)


# the garden's movers and their size along their path (world units): a speed "k sizes per
# frame" is a travel of k * size * (T - 1) over T reference frames
MOVER_SIZE = {"ball": 0.36, "cart": 0.24}

SCENES: dict[str, Callable[..., ProceduralScene]] = {
    "object": _make_object,
    "garden": _make_garden,
    "articulated": _make_articulated,
}


def make_scene(
    name: str,
    seed: int = 0,
    detail: int = 1,
    imperfections: Optional[Imperfections] = None,
    **options,
) -> ProceduralScene:
    """Build a procedural scene.

    Args:
        name: one of :data:`SCENES` (``"object"``, ``"garden"``, ``"articulated"``).
        seed: texture/layout randomness; the same seed gives identical Gaussians.
        detail: multiplies the Gaussian grid density per axis (1: a few thousand
            Gaussians, right for 64-128 px renders on a CPU).
        imperfections: freeze-time inconsistencies applied when rendering with ``frame=k``.
        options: the scene's own options (``garden``: ``mover``, ``travel``).
    """
    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; choose one of: {', '.join(SCENES)}")
    if detail < 1:
        raise ValueError(f"detail must be >= 1, got {detail}")
    try:
        scene = SCENES[name](int(seed), int(detail), **options)
    except TypeError as e:
        raise ValueError(f"scene {name!r} takes no option(s) {', '.join(sorted(options))}") from e
    scene.extent = _bounding_radius(scene)
    if imperfections is not None:
        scene = scene.with_imperfections(imperfections)
    return scene
