"""Freeze-time videos: context frames that the prior keeps (LTX's condition pipeline, time
reversal for backward windows, seams), and the freeze-time usability report."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).parent))

pytest.importorskip("cv2")


# ----------------------------------------------------------------------------- LTX context
def test_ltx_condition_plan():
    from fourreal_diffusers.ltx import ltx_condition_plan

    # forward context 0..7: a hard 5-frame video at 0, the rest keyframes at their index
    assert ltx_condition_plan(range(8)) == [(0, 5), (5, 1), (6, 1), (7, 1)]
    assert ltx_condition_plan(range(9)) == [(0, 9)]  # 4k+1 context: all hard
    # a run later in the window: a video at a multiple of 4 when >= 9 frames, else keyframes
    assert ltx_condition_plan(range(8, 16)) == [(i, 1) for i in range(8, 16)]
    assert ltx_condition_plan(range(6, 17)) == [(6, 1), (7, 1), (8, 9)]
    assert ltx_condition_plan([0, 5]) == [(0, 1), (5, 1)]


def test_ltx_freeze_time_context_is_kept(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    import diffusers.pipelines.ltx.pipeline_ltx_condition as mod
    from test_diffusers_priors import _frames, _make, _vae_roundtrip_error, build_ltx

    from fourreal_diffusers.configs import LTXPriorConfig
    from fourreal_stages.freeze_time import generate_freeze_time

    # the posterior mean instead of a sample, so "the VAE round trip" is one tensor
    real = mod.retrieve_latents
    monkeypatch.setattr(mod, "retrieve_latents", lambda enc, generator=None, sample_mode="sample":
                        real(enc, generator, "argmax"))
    cfg = LTXPriorConfig(model_path=build_ltx(tmp_path / "ltx"), torch_dtype="float32", device="cpu",
                         num_inference_steps=2, guidance_scale=1.0, num_frames=16, height=32, width=32,
                         max_sequence_length=16, image_cond_noise_scale=0.0, decode_timestep=0.0,
                         decode_noise_scale=None, paste_known=False)
    prior = _make("ltx", cfg)
    calls, outs = [], []
    call = type(prior.pipe).__call__

    def spy(self, *a, **k):
        calls.append([(c.frame_index, c.video if c.video is not None else c.image) for c in k["conditions"] or []])
        return call(self, *a, **k)

    monkeypatch.setattr(type(prior.pipe), "__call__", spy)
    gen = prior.generate

    def gen_spy(*a, **k):
        out = gen(*a, **k)
        outs.append((dict(k["known_frames"]), out.frames.clone()))
        return out

    monkeypatch.setattr(prior, "generate", gen_spy)
    img = _frames(1, 32, 32, seed=5)[0]
    res = generate_freeze_time(prior, img, "p", 32, window=16, overlap=8, direction="both", seed=0)
    assert [w["direction"] for w in res.windows] == ["first", "forward", "backward"]
    assert res.windows[2]["reversed"] is True and res.windows[1]["reversed"] is False
    for (known, raw), conds, win in zip(outs[1:], calls[1:], res.windows[1:]):
        # told to keep: frames 0..4 as one in-place video, 5..7 as keyframes at their index
        assert [(f, tuple(x.shape)) for f, x in conds] == [(0, (1, 5, 3, 32, 32))] + [(i, (1, 3, 32, 32)) for i in (5, 6, 7)]
        ctx = torch.stack([known[j] for j in range(8)])
        assert torch.allclose(conds[0][1][0].permute(0, 2, 3, 1), ctx[:5])
        # ... and they come back as their VAE round trip (before any paste-back)
        rt = _vae_roundtrip_error(prior, prior.pipe, ctx[:5])
        assert float((raw[:5] - rt).abs().max()) < 1e-4, float((raw[:5] - rt).abs().max())
        assert win["context_drift"] >= 0 and win["seam"] >= 0
    # the backward window got the video's first 8 frames of its time, reversed
    # (the video's first 8 frames then; after 8 frames were prepended they sit at a..a+7)
    known_b, v, a = outs[2][0], res.video.frames, res.canonical_view
    assert a == 8 and all(torch.allclose(known_b[j], v[a + 7 - j]) for j in range(8))


# ------------------------------------------------------------------------------ the report
def _orbit(tmp_path, name, **imp):
    from fourreal_synthetic.stage import make_dataset

    return make_dataset("garden", tmp_path / name, width=160, height=120, num_reference_frames=4, num_freeze_frames=24,
                        orbit_arc_deg=90.0, num_test_views=0, num_test_static_views=0, num_init_points=10,
                        write_videos=False, seed=0, **imp)


def test_report_scores_imperfections_and_warns_on_a_moving_object(tmp_path):
    from fourreal_stages.freeze_report import ReportOptions, freeze_time_report, summary_line

    scores = {}
    for name, imp in (("clean", {}), ("demo", dict(wobble=0.1, moving_object=0.05, flicker=0.02))):
        fz = _orbit(tmp_path, name, **imp).freeze_time
        scores[name] = freeze_time_report(fz.video.frames, cameras=fz.cameras, canonical_view=0)
    assert scores["clean"]["usable"] is True and scores["clean"]["warnings"] == []
    assert abs(scores["clean"]["orbit_deg"] - 90.0) < 1.0
    assert scores["demo"]["static_fraction"] < scores["clean"]["static_fraction"]
    assert summary_line(scores["clean"]).endswith(": usable")
    # the ball drifting about four radii, through the poses stage with the scene's known poses
    from test_generate_stage import _ctx

    from fourreal_core.config import ComponentSpec
    from fourreal_poses.plugin import KnownConfig
    from fourreal_stages.poses import PosesConfig, PosesStage

    ds = _orbit(tmp_path, "moving", moving_object=0.3)
    notes = []
    ctx = _ctx(tmp_path)
    ctx.notice = notes.append
    cfg = PosesConfig(reference=str(ds.root / "reference" / "transforms.json"),
                      freeze_time=str(ds.root / "freeze_time" / "transforms.json"),
                      pose_estimator=ComponentSpec("pose_estimator", "known", KnownConfig(source="transforms")),
                      reference_camera="fixed", freeze_time_source="generated")
    PosesStage(cfg).run(ctx)
    rep = json.loads((ctx.out_dir / "freeze_time_report.json").read_text())
    assert rep["usable"] is False and rep["poses"] == "given" and rep["kind"] == "generated"
    assert rep["static_fraction"] < scores["demo"]["static_fraction"]
    assert any("static scene" in w for w in rep["warnings"]) and "LoRA" in rep["advice"]
    assert len(notes) == 1 and "WARNING" in notes[0] and "\n" not in notes[0]
    # the same frames as a real capture (issue 32): the capture's bar and advice about filming,
    # never the generated-video remedies (freeze_frames, LoRAs, freeze_prompt)
    frames = ds.freeze_time.video.frames
    cap = freeze_time_report(frames, cameras=ds.freeze_time.cameras, kind="capture",
                             options=ReportOptions(min_static_fraction_capture=0.99))
    assert cap["usable"] is False and cap["kind"] == "capture"
    assert "film slower" in cap["advice"] and "LoRA" not in cap["advice"] and "freeze_frames" not in cap["advice"]
    assert summary_line(cap).startswith("orbit video (a capture): ")
    lenient = freeze_time_report(frames, cameras=ds.freeze_time.cameras, kind="capture")
    assert lenient["static_fraction"] > 0.9 and lenient["usable"] is True and lenient["notes"]
    short = freeze_time_report(frames[:4], cameras=ds.freeze_time.cameras[:4], kind="capture")
    assert short["usable"] is False and "walk further around" in short["advice"]


def test_report_seams():
    from fourreal_stages.freeze_report import freeze_time_report

    g = torch.Generator().manual_seed(0)
    small = torch.rand(1, 3, 6, 8, generator=g)
    base = torch.nn.functional.interpolate(small, size=(24, 32), mode="bilinear").permute(0, 2, 3, 1)
    frames = torch.stack([torch.roll(base[0], shifts=k, dims=1) for k in range(16)])  # a smooth pan
    frames[10:] = 1.0 - frames[10:]  # a window that does not join
    wins = [{"direction": "first", "start": 0, "known": [0]},
            {"direction": "forward", "start": 2, "known": list(range(8))}]
    rep = freeze_time_report(frames, windows=wins)
    assert rep["seams"][0]["frame"] == 10 and rep["seams"][0]["context_frame"] == 9
    assert rep["seams"][0]["seam_ratio"] > 3 and any("seam" in w for w in rep["warnings"])
