"""The moving subject on real footage (issue 13, item 3): the motion stage's time window and
the dynamic-region weight of the image losses."""

from __future__ import annotations

import pytest
import torch

from fourreal_core.interfaces import RenderOutput
from fourreal_losses.plugin import AlignConfig, L1Config
from fourreal_losses.recon import AlignLoss, L1Loss
from fourreal_stages.motion import time_window_frame


def _inputs(H=8, W=10):
    target = torch.zeros(1, H, W, 3)
    pred = torch.zeros(1, H, W, 3)
    dyn = torch.zeros(1, H, W, 1)
    dyn[:, 2:4, 3:6] = 1.0  # 6 dynamic pixels of 80
    pred[:, 2:4, 3:6] = 0.5  # the error is only there (the subject is missing)
    render = RenderOutput(rgb=pred, alpha=torch.ones(1, H, W, 1), depth=None, means2d=torch.zeros(1, 0, 2),
                          radii=torch.zeros(1, 0, dtype=torch.int32))
    return {"render": render, "target": target, "dynamic_mask": dyn}


def test_dynamic_weight_counts_the_dynamic_region_more():
    inp = _inputs()
    plain = float(L1Loss(L1Config())(inp))
    assert plain == pytest.approx(0.5 * 6 / 80)  # dynamic_weight 0: the mask is ignored
    w = 4.0
    weighted = float(L1Loss(L1Config(dynamic_weight=w))(inp))
    # a weighted mean: sum(err (1 + w m)) / sum(1 + w m)
    assert weighted == pytest.approx(0.5 * 6 * (1 + w) / (80 + 6 * w))
    assert weighted > 3 * plain
    # without a dynamic_mask input (freeze-time views) the weight changes nothing
    no_mask = {k: v for k, v in inp.items() if k != "dynamic_mask"}
    assert float(L1Loss(L1Config(dynamic_weight=w))(no_mask)) == pytest.approx(plain)
    # align (L1 + SSIM) weights both terms; SSIM's share grows too
    a0 = float(AlignLoss(AlignConfig())(inp))
    a1 = float(AlignLoss(AlignConfig(dynamic_weight=w))(inp))
    assert a1 > a0 and a1 - a0 > weighted - plain - 1e-6


def test_dynamic_mask_of_another_size_is_refused():
    inp = _inputs()
    inp["dynamic_mask"] = torch.ones(1, 4, 4, 1)
    with pytest.raises(ValueError, match=r"dynamic_mask \(1, 4, 4, 1\) does not match render.rgb \(1, 8, 10, 3\)"):
        L1Loss(L1Config(dynamic_weight=1.0))(inp)


def test_time_window_starts_at_the_canonical_frame_and_widens_to_the_whole_video():
    T, c, W = 21, 5, 100
    g = torch.Generator().manual_seed(0)
    seen = {}
    for i in range(400):
        j0 = int(torch.randint(0, T, (1,), generator=g))
        j = time_window_frame(i, j0, T, c, W, g)
        r = max(1, -(-(T - 1) * (i + 1) // W))
        if i < W:
            assert max(0, c - r) <= j <= min(T - 1, c + r), (i, j)
        else:
            assert j == j0  # after the window: the frame drawn, unchanged
        seen.setdefault(i // 10, set()).add(j)
    assert max(seen[0]) <= c + 2  # first 10 steps: c and its neighbours
    assert set().union(*(seen[k] for k in range(10, 40))) == set(range(T))  # after the window: every frame
    assert time_window_frame(0, 17, T, c, 0, g) == 17  # no window
