"""The garden's movers at a chosen speed (the large-motion benchmark's scenes, issue 29)."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("mover", ["ball", "cart"])
@pytest.mark.parametrize("speed", [0.25, 1.0, 3.0])
def test_mover_moves_its_speed_in_sizes_per_frame_and_stays_in_view(mover, speed):
    from fourreal_synthetic.scenes import MOVER_SIZE, make_scene

    T = 12
    sc = make_scene("garden", 0, mover=mover, travel=speed * MOVER_SIZE[mover] * (T - 1))
    sl = sc.part_slices()[mover]
    xs = torch.stack([sc.gaussians(float(t)).means[sl].mean(0) for t in torch.linspace(0, 1, T)])
    steps = (xs[1:] - xs[:-1]).norm(dim=1) / MOVER_SIZE[mover]
    # a zig-zag turns back at +-1.2: a step that straddles a turn is shorter
    assert float(steps.max()) == pytest.approx(speed, rel=0.02)
    assert float(steps.median()) == pytest.approx(speed, rel=0.02) or speed > 2
    assert float(xs[:, 0].abs().max()) <= 1.2 + 1e-4
    assert float((xs[:, 1] + 0.7).abs().max()) < 1e-4  # on its line in front of the props
    assert sc.mover == mover and bool((~sc.static_mask())[sl].all())


def test_mover_options_are_checked():
    from fourreal_synthetic.plugin import SyntheticStageConfig
    from fourreal_synthetic.scenes import make_scene

    with pytest.raises(ValueError, match="garden: unknown mover 'car'; choose one of: ball, cart"):
        make_scene("garden", 0, mover="car")
    with pytest.raises(ValueError, match="scene 'object' takes no option"):
        make_scene("object", 0, travel=1.0)
    with pytest.raises(ValueError, match="options of the garden scene"):
        SyntheticStageConfig(scene="object", mover_speed=1.0)
    cfg = SyntheticStageConfig(mover="cart", mover_speed=3.0, num_reference_frames=12)
    assert cfg.scene_options() == {"mover": "cart", "travel": pytest.approx(3.0 * 0.24 * 11)}
    assert SyntheticStageConfig().scene_options() == {"mover": "ball", "travel": None}
    # the default garden is the one every earlier measurement used: its ball sweeps -1.2 -> 1.2
    sc = make_scene("garden", 0)
    sl = sc.part_slices()["ball"]
    assert float(sc.gaussians(1.0).means[sl].mean(0)[0] - sc.gaussians(0.0).means[sl].mean(0)[0]) == pytest.approx(2.4, abs=0.01)
