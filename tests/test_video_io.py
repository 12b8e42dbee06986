"""Video / image / transforms.json I/O at the boundary (fourreal_media,
fourreal_formats.transforms)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fourreal_core.errors import InputError
from fourreal_formats.transforms import load_transforms, write_transforms
from fourreal_core.types import Cameras, PosedVideo, Video
from fourreal_media import (
    natural_key,
    psnr,
    read_image,
    read_video,
    write_frames,
    write_image,
    write_video,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def smooth_video(n=12, h=48, w=64) -> torch.Tensor:
    """``[n,h,w,3]`` smooth moving colour gradients (compressible; PSNR well above 30 dB)."""
    y = torch.linspace(0, 1, h)[:, None].expand(h, w)
    x = torch.linspace(0, 1, w)[None, :].expand(h, w)
    frames = []
    for k in range(n):
        r = 0.5 + 0.35 * torch.sin(2 * math.pi * (x + 0.05 * k))
        g = 0.5 + 0.35 * torch.cos(2 * math.pi * (y - 0.04 * k))
        b = 0.2 + 0.6 * (x * y)
        frames.append(torch.stack([r, g, b], -1))
    return torch.stack(frames).float()


# ------------------------------------------------------------------------------ video
def test_mp4_round_trip(tmp_path):
    frames = smooth_video()
    path = write_video(tmp_path / "clip.mp4", frames, fps=12)
    assert path.is_file() and path.stat().st_size > 0
    assert not list(tmp_path.glob(".*tmp*")), "atomic write left a temporary file"
    v = read_video(path)
    assert isinstance(v, Video)
    assert v.frames.shape == frames.shape and v.frames.dtype == torch.float32
    assert v.fps == pytest.approx(12.0)
    assert 0.0 <= float(v.frames.min()) and float(v.frames.max()) <= 1.0
    assert psnr(v.frames, frames) > 30.0
    # frames stay in order: each decoded frame is closest to its own original
    err = ((v.frames[:, None] - frames[None]) ** 2).mean(dim=(2, 3, 4))
    assert torch.equal(err.argmin(dim=1), torch.arange(len(frames)))


def test_mp4_is_h264_yuv420p_and_odd_sizes_are_padded(tmp_path):
    import subprocess

    import imageio_ffmpeg

    frames = smooth_video(n=5, h=33, w=47)
    path = write_video(tmp_path / "odd.mp4", Video(frames, fps=5.0))
    info = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True, text=True,
    ).stderr
    assert "h264" in info and "yuv420p" in info and "48x34" in info
    v = read_video(path)
    assert v.frames.shape == (5, 34, 48, 3)
    assert v.fps == pytest.approx(5.0)
    assert psnr(v.frames[:, :33, :47], frames) > 30.0
    # the padding replicates the edge, it does not add a black border
    assert torch.allclose(v.frames[:, 33], v.frames[:, 32], atol=0.08)


def test_gif_round_trip(tmp_path):
    frames = smooth_video(n=4, h=20, w=30)
    v = read_video(write_video(tmp_path / "anim.gif", frames, fps=5))
    assert v.frames.shape == (4, 20, 30, 3) and v.fps == pytest.approx(5.0)
    assert psnr(v.frames, frames) > 25.0  # 256-colour palette


def test_resize_stride_max_frames(tmp_path):
    frames = smooth_video(n=12, h=48, w=64)
    path = write_video(tmp_path / "clip.mp4", frames, fps=12)
    v = read_video(path, height=24, stride=2, max_frames=4)
    assert v.frames.shape == (4, 24, 32, 3)  # aspect kept from height alone
    assert v.fps == pytest.approx(6.0)
    # frame i of the strided read is source frame 2*i, resized
    small = torch.nn.functional.interpolate(
        frames.permute(0, 3, 1, 2), size=(24, 32), mode="bilinear", antialias=True, align_corners=False
    ).permute(0, 2, 3, 1)
    for i in range(4):
        errs = [float(((v.frames[i] - small[j]) ** 2).mean()) for j in range(len(small))]
        assert int(np.argmin(errs)) == 2 * i
    v = read_video(path, width=16)
    assert v.frames.shape == (12, 12, 16, 3)
    v = read_video(path, height=20, width=30, start=3)
    assert v.frames.shape == (9, 20, 30, 3)


def test_folder_of_frames_natural_order(tmp_path):
    frames = smooth_video(n=11, h=24, w=32)
    folder = tmp_path / "frames"
    # unpadded numbers: lexicographic order would put 10 before 2
    paths = write_frames(folder, frames, pattern="f{}.png")
    assert [p.name for p in paths][:3] == ["f0.png", "f1.png", "f2.png"]
    assert sorted(["f10.png", "f2.png", "f1.png"], key=natural_key) == ["f1.png", "f2.png", "f10.png"]
    v = read_video(folder)
    assert v.frames.shape == (11, 24, 32, 3)
    assert psnr(v.frames, frames) > 45.0  # PNG: only 8-bit rounding
    assert torch.allclose(v.frames, frames, atol=1 / 255 + 1e-6)
    v2 = read_video(folder, stride=3, max_frames=3, width=16)
    assert v2.frames.shape == (3, 12, 16, 3)
    assert psnr(v2.frames[1], read_image(folder / "f3.png", width=16)) > 60


def test_read_write_image_and_alpha(tmp_path):
    rgba = torch.zeros(8, 10, 4)
    rgba[..., 0] = 1.0  # red
    rgba[:, :5, 3] = 1.0  # left half opaque, right half transparent
    write_image(tmp_path / "a.png", rgba)
    on_white = read_image(tmp_path / "a.png", background=(1, 1, 1))
    on_black = read_image(tmp_path / "a.png")
    assert on_white.shape == (8, 10, 3)
    assert torch.allclose(on_white[:, :5], torch.tensor([1.0, 0, 0]).expand(8, 5, 3))
    assert torch.allclose(on_white[:, 5:], torch.ones(8, 5, 3))
    assert torch.allclose(on_black[:, 5:], torch.zeros(8, 5, 3))
    assert read_image(tmp_path / "a.png", height=4).shape == (4, 5, 3)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(InputError) as e:
        read_video(tmp_path / "missing.mp4")
    msg = str(e.value)
    assert "missing.mp4" in msg and "\n" not in msg

    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    with pytest.raises(InputError) as e:
        read_video(bad)
    msg = str(e.value)
    assert "notes.mp4" in msg and "not a readable video" in msg and "\n" not in msg

    path = write_video(tmp_path / "clip.mp4", smooth_video(n=3), fps=8)
    with pytest.raises(InputError) as e:
        read_video(path, min_frames=8)
    msg = str(e.value)
    assert "clip.mp4" in msg and "has 3 frames, need at least 8" in msg and "\n" not in msg

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty"):
        read_video(empty)
    with pytest.raises(InputError, match="nope.png"):
        read_image(tmp_path / "nope.png")


# --------------------------------------------------------------------- transforms.json
def _orbit_posed(n=6, w=40, h=30, times=True) -> PosedVideo:
    ang = torch.linspace(-math.pi / 2, math.pi / 3, n)
    eyes = torch.stack([3 * torch.cos(ang), 3 * torch.sin(ang), torch.linspace(0.5, 1.5, n)], -1)
    vm = Cameras.look_at(eyes, torch.tensor([0.1, -0.2, 0.3]))
    Ks = Cameras.intrinsics(37.5, 36.0, 20.5, 14.25)
    cams = Cameras(vm, Ks, w, h)
    frames = smooth_video(n=n, h=h, w=w)
    t = torch.linspace(0, 1, n) if times else None
    return PosedVideo(Video(frames, fps=6.0), cams, times=t, canonical_view=2)


def test_transforms_round_trip(tmp_path):
    posed = _orbit_posed()
    path = write_transforms(tmp_path / "ds" / "transforms.json", posed)
    data = json.loads(path.read_text())
    assert data["camera_model"] == "OPENCV"
    assert (data["w"], data["h"]) == (40, 30)
    assert data["fl_x"] == pytest.approx(37.5) and data["cy"] == pytest.approx(14.25)
    assert data["camera_angle_x"] == pytest.approx(2 * math.atan(40 / (2 * 37.5)))
    assert data["fourreal"]["canonical_view"] == 2
    fr = data["frames"][3]
    assert fr["file_path"] == "images/00003.png" and (path.parent / fr["file_path"]).is_file()
    # transform_matrix is camera-to-world OpenGL: its translation is the camera centre and
    # its -z column (OpenGL forward) points from the camera towards the look-at target
    c2w = torch.tensor(fr["transform_matrix"])
    assert torch.allclose(c2w[:3, 3], posed.cameras.centers[3], atol=1e-5)
    fwd = -c2w[:3, 2]
    to_target = torch.nn.functional.normalize(torch.tensor([0.1, -0.2, 0.3]) - c2w[:3, 3], dim=0)
    assert float(fwd @ to_target) > 0.9999

    back = load_transforms(tmp_path / "ds")  # the folder works too
    assert torch.allclose(back.cameras.viewmats, posed.cameras.viewmats, atol=1e-5)
    assert torch.allclose(back.cameras.Ks, posed.cameras.Ks, atol=1e-5)
    assert (back.cameras.width, back.cameras.height) == (40, 30)
    assert torch.allclose(back.times, posed.times)
    assert back.canonical_view == 2
    assert back.video.fps == pytest.approx(6.0)
    assert torch.allclose(back.video.frames, posed.video.frames, atol=1 / 255 + 1e-6)
    assert back.meta["warnings"] == []

    # resize scales the intrinsics; stride re-indexes the canonical view
    half = load_transforms(path, height=15, stride=2)
    assert half.video.frames.shape == (3, 15, 20, 3)
    assert torch.allclose(half.cameras.Ks[0], posed.cameras.Ks[0] * torch.tensor([[0.5], [0.5], [1.0]]))
    assert torch.allclose(half.cameras.viewmats, posed.cameras.viewmats[::2], atol=1e-5)
    assert half.canonical_view == 1 and torch.allclose(half.times, posed.times[::2])


def test_transforms_per_frame_intrinsics_and_masks(tmp_path):
    posed = _orbit_posed(n=4, times=False)
    Ks = posed.cameras.Ks.clone()
    Ks[:, 0, 0] = torch.tensor([30.0, 31.0, 32.0, 33.0])
    masks = torch.zeros(4, 30, 40, 1)
    masks[:, 5:20, 10:30] = 1.0
    posed = PosedVideo(posed.video, Cameras(posed.cameras.viewmats, Ks, 40, 30), masks=masks)
    path = write_transforms(tmp_path / "t.json", posed, image_folder="rgb")
    data = json.loads(path.read_text())
    assert "fl_x" not in data and data["frames"][2]["fl_x"] == pytest.approx(32.0)
    assert "time" not in data["frames"][0]
    back = load_transforms(path)
    assert back.times is None and back.canonical_view is None
    assert torch.allclose(back.cameras.Ks, Ks, atol=1e-5)
    assert torch.equal(back.masks, masks)
    assert back.dynamic_masks is None and "dynamic_mask_path" not in data["frames"][0]


def test_supervision_masks_and_moving_region_masks_stay_apart(tmp_path):
    """mask_path (pixels to supervise) and dynamic_mask_path (the moving region, for scores)
    round-trip separately; a frame without a moving-region mask reads as unknown (NaN), never
    as "everything moves", and eval leaves it out of the moving-region score with a note."""
    posed = _orbit_posed(n=3, times=True)
    dyn = torch.zeros(3, 30, 40, 1)
    dyn[:, 10:20, 15:25] = 1.0
    dyn[1] = float("nan")  # frame 1: moving region unknown
    posed = PosedVideo(posed.video, posed.cameras, times=posed.times, dynamic_masks=dyn)
    path = write_transforms(tmp_path / "t.json", posed)
    frames = json.loads(path.read_text())["frames"]
    assert [("dynamic_mask_path" in f, "mask_path" in f) for f in frames] == [(True, False), (False, False),
                                                                             (True, False)]
    back = load_transforms(path)
    assert back.masks is None
    assert torch.equal(back.dynamic_masks[[0, 2]], dyn[[0, 2]])
    assert bool(torch.isnan(back.dynamic_masks[1]).all())
    from fourreal_stages.evaluate import dynamic_masks

    dm, src = dynamic_masks(back.video.frames, back.cameras, back.dynamic_masks, per_frame=True)
    assert src == "given" and not bool(dm[1].any()) and int(dm[0].sum()) == 100
    with pytest.raises(ValueError, match=r"PosedVideo: dynamic_masks are \(3, 30, 40\), expected \(3, 30, 40, 1\)"):
        PosedVideo(posed.video, posed.cameras, dynamic_masks=dyn[..., 0])


def _write_dnerf(tmp_path, n=3, size=16, angle_x=0.69):
    """A D-NeRF style dataset: camera_angle_x only, RGBA PNGs, paths without extension."""
    root = tmp_path / "dnerf"
    frames = []
    for i in range(n):
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[..., 1] = 200  # green where opaque
        rgba[4:12, 4:12, 3] = 255
        write_image(root / "train" / f"r_{i:03d}.png", rgba)
        ang = 0.4 * i
        c2w = [[math.cos(ang), -math.sin(ang), 0, 4 * math.sin(ang)],
               [math.sin(ang), math.cos(ang), 0, -4 * math.cos(ang)],
               [0, 0, 1, 0.5], [0, 0, 0, 1]]
        frames.append({"file_path": f"./train/r_{i:03d}", "rotation": 0.03, "time": i / (n - 1),
                       "transform_matrix": c2w})
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": frames}))
    return root / "transforms_train.json"


def test_dnerf_camera_angle_and_rgba_on_white(tmp_path):
    path = _write_dnerf(tmp_path)
    pv = load_transforms(path)
    assert pv.video.frames.shape == (3, 16, 16, 3)
    fx = 0.5 * 16 / math.tan(0.5 * 0.69)
    assert torch.allclose(pv.cameras.Ks[0], torch.tensor([[fx, 0, 8.0], [0, fx, 8.0], [0, 0, 1]]), atol=1e-4)
    assert torch.allclose(pv.times, torch.tensor([0.0, 0.5, 1.0]))
    # transparent pixels are white, opaque ones keep their colour
    assert torch.allclose(pv.video.frames[0, 0, 0], torch.ones(3))
    assert torch.allclose(pv.video.frames[0, 8, 8], torch.tensor([0.0, 200 / 255, 0.0]), atol=1e-6)
    black = load_transforms(path, white_background=False)
    assert torch.allclose(black.video.frames[0, 0, 0], torch.zeros(3))
    # camera-to-world OpenGL -> OpenCV: the camera centre is the matrix translation and
    # OpenGL's -z (here world +y rotated) is OpenCV's +z viewing axis
    c2w = torch.tensor(json.loads(path.read_text())["frames"][1]["transform_matrix"])
    assert torch.allclose(pv.cameras.centers[1], c2w[:3, 3], atol=1e-5)
    assert torch.allclose(pv.cameras.camtoworlds[1, :3, 2], -c2w[:3, 2], atol=1e-6)
    assert torch.allclose(pv.cameras.camtoworlds[1, :3, 1], -c2w[:3, 1], atol=1e-6)
    # resizing scales the focal length
    small = load_transforms(path, width=8)
    assert small.cameras.Ks[0, 0, 0] == pytest.approx(fx / 2, rel=1e-5)


def test_distortion_is_ignored_with_a_warning_and_errors(tmp_path):
    path = _write_dnerf(tmp_path)
    data = json.loads(path.read_text())
    data.update({"k1": 0.05, "k2": -0.01, "p1": 0.0, "p2": 0.0})
    path.write_text(json.dumps(data))
    pv = load_transforms(path)
    assert any("distortion" in w for w in pv.meta["warnings"])

    data["frames"][1]["file_path"] = "./train/missing"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="missing"):
        load_transforms(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="transforms_train.json"):
        load_transforms(path)
    with pytest.raises(InputError, match="nothing_here"):
        load_transforms(tmp_path / "nothing_here")


# --------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_dnerf_standup():
    path = SHARED_DATA / "dnerf" / "standup" / "transforms_train.json"
    if not path.is_file():
        pytest.skip(f"real data absent: {path}")
    pv = load_transforms(path, height=100, width=100, max_frames=6, stride=5)
    assert pv.video.frames.shape == (6, 100, 100, 3)
    frames_json = json.loads(path.read_text())["frames"]
    expected_t = torch.tensor([frames_json[i]["time"] for i in range(0, 30, 5)], dtype=torch.float32)
    assert torch.allclose(pv.times, expected_t)
    # 800 px images with camera_angle_x, scaled to 100 px
    angle = json.loads(path.read_text())["camera_angle_x"]
    assert pv.cameras.Ks[0, 0, 0] == pytest.approx(50 / math.tan(angle / 2), rel=1e-5)
    assert pv.cameras.Ks[0, 0, 2] == pytest.approx(50.0)
    # D-NeRF cameras look at the origin from ~4 units away (OpenGL -z towards the object)
    centers = pv.cameras.centers
    assert torch.all((centers.norm(dim=-1) - 4.03).abs() < 0.1)
    origin_cam = (pv.cameras.viewmats @ torch.tensor([0.0, 0, 0, 1]))[:, :3]
    assert torch.all(origin_cam[:, 2] > 3.5)  # in front of every camera (OpenCV +z)
    uv = (pv.cameras.Ks @ origin_cam[:, :, None])[:, :2, 0] / origin_cam[:, 2:]
    assert torch.all((uv - 50).abs() < 15)  # near the image centre
    # white background where the subject is absent (image corners)
    assert float(pv.video.frames[:, 0, 0].min()) > 0.95


@pytest.mark.realdata
def test_real_fox_instant_ngp():
    path = SHARED_DATA / "fox" / "transforms.json"
    if not path.is_file():
        pytest.skip(f"real data absent: {path}")
    pv = load_transforms(path, width=54, max_frames=4)
    data = json.loads(path.read_text())
    assert pv.video.frames.shape == (4, 96, 54, 3)  # 1080x1920 portrait, aspect kept
    s = 54 / 1080
    assert pv.cameras.Ks[0, 0, 0] == pytest.approx(data["fl_x"] * s, rel=1e-5)
    assert pv.cameras.Ks[0, 1, 1] == pytest.approx(data["fl_y"] * (96 / 1920), rel=1e-5)
    assert pv.cameras.Ks[0, 0, 2] == pytest.approx(data["cx"] * s, rel=1e-5)
    assert any("distortion" in w for w in pv.meta["warnings"])
    assert pv.meta["aabb_scale"] == data["aabb_scale"]
    c2w = torch.tensor(data["frames"][0]["transform_matrix"], dtype=torch.float32)
    assert torch.allclose(pv.cameras.centers[0], c2w[:3, 3], atol=1e-4)
    # the capture circles the fox: every camera's viewing axis passes near a common point
    # (least-squares closest point to all optical axes lies in front of all cameras)
    full = load_transforms(path, load_images=False)
    o = full.cameras.centers.double()
    d = full.cameras.camtoworlds[:, :3, 2].double()
    A = torch.eye(3, dtype=torch.float64) * len(o) - torch.einsum("ni,nj->ij", d, d)
    b = (o - (o * d).sum(-1, keepdim=True) * d).sum(0)
    p = torch.linalg.solve(A, b)
    depth = ((p - o) * d).sum(-1)
    assert torch.all(depth > 0)


def test_eval_size_defaults_to_the_training_size(tmp_path):
    """`fourreal eval` scores at the size the scene was trained at (the D-NeRF protocol),
    keeps the aspect ratio when the test images have another one, and obeys explicit
    sizes / --native-resolution."""
    from types import SimpleNamespace

    from fourreal_stages.evaluate import eval_size

    path = write_transforms(tmp_path / "test" / "transforms.json", _orbit_posed())  # 40x30 images
    cam = _orbit_posed().cameras[:1]
    train = lambda w, h: SimpleNamespace(reference_camera=Cameras(cam.viewmats, cam.Ks, w, h))  # noqa: E731
    assert eval_size(train(20, 15), path, None, None, False) == (15, 20, "training")
    assert eval_size(train(20, 20), path, None, None, False) == (20, None, "training")  # aspect kept
    assert eval_size(train(20, 15), path, None, None, True) == (None, None, "native")
    assert eval_size(train(20, 15), path, 10, None, False) == (10, None, "given")
    assert eval_size(SimpleNamespace(reference_camera=None), path, None, None, False) == (None, None, "native")
