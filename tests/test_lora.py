"""LoRAs on the diffusers priors (tiny random-weight LTX, Wan, CogVideoX; LoRAs made here).

Each LoRA is made by the test with peft on the same tiny transformer (random, non-zero
``lora_B`` so it changes the output), saved with the pipeline's ``save_lora_weights`` as a
.safetensors file, and loaded by the prior from that local file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).parent))
from test_diffusers_priors import PROMPT, _frames, _make, build_cogvideox, build_ltx, build_wan  # noqa: E402

from fourreal_core.errors import InputError  # noqa: E402
from fourreal_diffusers.configs import CogVideoXPriorConfig, LoraSpec, LTXPriorConfig, WanPriorConfig  # noqa: E402
from fourreal_diffusers.lora import add_triggers, lora_use, sds_use  # noqa: E402

BUILD = {"ltx": build_ltx, "wan": build_wan, "cogvideox": lambda p: build_cogvideox(p, i2v=True)}
SIZE = {"ltx": (9, 32, 32), "wan": (5, 16, 16), "cogvideox": (9, 16, 16)}


def make_lora(model_path: str, out: Path, seed: int = 0) -> str:
    """A rank-4 LoRA on the attention projections of the model's transformer."""
    from diffusers import DiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(model_path)
    tr = pipe.transformer
    tr.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    g = torch.Generator().manual_seed(seed)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.5 if "lora_B" in k else v)
          for k, v in get_peft_model_state_dict(tr).items()}
    type(pipe).save_lora_weights(str(out), transformer_lora_layers=sd, safe_serialization=True)
    return str(out / "pytorch_lora_weights.safetensors")


def _cfg(kind, path, loras):
    common = dict(model_path=path, torch_dtype="float32", device="cpu", num_inference_steps=2, guidance_scale=1.0,
                  max_sequence_length=16, loras=loras)
    n, h, w = SIZE[kind]
    if kind == "ltx":
        return LTXPriorConfig(**common, num_frames=n, height=h, width=w, decode_timestep=0.0, decode_noise_scale=None)
    if kind == "wan":
        return WanPriorConfig(**common, num_frames=n, height=h, width=w)
    return CogVideoXPriorConfig(**common, num_frames=n, height=h, width=w)


@pytest.mark.parametrize("kind", ["ltx", "wan", "cogvideox"])
def test_lora_changes_output_scale0_and_switching(tmp_path, kind, monkeypatch):
    from diffusers import DiffusionPipeline

    path = BUILD[kind](tmp_path / kind)
    lora = make_lora(path, tmp_path / "lora")
    pipe_cls = type(DiffusionPipeline.from_pretrained(path))
    counts = {"from_pretrained": 0, "load_lora": 0}
    orig_fp, orig_ll = pipe_cls.from_pretrained.__func__, pipe_cls.load_lora_weights

    def fp(cls, *a, **k):
        counts["from_pretrained"] += 1
        return orig_fp(cls, *a, **k)

    def ll(self, *a, **k):
        counts["load_lora"] += 1
        return orig_ll(self, *a, **k)

    monkeypatch.setattr(pipe_cls, "from_pretrained", classmethod(fp))
    monkeypatch.setattr(pipe_cls, "load_lora_weights", ll)
    spec = LoraSpec(file=lora, scale=1.0, trigger="", uses=["freeze_time", "sds_multiview"])
    prior = _make(kind, _cfg(kind, path, [spec]))
    n, h, w = SIZE[kind]
    known = {0: _frames(1, h, w, seed=3)[0]}
    pipe = prior.pipe if kind != "cogvideox" else prior.i2v
    weights = {k: v.clone() for k, v in pipe.transformer.state_dict().items() if "lora" not in k}

    def gen():
        return prior.generate(PROMPT, n, h, w, known_frames=known, seed=0).frames

    with lora_use(prior, "reference"):  # not a use of this LoRA: the base model
        base = gen()
    with lora_use(prior, "freeze_time"):
        with_lora = gen()
    assert float((with_lora - base).abs().max()) > 1e-4, "the LoRA does not change the output"
    spec.scale = 0.0
    with lora_use(prior, "freeze_time"):
        zero = gen()
    assert torch.allclose(zero, base, atol=1e-6), float((zero - base).abs().max())
    spec.scale = 1.0
    with lora_use(prior, "freeze_time"):
        again = gen()
    with lora_use(prior, "reference"):
        base2 = gen()
    assert torch.allclose(again, with_lora, atol=1e-6) and torch.allclose(base2, base, atol=1e-6)
    # switching never reloaded the model or the LoRA, nor touched the base weights
    assert counts == {"from_pretrained": 1 if kind != "cogvideox" else 1, "load_lora": 1}, counts
    now = pipe.transformer.state_dict()
    assert all(torch.equal(now[k], v) for k, v in weights.items())
    # SDS: the use follows the frames' times (multi-view: one time; temporal: many)
    clip = _frames(n, h, w, seed=4)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    mv = prior.predict_x0(clip, 0.5, known, PROMPT, generator=g(), times=torch.full((n,), 0.5))
    tp = prior.predict_x0(clip, 0.5, known, PROMPT, generator=g(), times=torch.linspace(0, 1, n))
    with lora_use(prior, "reference"):
        plain = prior.predict_x0(clip, 0.5, known, PROMPT, generator=g(), times=torch.full((n,), 0.5))
    assert not torch.allclose(mv, plain, atol=1e-5) and torch.allclose(tp, plain, atol=1e-6)
    # a second prior on the same folder shares the ONE pipeline, without the LoRA active
    other = _make(kind, _cfg(kind, path, []))
    assert (other.pipe if kind != "cogvideox" else other.i2v) is pipe
    assert torch.allclose(other.generate(PROMPT, n, h, w, known_frames=known, seed=0).frames, base, atol=1e-6)
    assert counts["from_pretrained"] == 1


def test_lora_errors_and_triggers(tmp_path):
    ltx = build_ltx(tmp_path / "ltx")
    wan = build_wan(tmp_path / "wan")
    wan_lora = make_lora(wan, tmp_path / "wan_lora")
    with pytest.raises(InputError) as ei:  # a Wan LoRA on LTX
        _make("ltx", _cfg("ltx", ltx, [LoraSpec(file=wan_lora)]))
    msg = str(ei.value)
    assert "another architecture" in msg and wan_lora in msg and "\n" not in msg
    missing = str(tmp_path / "nowhere.safetensors")
    with pytest.raises(InputError, match="LoRA file not found") as ei:
        _make("wan", _cfg("wan", wan, [LoraSpec(file=missing)]))
    assert "\n" not in str(ei.value)
    assert add_triggers("Camera circulating around a vase", ["orbit shot", "r0t4tion"]) == \
        "orbit shot, r0t4tion, Camera circulating around a vase"
    assert add_triggers("an orbit shot of a vase", ["Orbit shot"]) == "an orbit shot of a vase"
    assert sds_use(times=torch.zeros(4)) == "sds_multiview" and sds_use(times=torch.arange(4.0)) == "sds_temporal"
    # through the console script: a LoRA made for another architecture -> exit 2, one line
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: lora-error\ndevice: cpu\nstages:\n  - name: generate\n    params:\n      prompt: a vase\n"
        f"      prior: {{name: ltx, params: {{model_path: {ltx}, torch_dtype: float32, num_frames: 9, height: 32, "
        f"width: 32, loras: [{{file: {wan_lora}}}]}}}}\n")
    exe = Path(sys.executable).parent / "fourreal"
    r = subprocess.run([str(exe), "run", str(recipe), "--out", str(tmp_path / "run")], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2, r.stderr[-2000:]
    err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error")]
    assert len(err) == 1 and "another architecture" in err[0], r.stderr[-2000:]


def test_gpu_check_dry_run(capsys):
    """bench/gpu_check.py without a GPU: every full-size config built on the meta device."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.dry_run(["ltx", "wan", "cogvideox"])
    got = {r["prior"]: r for r in rows}
    # the published sizes: LTX-Video 2B (1.9B transformer), Wan 2.1 1.3B, CogVideoX 5B
    assert 1.8 < got["ltx"]["transformer_B"] < 2.0 and 1.2 < got["wan"]["transformer_B"] < 1.5
    assert 5.0 < got["cogvideox"]["transformer_B"] < 6.0
    assert got["ltx"]["latent"] == "1x128x3x9x16" and got["wan"]["run_shape"] == "17x480x832"
    assert mod.main(["--dry-run", "--priors", "ltx"]) == 0
    assert "dry run" in capsys.readouterr().out
