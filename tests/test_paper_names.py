"""Output files carry the paper's names (w_mv, w_t); scenes written before the rename load."""

from __future__ import annotations

import json

import torch


def _scene(tmp_path, reg):
    from fourreal_core.types import PointCloud
    from fourreal_core.recipe import component_from_plain
    from fourreal_formats.scene4d import Scene4D

    rep = component_from_plain("representation", {"name": "gaussians"}, reg)
    spec = component_from_plain("deformer", {"name": "mlp", "params": {"width": 16, "depth": 2}}, reg)
    model = rep.build(reg)
    model.init_from_points(PointCloud(torch.rand(50, 3), torch.rand(50, 3)), 1.0)
    w_t = spec.build(reg)
    w_t.setup(canonical=0.5)
    with torch.no_grad():
        for p in w_t.parameters():
            p.add_(0.1 * torch.randn_like(p))
    Scene4D(model, w_t, torch.zeros(3), times=torch.linspace(0, 1, 4), deformer_spec=spec,
            representation_spec=rep).save(tmp_path)
    return w_t


def test_scene_writes_w_t_and_an_old_scene_still_loads(tmp_path, registry):
    from fourreal_formats.scene4d import Scene4D

    w_t = _scene(tmp_path, registry)
    assert (tmp_path / "w_t.safetensors").is_file() and not (tmp_path / "motion_deformer.safetensors").exists()
    manifest = json.loads((tmp_path / "scene4d.json").read_text())
    assert manifest["deformer_weights"] == "w_t.safetensors"
    x = torch.rand(20, 3)
    want = w_t.deform(x, 0.9).dx
    # a scene folder from before the rename: the manifest names the file it holds
    (tmp_path / "w_t.safetensors").rename(tmp_path / "motion_deformer.safetensors")
    manifest["deformer_weights"] = "motion_deformer.safetensors"
    (tmp_path / "scene4d.json").write_text(json.dumps(manifest))
    back = Scene4D.load(tmp_path, registry)
    assert torch.allclose(back.deformer.deform(x, 0.9).dx, want, atol=1e-6)
