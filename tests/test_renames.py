"""Renamed names (issue 12, one name per index): old recipes fail with one line saying what
was renamed; old run files (transforms.json ``anchor``, generation.json ``freeze_time_anchor``)
still load, and only the new names are written."""

from __future__ import annotations

import json

import pytest
import torch

from fourreal_core.errors import FourRealError
from fourreal_core.registry import get_registry

OLD_KEYS = [
    # (stage yaml, message)
    ("  - name: canonical\n    params:\n      deformer: {name: mlp, params: {}}\n",
     "'deformer' was renamed 'w_mv' (the canonical stage's per-frame deformation field); "
     "write `w_mv:` instead of `deformer:`"),
    ("  - name: poses\n    params:\n      freeze_time_anchor: 3\n",
     "'freeze_time_anchor' was renamed 'canonical_view' (k_c, the freeze-time index of the canonical frame); "
     "write `canonical_view:` instead of `freeze_time_anchor:`"),
    ("  - name: poses\n    params:\n      pose_estimator: {name: known, params: {anchor_frame: 2}}\n",
     "'anchor_frame' was renamed 'canonical_view' (k_c, the orbit frame the fixed videos are filmed from); "
     "write `canonical_view:` instead of `anchor_frame:`"),
    ("  - name: synthetic\n    params:\n      anchor_index: 2\n",
     "'anchor_index' was renamed 'canonical_frame' (c, the reference frame the freeze-time video shows); "
     "write `canonical_frame:` instead of `anchor_index:`"),
    ("  - name: synthetic\n    params:\n      freeze_anchor_index: 1\n",
     "'freeze_anchor_index' was renamed 'canonical_view' (k_c, the freeze-time frame shot from the reference "
     "camera); write `canonical_view:` instead of `freeze_anchor_index:`"),
]


@pytest.mark.parametrize("stage,message", OLD_KEYS, ids=["deformer", "freeze_time_anchor", "anchor_frame",
                                                          "anchor_index", "freeze_anchor_index"])
def test_old_recipe_key_fails_in_one_line(tmp_path, stage, message):
    from fourreal_core.recipe import load_recipe

    (tmp_path / "r.yaml").write_text("name: old\nstages:\n" + stage)
    with pytest.raises(FourRealError) as e:
        load_recipe(tmp_path / "r.yaml", [], get_registry())
    assert message in str(e.value) and "\n" not in str(e.value)


def _posed(n: int, canonical_view=None):
    from fourreal_formats.cameras import orbit_cameras
    from fourreal_core.types import PosedVideo, Video

    cams = orbit_cameras(n, 16, 12, 3.0, 20.0, 90.0, 0.0, [0.0, 0.0, 0.0], 50.0)
    return PosedVideo(Video(torch.rand(n, 12, 16, 3), fps=4.0), cams, times=torch.linspace(0, 1, n),
                      canonical_view=canonical_view)


def test_old_transforms_json_anchor_still_loads_and_only_the_new_name_is_written(tmp_path):
    from fourreal_formats.transforms import load_transforms, write_transforms

    path = write_transforms(tmp_path / "v" / "transforms.json", _posed(6, canonical_view=4))
    data = json.loads(path.read_text())
    assert data["fourreal"]["canonical_view"] == 4 and "anchor" not in data["fourreal"]
    # a file written before the rename: ``anchor`` (under "fourreal", or top level)
    for where in ("fourreal", "top"):
        old = json.loads(json.dumps(data))
        del old["fourreal"]["canonical_view"]
        (old["fourreal"] if where == "fourreal" else old)["anchor"] = 4
        path.write_text(json.dumps(old))
        assert load_transforms(path).canonical_view == 4, where
        assert load_transforms(path, stride=2).canonical_view == 2, where  # re-indexed like the new key
        assert load_transforms(path, stride=3).canonical_view is None, where  # frame 4 dropped


def test_old_generation_json_freeze_time_anchor_still_loads(tmp_path):
    """The poses stage after a generate stage written before the rename: generation.json says
    ``freeze_time_anchor``; the reference camera is that freeze-time frame's and the written
    transforms.json / poses.json say ``canonical_view``."""
    from fourreal_core.config import ComponentSpec
    from fourreal_core.run import CheckpointStore, RunLog, StageContext
    from fourreal_media import write_frames
    from fourreal_poses.plugin import KnownConfig
    from fourreal_stages.poses import PosesConfig, PosesStage

    gen = tmp_path / "01_generate"
    write_frames(gen / "reference", torch.rand(5, 12, 16, 3))
    write_frames(gen / "freeze_time", torch.rand(6, 12, 16, 3))
    (gen / "generation.json").write_text(json.dumps({"canonical_frame": 1, "freeze_time_anchor": 3}))
    out = tmp_path / "02_poses"
    out.mkdir()
    ctx = StageContext(name="poses", index=2, run_dir=tmp_path, out_dir=out, recipe_dir=tmp_path,
                       device=torch.device("cpu"), seed=0, iterations_scale=1.0,
                       checkpoints=CheckpointStore(tmp_path / "ck"), log=RunLog(tmp_path / "log.jsonl"),
                       registry=get_registry(), stage_dirs={"generate": gen})
    known = ComponentSpec("pose_estimator", "known", KnownConfig(source="orbit", arc_deg=90.0))
    cfg = PosesConfig(reference=str(gen / "reference"), freeze_time=str(gen / "freeze_time"),
                      pose_estimator=known)
    PosesStage(cfg).run(ctx)
    frz = json.loads((out / "freeze_time" / "transforms.json").read_text())
    ref = json.loads((out / "reference" / "transforms.json").read_text())
    assert frz["fourreal"]["canonical_view"] == 3 and "anchor" not in frz["fourreal"]
    assert ref["fourreal"]["canonical_view"] == 1  # the reference video's: the canonical frame c
    assert ref["frames"][0]["transform_matrix"] == frz["frames"][3]["transform_matrix"]
    assert frz["frames"][3]["transform_matrix"] != frz["frames"][0]["transform_matrix"]
    poses = json.loads((out / "poses.json").read_text())
    assert poses["canonical_view"] == 3 and "freeze_time_anchor" not in poses
