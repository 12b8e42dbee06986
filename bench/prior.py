"""Benchmark the diffusers video priors: time per SDS step (one ``predict_x0``), peak GPU
memory, and the time to generate a 16-frame video.

On a CUDA GPU it builds the *full-size* architectures with random weights from their
published configs -- LTX-Video 2B (``Lightricks/LTX-Video`` transformer + VAE) and Wan 2.1
1.3B (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` transformer + VAE) -- saves them with
``save_pretrained`` and loads them through the priors' factories (the real
``from_pretrained`` path), at the paper's shapes: 16 frames, renders of 288x512 (the
priors run at 288x512 here, a size both accept). The T5 text encoders are cut to one layer
of the real width (4096): prompt embeddings are computed once and cached, so the encoder
does not enter the per-step time. Without CUDA it says so and runs tiny configs, so the
script itself is exercised.

Usage::

    python bench/prior.py [--priors ltx,wan] [--steps 20] [--sds-steps 5] [--dtype bfloat16]

Weights are random: the numbers measure speed and memory, not quality.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

# ------------------------------------------------------------------ published configs
LTX_2B = {
    "transformer": dict(in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32,
                        attention_head_dim=64, cross_attention_dim=2048, num_layers=28, activation_fn="gelu-approximate",
                        qk_norm="rms_norm_across_heads", norm_elementwise_affine=False, norm_eps=1e-6,
                        caption_channels=4096, attention_bias=True, attention_out_bias=True),
    "vae": dict(in_channels=3, out_channels=3, latent_channels=128, block_out_channels=(128, 256, 512, 512),
                decoder_block_out_channels=(128, 256, 512, 512), layers_per_block=(4, 3, 3, 3, 4),
                decoder_layers_per_block=(4, 3, 3, 3, 4), spatio_temporal_scaling=(True, True, True, False),
                decoder_spatio_temporal_scaling=(True, True, True, False), decoder_inject_noise=(False,) * 5,
                upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, patch_size=4, patch_size_t=1,
                timestep_conditioning=False, encoder_causal=True, decoder_causal=False),
    "text_dim": 4096,
}
WAN_1_3B = {
    "transformer": dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
    "vae": dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True]),
    "text_dim": 4096,
    "shift": 3.0,
}
COGVIDEOX_5B = {  # THUDM/CogVideoX-5b transformer; the VAE's defaults are the published ones
    "transformer": dict(num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16,
                        time_embed_dim=512, text_embed_dim=4096, num_layers=42, sample_width=90, sample_height=60,
                        sample_frames=49, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226,
                        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False),
    "vae": dict(),
    "text_dim": 4096,
}
# tiny versions (CPU): the diffusers test suites' dummy components
LTX_TINY = {
    "transformer": dict(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
                        attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32),
    "vae": dict(in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
                decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
                decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
                decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
                upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
                patch_size_t=1, encoder_causal=True, decoder_causal=False),
    "text_dim": 32,
}
WAN_TINY = {
    "transformer": dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True,
                        qk_norm="rms_norm_across_heads", rope_max_seq_len=32),
    "vae": dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]),
    "text_dim": 32,
    "shift": 3.0,
}


def _text(dim: int, dtype):
    """A one-layer T5 encoder of width ``dim`` and a locally built unigram T5 tokenizer."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in letters] + [("\u2581" + c, -2.5) for c in letters]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    heads = max(1, dim // 64)
    enc = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=dim, d_kv=dim // heads, d_ff=dim * 2, num_layers=1,
                                  num_heads=heads, dropout_rate=0.0))
    return enc, tok


def build(kind: str, spec: dict, folder: Path, dtype) -> str:
    """Random-weight pipeline of ``kind`` from ``spec``, saved (float32) to ``folder``; the
    prior loads it with ``torch_dtype`` like a downloaded checkpoint."""
    torch.manual_seed(0)
    enc, tok = _text(spec["text_dim"], dtype)
    if kind == "ltx":
        from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXConditionPipeline, \
            LTXVideoTransformer3DModel

        pipe = LTXConditionPipeline(scheduler=FlowMatchEulerDiscreteScheduler(),
                                    vae=AutoencoderKLLTXVideo(**spec["vae"]), text_encoder=enc,
                                    tokenizer=tok, transformer=LTXVideoTransformer3DModel(**spec["transformer"]))
    elif kind == "cogvideox":
        from diffusers import AutoencoderKLCogVideoX, CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel, \
            DDIMScheduler

        tr = dict(spec["transformer"], in_channels=2 * spec["transformer"]["in_channels"])  # I2V: + image latents
        pipe = CogVideoXImageToVideoPipeline(
            tokenizer=tok, text_encoder=enc, vae=AutoencoderKLCogVideoX(**spec["vae"]),
            transformer=CogVideoXTransformer3DModel(**tr),
            scheduler=DDIMScheduler(prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False))
    else:
        from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

        pipe = WanPipeline(tokenizer=tok, text_encoder=enc, vae=AutoencoderKLWan(**spec["vae"]),
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=spec["shift"]),
                           transformer=WanTransformer3DModel(**spec["transformer"]))
    pipe.save_pretrained(str(folder))
    return str(folder)


def bench_one(kind: str, spec: dict, cuda: bool, dtype_name: str, frames: int, h: int, w: int, steps: int,
              sds_steps: int, tmp: Path, cpu_offload: bool = False, window: bool = False,
              path: str | None = None) -> dict:
    """One prior: SDS steps (``predict_x0`` + backward), one generation (text-to-video; LTX
    with a known first frame) and, with ``window``, one freeze-time extension window (8
    known frames at the window's start; CogVideoX: its first frame only)."""
    from fourreal_diffusers.configs import CogVideoXPriorConfig, LTXPriorConfig, WanPriorConfig
    from fourreal_diffusers.cogvideox import CogVideoXPrior
    from fourreal_diffusers.ltx import LTXPrior
    from fourreal_diffusers.wan import WanPrior

    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype_name]
    path = path or build(kind, spec, tmp / kind, dtype)
    dev = "cuda" if cuda else "cpu"
    common = dict(model_path=path, torch_dtype=dtype_name, device=dev, num_inference_steps=steps, guidance_scale=1.0,
                  num_frames=frames, height=h, width=w, max_sequence_length=128 if cuda else 16,
                  cpu_offload=cpu_offload)
    if kind == "ltx":
        prior = LTXPrior(LTXPriorConfig(**common, decode_noise_scale=None))
    elif kind == "cogvideox":
        prior = CogVideoXPrior(CogVideoXPriorConfig(**common))
    else:
        prior = WanPrior(WanPriorConfig(**common))
    g = torch.Generator().manual_seed(0)
    render = torch.rand(frames, 288 if cuda else h, 512 if cuda else w, 3, device=dev, requires_grad=True)
    prompt = "a corgi on a beach"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def sds_step():
        x = torch.nn.functional.interpolate(render.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                            antialias=True).permute(0, 2, 3, 1)
        x0 = prior.predict_x0(x.detach(), 0.5, {0: x[0].detach()}, prompt, generator=g)
        loss = ((x[1:] - x0[1:].to(x)) ** 2).mean()
        loss.backward()

    sds_step()  # warm-up (prompt embeddings cached, kernels compiled)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    for _ in range(sds_steps):
        sds_step()
    sync()
    sds = (time.perf_counter() - t0) / sds_steps
    peak_sds = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    first = torch.nn.functional.interpolate(render[:1].detach().permute(0, 3, 1, 2), size=(h, w),
                                            mode="bilinear").permute(0, 2, 3, 1)[0]
    known = {0: first} if kind in ("ltx", "cogvideox") else None  # WanPipeline: text-to-video only
    prior.generate(prompt, frames, h, w, known_frames=known, seed=0)
    sync()
    gen = time.perf_counter() - t0
    peak_gen = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    win_s = win_peak = float("nan")
    if window and kind != "wan":  # (WanPipeline is text-to-video only; a VACE folder would take 8 frames)
        ctx = {j: first for j in range(8 if kind == "ltx" else 1)}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        prior.generate(prompt, frames, h, w, known_frames=ctx, seed=1)
        sync()
        win_s = time.perf_counter() - t0
        win_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    pipe = prior.pipe if kind != "cogvideox" else (prior.i2v or prior.t2v)
    params = sum(p.numel() for p in pipe.transformer.parameters()) / 1e9
    del prior
    if cuda:
        torch.cuda.empty_cache()
    return {"prior": kind, "params_B": params, "shape": f"{frames}x{h}x{w}", "sds_s": sds, "sds_peak_GiB": peak_sds,
            "gen_s": gen, "gen_steps": steps, "gen_peak_GiB": peak_gen, "window_s": win_s,
            "window_peak_GiB": win_peak, "cpu_offload": cpu_offload}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--priors", default="ltx,wan")
    ap.add_argument("--steps", type=int, default=20, help="denoising steps of the generation timing")
    ap.add_argument("--sds-steps", type=int, default=5)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    cuda = torch.cuda.is_available()
    if not cuda:
        console.print("[yellow]bench/prior.py needs a CUDA GPU for the full-size LTX-Video 2B / Wan 1.3B numbers; "
                      "running the tiny configs on CPU instead (exercises the script, numbers mean nothing)[/yellow]")
    specs = {"ltx": LTX_2B if cuda else LTX_TINY, "wan": WAN_1_3B if cuda else WAN_TINY}
    shapes = {"ltx": (16, 288, 512) if cuda else (16, 32, 32), "wan": (16, 288, 512) if cuda else (16, 16, 16)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [p.strip() for p in args.priors.split(",") if p.strip()]:
            f, h, w = shapes[kind]
            rows.append(bench_one(kind, specs[kind], cuda, args.dtype if cuda else "float32", f, h, w,
                                  args.steps if cuda else 2, args.sds_steps if cuda else 1, Path(tmp)))
            for p in Path(tmp).glob(f"{kind}*"):
                import shutil

                shutil.rmtree(p, ignore_errors=True)
    dev = torch.cuda.get_device_name() if cuda else "CPU (tiny configs)"
    table = Table(title=f"video priors on {dev}, {args.dtype if cuda else 'float32'}")
    for col in ("prior", "transformer params (B)", "frames x H x W", "SDS step (s)", "SDS peak (GiB)",
                "generate (s)", "gen steps", "gen peak (GiB)"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["prior"], f"{r['params_B']:.3f}", r["shape"], f"{r['sds_s']:.3f}", f"{r['sds_peak_GiB']:.2f}",
                      f"{r['gen_s']:.2f}", str(r["gen_steps"]), f"{r['gen_peak_GiB']:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
