"""Capture layouts are a plugin kind (``capture``): the multicam stage's input is read by the
layout a recipe names, or by the first registered one that claims the path; a new layout is
one CaptureReader class and one registration (docs/plugins.md, "Capture layouts")."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch


def _rig(root, T=3, cams=("left", "right"), W=16, H=12):
    """A made-up layout: rig.json {w, h, cameras: {name: {K, w2c, images}}} and PNGs."""
    from PIL import Image

    root.mkdir(parents=True)
    meta = {"w": W, "h": H, "cameras": {}}
    for i, cam in enumerate(cams):
        files = []
        for t in range(T):
            f = f"{cam}_{t}.png"
            Image.new("RGB", (W, H), (60 * i, 20 * t, 200)).save(root / f)
            files.append(f)
        w2c = np.eye(4)
        w2c[0, 3] = float(i)
        meta["cameras"][cam] = {"K": [[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]], "w2c": w2c.tolist(), "images": files}
    (root / "rig.json").write_text(json.dumps(meta))
    return root


def _rig_plugin():
    from fourreal_core import hookimpl
    from fourreal_core.interfaces import CaptureReader

    class RigCapture(CaptureReader):
        def __init__(self, cfg=None):
            self.cfg = cfg

        def claims(self, path):
            return path.is_dir() and (path / "rig.json").is_file()

        def read(self, path):
            from fourreal_poses.capture import Capture

            m = json.loads((path / "rig.json").read_text())
            cams = m["cameras"]
            return Capture.from_images(path, {c: [path / f for f in v["images"]] for c, v in cams.items()},
                                       {c: torch.tensor(v["K"]) for c, v in cams.items()},
                                       {c: torch.tensor(v["w2c"]) for c, v in cams.items()}, m["w"], m["h"],
                                       splits={"right": "test"})

    mod = types.ModuleType("_rig_capture_plugin")
    mod.RigCapture = RigCapture

    @hookimpl
    def fourreal_register(registry):
        registry.add("capture", "rig", "_rig_capture_plugin:RigCapture", description="test rig")

    mod.fourreal_register = fourreal_register
    return mod


@pytest.fixture
def rig_registry():
    from fourreal_core.registry import get_registry

    mod = _rig_plugin()
    sys.modules[mod.__name__] = mod
    reg = get_registry()
    reg.register_module(mod, source="tests:rig")
    try:
        yield reg
    finally:
        reg.unregister_source("tests:rig")
        sys.modules.pop(mod.__name__, None)


def test_built_in_layouts_are_capture_plugins():
    from fourreal_core.interfaces import KINDS
    from fourreal_core.registry import get_registry

    assert "capture" in KINDS
    assert {"dynamic3dgs", "camera_videos"} <= set(get_registry().names("capture"))


def test_a_registered_layout_is_read_by_claim_and_by_name(tmp_path, rig_registry):
    from fourreal_poses.capture import read_capture

    root = _rig(tmp_path / "rig")
    cap = read_capture(root, rig_registry)  # claimed: no built-in layout reads rig.json
    assert cap.cameras == ["left", "right"] and cap.num_times == 3 and (cap.width, cap.height) == (16, 12)
    assert cap.splits == {"left": "train", "right": "test"}
    fr = cap.frames("right", [0, 2], 6, 8)
    assert fr.shape == (2, 6, 8, 3)
    assert abs(float(fr[1, ..., 1].mean()) - 40 / 255) < 0.02  # time 2's green is 20 * 2
    cams = cap.cameras_at(["right"], [1], 6, 8)
    assert float(cams.Ks[0, 0, 0]) == pytest.approx(20.0 * 8 / 16) and float(cams.viewmats[0, 0, 3]) == 1.0
    assert read_capture(root, rig_registry, layout="rig").cameras == cap.cameras
    from fourreal_core.errors import InputError

    with pytest.raises(InputError, match=r"params.layout: unknown capture layout 'rug'; registered: .*rig"):
        read_capture(root, rig_registry, layout="rug")


def test_a_folder_no_layout_claims_is_one_line(tmp_path):
    from fourreal_core.errors import InputError
    from fourreal_poses.capture import read_capture

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as exc:
        read_capture(tmp_path / "empty")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'empty'}: not a capture any registered layout reads ("), msg
    assert "dynamic3dgs" in msg and "camera_videos" in msg


def test_capture_constructors_check_their_shapes(tmp_path):
    from fourreal_core.errors import InputError
    from fourreal_poses.capture import Capture

    with pytest.raises(InputError, match="camera b has 1 time steps, camera a has 2"):
        Capture.from_images(tmp_path, {"a": ["x", "y"], "b": ["z"]}, {"a": torch.eye(3), "b": torch.eye(3)},
                            {"a": torch.eye(4), "b": torch.eye(4)}, 8, 8)
    with pytest.raises(InputError, match=r"camera a: intrinsics must be \[T,3,3\] or \[3,3\]"):
        Capture.from_images(tmp_path, {"a": ["x"]}, {"a": torch.eye(4)}, {"a": torch.eye(4)}, 8, 8)


def test_each_built_in_layout_claims_only_its_own(tmp_path):
    from fourreal_poses.capture import CameraVideosCapture, Dynamic3DGSCapture

    d3, cv = Dynamic3DGSCapture(), CameraVideosCapture()
    (tmp_path / "dg").mkdir()
    (tmp_path / "dg" / "train_meta.json").write_text("{}")
    (tmp_path / "cams").mkdir()
    (tmp_path / "cams" / "cameras.json").write_text("{}")
    assert d3.claims(tmp_path / "dg") and d3.claims(tmp_path / "dg" / "train_meta.json")
    assert not cv.claims(tmp_path / "dg") and not cv.claims(tmp_path / "dg" / "train_meta.json")
    assert cv.claims(tmp_path / "cams") and cv.claims(tmp_path / "cams" / "cameras.json")
    assert not d3.claims(tmp_path / "cams") and not d3.claims(tmp_path / "cams" / "cameras.json")
