"""eval's frozen baseline: the moving region is also scored on the 4D scene frozen at t_c, so a
scene whose subject stays in its pose at c is reported as such (``motion_gain_db`` near zero and
a note), while a scene that moves its subject as the truth does gains many dB over it."""

from __future__ import annotations

import torch

from fourreal_core.interfaces import Deformation, GaussianParams
from fourreal_core.types import Cameras, PosedVideo, Video
from fourreal_gaussians.rasterizers import TorchRasterizer
from fourreal_stages.evaluate import FROZEN_GAIN_DB, evaluate_views
from fourreal_formats.scene4d import Scene4D


class _Model:
    """A blob of Gaussians (the subject) in front of a wall of Gaussians (the background)."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        subj = torch.randn(60, 3, generator=g) * 0.12
        ys, zs = torch.meshgrid(torch.linspace(-2, 2, 24), torch.linspace(-2, 2, 24), indexing="ij")
        wall = torch.stack([torch.full_like(ys, -1.5), ys, zs], -1).reshape(-1, 3)
        self.means = torch.cat([subj, wall])
        n, ns = len(self.means), len(subj)
        self.subject = torch.arange(n) < ns
        self.scales = torch.where(self.subject[:, None], torch.full((n, 3), 0.08), torch.full((n, 3), 0.12))
        self.colors = torch.where(self.subject[:, None], torch.tensor([0.9, 0.2, 0.1]).expand(n, 3),
                                  torch.rand(n, 3, generator=g) * 0.3 + 0.4)

    def params(self) -> GaussianParams:
        n = len(self.means)
        return GaussianParams(self.means, torch.tensor([1.0, 0, 0, 0]).expand(n, 4), self.scales,
                              torch.full((n,), 0.9), self.colors)


class _Slide:
    """w_t: the subject slides along y by ``speed * (t - t_c)``; the wall stays."""

    def __init__(self, subject, speed, t_c=0.5):
        self.subject, self.speed, self.t_c = subject, speed, t_c

    def deform(self, means, t, quats=None):
        dx = torch.zeros_like(means)
        dx[self.subject, 1] = self.speed * (t - self.t_c)
        return Deformation(dx=dx, dq=torch.zeros(len(means), 4))


def _scene(speed):
    m = _Model()
    return Scene4D(model=m, deformer=_Slide(m.subject, speed), background=torch.zeros(3),
                   times=torch.linspace(0, 1, 5), canonical_frame=2)


def _views(truth: Scene4D, rast) -> PosedVideo:
    """A held-out camera (never the reference) at 5 times, rendered from the truth."""
    viewmats = Cameras.look_at(torch.tensor([[4.0, 0.8, 0.6]]), torch.zeros(3))
    cam = Cameras(viewmats=viewmats, Ks=Cameras.intrinsics(45.0, 45.0, 24.0, 20.0)[None], width=48, height=40)
    times = torch.linspace(0, 1, 5)
    cams = Cameras(viewmats=cam.viewmats.expand(5, 4, 4), Ks=cam.Ks.expand(5, 3, 3), width=48, height=40)
    frames = truth.render_each(rast, cams, times)
    return PosedVideo(Video(frames, fps=5.0), cams, times=times)


def test_a_subject_left_in_its_pose_at_c_is_reported():
    rast = TorchRasterizer()
    views = _views(_scene(1.6), rast)  # the truth: the subject crosses 1.6 units (13x its size)

    moving = evaluate_views(_scene(1.6), rast, views, lpips=False)
    assert moving["mean"]["motion_gain_db"] > 15.0, moving["mean"]
    assert moving["mean"]["dynamic_psnr"] > moving["mean"]["frozen_dynamic_psnr"] + 15.0
    assert not any("barely moves" in n for n in moving["notes"])

    frozen = evaluate_views(_scene(0.0), rast, views, lpips=False)  # w_t that learned nothing
    assert abs(frozen["mean"]["motion_gain_db"]) < 1e-6, frozen["mean"]
    note = [n for n in frozen["notes"] if "barely moves" in n]
    assert len(note) == 1 and "w_t adds +0.00 dB" in note[0] and "t_c = 0.5" in note[0], frozen["notes"]
    assert FROZEN_GAIN_DB == 0.5

    half = evaluate_views(_scene(0.4), rast, views, lpips=False)  # a quarter of the way
    assert 0.0 < half["mean"]["motion_gain_db"] < moving["mean"]["motion_gain_db"]


def test_a_static_scene_gets_no_frozen_baseline():
    rast = TorchRasterizer()
    views = _views(_scene(1.6), rast)
    s = _scene(0.0)
    s.deformer = None
    res = evaluate_views(s, rast, views, lpips=False)
    assert "motion_gain_db" not in res["mean"] and "dynamic_psnr" in res["mean"]
