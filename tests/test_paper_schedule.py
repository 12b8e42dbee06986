"""recipes/4real.yaml follows the paper's schedule (issue 30, item 8): §4 "20k iterations per
stage, SDS only during the last 5k", Appendix C's counts read as global; every other field of
its phases is the stages' default phase of the same name (docs/pipeline.md, "Schedules vs the paper")."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import ROOT
from fourreal_core.recipe import load_recipe
from fourreal_stages.scheduler import canonical_phases, motion_phases


@pytest.mark.parametrize("stage, defaults, names", [
    ("canonical", canonical_phases(), ["warmup", "deform_grow", "deform_sds"]),
    ("motion", motion_phases(), ["motion", "growth", "joint_sds"]),
])
def test_4real_recipe_runs_20k_per_stage_with_sds_in_the_last_5k(stage, defaults, names):
    recipe = load_recipe(ROOT / "recipes" / "4real.yaml", check_files=False)
    assert recipe.iterations_scale == 1.0
    phases = next(s for s in recipe.stages if s.label == stage).params.scheduler.params.phases
    assert [p.name for p in phases] == names
    assert sum(int(p.iterations) for p in phases) == 20000
    sds = [p for p in phases if any(n.startswith("sds_") for n in p.losses)]
    assert [p.name for p in sds] == [names[-1]] and int(sds[0].iterations) == 5000
    by_name = {d["name"]: d for d in defaults}
    for p in phases:  # only the counts depart from the built-in phases
        d = by_name[p.name]
        got = {k: v for k, v in dataclasses.asdict(p).items() if k in d and k != "iterations"}
        assert got == {k: v for k, v in d.items() if k != "iterations"}, p.name
    if stage == "canonical":  # growth until 15k, multi-view SDS from 15k (Appendix C.1)
        assert [int(p.iterations) for p in phases] == [3000, 12000, 5000]
    else:  # motion only 10k, growth 5k, joint fine-tuning with SDS 5k (Appendix C.2, 20k-40k)
        assert [int(p.iterations) for p in phases] == [10000, 5000, 5000]
