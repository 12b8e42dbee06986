"""Your own video, end to end (issue 32): frames sampled over the whole video, held-out
frames scored by the pipeline, SfM at a larger size than training, the camera-path jump
check, the freeze-time report's orbit arc, export sizes; with ../shared/data, the fox
capture's frames made into an mp4 through recipes/orbit-to-canonical.yaml at toy size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fourreal_core.types import Cameras, PosedVideo, Video
from fourreal_media import read_video_sampled, sample_indices, write_video
from fourreal_poses.align import camera_path_jumps
from fourreal_formats.cameras import orbit_cameras

ROOT = Path(__file__).resolve().parents[1]
FOX = ROOT.parent / "shared" / "data" / "fox"


# ============================================================================ frame sampling
def test_even_sampling_spans_the_whole_video_and_first_keeps_the_old_behaviour():
    assert sample_indices(700, max_frames=5, sampling="even") == [0, 175, 350, 524, 699]
    assert sample_indices(700, max_frames=5, sampling="first") == [0, 1, 2, 3, 4]
    assert sample_indices(10, start=2, stride=3) == [2, 5, 8]
    assert sample_indices(100, start=10, stride=2, max_frames=3, sampling="even") == [10, 54, 98]
    assert sample_indices(4, max_frames=80, sampling="even") == [0, 1, 2, 3]  # fewer than asked: all
    idx = sample_indices(701, max_frames=80, sampling="even")
    assert len(idx) == 80 == len(set(idx)) and idx[0] == 0 and idx[-1] == 700 and idx == sorted(idx)


def test_read_video_sampled_says_which_frames_and_seconds_it_used(tmp_path):
    # frame k is uniformly k/40 grey: which frames came back is readable from the pixels
    frames = torch.stack([torch.full((16, 24, 3), k / 40.0) for k in range(40)])
    write_video(tmp_path / "v.mp4", frames, fps=10.0, crf=0)
    video, info = read_video_sampled(tmp_path / "v.mp4", max_frames=5, long_side=12)
    assert info["indices"] == [0, 10, 20, 29, 39] and info["source_frames"] == 40
    assert (info["first_s"], info["last_s"], info["covered_fraction"]) == (0.0, 3.9, 1.0)
    assert info["source_size"] == [24, 16] and (video.height, video.width) == (8, 12)
    got = video.frames.mean(dim=(1, 2, 3))
    assert torch.allclose(got, torch.tensor(info["indices"]) / 40.0, atol=2.5 / 255)
    first, info = read_video_sampled(tmp_path / "v.mp4", max_frames=5, sampling="first")
    assert info["indices"] == [0, 1, 2, 3, 4] and info["covered_fraction"] == 0.125
    from fourreal_core.errors import InputError

    with pytest.raises(InputError, match=r"v.mp4: has 0 usable frames \(start 100, stride 1\) of 40, need at least 4$"):
        read_video_sampled(tmp_path / "v.mp4", start=100, min_frames=4)


# ============================================================================ camera path
def _orbit(n=24, arc=90.0, w=64, h=48):
    return orbit_cameras(n, w, h, 4.0, 20.0, arc, -45.0, [0.0, 0.0, 0.0], 50.0)


def test_camera_path_jump_check_names_a_flipped_frame():
    cams = _orbit()
    assert camera_path_jumps(cams) == []
    vm = cams.viewmats.clone()
    flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0]))  # 180 deg about the optical axis
    vm[9] = flip @ vm[9]
    jumps = camera_path_jumps(Cameras(vm, cams.Ks, cams.width, cams.height))
    assert [j["frames"] for j in jumps] == [[8, 9], [9, 10]] and all(j["deg"] > 170 for j in jumps)


def test_orbit_arc_is_the_span_walked_not_the_sum_of_jitter():
    from fourreal_stages.freeze_report import _orbit_from_cameras

    # 30 deg walked with a 3-deg back-and-forth jitter every frame: the old sum of unsigned
    # steps read several times the arc (issue 32: ~30 deg reported as 113)
    n = 40
    az = torch.linspace(0, 30, n) + 3.0 * torch.tensor([(-1.0) ** k for k in range(n)])
    cams = Cameras.cat([orbit_cameras(1, 64, 48, 4.0, 15.0, 0.0, float(a), [0.0, 0.0, 0.0], 50.0) for a in az])
    span = float(az.max() - az.min())  # 34.5: 30 walked + the jitter at both ends
    assert abs(_orbit_from_cameras(cams) - span) < 0.5
    assert float((az[1:] - az[:-1]).abs().sum()) > 200  # what the old sum of unsigned steps read
    assert abs(_orbit_from_cameras(_orbit(24, 90.0)) - 90.0) < 0.5


class _Ctx:
    name = "poses"

    def __init__(self):
        self.notes = []

    def notice(self, msg):
        self.notes.append(msg)


def test_pose_failure_says_the_sfm_size_and_names_sfm_long_side():
    from fourreal_core.errors import FourRealError
    from fourreal_stages.poses import PosesConfig, _estimate

    class Failing:
        def estimate(self, videos, names):
            raise FourRealError("COLMAP registered only 2 of 71 frames of 'orbit.mp4' (3% < 50%): try ...")

    small, big = Video(torch.zeros(4, 18, 32, 3)), Video(torch.zeros(4, 36, 64, 3))
    def fail(cfg, src, given=True):
        with pytest.raises(FourRealError) as e:
            _estimate(_Ctx(), cfg, Failing(), [small], [big], ["orbit.mp4"], [{"source_size": src}], given=given)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("COLMAP registered only 2 of 71")
        return msg

    cfg = PosesConfig(freeze_time="orbit.mp4", sfm_long_side=64)
    assert fail(cfg, [1080, 1920]).endswith(
        "[poses: the frames went to SfM at 64x36; more pixels: stages.poses.params.sfm_long_side (now 64; try 960)]")
    assert "sfm_long_side (now 64; try 200)]" in fail(cfg, [112, 200])  # never above the video's own size
    assert "none left: the video's own 64 px are in use" in fail(cfg, [64, 36])
    assert "stages.poses.params.long_side (the training size" in fail(PosesConfig(), [64, 36], given=False)


def test_camera_path_check_fails_or_warns_naming_the_frames():
    from fourreal_core.errors import FourRealError
    from fourreal_stages.poses import PosesConfig, _check_path

    cams = _orbit(12)
    vm = cams.viewmats.clone()
    vm[5] = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0])) @ vm[5]
    pv = PosedVideo(Video(torch.zeros(12, 48, 64, 3)), Cameras(vm, cams.Ks, 64, 48))
    with pytest.raises(FourRealError, match=r"jumps between neighbouring frames 4->5 \(177 deg\), 5->6 \(177 deg\)"):
        _check_path(_Ctx(), PosesConfig(), pv, "freeze_time", {})
    ctx, report = _Ctx(), {}
    _check_path(ctx, PosesConfig(on_jump="warn"), pv, "freeze_time", report)
    assert [j["frames"] for j in report["camera_path"]["freeze_time"]["jumps"]] == [[4, 5], [5, 6]]
    assert len(report["warnings"]) == 1 and ctx.notes[0].startswith("WARNING: poses: the freeze_time video")
    report = {}
    _check_path(ctx, PosesConfig(), PosedVideo(Video(torch.zeros(12, 48, 64, 3)), cams), "freeze_time", report)
    assert report["camera_path"]["freeze_time"]["jumps"] == []


# ============================================================================ hold-out split
def test_holdout_every_never_holds_out_the_canonical_view():
    from fourreal_stages.poses import split_holdout

    cams = _orbit(20, w=8, h=8)
    pv = PosedVideo(Video(torch.rand(20, 8, 8, 3)), cams, times=torch.zeros(20), canonical_view=8)
    train, held, tr, ho = split_holdout(pv, 4, 8)
    assert ho == [0, 4, 12, 16] and 8 in tr and len(train) == 16 and len(held) == 4
    assert train.canonical_view == tr.index(8) and torch.equal(train.video.frames[train.canonical_view],
                                                               pv.video.frames[8])
    assert torch.equal(held.cameras.viewmats, cams.viewmats[torch.tensor(ho)])
    assert split_holdout(pv, None, 8)[1] is None


def test_holdout_every_and_sizes_are_checked_in_the_recipe():
    from fourreal_core.config import ConfigValueError
    from fourreal_stages.export import ExportConfig
    from fourreal_stages.poses import PosesConfig

    with pytest.raises(ConfigValueError, match="must be >= 2"):
        PosesConfig(holdout_every=1)
    with pytest.raises(ConfigValueError, match="must be >= 2 pixels"):
        ExportConfig(width=1)


def test_export_video_camera_scales_the_intrinsics_and_keeps_the_aspect():
    from fourreal_stages.export import video_camera

    cam = _orbit(1, w=64, h=48)
    assert video_camera(cam, None, None) is cam
    big = video_camera(cam, None, 96)
    assert (big.width, big.height) == (128, 96)
    assert torch.allclose(big.Ks[0, :2], cam.Ks[0, :2] * 2)


# ============================================================================ the fox as a video
# fox frames -> mp4 (270x480) -> the orbit recipe at toy size: 24 frames evenly over the
# video, SfM at 240 px long side, training at 36x64, every 4th frame held out (5 frames),
# iterations_scale 0.25 (600 steps). Measured: held-out 16.00 and 16.97 dB in two runs
# (COLMAP on several threads is not deterministic; train, canonical 19.26 / 19.91), |dx|
# 0.017-0.020% of the extent; 56-74 s wall at load average 8-12 (39-43 s CPU). Baselines on the same
# held-out frames: the mean training image 14.39 dB, the mean of the two neighbouring
# training frames 14.42, the previous one copied 13.22. The floor is 0.8 dB under the
# measurement and above every baseline.
HELDOUT_FLOOR_FOX_VIDEO = 15.2


@pytest.mark.realdata
@pytest.mark.skipif(not (FOX / "transforms.json").is_file(), reason=f"real data not found at {FOX}")
def test_fox_frames_as_a_video_through_the_orbit_recipe(tmp_path):
    pytest.importorskip("pycolmap")
    import imageio_ffmpeg

    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry
    from fourreal_core.run import execute
    from fourreal_media import list_frames, read_image

    # the capture's frames in order as an mp4 (downscaled to 270x480 to keep it quick)
    frames = torch.stack([read_image(f, height=480) for f in list_frames(FOX / "images")])
    mp4 = write_video(tmp_path / "fox.mp4", frames, fps=10.0)
    assert imageio_ffmpeg.count_frames_and_secs(str(mp4))[0] == 67

    p, c = "stages.poses.params.", "stages.canonical.params."
    sets = [f"{p}freeze_time={mp4}", f"{p}long_side=64", f"{p}max_frames=24", f"{p}holdout_every=4",
            f"{p}sfm_long_side=240", "iterations_scale=0.25"]
    reg = get_registry()
    run = execute(load_recipe(ROOT / "recipes" / "orbit-to-canonical.yaml", sets, reg), tmp_path / "run", reg,
                  device="cpu")
    st = run / "stages" if (run / "stages").is_dir() else tmp_path / "run" / "stages"
    poses = json.loads((st / "01_poses" / "poses.json").read_text())
    fr = poses["frames"]["freeze_time"]
    # 24 frames evenly over the whole video (not its first 24), SfM on larger frames than training
    assert fr["indices"][0] == 0 and fr["indices"][-1] == 66 and len(fr["indices"]) == 24
    assert fr["covered_fraction"] == 1.0 and fr["size"] == [36, 64] and fr["sfm_size"] == [135, 240]
    assert fr["heldout"] == [4, 8, 12, 16, 20] and len(fr["heldout_source_indices"]) == 5
    assert poses["report"]["camera_path"]["freeze_time"]["jumps"] == []
    rep = json.loads((st / "01_poses" / "freeze_time_report.json").read_text())
    assert rep["kind"] == "capture" and "LoRA" not in rep["advice"]
    m = json.loads((st / "02_canonical" / "metrics.json").read_text())
    print({k: m[k] for k in ("heldout_static_psnr", "train_psnr_canonical", "mean_abs_dx_fraction", "seconds")})
    assert m["heldout_static_frames"] == 5
    assert m["heldout_static_psnr"] >= HELDOUT_FLOOR_FOX_VIDEO, m
    assert m["mean_abs_dx_fraction"] < 0.01 and "warnings" not in m, m
    # the result is a scene: `fourreal export` opens the run as it is, at the size asked for
    from conftest import fourreal_env, run_cli

    res = run_cli(["export", str(tmp_path / "run"), "--orbit-frames", "3", "--num-times", "2", "--height", "96",
                   "--device", "cpu"], tmp_path, env=fourreal_env(extra_modules="", OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-2000:]
    from fourreal_media import read_video

    bullet = read_video(tmp_path / "run" / "export" / "bullet_time.mp4")
    assert (len(bullet), bullet.height, bullet.width) == (3, 96, 54)


def test_colmap_intrinsics_refinement_reaches_the_mapper(monkeypatch):
    pytest.importorskip("pycolmap")
    from fourreal_core.errors import FourRealError
    from fourreal_poses.colmap import ColmapPoseEstimator
    from fourreal_poses.plugin import ColmapConfig

    seen = {}
    est = ColmapPoseEstimator(ColmapConfig(refine_principal_point=True, refine_extra_params=False))
    real = est.pycolmap.incremental_mapping

    def spy(*a, options=None, **k):
        seen.update(focal=options.ba_refine_focal_length, pp=options.ba_refine_principal_point,
                    extra=options.ba_refine_extra_params)
        return real(*a, options=options, **k)

    monkeypatch.setattr(est.pycolmap, "incremental_mapping", spy)
    with pytest.raises(FourRealError, match="COLMAP found no reconstruction"):
        est.estimate([Video(torch.full((4, 32, 48, 3), 0.4))], ["flat.mp4"])
    assert seen == {"focal": True, "pp": True, "extra": False}


def test_orbit_poses_stage_holds_out_frames_of_a_video_and_records_them(tmp_path):
    """A video (frames from the procedural garden orbit, as an mp4) through the poses stage
    with its known orbit: 12 frames evenly over 24, every 4th held out into test_static/,
    k_c re-indexed, the source frames recorded."""
    from test_generate_stage import _ctx

    from fourreal_core.config import ComponentSpec
    from fourreal_poses.plugin import KnownConfig
    from fourreal_formats.transforms import load_transforms
    from fourreal_stages.poses import PosesConfig, PosesStage
    from fourreal_synthetic.stage import make_dataset

    ds = make_dataset("garden", tmp_path / "garden", width=64, height=48, num_reference_frames=2, num_freeze_frames=24,
                      orbit_arc_deg=90.0, num_test_views=0, num_test_static_views=0, num_init_points=10,
                      write_videos=False, seed=0)
    mp4 = write_video(tmp_path / "orbit.mp4", ds.freeze_time.video.frames, fps=12.0, crf=0)
    ctx = _ctx(tmp_path)
    ctx.notice = (notes := []).append
    known = ComponentSpec("pose_estimator", "known", KnownConfig(source="orbit", arc_deg=90.0))
    cfg = PosesConfig(freeze_time=str(mp4), orbit_only=True, max_frames=12, holdout_every=4, canonical_view=1,
                      pose_estimator=known)
    PosesStage(cfg).run(ctx)
    poses = json.loads((ctx.out_dir / "poses.json").read_text())
    fr = poses["frames"]["freeze_time"]
    assert fr["indices"] == [0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21, 23] and fr["sampling"] == "even"
    assert fr["heldout"] == [0, 4, 8] and fr["heldout_source_indices"] == [0, 8, 17]
    assert fr["train_source_indices"] == [2, 4, 6, 10, 13, 15, 19, 21, 23]
    train = load_transforms(ctx.out_dir / "freeze_time" / "transforms.json")
    held = load_transforms(ctx.out_dir / "test_static" / "transforms.json")
    assert (len(train), len(held)) == (9, 3) and train.canonical_view == 0 == poses["canonical_view"]
    src = ds.freeze_time.video.frames
    err = [float((held.video.frames[1] - src[k]).abs().mean()) for k in (7, 8, 9)]  # yuv420p: chroma is lossy
    assert err[1] < 0.03 < min(err[0], err[2]), err
    assert any("12 of 24 frames (even over 100% of the video" in n for n in notes)
    assert any(n.startswith("3 of 12 freeze-time frames held out") for n in notes)


def test_reference_holdout_every_sends_reference_frames_to_test_with_their_times(tmp_path):
    """`reference_holdout_every: 3` on a 7-frame reference video with c = 3: frames 0 and 6
    go to test/transforms.json at their own times (what an eval stage scores over time), the
    other five train with c re-indexed; the canonical frame itself is never held out."""
    from fourreal_core.config import ComponentSpec
    from fourreal_core.run import CheckpointStore, RunLog, StageContext
    from fourreal_core.registry import get_registry
    from fourreal_media import write_frames
    from fourreal_poses.plugin import KnownConfig
    from fourreal_formats.transforms import load_transforms
    from fourreal_stages.poses import PosesConfig, PosesStage

    ref_frames = torch.rand(7, 12, 16, 3, generator=torch.Generator().manual_seed(0))
    write_frames(tmp_path / "ref", ref_frames)
    write_frames(tmp_path / "frz", torch.rand(6, 12, 16, 3))
    out = tmp_path / "02_poses"
    out.mkdir()
    ctx = StageContext(name="poses", index=2, run_dir=tmp_path, out_dir=out, recipe_dir=tmp_path,
                       device=torch.device("cpu"), seed=0, iterations_scale=1.0,
                       checkpoints=CheckpointStore(tmp_path / "ck"), log=RunLog(tmp_path / "log.jsonl"),
                       registry=get_registry())
    ctx.notice = (notes := []).append
    known = ComponentSpec("pose_estimator", "known", KnownConfig(source="orbit", arc_deg=90.0))
    cfg = PosesConfig(reference=str(tmp_path / "ref"), freeze_time=str(tmp_path / "frz"), canonical_frame=3,
                      reference_holdout_every=3, pose_estimator=known)
    PosesStage(cfg).run(ctx)
    ref = load_transforms(out / "reference" / "transforms.json")
    test = load_transforms(out / "test" / "transforms.json")
    assert len(ref) == 5 and len(test) == 2
    assert torch.allclose(test.times, torch.tensor([0.0, 1.0]))
    assert torch.allclose(ref.times, torch.tensor([1, 2, 3, 4, 5]) / 6.0)
    assert ref.canonical_view == 2 and float(ref.times[2]) == pytest.approx(0.5)  # c = frame 3 of 7
    assert float((test.video.frames[1] - ref_frames[6]).abs().max()) < 2 / 255
    assert any(n.startswith("2 of 7 reference frames held out") for n in notes)
    from fourreal_core.config import ConfigValueError

    with pytest.raises(ConfigValueError, match="must be >= 2") as e:
        PosesConfig(reference_holdout_every=1)
    assert e.value.path == "reference_holdout_every"
