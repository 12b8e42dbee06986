import math

import pytest
import torch

from fourreal_core.types import Cameras, PosedVideo, Video


def _cams(n=5):
    ang = torch.linspace(0, math.pi, n)
    eyes = torch.stack([3 * torch.cos(ang), 3 * torch.sin(ang), torch.full_like(ang, 1.0)], -1)
    vm = Cameras.look_at(eyes, torch.zeros(3))
    return Cameras(vm, Cameras.intrinsics(40, 40, 32, 24), 64, 48), eyes


def test_look_at_is_opencv_and_centres_match():
    cams, eyes = _cams()
    assert torch.allclose(cams.centers, eyes, atol=1e-5)
    # the target projects to the image centre, in front of the camera (z > 0)
    p = cams.viewmats @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert torch.all(p[:, 2] > 0)
    uv = (cams.Ks @ p[:, :3, None])[:, :, 0]
    uv = uv[:, :2] / uv[:, 2:]
    assert torch.allclose(uv, torch.tensor([32.0, 24.0]).expand_as(uv), atol=1e-4)
    # world up (z) appears as image up (negative v)
    up = cams.viewmats @ torch.tensor([0.0, 0.0, 1.0, 1.0])
    v = (cams.Ks @ up[:, :3, None])[:, 1, 0] / up[:, 2]
    assert torch.all(v < 24.0)


def test_opengl_round_trip_and_axes():
    cams, _ = _cams()
    c2w_gl = cams.to_c2w_opengl()
    # OpenGL camera looks down -z: its -z axis points at the origin
    fwd = -c2w_gl[:, :3, 2]
    to_origin = torch.nn.functional.normalize(-c2w_gl[:, :3, 3], dim=-1)
    assert torch.allclose(fwd, to_origin, atol=1e-5)
    back = Cameras.from_c2w_opengl(c2w_gl, cams.Ks, cams.width, cams.height)
    assert torch.allclose(back.viewmats, cams.viewmats, atol=1e-5)
    back34 = Cameras.from_c2w_opengl(c2w_gl[:, :3, :], cams.Ks[0], cams.width, cams.height)
    assert torch.allclose(back34.viewmats, cams.viewmats, atol=1e-5)


def test_slicing_scaling_and_validation():
    cams, _ = _cams(4)
    assert len(cams[1:3]) == 2 and len(cams[0]) == 1 and len(cams[-1]) == 1
    assert torch.equal(cams[-1].viewmats[0], cams.viewmats[3])
    half = cams.scaled(0.5)
    assert (half.width, half.height) == (32, 24)
    assert torch.allclose(half.Ks[:, 0, 0], cams.Ks[:, 0, 0] / 2)
    with pytest.raises(ValueError, match="Ks must be"):
        Cameras(torch.eye(4)[None].repeat(2, 1, 1), torch.eye(3)[None].repeat(3, 1, 1), 8, 8)
    v = Video(torch.zeros(4, 48, 64, 3))
    pv = PosedVideo(v, cams, times=torch.linspace(0, 1, 4))
    assert len(pv) == 4
    with pytest.raises(ValueError, match="frames are 64x48 but cameras are 32x24"):
        PosedVideo(v, half)
