"""Transformer building blocks of the HMA trunk (the DiT baseline reuses them).

    B batch, T frames, S tokens per frame (video + action tokens), D width, H heads, E head width
    N = B*T (spatial) or B*S (temporal) attention rows, L query length, P cached length

Temporal attention uses rotary positions (RoPE, Su et al. 2021) over absolute frame indices.
Scores then depend on frame distances only, so keys/values cached during a rollout stay valid
when the sliding window drops its oldest frame, and positions past the training window need no
new embedding: a KV-cached rollout equals a full recomputation with the same banded mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN (DiT): x * (1 + scale) + shift; scale 0 and shift 0 leave x unchanged."""
    return x * (1 + scale) + shift


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary embedding of x [..., L, E] at float/int positions [L] (GPT-NeoX half split)."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)  # [E/2]
    angles = positions.to(torch.float32)[:, None] * freqs  # [L,E/2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def band_mask(query_pos: torch.Tensor, key_pos: torch.Tensor, window: int) -> torch.Tensor:
    """bool [L,P]: a query frame sees key frames at or before it, at most `window` frames back
    (itself included) — causal in time, and the sliding context of long rollouts."""
    delta = query_pos[:, None] - key_pos[None, :]  # [L,P]
    return (delta >= 0) & (delta < window)


class Attention(nn.Module):
    """Multi-head self-attention: fused qkv, F.scaled_dot_product_attention, optional rotary
    positions and past keys/values."""

    def __init__(self, dim: int, heads: int, rope_base: float | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.rope_base = rope_base
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def attend(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N,L,D] -> (out [N,L,D], k [N,H,L,E], v [N,H,L,E]) of x's own tokens, for caching."""
        n, length, dim = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # [N,H,L,E]
        if self.rope_base is not None:
            assert positions is not None, "rotary attention needs positions"
            q, k = rotate(q, positions, self.rope_base), rotate(k, positions, self.rope_base)
        keys, values = k, v
        if past is not None:
            keys, values = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=attn_mask, is_causal=is_causal
        )
        return self.proj(out.transpose(1, 2).reshape(n, length, dim)), k, v  # [N,L,D]

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.attend(x, **kwargs)[0]


class CrossAttention(nn.Module):
    """Queries from x attend to a context sequence; rotary positions on both sides."""

    def __init__(self, dim: int, heads: int, rope_base: float):
        super().__init__()
        self.heads = heads
        self.rope_base = rope_base
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        query_pos: torch.Tensor,
        key_pos: torch.Tensor,
        attn_mask: torch.Tensor,
    ) -> torch.Tensor:
        """x [N,L,D], context [N,P,D], positions [L] / [P], attn_mask bool [L,P] -> [N,L,D]."""
        n, length, dim = x.shape
        q = self.q(x).view(n, length, self.heads, -1).transpose(1, 2)  # [N,H,L,E]
        k, v = self.kv(context).view(n, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, query_pos, self.rope_base), rotate(k, key_pos, self.rope_base)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))  # [N,L,D]


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.fc(x)))


@dataclass
class TemporalContext:
    """What temporal attention needs for the frames in flight (and the cache they extend)."""

    positions: torch.Tensor  # [T] absolute frame indices of the frames in x
    key_positions: torch.Tensor  # [P+T] frame indices of cached + new keys
    band: torch.Tensor  # bool [T,P+T], see band_mask
    plain_causal: bool  # band is the plain causal mask (no past, T <= window): use is_causal
    past: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)


class SpatialTemporalBlock(nn.Module):
    """Spatial attention (bidirectional within a frame) -> action conditioning (adaLN
    modulation and/or causal cross-attention) -> temporal attention (causal across frames, per
    spatial position) -> MLP. Pre-LN residual branches throughout."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float,
        rope_base: float,
        modulated: bool = False,
        cross_attention: bool = False,
    ):
        super().__init__()
        self.norm_spatial = nn.LayerNorm(dim)
        self.spatial = Attention(dim, heads)
        self.norm_cross = nn.LayerNorm(dim) if cross_attention else None
        self.cross = CrossAttention(dim, heads, rope_base) if cross_attention else None
        self.norm_temporal = nn.LayerNorm(dim, elementwise_affine=not modulated)
        self.temporal = Attention(dim, heads, rope_base=rope_base)
        self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=not modulated)
        self.mlp = MLP(dim, mlp_ratio)
        self.modulation = None
        if modulated:
            # shift/scale for the temporal-attention and MLP inputs; zero init = identity at start
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 4 * dim))
            nn.init.zeros_(self.modulation[1].weight)
            nn.init.zeros_(self.modulation[1].bias)

    def forward(
        self,
        x: torch.Tensor,
        temporal: TemporalContext,
        layer: int,
        cond: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B,T,S,D]; cond [B,T,D] per-frame modulation input; context [B,P+T,D] per-frame
        cross-attention keys (frames at temporal.key_positions). Returns (x, k, v) where k, v
        [B*S,H,T,E] are this layer's temporal keys/values of the new frames."""
        b, t, s, d = x.shape
        h = self.norm_spatial(x).view(b * t, s, d)  # [B*T,S,D]
        x = x + self.spatial(h).view(b, t, s, d)
        if self.cross is not None:
            assert context is not None
            h = self.norm_cross(x).view(b, t * s, d)  # [B,T*S,D]
            x = x + self.cross(
                h,
                context,
                temporal.positions.repeat_interleave(s),
                temporal.key_positions,
                temporal.band.repeat_interleave(s, dim=0),  # [T*S,P+T]
            ).view(b, t, s, d)
        h = self.norm_temporal(x)
        if self.modulation is not None:
            assert cond is not None
            shift_t, scale_t, shift_m, scale_m = self.modulation(cond)[:, :, None].chunk(4, dim=-1)
            h = modulate(h, shift_t, scale_t)  # [B,T,S,D], per-frame shift/scale
        h = h.permute(0, 2, 1, 3).reshape(b * s, t, d)  # [B*S,T,D]
        past = temporal.past[layer] if temporal.past else None
        out, k, v = self.temporal.attend(
            h,
            positions=temporal.positions,
            past=past,
            attn_mask=None if temporal.plain_causal else temporal.band,
            is_causal=temporal.plain_causal,
        )
        x = x + out.view(b, s, t, d).permute(0, 2, 1, 3)  # [B,T,S,D]
        h = self.norm_mlp(x)
        if self.modulation is not None:
            h = modulate(h, shift_m, scale_m)
        return x + self.mlp(h), k, v


@dataclass
class KVCache:
    """Temporal keys/values of the frames already committed during a rollout, per layer, plus
    the per-frame context (action embeddings) cross-attention reads. Holds at most `window - 1`
    frames: the frame being generated makes the window full."""

    window: int
    layers: list[tuple[torch.Tensor, torch.Tensor] | None]  # per layer ([B*S,H,P,E], same)
    context: torch.Tensor | None = None  # [B,P,D]
    next_position: int = 0  # absolute frame index of the next frame

    @property
    def frames(self) -> int:
        first = self.layers[0] if self.layers else None
        return 0 if first is None else first[0].shape[2]

    def extend(
        self,
        new: list[tuple[torch.Tensor, torch.Tensor]],
        context: torch.Tensor | None,
        frames: int,
    ) -> None:
        """Append `frames` new frames' keys/values, then drop frames older than the window."""
        keep = self.window - 1
        for i, (k, v) in enumerate(new):
            past = self.layers[i]
            if past is not None:
                k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
            self.layers[i] = (k[:, :, -keep:], v[:, :, -keep:])
        if context is not None:
            self.context = context[:, -keep:]
        self.next_position += frames
