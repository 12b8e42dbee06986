"""A trained 4D scene: canonical Gaussians + temporal deformation w_t, renderable at any
camera and time (the canonical stage writes a static one -- no deformer -- so a run that
stops there, e.g. an orbit of a static object, opens in render / export / eval / view too). Saved as a small manifest (``scene4d.json``) beside a standard 3DGS PLY
and the deformer's safetensors weights, so ``fourreal render`` / ``export`` / ``eval``
rebuild it without the recipe::

    {"format": "fourreal-scene4d/1",
     "canonical": "canonical.ply",
     "representation": {"kind": "representation", "name": "gaussians", "params": {...}},
     "deformer": {"kind": "deformer", "name": "mlp", "params": {...}},
     "deformer_weights": "w_t.safetensors",
     "motion_region": "motion_region.safetensors",     (only with dynamic_region; region.py)
     "background": [0, 0, 0],
     "near_plane": 0.4,                                (only when the data set one; multicam)
     "reference": {"times": [...], "canonical_frame": c, "camera": {...}},
     "freeze_time_cameras": {...}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from fourreal_core.errors import InputError
from fourreal_core.interfaces import GaussianParams, RenderOutput
from fourreal_core.types import Cameras

FORMAT = "fourreal-scene4d/1"
MANIFEST = "scene4d.json"


def with_near_plane(rasterizer, near: Optional[float]):
    """``rasterizer`` rebuilt with ``near_plane = near`` (kept as it is when ``near`` is None or
    not larger than its own, or when its config has no ``near_plane``: a third-party
    rasterizer that does not cull by depth). The rebuilt one is cached on the original."""
    import dataclasses

    cfg = getattr(rasterizer, "cfg", None)
    if near is None or cfg is None or not dataclasses.is_dataclass(cfg) or not hasattr(cfg, "near_plane"):
        return rasterizer
    if float(cfg.near_plane) >= near:
        return rasterizer
    cache = rasterizer.__dict__.setdefault("_near_plane_variants", {})
    if near not in cache:
        cache[near] = type(rasterizer)(dataclasses.replace(cfg, near_plane=float(near)))
    return cache[near]


def cameras_to_json(c: Cameras) -> dict:
    return {"viewmats": c.viewmats.detach().cpu().tolist(), "Ks": c.Ks.detach().cpu().tolist(),
            "width": c.width, "height": c.height}


def cameras_from_json(d: dict) -> Cameras:
    return Cameras(torch.tensor(d["viewmats"]), torch.tensor(d["Ks"]), d["width"], d["height"])


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_cameras(d: Any, where: str) -> None:
    """Cameras as :func:`cameras_to_json` writes them: N world-to-camera 4x4 (last row
    [0, 0, 0, 1], invertible rotation), N pixel intrinsics with positive focal lengths, and a
    positive whole width and height."""
    if not isinstance(d, dict) or not all(k in d for k in ("viewmats", "Ks", "width", "height")):
        raise InputError(f"{where}: expected {{viewmats, Ks, width, height}}, got {json.dumps(d)[:60]}")
    for k in ("width", "height"):
        if not _is_num(d[k]) or int(d[k]) != d[k] or d[k] < 1:
            raise InputError(f"{where}.{k} must be a positive whole number of pixels, got {json.dumps(d[k])[:40]}")
    try:
        V = torch.tensor(d["viewmats"], dtype=torch.float64)
        K = torch.tensor(d["Ks"], dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{where}: viewmats and Ks must be lists of 4x4 and 3x3 number matrices") from None
    if V.ndim != 3 or V.shape[1:] != (4, 4) or K.ndim != 3 or K.shape[1:] != (3, 3) or len(V) != len(K) or not len(V):
        raise InputError(f"{where}: viewmats must be [N,4,4] and Ks [N,3,3], got {list(V.shape)} and {list(K.shape)}")
    if not (torch.isfinite(V).all() and torch.isfinite(K).all()):
        raise InputError(f"{where}: holds a non-finite number")
    for i in range(len(V)):
        if not (K[i, 0, 0] > 0 and K[i, 1, 1] > 0):
            raise InputError(f"{where}.Ks[{i}]: focal lengths must be > 0, got fx={float(K[i, 0, 0]):g}, "
                             f"fy={float(K[i, 1, 1]):g}")
        if V[i, 3].tolist() != [0.0, 0.0, 0.0, 1.0] or abs(float(torch.linalg.det(V[i, :3, :3]))) < 1e-6:
            raise InputError(f"{where}.viewmats[{i}]: not a camera pose (singular, or last row not [0, 0, 0, 1])")


def check_manifest(path: Path, m: Any) -> None:
    """One :class:`InputError` line naming the manifest and the entry for anything
    :meth:`Scene4D.load` would otherwise fail on deep inside (or render wrong with exit 0):
    missing or mistyped keys, reference times outside [0, 1], a canonical frame outside
    them, bad cameras, a background that is not three numbers, a non-positive near plane."""
    if not isinstance(m, dict):
        raise InputError(f"{path}: expected a JSON object (a fourreal 4D scene), got {type(m).__name__}")
    if not isinstance(m.get("canonical"), str) or not m["canonical"]:
        raise InputError(f"{path}: canonical must name the canonical PLY file, got {json.dumps(m.get('canonical'))[:40]}")
    for key in ("representation", "deformer"):
        c = m.get(key)
        if c is not None and (not isinstance(c, dict) or not isinstance(c.get("name"), str)
                              or not isinstance(c.get("params", {}), dict)):
            raise InputError(f"{path}: {key} must be {{name, params}}, got {json.dumps(c)[:60]}")
    for key in ("deformer_weights", "motion_region") if "deformer" in m else ():
        if (key == "deformer_weights" or m.get(key)) and not (isinstance(m.get(key), str) and m[key]):
            raise InputError(f"{path}: {key} must name a safetensors file, got {json.dumps(m.get(key))[:40]}")
    bg = m.get("background", [0, 0, 0])
    if not isinstance(bg, list) or len(bg) != 3 or not all(_is_num(v) for v in bg):
        raise InputError(f"{path}: background must be three numbers (RGB), got {json.dumps(bg)[:40]}")
    if m.get("near_plane") is not None and not (_is_num(m["near_plane"]) and m["near_plane"] > 0):
        raise InputError(f"{path}: near_plane must be a number > 0, got {json.dumps(m['near_plane'])[:40]}")
    ref = m.get("reference", {})
    if not isinstance(ref, dict):
        raise InputError(f"{path}: reference must be an object, got {json.dumps(ref)[:40]}")
    times = ref.get("times")
    if times is not None:
        if not isinstance(times, list) or not times or not all(_is_num(t) and 0.0 <= t <= 1.0 for t in times):
            raise InputError(f"{path}: reference.times must be a non-empty list of times in [0, 1], "
                             f"got {json.dumps(times)[:60]}")
    c = ref.get("canonical_frame", ref.get("canonical_index"))
    if c is not None and (isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < len(times or [])):
        raise InputError(f"{path}: reference.canonical_frame must index reference.times "
                         f"(0..{len(times or []) - 1}), got {json.dumps(c)[:40]}")
    if "camera" in ref:
        _check_cameras(ref["camera"], f"{path}: reference.camera")
    if "freeze_time_cameras" in m:
        _check_cameras(m["freeze_time_cameras"], f"{path}: freeze_time_cameras")


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
            save_tensors(folder / "w_t.safetensors", inner.state_dict())
            manifest["deformer"] = {"kind": "deformer", "name": deformer_spec.name,
                                    "params": to_plain(deformer_spec.params)}
            manifest["deformer_weights"] = "w_t.safetensors"
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
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            got = m.get("format") if isinstance(m, dict) else type(m).__name__
            raise InputError(f"{path}: unknown format {got!r} (expected {FORMAT})")
        check_manifest(path, m)
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
            try:
                deformer.load_state_dict(tensors)
            except (RuntimeError, KeyError, ValueError) as exc:
                why = " ".join(str(exc).split())[:160]
                raise InputError(f"{folder / m['deformer_weights']}: does not fit the deformer {m['deformer']['name']!r} "
                                 f"described in {path.name} ({why})") from None
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
