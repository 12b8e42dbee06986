"""`recipes/clip-to-4d.yaml` end to end on a real clip with the tiny random-weight LTX prior:
the clip is the reference video, only the freeze-time video is generated (from its frame c,
with a LoRA and its trigger), `known` orbit poses (COLMAP cannot register a random-weight
model's output), canonical + motion with SDS through the same prior, export; and the
freeze-time report from both the generate and the poses stage."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, fourreal_env, run_cli

CLIP = ROOT.parent / "shared" / "data" / "videos" / "bedroom.mp4"

pytestmark = pytest.mark.realdata


@pytest.mark.skipif(not CLIP.exists(), reason=f"real clip {CLIP} not present (../shared/data is a dev-only folder)")
def test_clip_to_4d_recipe(tmp_path):
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    pytest.importorskip("cv2")
    sys.path.insert(0, str(Path(__file__).parent))
    from test_diffusers_priors import build_ltx
    from test_lora import make_lora

    from fourreal_media import read_video

    model = build_ltx(tmp_path / "ltx")
    lora = make_lora(model, tmp_path / "lora")
    g = "stages.generate.params."
    pp = f"{g}prior.params."
    sets = [
        f"{g}reference={CLIP}", f"{g}num_frames=6", f"{g}reference_stride=4", f"{g}height=32", f"{g}width=32",
        f"{g}canonical_frame=2", f"{g}freeze_frames=24", f"{g}freeze_window=16", f"{g}freeze_overlap=8",
        f"{g}prompt=a bedroom with a bed",
        f"{pp}model_path={model}", f"{pp}torch_dtype=float32", f"{pp}device=cpu", f"{pp}num_inference_steps=2",
        f"{pp}guidance_scale=1.0", f"{pp}x0_guidance_scale=1.0", f"{pp}max_sequence_length=16",
        f"{pp}decode_noise_scale=null", f"{pp}decode_timestep=0.0", f"{pp}num_frames=16",
        f"{pp}loras=[{{file: {lora}, trigger: orbit shot, uses: [freeze_time, sds_multiview]}}]",
        "stages.poses.params.pose_estimator={name: known, params: {arc_deg: 60.0}}",
        "iterations_scale=0.001",
        "stages.canonical.params.num_random_points=500",
        "stages.export.params.orbit_frames=3", "stages.export.params.grid_views=2", "stages.export.params.grid_times=2",
    ]
    args = ["run", str(ROOT / "recipes" / "clip-to-4d.yaml"), "--out", "run", "--device", "cpu"]
    for s in sets:
        args += ["--set", s]
    res = run_cli(args, tmp_path, env=fourreal_env(extra_modules="", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"),
                  timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    st = tmp_path / "run" / "stages"
    gen = json.loads((st / "01_generate" / "generation.json").read_text())
    assert gen["reference_source"] == str(CLIP.resolve()) and gen["num_frames"] == 6
    assert gen["freeze_prompt"].startswith("orbit shot, Camera circulating around")
    assert gen["loras"]["prior"][0]["uses"] == ["freeze_time", "sds_multiview"]
    # the reference video IS the clip (every 4th frame, resized), not a generation
    ref = read_video(st / "01_generate" / "reference").frames
    want = read_video(CLIP, height=32, width=32, stride=4, max_frames=6).frames
    assert ref.shape == (6, 32, 32, 3) and float((ref - want).abs().max()) <= 1.5 / 255
    frz = read_video(st / "01_generate" / "freeze_time").frames
    assert frz.shape == (24, 32, 32, 3)
    assert torch.allclose(frz[gen["canonical_view"]], ref[2], atol=1.5 / 255)  # seeded from the clip's frame c
    # the report, from the generate stage (no cameras) and the poses stage (its cameras)
    for stage, poses in (("01_generate", "estimated"), ("02_poses", "given")):
        rep = json.loads((st / stage / "freeze_time_report.json").read_text())
        assert rep["poses"].startswith(poses) and rep["frames"] == 24 and "summary" in rep
        assert [s["direction"] for s in rep["seams"]] == ["forward", "backward"]
    assert "freeze-time video:" in res.stderr
    for f in ("03_canonical/canonical.ply", "04_motion/scene4d.json", "05_export/bullet_time.mp4"):
        assert (st / f).exists(), f
