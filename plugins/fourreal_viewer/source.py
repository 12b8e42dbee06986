"""What ``fourreal view`` shows: a run folder's newest 4D scene (or a ``scene4d.json``), the
recipe's rasterizer, and the input frames of the reference and freeze-time cameras.

Nothing here takes the run's lock or writes into the run: stage outputs appear by an atomic
rename (docs/runs.md), so a run that another process is still writing is read as it stands,
and :meth:`ViewSource.changed` tells when a newer scene has appeared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fourreal_core.errors import InputError

MANIFEST = "scene4d.json"


def canonical_time(scene) -> float:
    """t_c: the time of the reference video's canonical frame c (0.5 when unknown)."""
    c = getattr(scene, "canonical_frame", getattr(scene, "canonical_index", None))
    if scene.times is not None and c is not None and 0 <= int(c) < len(scene.times):
        return float(scene.times[int(c)])
    return 0.5


def _run_dir_of(path: Path) -> Optional[Path]:
    """The run folder holding ``path`` (a folder with run.json and recipe.yaml), if any."""
    for p in [path, *path.parents][:5]:
        if (p / "run.json").is_file() and (p / "recipe.yaml").is_file():
            return p
    return None


def _newest(run_dir: Path, pattern: str) -> Optional[Path]:
    """The newest finished stage's ``pattern`` (stage folders sort in run order)."""
    stages = run_dir / "stages"
    if not stages.is_dir():
        return None
    found = [p for p in sorted(stages.glob(f"[0-9]*/{pattern}")) if not p.parent.name.startswith(".")]
    return found[-1] if found else None


@dataclass
class Inputs:
    """Input frames to show on the camera frusta (``uint8 [N,h,w,3]`` numpy, or None)."""

    reference: Any = None
    freeze_time: Any = None


@dataclass
class Loaded:
    scene: Any  # fourreal_formats.scene4d.Scene4D
    rasterizer: Any
    inputs: Inputs
    manifest: Path
    stamp: tuple


def _thumbnails(path: Optional[Path], count: Optional[int], max_width: int = 160):
    """Frames of a transforms.json as small uint8 images, or None (unreadable / wrong count)."""
    if path is None or count is None:
        return None
    try:
        import torch

        from fourreal_formats.transforms import load_transforms

        posed = load_transforms(path)
        frames = posed.video.frames
        if len(frames) != count:
            return None
        h, w = frames.shape[1:3]
        if w > max_width:
            nh = max(1, round(h * max_width / w))
            frames = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), size=(nh, max_width),
                                                     mode="area").permute(0, 2, 3, 1)
        return (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    except Exception:  # the frusta are drawn without images rather than failing the viewer
        return None


class ViewSource:
    """``RUN_OR_SCENE4D`` as given to ``fourreal view``."""

    def __init__(self, path: Path, device: Optional[str] = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such run folder or scene4d.json")
        if self.path.is_file() and self.path.name != MANIFEST and self.path.suffix != ".json":
            raise InputError(f"{self.path}: not a run folder or a {MANIFEST}")
        self.run_dir = _run_dir_of(self.path.resolve() if self.path.is_file() else self.path.resolve())
        if self.path.is_dir() and not (self.path / MANIFEST).exists() and self.run_dir is None:
            raise InputError(f"{self.path}: not a fourreal run folder (no run.json / recipe.yaml) and no {MANIFEST}")
        self.device_name = device

    # ------------------------------------------------------------------ which scene
    def manifest(self) -> Path:
        """The scene manifest to show now (a run's newest finished one)."""
        from fourreal_formats.scene4d import find_scene

        p = self.path
        if p.is_file():
            return p
        if (p / MANIFEST).exists():
            return p / MANIFEST
        return find_scene(p)

    def _stamp(self, manifest: Path) -> tuple:
        try:
            st = manifest.stat()
            return (str(manifest.resolve()), st.st_mtime_ns, st.st_size)
        except OSError:
            return (str(manifest), 0, 0)

    def changed(self, loaded: Loaded) -> bool:
        """A newer scene than ``loaded`` is there (a later stage finished, or was rerun)."""
        try:
            return self._stamp(self.manifest()) != loaded.stamp
        except InputError:
            return False

    # ------------------------------------------------------------------ loading
    def _recipe(self):
        if self.run_dir is None:
            return None
        from fourreal_core.recipe import load_recipe
        from fourreal_core.registry import get_registry

        return load_recipe(self.run_dir / "recipe.yaml", registry=get_registry(), check_files=False)

    def load(self) -> Loaded:
        """Scene, rasterizer (the run recipe's, else ``auto``) and input frames."""
        from fourreal_core.recipe import component_from_plain
        from fourreal_core.registry import get_registry
        from fourreal_core.run import resolve_device
        from fourreal_formats.scene4d import Scene4D

        registry = get_registry()
        manifest = self.manifest()
        stamp = self._stamp(manifest)
        recipe = self._recipe()
        device = resolve_device(self.device_name or (recipe.device if recipe is not None else "auto"))
        scene = Scene4D.load(manifest, registry, device)
        spec = (recipe.rasterizer if recipe is not None
                else component_from_plain("rasterizer", {"name": "auto", "params": {}}, registry, source="fourreal view"))
        rasterizer = spec.build(registry)
        inputs = Inputs()
        if self.run_dir is not None:
            n_ref = len(scene.times) if scene.times is not None else None
            n_frz = len(scene.freeze_cameras) if scene.freeze_cameras is not None else None
            inputs.reference = _thumbnails(_newest(self.run_dir, "reference/transforms.json"), n_ref)
            inputs.freeze_time = _thumbnails(_newest(self.run_dir, "freeze_time/transforms.json"), n_frz)
        return Loaded(scene=scene, rasterizer=rasterizer, inputs=inputs, manifest=manifest, stamp=stamp)
