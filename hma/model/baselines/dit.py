"""An IRASim-like video diffusion transformer: the baseline HMA's speed is compared against.

    B batch, T frames of one clip (1 given + T-1 predicted), S = h*w latent tokens per frame,
    C soft latent channels, D width, A action width

Follows IRASim (Zhu et al. 2024, "IRASim: Learning Interactive Real-Robot Action Simulators"),
its "Frame-Ada" variant: a DiT (Peebles & Xie 2023) over a whole clip of soft latents with
alternating spatial (within a frame) and temporal (across the clip, bidirectional) blocks in the
style of Latte, each an adaLN-Zero block whose shift/scale/gate come from that frame's timestep
embedding plus that frame's action embedding. The clip's first frame is given (kept clean, noise
level 0) and the other T-1 frames are denoised jointly, so EVERY denoising step runs the whole
transformer over the whole clip; that is the cost HMA's per-frame masked autoregression avoids.

Differences from IRASim, stated: one latent token per grid cell (IRASim patchifies 2x2); rotary
temporal positions (blocks.Attention) instead of a sinusoidal table; sampling with `sample_steps`
deterministic DDIM steps (default 50, the step count of IRASim's PNDM sampler: each step is one
transformer pass either way) on the cosine schedule of the HMA diffusion head. Longer videos
chain clips, each conditioned on the previous clip's last frame, as IRASim does.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import nn

from hma.config import StrictModel
from hma.model.blocks import MLP, Attention, modulate
from hma.model.heads.diffusion import (
    TimestepEmbedder,
    cosine_alphas_cumprod,
    ddim_step,
    ddim_timesteps,
)

INIT_STD = 0.02  # position embeddings, as in DiT / GPT-2
MIN_WIDTH = 8


class DiTConfig(StrictModel):
    """The baseline's size, clip and noise schedule."""

    latent_channels: int = Field(8, ge=1, description="C, channels of one soft token")
    grid: tuple[int, int] = Field((16, 16), description="(h, w) latent grid of one frame")
    clip_frames: int = Field(16, ge=2, description="T: 1 given frame + T-1 predicted jointly")
    action_width: int = Field(7, ge=1, description="A, flattened action chunk per frame")
    d_model: int = Field(256, ge=MIN_WIDTH)
    layers: int = Field(32, ge=1, description="spatial+temporal block pairs")
    heads: int = Field(8, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    rope_base: float = Field(10_000.0, gt=1, description="rotary base of the temporal positions")
    train_steps: int = Field(1000, ge=2, description="diffusion steps of the cosine schedule")
    sample_steps: int = Field(50, ge=1, description="DDIM steps = full transformer passes")
    cosine_offset: float = Field(0.008, gt=0, description="s of Nichol & Dhariwal's schedule")
    max_beta: float = Field(0.999, gt=0, lt=1)
    clip_denoised: float | None = Field(
        5.0, gt=0, description="clamp of the predicted clean latent (see heads.diffusion)"
    )
    timestep_freqs: int = Field(256, ge=2)
    max_period: float = Field(10_000.0, gt=1)

    @model_validator(mode="after")
    def _consistent(self) -> DiTConfig:
        if self.d_model % self.heads or (self.d_model // self.heads) % 2:
            raise ValueError(
                f"d_model {self.d_model} must split into {self.heads} heads of even width"
            )
        if self.sample_steps > self.train_steps:
            raise ValueError(f"sample_steps {self.sample_steps} > train_steps {self.train_steps}")
        return self

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]


class DiTBlock(nn.Module):
    """adaLN-Zero attention + MLP along one axis of [B,T,S,D]; modulation per frame."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, rope_base: float | None):
        super().__init__()
        self.temporal = rope_base is not None
        self.norm_attn = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, rope_base=rope_base)
        self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(dim, mlp_ratio)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [B,T,S,D], c [B,T,D] (frame conditioning), positions [T] -> [B,T,S,D]."""
        b, t, s, d = x.shape
        mods = self.modulation(c)[:, :, None].chunk(6, dim=-1)  # 6 x [B,T,1,D]
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mods
        h = modulate(self.norm_attn(x), shift_a, scale_a)
        if self.temporal:
            rows = h.permute(0, 2, 1, 3).reshape(b * s, t, d)  # [B*S,T,D]
            # no mask: the clip's frames are denoised jointly and see each other both ways
            out = self.attn(rows, positions=positions).view(b, s, t, d).permute(0, 2, 1, 3)
        else:
            out = self.attn(h.reshape(b * t, s, d)).view(b, t, s, d)  # [B*T,S,D] -> [B,T,S,D]
        x = x + gate_a * out
        return x + gate_m * self.mlp(modulate(self.norm_mlp(x), shift_m, scale_m))


class DiT(nn.Module):
    """eps_theta(clip_t, t per frame, actions per frame), with loss, sample and rollout."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        d, c = config.d_model, config.latent_channels
        self.input_proj = nn.Linear(c, d)
        self.spatial_pos = nn.Parameter(torch.zeros(config.tokens_per_frame, d))
        self.time_embed = TimestepEmbedder(d, config.timestep_freqs, config.max_period)
        self.action_embed = nn.Sequential(
            nn.Linear(config.action_width, d), nn.SiLU(), nn.Linear(d, d)
        )
        self.given_frame = nn.Parameter(torch.zeros(d))  # action slot of the clean first frame
        self.blocks = nn.ModuleList()
        for _ in range(config.layers):
            self.blocks.append(DiTBlock(d, config.heads, config.mlp_ratio, None))
            self.blocks.append(DiTBlock(d, config.heads, config.mlp_ratio, config.rope_base))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.output_proj = nn.Linear(d, c)
        alphas_cumprod = cosine_alphas_cumprod(
            config.train_steps, config.cosine_offset, config.max_beta
        )
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.spatial_pos, std=INIT_STD)
        nn.init.normal_(self.given_frame, std=INIT_STD)
        # adaLN-Zero (DiT): every block starts as the identity, the output as zero noise.
        zeroed = [b.modulation[-1] for b in self.blocks]
        for layer in [*zeroed, self.final_modulation[-1], self.output_proj]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # -- shapes --------------------------------------------------------------------------------
    def _flat(self, latents: torch.Tensor) -> torch.Tensor:
        """[B,T,C,h,w] -> [B,T,S,C], checking the grid."""
        c, (h, w) = self.config.latent_channels, self.config.grid
        if latents.ndim != 5 or tuple(latents.shape[2:]) != (c, h, w):
            raise ValueError(f"latents must be [B,T,{c},{h},{w}], got {list(latents.shape)}")
        return latents.flatten(3).transpose(2, 3)  # [B,T,S,C]

    def _grid(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.transpose(2, 3).unflatten(3, self.config.grid)  # [B,T,C,h,w]

    def _check_actions(self, actions: torch.Tensor, b: int, frames: int) -> None:
        expected = (b, frames, self.config.action_width)
        if tuple(actions.shape) != expected:
            raise ValueError(f"actions must be {list(expected)}, got {list(actions.shape)}")

    # -- network -------------------------------------------------------------------------------
    def denoise(self, x: torch.Tensor, t: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Noisy clip [B,T,S,C] (frame 0 clean), timesteps [B,T], actions [B,T-1,A] into frames
        1..T-1 -> predicted noise [B,T,S,C]."""
        b, frames = x.shape[:2]
        acts = self.action_embed(actions.to(x.dtype))  # [B,T-1,D]
        given = self.given_frame.expand(b, 1, -1)  # [B,1,D]
        c = self.time_embed(t.reshape(-1)).view(b, frames, -1) + torch.cat((given, acts), dim=1)
        h = self.input_proj(x) + self.spatial_pos  # [B,T,S,D]
        positions = torch.arange(frames, device=x.device)
        for block in self.blocks:
            h = block(h, c, positions)
        shift, scale = self.final_modulation(c)[:, :, None].chunk(2, dim=-1)  # 2 x [B,T,1,D]
        return self.output_proj(modulate(self.final_norm(h), shift, scale))  # [B,T,S,C]

    def loss(
        self, clip: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Epsilon MSE on frames 1..T-1 of `clip` [B,T,C,h,w] given frame 0 and `actions`
        [B,T-1,A]; one random timestep per clip (the whole clip shares a noise level)."""
        x0 = self._flat(clip).float()  # [B,T,S,C]
        b, frames = x0.shape[:2]
        self._check_actions(actions, b, frames - 1)
        dev = x0.device
        t = torch.randint(0, self.config.train_steps, (b,), device=dev, generator=generator)
        noise = torch.randn(x0[:, 1:].shape, device=dev, generator=generator)
        ab = self.alphas_cumprod[t][:, None, None, None]  # [B,1,1,1]
        noisy = ab.sqrt() * x0[:, 1:] + (1 - ab).sqrt() * noise
        x = torch.cat((x0[:, :1], noisy), dim=1)
        t_frames = torch.cat((torch.zeros_like(t)[:, None], t[:, None].expand(b, frames - 1)), 1)
        eps = self.denoise(x, t_frames, actions)[:, 1:]
        return (eps.float() - noise).pow(2).mean()

    @torch.no_grad()
    def sample(
        self,
        first: torch.Tensor,
        actions: torch.Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Given frame `first` [B,C,h,w] and `actions` [B,T-1,A] -> the clip [B,T,C,h,w].

        T is the trained clip length or shorter (temporal positions are rotary, so a shorter
        clip is the same model on fewer frames: e.g. T = 2, one new frame per denoising run).
        `sample_steps` DDIM steps, each one pass of the whole transformer over the whole clip.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        given = self._flat(first[:, None])  # [B,1,S,C]
        b, frames = given.shape[0], actions.shape[1] + 1 if actions.ndim == 3 else 0
        if not 2 <= frames <= self.config.clip_frames:
            raise ValueError(
                f"actions must be [B, 1..{self.config.clip_frames - 1}, "
                f"{self.config.action_width}], got {list(actions.shape)}"
            )
        self._check_actions(actions, b, frames - 1)
        shape = (b, frames - 1, *given.shape[2:])
        x = torch.randn(shape, generator=generator, device=first.device, dtype=given.dtype)
        x = x * temperature
        steps = ddim_timesteps(self.config.train_steps, self.config.sample_steps)
        one = self.alphas_cumprod.new_ones(())
        zero = torch.zeros((b, 1), dtype=torch.long, device=first.device)
        for i, step in enumerate(steps):
            t = torch.cat((zero, torch.full((b, frames - 1), step, device=first.device)), dim=1)
            eps = self.denoise(torch.cat((given, x), dim=1), t, actions)[:, 1:]
            ab_next = self.alphas_cumprod[steps[i + 1]] if i + 1 < len(steps) else one
            x = ddim_step(x, eps, self.alphas_cumprod[step], ab_next, self.config.clip_denoised)
        return self._grid(torch.cat((given, x), dim=1))  # [B,T,C,h,w]

    @torch.no_grad()
    def rollout(
        self,
        prompt: torch.Tensor,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """prompt [B,T0,C,h,w] and actions [B,H,A] (action i leads into new frame i) ->
        [B,T0+H,C,h,w]: clips of T-1 new frames, each given the last frame so far."""
        self._flat(prompt)
        per_clip = self.config.clip_frames - 1
        horizon = actions.shape[1]
        clips = [prompt]
        last = prompt[:, -1]
        for start in range(0, horizon, per_clip):
            chunk = actions[:, start : start + per_clip]
            pad = per_clip - chunk.shape[1]  # the last clip may be partial: zero actions
            chunk = nn.functional.pad(chunk, (0, 0, 0, pad))
            new = self.sample(last, chunk, temperature, generator)[:, 1 : 1 + per_clip - pad]
            clips.append(new)
            last = new[:, -1]
        return torch.cat(clips, dim=1)


def _linear(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


def parameter_count(config: DiTConfig) -> int:
    """Parameters of DiT(config), by formula (instant at any size; a test checks it against
    the built module, so it cannot drift from the architecture)."""
    d, c, hidden = config.d_model, config.latent_channels, int(config.d_model * config.mlp_ratio)
    block = (
        _linear(d, 3 * d)  # fused qkv
        + _linear(d, d)  # attention output
        + _linear(d, hidden)
        + _linear(hidden, d)  # MLP
        + _linear(d, 6 * d)  # adaLN-Zero shift/scale/gate x 2
    )
    return (
        _linear(c, d)  # input_proj
        + config.tokens_per_frame * d  # spatial_pos
        + _linear(config.timestep_freqs, d)
        + _linear(d, d)  # time_embed
        + _linear(config.action_width, d)
        + _linear(d, d)  # action_embed
        + d  # given_frame
        + 2 * config.layers * block
        + _linear(d, 2 * d)  # final_modulation
        + _linear(d, c)  # output_proj
    )


def _heads_for(width: int, preferred: int) -> int:
    """The most heads <= `preferred` that split `width` into heads of even width (rotary)."""
    return next(h for h in range(min(preferred, width // 2), 0, -1) if width % (2 * h) == 0)


def _closest(base: DiTConfig, depth: int, target: int, step: int) -> tuple[float, DiTConfig]:
    """(relative error, config) of the width, a multiple of `step`, whose count is nearest."""
    width = -(-MIN_WIDTH // step) * step  # smallest multiple of step >= MIN_WIDTH
    best: tuple[float, DiTConfig] | None = None
    while True:
        fields = {"d_model": width, "layers": depth, "heads": _heads_for(width, base.heads)}
        config = DiTConfig(**{**base.model_dump(), **fields})
        count = parameter_count(config)
        error = abs(count - target) / target
        if best is None or error < best[0]:
            best = (error, config)
        if count >= target:  # the count grows with the width: nothing further is closer
            return best
        width += step


def matching_config(target: int, base: DiTConfig, tolerance: float = 0.1) -> DiTConfig:
    """`base` resized so that its parameter count is closest to `target`, within `tolerance`
    (a fraction): a width that keeps base.heads (else any even width, with as many heads as
    divide it) at base.layers, else at the nearest depth where one fits."""
    if target < 1:
        raise ValueError(f"target parameter count must be >= 1, got {target}")
    closest: tuple[float, DiTConfig] | None = None
    for depth in sorted(range(1, 4 * base.layers + 1), key=lambda d: abs(d - base.layers)):
        for step in (2 * base.heads, 2):
            found = _closest(base, depth, target, step)
            if closest is None or found[0] < closest[0]:
                closest = found
            if found[0] <= tolerance:
                return found[1]
    raise ValueError(
        f"no DiT width/depth reaches {target:,} parameters within {tolerance:.0%} "
        f"(closest: {parameter_count(closest[1]):,})"
    )
