"""Transformer building blocks of the HMA trunk (the DiT baseline reuses them).

    B batch, T frames, S tokens per frame (video + action tokens), D width, H heads, E head width
    N = B*T (spatial) or B*S (temporal) attention rows, L query length, P cached length

Temporal attention uses rotary positions (RoPE, Su et al. 2021) over absolute frame indices.
Scores then depend on frame distances only, so keys/values cached during a rollout stay valid
when the sliding window drops its oldest frame, and positions past the training window need no
new embedding: a KV-cached rollout equals a full recomputation with the same banded mask.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """x [N,L,D] -> [N,L,D]. With a cache, x's keys/values are stored into it first and the
        queries attend to everything it holds (attn_mask [L,P] says which slots they see)."""
        n, length, dim = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # [N,H,L,E]
        if self.rope_base is not None:
            assert positions is not None, "rotary attention needs positions"
            q, k = rotate(q, positions, self.rope_base), rotate(k, positions, self.rope_base)
        if cache is not None:
            k, v = cache.store(k, v)  # [N,H,P,E]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))  # [N,L,D]


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
    """What temporal attention needs for the frames in flight (and the cache they extend).
    Without a cache the keys are the frames in flight; with one, the cache's slots."""

    positions: torch.Tensor  # [T] absolute frame indices of the frames in x
    band: torch.Tensor  # bool [T,P]: which keys each frame sees (see band_mask)
    plain_causal: bool  # band is the plain causal mask (no cache, T <= window): use is_causal
    # cross-attention reads the per-frame context in frame order (cached frames first)
    context_positions: torch.Tensor  # [P']
    context_band: torch.Tensor  # bool [T,P']
    cache: KVCache | None = None


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
    ) -> torch.Tensor:
        """x [B,T,S,D]; cond [B,T,D] per-frame modulation input; context [B,P',D] per-frame
        cross-attention keys (frames at temporal.context_positions) -> [B,T,S,D]. With a cache,
        this layer's temporal keys/values of the new frames are stored into it."""
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
                temporal.context_positions,
                temporal.context_band.repeat_interleave(s, dim=0),  # [T*S,P']
            ).view(b, t, s, d)
        h = self.norm_temporal(x)
        if self.modulation is not None:
            assert cond is not None
            shift_t, scale_t, shift_m, scale_m = self.modulation(cond)[:, :, None].chunk(4, dim=-1)
            h = modulate(h, shift_t, scale_t)  # [B,T,S,D], per-frame shift/scale
        h = h.permute(0, 2, 1, 3).reshape(b * s, t, d)  # [B*S,T,D]
        out = self.temporal(
            h,
            positions=temporal.positions,
            cache=temporal.cache.layer(layer) if temporal.cache is not None else None,
            attn_mask=None if temporal.plain_causal else temporal.band,
            is_causal=temporal.plain_causal,
        )
        x = x + out.view(b, s, t, d).permute(0, 2, 1, 3)  # [B,T,S,D]
        h = self.norm_mlp(x)
        if self.modulation is not None:
            h = modulate(h, shift_m, scale_m)
        return x + self.mlp(h)


EMPTY_SLOT = -(2**62)  # frame index of an unused cache slot: further back than any window


class KVCache:
    """Temporal keys/values of the frames committed during a rollout, per layer, in a ring of
    preallocated slots (frame p lives in slot p % capacity), plus the per-frame context
    (action embeddings) cross-attention reads.

    A trunk call `begin`s by placing its T frames in flight in their slots; each layer
    `store`s their keys/values there and attends over all slots, the band mask (from
    `slot_positions`) choosing what each query sees; `end` keeps the committed frames and
    frees the slots of the frames that were queries only. Nothing is copied or concatenated
    per call beyond the new frames' keys/values (re-concatenating the cache in every layer was
    ~12% of a rollout's CPU time). The ring holds window - 1 committed frames plus the frames
    in flight, so it never overwrites a key a query in flight or a later call may still see."""

    def __init__(self, window: int, layers: int, in_flight: int = 2):
        self.window = window
        self.capacity = window - 1 + in_flight
        self.keys: list[torch.Tensor | None] = [None] * layers  # [N,H,capacity,E]
        self.values: list[torch.Tensor | None] = [None] * layers
        self.slot_positions = torch.full((self.capacity,), EMPTY_SLOT, dtype=torch.long)
        self.context: torch.Tensor | None = None  # [B,P,D], frame order
        self.next_position = 0  # absolute frame index of the next frame
        self._slots: torch.Tensor | None = None  # [T] slots of the frames in flight

    @property
    def frames(self) -> int:
        """Committed frames held (at most window - 1)."""
        return min(self.next_position, self.window - 1)

    def begin(self, frames: int, device: torch.device) -> torch.Tensor:
        """Place `frames` new frames (from next_position on) in their slots -> the frame index
        each slot's key holds during this call, [capacity]."""
        if frames > self.capacity - (self.window - 1):
            self._grow(self.window - 1 + frames)
        self.slot_positions = self.slot_positions.to(device)
        positions = torch.arange(self.next_position, self.next_position + frames, device=device)
        self._slots = positions % self.capacity
        self.slot_positions[self._slots] = positions
        return self.slot_positions

    def layer(self, index: int) -> LayerCache:
        assert self._slots is not None, "begin() a call before reading the cache"
        first = self.next_position % self.capacity
        frames = len(self._slots)
        runs = [(first, min(first + frames, self.capacity))]
        if first + frames > self.capacity:  # wraps around the ring
            runs.append((0, first + frames - self.capacity))
        return LayerCache(self, index, runs)

    def end(self, commit: int, context: torch.Tensor | None) -> None:
        """Keep the first `commit` frames in flight; free the slots of the rest (queries)."""
        assert self._slots is not None
        self.slot_positions[self._slots[commit:]] = EMPTY_SLOT
        if context is not None:
            self.context = context[:, -(self.window - 1) :]
        self.next_position += commit
        # frames that slid out of the window: their slots are free (the band hides them anyway)
        self.slot_positions[self.slot_positions < self.next_position - (self.window - 1)] = (
            EMPTY_SLOT
        )
        self._slots = None

    def held(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The committed frames of `layer` in frame order: (positions [F], keys, values
        [N,H,F,E])."""
        positions, order = self.slot_positions.sort()
        used = order[positions != EMPTY_SLOT]
        keys, values = self.keys[layer], self.values[layer]
        assert keys is not None and values is not None, f"layer {layer} holds nothing yet"
        return self.slot_positions[used], keys[:, :, used], values[:, :, used]

    def _grow(self, capacity: int) -> None:
        """Re-lay the committed frames into a ring of `capacity` slots (a long first call)."""
        held = (self.slot_positions != EMPTY_SLOT).nonzero()[:, 0]  # [F] old slots in use
        positions = self.slot_positions[held]
        new_slots = positions % capacity
        for store in (self.keys, self.values):
            for i, buffer in enumerate(store):
                if buffer is not None:
                    grown = buffer.new_zeros((*buffer.shape[:2], capacity, buffer.shape[3]))
                    grown[:, :, new_slots] = buffer[:, :, held]
                    store[i] = grown
        self.slot_positions = torch.full(
            (capacity,), EMPTY_SLOT, dtype=torch.long, device=self.slot_positions.device
        )
        self.slot_positions[new_slots] = positions
        self.capacity = capacity


@dataclass
class LayerCache:
    """One layer's view of a KVCache during one trunk call."""

    cache: KVCache
    index: int
    runs: list[tuple[int, int]]  # slot ranges [start, stop) of the frames in flight, in order

    def store(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New frames' k, v [N,H,T,E] into their slots -> every slot's keys, values
        [N,H,capacity,E] (unused slots are masked out by the band)."""
        cache, i = self.cache, self.index
        if cache.keys[i] is None:
            shape = (*k.shape[:2], cache.capacity, k.shape[3])
            cache.keys[i], cache.values[i] = k.new_zeros(shape), v.new_zeros(shape)
        # the frames in flight take consecutive slots, wrapping at most once: slice copies
        # (index_copy_ along dim 2 was 40x slower per call on CPU)
        done = 0
        for start, stop in self.runs:
            cache.keys[i][:, :, start:stop] = k[:, :, done : done + stop - start]
            cache.values[i][:, :, start:stop] = v[:, :, done : done + stop - start]
            done += stop - start
        return cache.keys[i], cache.values[i]
