"""The masked pixel-space video diffusion transformer (paper Appendix A, compact).

Input per frame (7 channels): noisy frame ``x_t`` (3), known frame (3, zeros where the
frame is unknown) and the known-frame mask (1). Frames are patchified into
``patch x patch`` tokens; every space-time token and the prompt's word tokens attend
jointly (a DiT with adaLN-Zero modulation by the diffusion time and the pooled prompt).
Positions use fixed 3D sin-cos embeddings, so any frame count and any size that is a
multiple of ``patch`` runs (quality is best at the trained size).

Text conditioning needs no tokenizer download: words (``[a-z0-9]+``, lower-cased) are
hashed with CRC-32 into ``text_vocab - 1`` buckets (0 is padding) and embedded. A learned
"null" token is always present, so an empty prompt is the unconditional model.

Objective (rectified flow / flow matching, as in SD3): with clean frames ``x0`` in
[-1,1] and Gaussian noise ``eps``, ``x_t = (1 - t) x0 + t eps`` for a diffusion time
``t`` in [0,1]; the network predicts the velocity ``v = eps - x0``, so
``x0 = x_t - t v``. The loss is the mean squared velocity error on *unknown* frames.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .configs import MaskedModelConfig

_WORD = re.compile(r"[a-z0-9]+")


def hash_prompt(prompt: str, vocab: int, length: int) -> list[int]:
    """Word ids of ``prompt``: CRC-32 of each lower-cased word mod ``vocab - 1``, plus 1."""
    words = _WORD.findall(prompt.lower())[:length]
    return [zlib.crc32(w.encode()) % (vocab - 1) + 1 for w in words]


def tokenize(prompts: list[str], vocab: int, length: int, device=None) -> torch.Tensor:
    """``[B, length]`` long tensor of hashed word ids (0-padded)."""
    out = torch.zeros(len(prompts), length, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids = hash_prompt(p, vocab, length)
        if ids:
            out[i, : len(ids)] = torch.tensor(ids)
    return out.to(device) if device is not None else out


def _sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """``[P, dim]`` sin-cos embedding of positions ``[P]`` (dim even)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=pos.device) / half)
    ang = pos.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


def sincos_3d(frames: int, h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """``[frames*h*w, dim]`` factorised sin-cos embedding of (frame, row, column)."""
    dt = (dim // 3) // 2 * 2
    dy = ((dim - dt) // 2) // 2 * 2
    dx = dim - dt - dy
    f = torch.arange(frames, device=device)
    y = torch.arange(h, device=device)
    x = torch.arange(w, device=device)
    gf, gy, gx = torch.meshgrid(f, y, x, indexing="ij")
    parts = [_sincos_1d(gf.flatten(), dt), _sincos_1d(gy.flatten(), dy)]
    ex = _sincos_1d(gx.flatten(), dx - dx % 2)
    if dx % 2:
        ex = torch.cat([ex, torch.zeros_like(ex[:, :1])], dim=-1)
    parts.append(ex)
    return torch.cat(parts, dim=-1)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``[B, dim]`` sinusoidal embedding of diffusion times ``t`` ``[B]`` in [0,1]."""
    return _sincos_1d(t * 1000.0, dim)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero (DiT)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, key_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """x ``[B,L,D]``, c ``[B,D]``, key_mask ``[B,L]`` bool (True = attend) or None."""
        s1, g1, a1, s2, g2, a2 = self.ada(c).chunk(6, dim=-1)
        B, L, D = x.shape
        h = _modulate(self.norm1(x), s1, g1)
        q, k, v = self.qkv(h).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + a1[:, None] * self.proj(att.transpose(1, 2).reshape(B, L, D))
        x = x + a2[:, None] * self.mlp(_modulate(self.norm2(x), s2, g2))
        return x


class MaskedVideoTransformer(nn.Module):
    """v-prediction network of the masked video prior.

    ``forward(x_t, known, mask, t, text_ids)``:

    Args:
        x_t: ``[B,F,H,W,3]`` noisy frames in the [-1,1] data scale.
        known: ``[B,F,H,W,3]`` known frames in [-1,1] (any value where ``mask`` is 0; they
            are zeroed inside).
        mask: ``[B,F]`` 1 for known frames, 0 otherwise.
        t: ``[B]`` diffusion times in [0,1].
        text_ids: ``[B,text_len]`` hashed word ids from :func:`tokenize` (0 = padding).

    Returns:
        ``[B,F,H,W,3]`` predicted velocity ``eps - x0``.
    """

    def __init__(self, cfg: MaskedModelConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim {cfg.dim} must be a multiple of heads {cfg.heads}")
        self.cfg = cfg
        p = cfg.patch
        self.patch_in = nn.Linear(7 * p * p, cfg.dim)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.text_emb = nn.Embedding(cfg.text_vocab, cfg.dim, padding_idx=0)
        self.null_text = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.text_pos = nn.Parameter(torch.zeros(1, cfg.text_len + 1, cfg.dim))
        self.text_type = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        nn.init.normal_(self.text_emb.weight, std=0.02)
        nn.init.normal_(self.null_text, std=0.02)
        nn.init.normal_(self.text_pos, std=0.02)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 2 * cfg.dim))
        self.patch_out = nn.Linear(cfg.dim, 3 * p * p)
        nn.init.zeros_(self.ada_out[1].weight)
        nn.init.zeros_(self.ada_out[1].bias)
        nn.init.zeros_(self.patch_out.weight)
        nn.init.zeros_(self.patch_out.bias)

    def forward(
        self, x_t: torch.Tensor, known: torch.Tensor, mask: torch.Tensor, t: torch.Tensor, text_ids: torch.Tensor
    ) -> torch.Tensor:
        cfg = self.cfg
        p = cfg.patch
        B, Fr, H, W, _ = x_t.shape
        if H % p or W % p:
            raise ValueError(f"frame size {H}x{W} is not a multiple of the patch size {p}")
        m = mask.to(x_t.dtype)[:, :, None, None, None].expand(B, Fr, H, W, 1)
        inp = torch.cat([x_t, known * m, m], dim=-1)  # [B,F,H,W,7]
        h, w = H // p, W // p
        tok = inp.view(B, Fr, h, p, w, p, 7).permute(0, 1, 2, 4, 3, 5, 6).reshape(B, Fr * h * w, p * p * 7)
        x = self.patch_in(tok) + sincos_3d(Fr, h, w, cfg.dim, device=x_t.device).to(x_t.dtype)[None]

        # text tokens: a learned null token + hashed words
        ids = text_ids[:, : cfg.text_len]
        txt = self.text_emb(ids)  # [B,T,D]
        txt = torch.cat([self.null_text.expand(B, 1, -1), txt], dim=1) + self.text_pos[:, : ids.shape[1] + 1]
        txt = txt + self.text_type
        valid = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=ids.device), ids > 0], dim=1)
        pooled = (txt * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)

        c = self.time_mlp(timestep_embedding(t.to(x_t.dtype), cfg.dim).to(x_t.dtype)) + pooled
        seq = torch.cat([txt, x], dim=1)
        key_mask = torch.cat([valid, torch.ones(B, x.shape[1], dtype=torch.bool, device=x.device)], dim=1)
        if bool(key_mask.all()):
            key_mask = None
        for blk in self.blocks:
            seq = blk(seq, c, key_mask)
        x = seq[:, txt.shape[1]:]
        shift, scale = self.ada_out(c).chunk(2, dim=-1)
        out = self.patch_out(_modulate(self.norm_out(x), shift, scale))  # [B,L,p*p*3]
        out = out.view(B, Fr, h, w, p, p, 3).permute(0, 1, 2, 4, 3, 5, 6).reshape(B, Fr, H, W, 3)
        return out


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
