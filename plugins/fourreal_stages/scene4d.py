"""A trained 4D scene: canonical Gaussians + temporal deformation w_t, renderable at any
camera and time (the canonical stage writes a static one -- no deformer -- so a run that
stops there, e.g. an orbit of a static object, opens in render / export / eval / view too). Saved as a small manifest (``scene4d.json``) beside a standard 3DGS PLY
and the deformer's safetensors weights, so ``fourreal render`` / ``export`` / ``eval``
rebuild it without the recipe::

    {"format": "fourreal-scene4d/1",
     "canonical": "canonical.ply",
     "representation": {"kind": "representation", "name": "gaussians", "params": {...}},
     "deformer": {"kind": "deformer", "name": "mlp", "params": {...}},
     "deformer_weights": "motion_deformer.safetensors",
     "motion_region": "motion_region.safetensors",     (only with dynamic_region; region.py)
     "background": [0, 0, 0],
     "near_plane": 0.4,                                (only when the data set one; multicam)
     "reference": {"times": [...], "canonical_frame": c, "camera": {...}},
     "freeze_time_cameras": {...}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from fourreal_core.errors import InputError
from fourreal_core.interfaces import GaussianParams, RenderOutput
from fourreal_core.types import Cameras

FORMAT = "fourreal-scene4d/1"
MANIFEST = "scene4d.json"


def cameras_to_json(c: Cameras) -> dict:
    return {"viewmats": c.viewmats.detach().cpu().tolist(), "Ks": c.Ks.detach().cpu().tolist(),
            "width": c.width, "height": c.height}


def cameras_from_json(d: dict) -> Cameras:
    return Cameras(torch.tensor(d["viewmats"]), torch.tensor(d["Ks"]), d["width"], d["height"])


@dataclass
class Scene4D:
    model: Any  # the representation (GaussianModel)
    deformer: Any  # temporal deformer or None (static scene)
    background: torch.Tensor
    times: Optional[torch.Tensor] = None  # reference frame times
    canonical_frame: Optional[int] = None  # the canonical frame c of the reference video
    reference_camera: Optional[Cameras] = None
    freeze_cameras: Optional[Cameras] = None
    deformer_spec: Any = None  # ComponentSpec the deformer was built from (saved in the manifest)
    representation_spec: Any = None
    near_plane: Optional[float] = None  # rendered with at least this near plane (None: the rasterizer's)

    @property
    def device(self) -> torch.device:
        return self.background.device

    @torch.no_grad()
    def gaussians_at(self, t: float) -> GaussianParams:
        g = self.model.params()
        if self.deformer is None:
            return g
        return g.deformed(self.deformer.deform(g.means, float(t), quats=g.quats))

    @torch.no_grad()
    def render(self, rasterizer, cameras: Cameras, t: float) -> RenderOutput:
        """All ``cameras`` at one time ``t`` in [0,1]."""
        from .common import with_near_plane

        return with_near_plane(rasterizer, self.near_plane).rasterize(
            self.gaussians_at(t), cameras.to(self.device), background=self.background)

    @torch.no_grad()
    def render_each(self, rasterizer, cameras: Cameras, times) -> torch.Tensor:
        """One frame per (camera i, time i): ``[N,H,W,3]`` on the CPU."""
        frames = []
        for i in range(len(cameras)):
            frames.append(self.render(rasterizer, cameras[i], float(times[i])).rgb[0].clamp(0, 1).cpu())
        return torch.stack(frames)

    # --------------------------------------------------------------------------- I/O
    def save(self, folder: Path, ply_name: str = "canonical.ply") -> Path:
        from fourreal_core.io import save_tensors, write_json
        from fourreal_core.recipe import to_plain

        deformer_spec, representation_spec = self.deformer_spec, self.representation_spec
        folder = Path(folder)
        self.model.save_ply(folder / ply_name)
        manifest: dict = {"format": FORMAT, "canonical": ply_name,
                          "representation": {"kind": "representation", "name": representation_spec.name,
                                             "params": to_plain(representation_spec.params)},
                          "background": self.background.detach().cpu().tolist()}
        if self.near_plane is not None:
            manifest["near_plane"] = float(self.near_plane)
        if self.deformer is not None:
            from .region import REGION_FILE, RegionDeformer

            inner = self.deformer
            if isinstance(inner, RegionDeformer):  # w_t only inside the reference's dynamic region
                save_tensors(folder / REGION_FILE, inner.region_tensors())
                manifest["motion_region"] = REGION_FILE
                inner = inner.inner
            save_tensors(folder / "motion_deformer.safetensors", inner.state_dict())
            manifest["deformer"] = {"kind": "deformer", "name": deformer_spec.name,
                                    "params": to_plain(deformer_spec.params)}
            manifest["deformer_weights"] = "motion_deformer.safetensors"
        ref: dict = {}
        if self.times is not None:
            ref["times"] = [float(x) for x in self.times]
        if self.canonical_frame is not None:
            ref["canonical_frame"] = int(self.canonical_frame)
        if self.reference_camera is not None:
            ref["camera"] = cameras_to_json(self.reference_camera)
        manifest["reference"] = ref
        if self.freeze_cameras is not None:
            manifest["freeze_time_cameras"] = cameras_to_json(self.freeze_cameras)
        write_json(folder / MANIFEST, manifest)
        return folder / MANIFEST

    @staticmethod
    def load(path: Path, registry, device: torch.device | str = "cpu") -> "Scene4D":
        """From a manifest file, or a folder holding one."""
        from fourreal_core.io import load_tensors
        from fourreal_core.recipe import component_from_plain

        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST
        if not path.exists():
            raise InputError(f"{path}: no fourreal 4D scene here (expected {MANIFEST}, written by the motion stage)")
        try:
            m = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
        if m.get("format") != FORMAT:
            raise InputError(f"{path}: unknown format {m.get('format')!r} (expected {FORMAT})")
        folder = path.parent
        rep = m.get("representation", {"name": "gaussians", "params": {}})
        rep_spec = component_from_plain("representation", {"name": rep["name"], "params": rep.get("params", {})},
                                        registry, source=str(path))
        model = rep_spec.build(registry)
        model.load_ply(folder / m["canonical"])
        model = model.to(device)
        deformer = spec = None
        if "deformer" in m:
            spec = component_from_plain("deformer", {"name": m["deformer"]["name"], "params": m["deformer"]["params"]},
                                        registry, source=str(path))
            deformer = spec.build(registry)
            # the canonical input (zero_frame / zero_time) is part of the deformer's saved state
            ref = m.get("reference", {})
            deformer.setup(num_frames=len(ref.get("times", [])) or None, canonical=None,
                           canonical_means=model.params().means.detach())
            tensors, _ = load_tensors(folder / m["deformer_weights"], device="cpu")
            deformer.load_state_dict(tensors)
            if m.get("motion_region"):
                from .region import RegionDeformer

                region, _ = load_tensors(folder / m["motion_region"], device="cpu")
                deformer = RegionDeformer.from_region_tensors(deformer, region)
            deformer = deformer.to(device)
            deformer.eval()
        ref = m.get("reference", {})
        return Scene4D(
            model=model,
            deformer=deformer,
            background=torch.tensor(m.get("background", [0, 0, 0]), dtype=torch.float32, device=device),
            times=torch.tensor(ref["times"]) if "times" in ref else None,
            canonical_frame=ref.get("canonical_frame", ref.get("canonical_index")),  # canonical_index: before the rename
            reference_camera=cameras_from_json(ref["camera"]) if "camera" in ref else None,
            freeze_cameras=cameras_from_json(m["freeze_time_cameras"]) if "freeze_time_cameras" in m else None,
            deformer_spec=spec,
            representation_spec=rep_spec,
            near_plane=float(m["near_plane"]) if m.get("near_plane") is not None else None,
        )


def find_scene(run_or_path: Path) -> Path:
    """The newest scene manifest in a run folder (or the path itself)."""
    p = Path(run_or_path)
    if p.is_file():
        return p
    if (p / MANIFEST).exists():
        return p / MANIFEST
    found = sorted((p / "stages").glob(f"*/{MANIFEST}")) if (p / "stages").exists() else []
    if not found:
        raise InputError(f"{p}: no scene found (no stages/*/{MANIFEST}; has the canonical or motion stage finished?)")
    return found[-1]
