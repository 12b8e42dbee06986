"""diffusers video priors (ltx, wan, cogvideox) on tiny random-weight models.

Every component (transformer, VAE, scheduler, T5 text encoder, tokenizer) is built from a
config of the *same classes* the real checkpoints use, saved with ``save_pretrained`` to a
temporary folder and loaded back through the priors' factories (``from_pretrained(path,
torch_dtype=...)``). Nothing is downloaded: the tokenizer is a T5 unigram tokenizer made
in-process, and HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from fourreal_core.errors import FourRealError, InputError  # noqa: E402
from fourreal_diffusers.configs import CogVideoXPriorConfig, LTXPriorConfig, WanPriorConfig  # noqa: E402

PROMPT = "a red ball on a table"


def _text_parts(max_len: int = 16):
    """A tiny T5 encoder (d_model 32) and a unigram T5 tokenizer built locally."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in letters] + [("\u2581" + c, -2.5) for c in letters]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_len)
    torch.manual_seed(0)
    enc = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                  relative_attention_num_buckets=8, dropout_rate=0.0))
    return enc.eval(), tok


def _frames(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, h // 4, w // 4, 3, generator=g)
    x = torch.nn.functional.interpolate(base.permute(0, 3, 1, 2), size=(h, w), mode="bilinear").permute(0, 2, 3, 1)
    return (x + 0.1 * torch.rand(n, h, w, 3, generator=g)).clamp(0, 1)


def _save(pipe, path):
    pipe.save_pretrained(str(path))
    return str(path)


# ---------------------------------------------------------------------------- builders
def build_ltx(path):
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXConditionPipeline, \
        LTXVideoTransformer3DModel

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
                                             num_layers=1, caption_channels=32)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=True,
    )
    enc, tok = _text_parts()
    pipe = LTXConditionPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=enc,
                                tokenizer=tok, transformer=transformer)
    return _save(pipe, path)


def build_wan(path, vace=True):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel, \
        WanVACEPipeline, WanVACETransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    common = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
                  text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True,
                  qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    enc, tok = _text_parts()
    sched = FlowMatchEulerDiscreteScheduler(shift=7.0)
    if vace:
        tr = WanVACETransformer3DModel(vace_layers=[0, 2], vace_in_channels=96, **common)
        pipe = WanVACEPipeline(tokenizer=tok, text_encoder=enc, vae=vae, scheduler=sched, transformer=tr)
    else:
        tr = WanTransformer3DModel(**common)
        pipe = WanPipeline(tokenizer=tok, text_encoder=enc, vae=vae, scheduler=sched, transformer=tr)
    return _save(pipe, path)


def build_cogvideox(path, i2v=False):
    from diffusers import AutoencoderKLCogVideoX, CogVideoXImageToVideoPipeline, CogVideoXPipeline, \
        CogVideoXTransformer3DModel, DDIMScheduler

    torch.manual_seed(0)
    tr = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=8 if i2v else 4, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16, use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=i2v,
    )
    vae = AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
                                 up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                 latent_channels=4, layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
    enc, tok = _text_parts()
    sched = DDIMScheduler(prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False)
    cls = CogVideoXImageToVideoPipeline if i2v else CogVideoXPipeline
    pipe = cls(tokenizer=tok, text_encoder=enc, vae=vae, transformer=tr, scheduler=sched)
    return _save(pipe, path)


def _make(name, cfg):
    from fourreal_core.registry import get_registry

    reg = get_registry()
    if ("video_prior", name) in reg:  # through the registered factory
        return reg.create("video_prior", name, cfg)
    from fourreal_diffusers.cogvideox import CogVideoXPrior
    from fourreal_diffusers.ltx import LTXPrior
    from fourreal_diffusers.wan import WanPrior

    return {"ltx": LTXPrior, "wan": WanPrior, "cogvideox": CogVideoXPrior}[name](cfg)


def _vae_roundtrip_error(prior, pipe, frames):
    """Mean |decode(encode(frames)) - frames| of a clip through the prior's VAE."""
    from fourreal_diffusers.base import from_pixels, to_pixels

    with torch.no_grad():
        enc = pipe.vae.encode(to_pixels(frames, "cpu", pipe.vae.dtype))
        lat = enc.latent_dist.mode()
        dec = pipe.vae.decode(lat, return_dict=False)[0]
    return from_pixels(dec)


# --------------------------------------------------------------------------------- LTX
def test_ltx_prior(tmp_path):
    path = build_ltx(tmp_path / "ltx")
    cfg = LTXPriorConfig(model_path=path, torch_dtype="float32", device="cpu", num_inference_steps=2,
                         guidance_scale=1.0, num_frames=8, height=32, width=32, max_sequence_length=16,
                         image_cond_noise_scale=0.0, decode_timestep=0.0, decode_noise_scale=None, paste_known=False)
    prior = _make("ltx", cfg)
    assert type(prior).__name__ == "LTXPrior" and prior.temporal_ratio == 4 and prior.spatial_multiple == 32
    clip = _frames(9, 32, 32)
    # VAE reconstruction of the first frame alone (causal decoder: frame 0 depends on latent 0 only)
    rt0 = _vae_roundtrip_error(prior, prior.pipe, clip[:1])[0]
    vae_err = float((rt0 - clip[0]).abs().mean())
    known = {0: clip[0], 5: clip[5]}
    out = prior.generate(PROMPT, 9, 32, 32, known_frames=known, seed=0).frames
    assert out.shape == (9, 32, 32, 3)
    # frame 0 is hard-conditioned: it comes back as the VAE reconstruction of the known frame
    assert float((out[0] - clip[0]).abs().mean()) <= vae_err * 1.05 + 1e-3
    # (a random-weight VAE reconstructs poorly, so that bound is loose; the sensitivity checks
    # below show the known frame really drives frame 0 and the keyframe the rest)
    other = prior.generate(PROMPT, 9, 32, 32, known_frames={0: 1.0 - clip[0], 5: clip[5]}, seed=0).frames
    assert not torch.allclose(out[0], other[0], atol=1e-5)
    # frame 5 is a keyframe condition: it changes the generation (the conditioning is wired)
    out_nokey = prior.generate(PROMPT, 9, 32, 32, known_frames={0: clip[0]}, seed=0).frames
    assert not torch.allclose(out, out_nokey, atol=1e-4)
    # odd sizes: run at the model grid, returned as asked; with paste_known the frames are exact
    prior.cfg.paste_known = True
    oc = _frames(6, 30, 34, seed=9)
    odd = prior.generate(PROMPT, 6, 30, 34, known_frames={0: oc[0], 4: oc[4]}, seed=1).frames
    assert odd.shape == (6, 30, 34, 3)
    assert torch.equal(odd[4], oc[4]) and torch.equal(odd[0], oc[0])
    # predict_x0: shapes, determinism, known frames, the noise level matters
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = prior.predict_x0(clip[:8], 0.6, {0: clip[0]}, PROMPT, generator=g(3))
    b = prior.predict_x0(clip[:8], 0.6, {0: clip[0]}, PROMPT, generator=g(3))
    c = prior.predict_x0(clip[:8], 0.6, {0: clip[0]}, PROMPT, generator=g(4))
    d = prior.predict_x0(clip[:8], 0.2, {0: clip[0]}, PROMPT, generator=g(3))
    assert a.shape == (8, 32, 32, 3) and torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)
    assert torch.equal(a[0], clip[0])
    # at noise level 0 the estimate is the VAE reconstruction of the input
    z = prior.predict_x0(clip[:5], 0.0, None, PROMPT, generator=g(3))
    rt = _vae_roundtrip_error(prior, prior.pipe, clip[:5])
    assert float((z - rt).abs().mean()) < 0.05 + float((rt - clip[:5]).abs().mean()) * 0.5


# --------------------------------------------------------------------------------- Wan
def test_wan_vace_prior(tmp_path):
    path = build_wan(tmp_path / "wan")
    cfg = WanPriorConfig(model_path=path, torch_dtype="float32", device="cpu", num_inference_steps=2,
                         guidance_scale=1.0, num_frames=5, height=16, width=16, max_sequence_length=16,
                         paste_known=False)
    prior = _make("wan", cfg)
    assert prior.kind == "WanVACEPipeline" and prior.temporal_ratio == 4 and prior.spatial_multiple == 16
    clip = _frames(5, 16, 16, seed=2)
    plain = prior.generate(PROMPT, 5, 16, 16, seed=0).frames
    cond = prior.generate(PROMPT, 5, 16, 16, known_frames={0: clip[0], 3: clip[3]}, seed=0).frames
    assert plain.shape == cond.shape == (5, 16, 16, 3)
    # VACE conditioning reaches the model (the random VAE decoder damps every latent change, so
    # the differences are small; without the wiring the outputs would be bit-identical)
    assert not torch.equal(plain, cond)
    again = prior.generate(PROMPT, 5, 16, 16, known_frames={0: clip[0], 3: clip[3]}, seed=0).frames
    assert torch.equal(cond, again)
    prior.cfg.paste_known = True
    pasted = prior.generate(PROMPT, 5, 16, 16, known_frames={0: clip[0], 3: clip[3]}, seed=0).frames
    assert torch.equal(pasted[3], clip[3]) and torch.equal(pasted[0], clip[0])
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = prior.predict_x0(clip, 0.5, {0: clip[0]}, PROMPT, generator=g(1))
    b = prior.predict_x0(clip, 0.5, {0: clip[0]}, PROMPT, generator=g(1))
    c = prior.predict_x0(clip, 0.5, {2: clip[2]}, PROMPT, generator=g(1))
    assert a.shape == (5, 16, 16, 3) and torch.equal(a, b)
    assert not torch.equal(a[3:], c[3:])  # the known-frame position conditions the estimate


def test_wan_text_to_video_refuses_known_frames(tmp_path):
    path = build_wan(tmp_path / "wan_t2v", vace=False)
    cfg = WanPriorConfig(model_path=path, torch_dtype="float32", device="cpu", num_inference_steps=1,
                         guidance_scale=1.0, num_frames=5, height=16, width=16, max_sequence_length=16)
    prior = _make("wan", cfg)
    assert prior.kind == "WanPipeline"
    assert prior.generate(PROMPT, 5, 16, 16, seed=0).frames.shape == (5, 16, 16, 3)
    with pytest.raises(FourRealError, match="text-to-video only"):
        prior.generate(PROMPT, 5, 16, 16, known_frames={0: torch.rand(16, 16, 3)})
    x0 = prior.predict_x0(_frames(5, 16, 16), 0.5, {0: torch.zeros(16, 16, 3)}, PROMPT,
                          generator=torch.Generator().manual_seed(0))
    assert x0.shape == (5, 16, 16, 3) and torch.equal(x0[0], torch.zeros(16, 16, 3))


# --------------------------------------------------------------------------- CogVideoX
def test_cogvideox_prior(tmp_path):
    t2v = build_cogvideox(tmp_path / "cog")
    i2v = build_cogvideox(tmp_path / "cog_i2v", i2v=True)
    cfg = CogVideoXPriorConfig(model_path=t2v, i2v_model_path=i2v, torch_dtype="float32", device="cpu",
                               num_inference_steps=2, guidance_scale=1.0, num_frames=9, height=16, width=16,
                               max_sequence_length=16)
    prior = _make("cogvideox", cfg)
    assert prior.t2v is not None and prior.i2v is not None
    clip = _frames(9, 16, 16, seed=4)
    v = prior.generate(PROMPT, 9, 16, 16, seed=0).frames
    assert v.shape == (9, 16, 16, 3)
    first = prior.generate(PROMPT, 9, 16, 16, known_frames={0: clip[0]}, seed=0).frames
    assert torch.equal(first[0], clip[0]) and first.shape == (9, 16, 16, 3)
    with pytest.raises(FourRealError, match="first frame only"):
        prior.generate(PROMPT, 9, 16, 16, known_frames={4: clip[4]})
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = prior.predict_x0(clip, 0.5, None, PROMPT, generator=g(0))
    b = prior.predict_x0(clip, 0.5, None, PROMPT, generator=g(0))
    c = prior.predict_x0(clip, 0.5, {0: clip[0]}, PROMPT, generator=g(0))  # through the I2V transformer
    assert a.shape == c.shape == (9, 16, 16, 3) and torch.equal(a, b)
    assert torch.equal(c[0], clip[0]) and not torch.equal(a[1:], c[1:])
    with pytest.raises(FourRealError, match="first frame only"):
        prior.predict_x0(clip, 0.5, {3: clip[3]}, PROMPT)


# ------------------------------------------------------------------------------ errors
def test_missing_model_folder_message(tmp_path):
    missing = tmp_path / "no_such_model"
    for name, cfg in (("ltx", LTXPriorConfig(model_path=str(missing))), ("wan", WanPriorConfig(model_path=str(missing))),
                      ("cogvideox", CogVideoXPriorConfig(model_path=str(missing)))):
        with pytest.raises(InputError) as ei:
            _make(name, cfg)
        msg = str(ei.value)
        assert str(missing) in msg and "model_path=" in msg and "\n" not in msg


def test_wrong_pipeline_kind(tmp_path):
    path = build_cogvideox(tmp_path / "cog")
    with pytest.raises(InputError, match="CogVideoXPipeline"):
        _make("wan", WanPriorConfig(model_path=path, torch_dtype="float32", device="cpu"))
