"""Inputs and outputs the canonical and motion stages share: posed videos, points, the
background, camera refinement, component files. The training loop itself is
:mod:`fourreal_stages.fit`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from fourreal_core.errors import InputError
from fourreal_core.interfaces import Loss
from fourreal_core.types import Cameras, PointCloud, PosedVideo
from fourreal_formats.points import read_points


# ------------------------------------------------------------------------------ inputs
def stage_scene(ctx, explicit: Optional[str], what: str):
    """The 4D scene a stage reads (export, eval, render): ``params.scene`` when set, else the
    newest earlier stage's ``scene4d.json``; one line naming the stage when there is none.
    Returns ``(path, scene)``."""
    from fourreal_formats.scene4d import MANIFEST, Scene4D

    path = ctx.resolve(explicit) if explicit else ctx.find_output(MANIFEST)
    if path is None:
        raise InputError(f"stage {ctx.name!r}: no scene to {what} (run the canonical or motion stage first, "
                         "or set params.scene to a scene4d.json)")
    return path, Scene4D.load(path, ctx.registry, ctx.device)


def posed_input(ctx, explicit: Optional[str], rel: str, what: str, yaml_path: str, **load_kw) -> PosedVideo:
    """Load a posed video from ``explicit`` (a recipe path) or an earlier stage's ``rel``."""
    from fourreal_formats.transforms import load_transforms

    path = ctx.resolve(explicit) if explicit else ctx.find_output(rel)
    if path is None:
        raise InputError(
            f"stage {ctx.name!r}: no {what}: set {yaml_path} to a transforms.json, or run a stage "
            f"that writes {rel} (synthetic, poses) before it"
        )
    return load_transforms(path, **load_kw)


def initial_points(ctx, explicit: Optional[str]) -> Optional[PointCloud]:
    """Sparse points from ``explicit`` or an earlier stage (``points.ply`` / ``init_points.npz``)."""
    path = ctx.resolve(explicit) if explicit else (ctx.find_output("points.ply") or ctx.find_output("init_points.npz"))
    if path is None:
        return None
    return read_points(path)


def scene_extent(cameras: Cameras) -> float:
    """3DGS's scene radius: 1.1 x the largest distance of a camera centre from their mean."""
    c = cameras.centers
    r = (c - c.mean(0)).norm(dim=-1).max().item()
    return max(1.1 * r, 1e-3)


def random_init_points(cameras: Cameras, n: int, seed: int) -> PointCloud:
    """Points in a box around what the cameras look at (used without SfM points): centred
    where the optical axes meet (least squares), half-size = what a camera sees across at that
    distance."""
    g = torch.Generator().manual_seed(seed)
    c = cameras.centers.double()
    fwd = torch.nn.functional.normalize(cameras.viewmats[:, 2, :3].double(), dim=-1)  # camera z in world
    # closest point to all optical axes: sum (I - f f^T) (p - c) = 0
    P = torch.eye(3, dtype=torch.float64) - fwd[:, :, None] * fwd[:, None, :]
    A, b = P.sum(0), (P @ c[:, :, None]).sum(0)[:, 0]
    target = torch.linalg.lstsq(A, b).solution if torch.linalg.matrix_rank(A) == 3 else (c + fwd).mean(0)
    dist = (c - target).norm(dim=-1).mean().clamp_min(1e-3)
    half = dist * 0.5 * cameras.width / cameras.Ks[:, 0, 0].mean().double()
    pts = target + (torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1) * half
    return PointCloud(pts.float(), torch.rand(n, 3, generator=g))


# ------------------------------------------------------------------- camera refinement
def _so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``[K,3]`` axis-angle -> ``[K,3,3]`` (smooth at 0)."""
    theta2 = (w * w).sum(-1, keepdim=True)[..., None]  # [K,1,1]
    theta = torch.sqrt(theta2 + 1e-12)
    K = torch.zeros(w.shape[0], 3, 3, dtype=w.dtype, device=w.device)
    K[:, 0, 1], K[:, 0, 2] = -w[:, 2], w[:, 1]
    K[:, 1, 0], K[:, 1, 2] = w[:, 2], -w[:, 0]
    K[:, 2, 0], K[:, 2, 1] = -w[:, 1], w[:, 0]
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(K)
    a = torch.where(theta2 < 1e-8, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(theta2 < 1e-8, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    return eye + a * K + b * (K @ K)


class CameraRefiner(torch.nn.Module):
    """Per-frame SE(3) corrections of camera poses P_k (paper Eq. 2: cameras fine-tuned
    jointly); the canonical frame's camera stays fixed. ``viewmat_k' = [R(w_k) | t_k] @ viewmat_k``.
    """

    def __init__(self, cameras: Cameras, fixed: Optional[int] = None) -> None:
        super().__init__()
        self.base = cameras
        self.delta = torch.nn.Parameter(torch.zeros(len(cameras), 6, device=cameras.device))
        mask = torch.ones(len(cameras), 1, device=cameras.device)
        if fixed is not None:
            mask[fixed] = 0.0
        self.register_buffer("mask", mask)

    def forward(self, index: torch.Tensor | int | list) -> Cameras:
        idx = torch.as_tensor(index, device=self.delta.device).reshape(-1)
        d = self.delta[idx] * self.mask[idx]
        T = torch.eye(4, device=d.device).repeat(len(idx), 1, 1)
        T[:, :3, :3] = _so3_exp(d[:, :3])
        T[:, :3, 3] = d[:, 3:]
        base = self.base.viewmats[idx]
        return Cameras(T @ base, self.base.Ks[idx], self.base.width, self.base.height)

    def all(self) -> Cameras:
        with torch.no_grad():
            return self.forward(torch.arange(len(self.base), device=self.delta.device))


# ------------------------------------------------------------------------------ losses
def build_losses(specs: list, registry) -> dict[str, Loss]:
    """Instantiate the stage's loss components, keyed by name (unique)."""
    out: dict[str, Loss] = {}
    for spec in specs:
        if spec.name in out:
            raise InputError(f"{spec.source}: loss {spec.name!r} is listed twice")
        out[spec.name] = spec.build(registry)
    return out


def write_component_json(path: Path, spec, extra: Optional[dict] = None) -> None:
    """``{name, params}`` of a component (to rebuild it), plus extras, atomically."""
    from fourreal_core.io import write_json
    from fourreal_core.recipe import to_plain

    write_json(path, {"kind": spec.kind, "name": spec.name, "params": to_plain(spec.params), **(extra or {})})


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def near_plane_for(explicit, posed: Optional[PosedVideo]) -> Optional[float]:
    """The near plane to render with: the recipe's, else the data's (``fourreal.near_plane`` in
    its transforms.json, written by the multicam stage for cameras mounted in the scene's
    own wall), else None (the rasterizer's)."""
    near = explicit
    if near is None and posed is not None:
        near = (posed.meta.get("fourreal") or {}).get("near_plane")
    if near is None:
        return None
    near = float(near)
    if not near >= 0:
        raise InputError(f"near_plane must be a distance >= 0, got {near}")
    return near or None


def background_for(explicit, posed: PosedVideo, device) -> torch.Tensor:
    """The background colour: the recipe's, else the data's (``fourreal.background`` in its
    transforms.json, written by the synthetic stage), else black."""
    bg = explicit
    if bg is None:
        bg = (posed.meta.get("fourreal") or {}).get("background")
    if bg is None:
        bg = [0.0, 0.0, 0.0]
    if len(bg) != 3:
        raise InputError(f"background must have 3 values (RGB in [0,1]), got {bg}")
    return torch.tensor([float(x) for x in bg], dtype=torch.float32, device=device)


def generation_prompt(ctx) -> str:
    """The prompt of an earlier `generate` stage (for SDS), or ''."""
    path = ctx.find_output("generation.json")
    return str(read_json(path).get("prompt", "")) if path is not None else ""


def freeze_prompt(ctx) -> str:
    """The freeze-time prompt of an earlier `generate` stage (multi-view SDS), or ''."""
    path = ctx.find_output("generation.json")
    return str(read_json(path).get("freeze_prompt", "")) if path is not None else ""
