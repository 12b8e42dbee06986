"""Freeze-time generation (paper §3.2): prompt rewrite, autoregressive extension both ways."""

from __future__ import annotations

import pytest
import torch

from fourreal_core.errors import FourRealError
from fourreal_core.interfaces import VideoPrior
from fourreal_stages.freeze_time import generate_freeze_time, load_function, rewrite_prompt_for_freeze_time


def _random_masked_prior(frames=16, size=16):
    from fourreal_masked_prior.configs import MaskedModelConfig, MaskedPriorConfig
    from fourreal_masked_prior.model import MaskedVideoTransformer
    from fourreal_masked_prior.prior import MaskedPrior

    torch.manual_seed(0)
    m = MaskedVideoTransformer(MaskedModelConfig(num_frames=frames, height=size, width=size, patch=4, dim=32,
                                                 depth=1, heads=2, text_vocab=64, text_len=8))
    with torch.no_grad():
        m.patch_out.weight.normal_(0, 0.05)
    return MaskedPrior(m, MaskedPriorConfig(device="cpu", num_inference_steps=2))


class Spy(VideoPrior):
    """Wraps a prior; records every generate() call's known frames and output."""

    def __init__(self, prior):
        self.prior = prior
        self.num_frames, self.height, self.width = prior.num_frames, prior.height, prior.width
        self.calls = []

    def generate(self, prompt, num_frames, height, width, known_frames=None, seed=0):
        out = self.prior.generate(prompt, num_frames, height, width, known_frames, seed)
        self.calls.append({"known": {k: v.clone() for k, v in (known_frames or {}).items()}, "out": out.frames.clone(),
                           "seed": seed, "prompt": prompt})
        return out

    def predict_x0(self, *a, **k):
        return self.prior.predict_x0(*a, **k)


def test_rewrite_prompt():
    p = rewrite_prompt_for_freeze_time("A corgi is running on the beach.")
    assert p == "Camera circulating around a corgi on the beach, time elapse"
    p = rewrite_prompt_for_freeze_time("a cat dancing, jumping and flying over a building")
    assert p.startswith("Camera circulating around") and p.endswith("time elapse")
    for verb in ("dancing", "jumping", "flying"):
        assert verb not in p
    assert "building" in p and "cat" in p  # nouns that end in -ing and the subject stay


def test_load_function():
    fn = load_function("fourreal_stages.freeze_time:rewrite_prompt_for_freeze_time")
    assert fn is rewrite_prompt_for_freeze_time
    assert load_function("fourreal_stages.freeze_time.rewrite_prompt_for_freeze_time") is fn
    with pytest.raises(FourRealError, match="cannot import"):
        load_function("fourreal_stages.freeze_time:nope")
    # the module's old home says where it went, in one line
    with pytest.raises(FourRealError, match=r"moved to fourreal_stages.freeze_time; write "
                                            r"'fourreal_stages.freeze_time:rewrite_prompt_for_freeze_time'"):
        load_function("fourreal_diffusers.freeze_time:rewrite_prompt_for_freeze_time")


@pytest.mark.parametrize("direction,K", [("both", 36), ("forward", 27), ("backward", 24)])
def test_extension_counts_overlaps_canonical_view(direction, K):
    spy = Spy(_random_masked_prior())
    img = torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(1))
    res = generate_freeze_time(spy, img, "Camera circulating around a vase, time elapse", K, overlap=8,
                               direction=direction, seed=5)
    v = res.video.frames
    assert v.shape == (K, 16, 16, 3)
    assert torch.equal(v[res.canonical_view], img)  # the canonical view is the input frame
    new = K - 16
    if direction == "both":
        assert res.canonical_view == new // 2
    elif direction == "forward":
        assert res.canonical_view == 0
    else:
        assert res.canonical_view == new
    fwd, bwd = {"both": ((new + 1) // 2, new // 2), "forward": (new, 0), "backward": (0, new)}[direction]
    assert len(spy.calls) == len(res.windows) == 1 + -(-fwd // 8) + -(-bwd // 8)
    # every window's conditioning frames are frames of the final video, unchanged, at their positions
    for call, win in zip(spy.calls, res.windows):
        for j, frame in call["known"].items():
            g = win["start"] + j
            assert 0 <= g < K
            assert torch.equal(v[g], frame), (direction, win, j)
        assert sorted(call["known"]) == win["known"]
        # the new frames a window produced are in the video at their positions too
        for j in range(16):
            g = win["start"] + j
            if 0 <= g < K and j not in call["known"]:
                if torch.equal(v[g], call["out"][j]):
                    break
        else:
            raise AssertionError(f"no generated frame of window {win} is in the video")
    extension = [c for c in spy.calls[1:]]
    assert all(len(c["known"]) == 8 for c in extension)
    assert len({c["seed"] for c in spy.calls}) == len(spy.calls)


def test_window_longer_than_target_and_bad_overlap():
    spy = Spy(_random_masked_prior(frames=8, size=8))
    img = torch.rand(8, 8, 3)
    res = generate_freeze_time(spy, img, "p", 5, overlap=4)
    assert len(res.video) == 8 and res.canonical_view == 0 and len(spy.calls) == 1
    with pytest.raises(FourRealError, match="overlap"):
        generate_freeze_time(spy, img, "p", 16, overlap=8)
