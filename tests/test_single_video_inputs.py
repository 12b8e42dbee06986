"""Single-video inputs are `capture` layouts too (docs/plugins.md, "Capture layouts"): the poses
stage reads its reference / freeze_time input through the first single-video layout that
claims the path -- a plugin's, else transforms_json, image_folder, video_file in that order --
and a new input format is one CaptureReader with ``single_video = True`` and one registration."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import types

import pytest
import torch


def _frames(n=9, h=24, w=32, seed=0):
    """Smooth, distinct frames (each a colour ramp of its own): codecs keep them close."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, generator=g) * 0.6 + 0.2
    ramp = torch.linspace(-0.15, 0.15, w)[None, None, :, None]
    return (base[:, None, None, :] + ramp).expand(n, h, w, 3).clamp(0, 1).contiguous()


def _posed(n=6, w=40, h=30):
    from fourreal_core.types import Cameras, PosedVideo, Video

    ang = torch.linspace(-math.pi / 2, math.pi / 3, n)
    eyes = torch.stack([3 * torch.cos(ang), 3 * torch.sin(ang), torch.linspace(0.5, 1.5, n)], -1)
    cams = Cameras(Cameras.look_at(eyes, torch.tensor([0.1, -0.2, 0.3])), Cameras.intrinsics(37.5, 36.0, 20.5, 14.25),
                   w, h)
    return PosedVideo(Video(_frames(n, h, w, seed=1), fps=6.0), cams, times=torch.linspace(0, 1, n), canonical_view=2)


def _claimer(path, registry=None) -> str:
    from fourreal_core.registry import get_registry
    from fourreal_poses.single_video import single_video_layouts

    return next(n for n, r in single_video_layouts(registry or get_registry()) if r.claims(path))


def test_built_in_single_video_layouts_are_capture_plugins_tried_last_in_order():
    from fourreal_core.registry import get_registry
    from fourreal_poses.single_video import single_video_layouts

    reg = get_registry()
    assert {"transforms_json", "image_folder", "video_file"} <= set(reg.names("capture"))
    order = [n for n, _ in single_video_layouts(reg)]
    assert order[-3:] == ["transforms_json", "image_folder", "video_file"]
    assert "dynamic3dgs" not in order and "camera_videos" not in order  # those are multi-camera


def test_each_input_is_claimed_by_the_right_layout_and_multicam_keeps_its_own(tmp_path):
    from fourreal_core.errors import InputError
    from fourreal_formats.transforms import write_transforms
    from fourreal_media import write_frames, write_video
    from fourreal_poses.capture import CameraVideosCapture, Dynamic3DGSCapture, read_capture

    mp4 = write_video(tmp_path / "clip.mp4", _frames(), fps=8.0)
    write_frames(tmp_path / "frames", _frames(5))
    tj = write_transforms(tmp_path / "ds" / "transforms.json", _posed())
    (tmp_path / "dg").mkdir()
    (tmp_path / "dg" / "train_meta.json").write_text("{}")
    assert _claimer(mp4) == "video_file"
    assert _claimer(tmp_path / "frames") == "image_folder"
    assert _claimer(tmp_path / "ds") == "transforms_json" and _claimer(tj) == "transforms_json"
    assert _claimer(tmp_path / "ds" / "images") == "image_folder"  # a transforms.json's image folder alone
    # the multi-camera layouts claim what they claimed before, and only they are asked by multicam
    assert CameraVideosCapture().claims(tmp_path / "ds") and Dynamic3DGSCapture().claims(tmp_path / "dg")
    with pytest.raises(InputError) as exc:
        read_capture(tmp_path / "frames")
    msg = str(exc.value)
    assert "not a capture any registered layout reads (camera_videos, dynamic3dgs)" in msg, msg
    with pytest.raises(InputError, match="params.layout: 'video_file' is a single-video layout"):
        read_capture(mp4, layout="video_file")


def test_single_video_layouts_read_what_the_direct_readers_read(tmp_path):
    from fourreal_core.errors import InputError
    from fourreal_formats.transforms import load_transforms, write_transforms
    from fourreal_media import read_video_sampled, write_frames, write_video
    from fourreal_poses.single_video import FrameSelection, read_single_video

    src = _frames()
    sel = FrameSelection(height=12, max_frames=4, min_frames=2)
    # a video file: read_video_sampled's frames and indices, no cameras
    mp4 = write_video(tmp_path / "clip.mp4", src, fps=8.0, crf=0)
    sv = read_single_video(mp4)
    assert (sv.layout, sv.carries_poses) == ("video_file", False)
    got = sv.load(sel)
    direct, info = read_video_sampled(mp4, height=12, max_frames=4, min_frames=2)
    assert got.posed is None and got.sfm is None and got.info["kind"] == "video"
    assert got.info["indices"] == info["indices"] == [0, 3, 5, 8]
    assert torch.equal(got.video.frames, direct.frames) and got.video.frames.shape == (4, 12, 16, 3)
    assert float((got.video.frames[1].mean((0, 1)) - src[3].mean((0, 1))).abs().max()) < 0.03
    # with SfM frames: decoded once at the larger size, the training frames area-resized from them
    big = sv.load(sel, sfm_long_side=32)
    assert big.sfm.frames.shape == (4, 24, 32, 3) and big.info["sfm_size"] == [32, 24]
    assert big.video.frames.shape == (4, 12, 16, 3) and big.info["size"] == [16, 12]
    # a frame folder
    write_frames(tmp_path / "frames", src)
    got = read_single_video(tmp_path / "frames").load(sel)
    direct, info = read_video_sampled(tmp_path / "frames", height=12, max_frames=4, min_frames=2)
    assert got.posed is None and got.info["kind"] == "frame folder" and got.info["indices"] == info["indices"]
    assert torch.equal(got.video.frames, direct.frames)
    # a transforms.json: its frames AND its cameras (load_transforms'), first frames after stride
    posed = _posed()
    write_transforms(tmp_path / "ds" / "transforms.json", posed)
    sv = read_single_video(tmp_path / "ds")
    assert (sv.layout, sv.carries_poses) == ("transforms_json", True)
    got = sv.load(FrameSelection(height=15, stride=2, min_frames=2))
    direct = load_transforms(tmp_path / "ds", height=15, stride=2)
    assert got.info == {"source": str(tmp_path / "ds"), "kind": "transforms.json", "indices": [0, 2, 4]}
    assert torch.equal(got.video.frames, direct.video.frames) and got.video.frames.shape == (3, 15, 20, 3)
    assert torch.allclose(got.posed.cameras.viewmats, posed.cameras.viewmats[::2], atol=1e-5)
    assert torch.allclose(got.posed.cameras.Ks[0], posed.cameras.Ks[0] * torch.tensor([[0.5], [0.5], [1.0]]))
    assert got.posed.canonical_view == 1
    with pytest.raises(InputError, match=r"/ds: has 3 frames, need at least 4$"):
        sv.load(FrameSelection(height=15, stride=2))


def test_an_explicit_layout_is_used_and_an_unknown_one_is_one_line(tmp_path):
    from fourreal_core.errors import InputError
    from fourreal_formats.transforms import write_transforms
    from fourreal_poses.single_video import FrameSelection, read_single_video

    write_transforms(tmp_path / "ds" / "transforms.json", _posed())
    assert read_single_video(tmp_path / "ds" / "images", layout="video_file").layout == "video_file"
    with pytest.raises(InputError, match=r"images: folder has no transforms.json"):
        read_single_video(tmp_path / "ds" / "images", layout="transforms_json").load(FrameSelection())
    with pytest.raises(InputError) as exc:
        read_single_video(tmp_path / "ds", layout="nope")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("params.layout: unknown single-video layout 'nope'; registered: ")
    assert msg.endswith("transforms_json, image_folder, video_file")
    with pytest.raises(InputError, match="params.layout: 'dynamic3dgs' is a multi-camera capture layout"):
        read_single_video(tmp_path / "ds", layout="dynamic3dgs")


# ------------------------------------------------------------------- a third-party format
def _take_plugin():
    """A made-up format: ``*.take``, a text file listing its frames' image files in order."""
    from fourreal_core import hookimpl
    from fourreal_core.interfaces import CaptureReader
    from fourreal_poses.single_video import LoadedVideo, SingleVideo

    class TakeVideo(SingleVideo):
        def load(self, sel, sfm_long_side=None):
            from fourreal_core.types import Video
            from fourreal_media import read_image

            files = [self.source.parent / n for n in self.source.read_text().split()]
            frames = torch.stack([read_image(f, height=sel.height, width=sel.width) for f in files])
            info = {"source": str(self.source), "kind": "take", "indices": list(range(len(files))),
                    "source_frames": len(files), "sampling": "all"}
            return LoadedVideo(Video(frames, fps=sel.fps), None, info, None)

    class TakeInput(CaptureReader):
        single_video = True

        def __init__(self, cfg=None):
            self.cfg = cfg

        def claims(self, path):
            return path.suffix == ".take"

        def read(self, path):
            return TakeVideo(path, "take")

    mod = types.ModuleType("_take_input_plugin")
    mod.TakeInput = TakeInput

    @hookimpl
    def fourreal_register(registry):
        registry.add("capture", "take", "_take_input_plugin:TakeInput", description="test take list")

    mod.fourreal_register = fourreal_register
    return mod


@contextlib.contextmanager
def _registered(mod):
    from fourreal_core.registry import get_registry

    sys.modules[mod.__name__] = mod
    reg = get_registry()
    reg.register_module(mod, source="tests:take")
    try:
        yield reg
    finally:
        reg.unregister_source("tests:take")
        sys.modules.pop(mod.__name__, None)


def test_a_third_party_single_video_format_is_read_by_the_poses_stage(tmp_path):
    from fourreal_core.config import ComponentSpec
    from fourreal_core.run import CheckpointStore, RunLog, StageContext
    from fourreal_formats.transforms import load_transforms
    from fourreal_media import write_frames
    from fourreal_poses.plugin import KnownConfig
    from fourreal_stages.poses import PosesConfig, PosesStage

    src = _frames(6, 12, 16, seed=2)
    files = write_frames(tmp_path / "shots", src)
    take = tmp_path / "orbit.take"
    take.write_text("\n".join(f"shots/{f.name}" for f in reversed(files)))  # frames in reverse
    assert _claimer(take) == "video_file"  # without the plugin: a file ffmpeg would be asked to decode
    with _registered(_take_plugin()) as reg:
        assert _claimer(take, reg) == "take" and _claimer(tmp_path / "shots", reg) == "image_folder"
        out = tmp_path / "02_poses"
        out.mkdir()
        ctx = StageContext(name="poses", index=2, run_dir=tmp_path, out_dir=out, recipe_dir=tmp_path,
                           device=torch.device("cpu"), seed=0, iterations_scale=1.0,
                           checkpoints=CheckpointStore(tmp_path / "ck"), log=RunLog(tmp_path / "log.jsonl"),
                           registry=reg)
        ctx.notice = (notes := []).append
        known = ComponentSpec("pose_estimator", "known", KnownConfig(source="orbit", arc_deg=90.0))
        PosesStage(PosesConfig(freeze_time=str(take), orbit_only=True, pose_estimator=known)).run(ctx)
    poses = json.loads((out / "poses.json").read_text())
    assert poses["frames"]["freeze_time"]["kind"] == "take"
    assert poses["frames"]["freeze_time"]["source"] == str(take)
    frz = load_transforms(out / "freeze_time" / "transforms.json")
    assert len(frz) == 6
    err = (frz.video.frames - src.flip(0)).abs().max()  # the take's order, not the folder's
    assert float(err) < 2 / 255, float(err)
    assert any(n.startswith("orbit.take: 6 of 6 frames (all over 100% of the video)") for n in notes), notes


def _rec_plugin():
    """A made-up posed format: ``*.rec``, a text file naming the transforms.json it wraps."""
    from fourreal_core import hookimpl
    from fourreal_core.interfaces import CaptureReader
    from fourreal_poses.single_video import SingleVideo

    class RecInput(CaptureReader):
        single_video = True

        def __init__(self, cfg=None):
            self.cfg = cfg

        def claims(self, path):
            return path.suffix == ".rec"

        def read(self, path):
            return SingleVideo.from_transforms(path.parent / path.read_text().strip(), "rec")

    mod = types.ModuleType("_rec_input_plugin")
    mod.RecInput = RecInput

    @hookimpl
    def fourreal_register(registry):
        registry.add("capture", "rec", "_rec_input_plugin:RecInput", description="test posed format")

    mod.fourreal_register = fourreal_register
    return mod


def test_the_cameras_a_plugin_format_carries_reach_the_known_estimator(tmp_path):
    from fourreal_core.config import ComponentSpec
    from fourreal_core.registry import get_registry
    from fourreal_core.run import CheckpointStore, RunLog, StageContext
    from fourreal_formats.transforms import load_transforms, write_transforms
    from fourreal_poses.plugin import KnownConfig
    from fourreal_stages.poses import PosesConfig, PosesStage

    posed = _posed()
    write_transforms(tmp_path / "scan" / "transforms.json", posed)
    rec = tmp_path / "take1.rec"
    rec.write_text("scan/transforms.json")
    mod = _rec_plugin()
    sys.modules[mod.__name__] = mod
    reg = get_registry()
    reg.register_module(mod, source="tests:rec")
    try:
        out = tmp_path / "02_poses"
        out.mkdir()
        ctx = StageContext(name="poses", index=2, run_dir=tmp_path, out_dir=out, recipe_dir=tmp_path,
                           device=torch.device("cpu"), seed=0, iterations_scale=1.0,
                           checkpoints=CheckpointStore(tmp_path / "ck"), log=RunLog(tmp_path / "log.jsonl"),
                           registry=reg)
        ctx.notice = lambda msg: None
        known = ComponentSpec("pose_estimator", "known", KnownConfig(points="none"))  # source: auto
        PosesStage(PosesConfig(freeze_time=str(rec), orbit_only=True, height=15, pose_estimator=known)).run(ctx)
    finally:
        reg.unregister_source("tests:rec")
        sys.modules.pop(mod.__name__, None)
    poses = json.loads((out / "poses.json").read_text())
    assert poses["report"]["source"] == "transforms"  # not the orbit auto falls back to
    frz = load_transforms(out / "freeze_time" / "transforms.json")
    assert len(frz) == 6 and (frz.cameras.width, frz.cameras.height) == (20, 15)
    assert torch.allclose(frz.cameras.viewmats, posed.cameras.viewmats, atol=1e-4)
    assert torch.allclose(frz.cameras.Ks[0], posed.cameras.Ks[0] * torch.tensor([[0.5], [0.5], [1.0]]), atol=1e-4)
