"""Stage `generate`: prompt -> reference video -> freeze-time video, with a tiny masked prior."""

from __future__ import annotations

import json

import pytest
import torch

from fourreal_core.config import ComponentSpec
from fourreal_core.errors import InputError
from fourreal_core.registry import get_registry
from fourreal_core.run import CheckpointStore, RunLog, StageContext
from fourreal_masked_prior.configs import MaskedModelConfig, MaskedPriorConfig
from fourreal_stages.generate import GenerateConfig, GenerateStage


def _ctx(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    return StageContext(name="generate", index=1, run_dir=tmp_path, out_dir=out, recipe_dir=tmp_path,
                        device=torch.device("cpu"), seed=3, iterations_scale=1.0,
                        checkpoints=CheckpointStore(tmp_path / "ck"), log=RunLog(tmp_path / "log.jsonl"),
                        registry=get_registry())


@pytest.fixture
def checkpoint(tmp_path):
    from fourreal_masked_prior.model import MaskedVideoTransformer
    from fourreal_masked_prior.prior import save_checkpoint

    torch.manual_seed(0)
    m = MaskedVideoTransformer(MaskedModelConfig(num_frames=16, height=16, width=16, patch=4, dim=32, depth=1,
                                                 heads=2, text_vocab=64, text_len=8))
    with torch.no_grad():
        m.patch_out.weight.normal_(0, 0.05)
    return save_checkpoint(tmp_path / "prior", m)


def test_generate_stage_outputs(tmp_path, checkpoint):
    from fourreal_media import read_video

    spec = ComponentSpec("video_prior", "masked",
                         MaskedPriorConfig(checkpoint=str(checkpoint), num_inference_steps=2, device="cpu"))
    cfg = GenerateConfig(prompt="A dog is running in the park", prior=spec, num_frames=12, canonical_frame=5,
                         freeze_frames=28)
    ctx = _ctx(tmp_path)
    GenerateStage(cfg).run(ctx)
    out = ctx.out_dir
    info = json.loads((out / "generation.json").read_text())
    assert info["freeze_prompt"] == "Camera circulating around a dog in the park, time elapse"
    assert info["canonical_frame"] == 5 and info["freeze_frames"] == 28 and info["fps"] == 8.0
    ref = read_video(out / "reference").frames
    frz = read_video(out / "freeze_time").frames
    assert ref.shape == (12, 16, 16, 3) and frz.shape == (28, 16, 16, 3)
    a = info["canonical_view"]
    assert a == (28 - 16) // 2
    assert torch.equal(frz[a], ref[5])  # 8-bit PNGs of the same float frame
    assert len(read_video(out / "reference.mp4")) == 12 and len(read_video(out / "freeze_time.mp4")) == 28


def test_generate_stage_missing_model_folder(tmp_path):
    spec = ComponentSpec("video_prior", "masked", MaskedPriorConfig(checkpoint=str(tmp_path / "nowhere")))
    with pytest.raises(InputError) as ei:
        GenerateStage(GenerateConfig(prior=spec)).run(_ctx(tmp_path))
    msg = str(ei.value)
    assert "\n" not in msg and str(tmp_path / "nowhere") in msg
    assert "--set stages.generate.params.prior.params.checkpoint=" in msg
