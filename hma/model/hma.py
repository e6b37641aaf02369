"""HMA: heterogeneous masked autoregression over video tokens and per-frame actions.

    B batch, T frames, S = h*w video tokens per frame, S' = S + action tokens, D width,
    C soft channels, K vocab, A_max widest flattened action chunk, P_max widest state

Frame t's input is its video tokens (embedded codes or projected soft latents, masked ones
replaced by a learned mask token, plus a learned spatial position) and its action embedding
(the dataset's stem; a learned mask embedding where the action is to be predicted, a learned
null embedding in passive mode), combined as the conditioning variant says. The trunk is a
stack of spatial-temporal blocks; temporal positions are rotary (see blocks.py). Nothing of
frame t+1 (tokens or actions) reaches the outputs of frames <= t.

Proprioceptive state (beyond the paper, for datasets in config.states): frame t's state is
embedded by its dataset's state stem and added to each of frame t's video tokens. It is an
observation of frame t, so it is hidden (a learned mask embedding) exactly when any of frame
t's video tokens is: a frame being generated has unknown state until its video is complete.
A state head reads the mean of the frame's video features and predicts the frame's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hma.model.batch import Batch
from hma.model.blocks import KVCache, SpatialTemporalBlock, TemporalContext, band_mask
from hma.model.conditioning import compose, readout, spec_of
from hma.model.config import ModelConfig
from hma.model.embodiment import Embodiments, widths_mask
from hma.model.heads import build_head
from hma.model.masking import Masks, check_mode, sample_masks

INIT_STD = 0.02  # GPT-2 / nanoGPT initialisation of linear and embedding weights


@dataclass
class Output:
    video: torch.Tensor  # [B,T,S,D] trunk features at the video tokens (video head input)
    action: torch.Tensor  # [B,T,A_max] predicted normalised action chunks (zero-padded)
    state: torch.Tensor | None = None  # [B,T,P_max] predicted normalised state (with states)

    def frames(self, first: int) -> Output:
        """The outputs of frames first.. only."""
        state = None if self.state is None else self.state[:, first:]
        return Output(self.video[:, first:], self.action[:, first:], state)


def hidden_state(
    video_mask: torch.Tensor | None, shape: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """bool [B,T]: frames whose state is unknown, those with any masked video token."""
    if video_mask is None:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    return video_mask.any(dim=-1)


def masked_mse(
    predicted: torch.Tensor, target: torch.Tensor, frames: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean squared error of [B,T,W] over the frames (bool [B,T]) and columns (bool [B,W]) that
    count; a zero in the graph when none does."""
    weight = (frames[:, :, None] & valid[:, None, :]).to(predicted.dtype)  # [B,T,W]
    squared = (predicted - target.to(predicted.dtype)) ** 2
    return (squared * weight).sum() / weight.sum().clamp(min=1)


class HMA(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.spec = spec_of(config.conditioning)
        d, s = config.d_model, config.tokens_per_frame
        if config.token_kind == "vq":
            self.token_embed: nn.Module = nn.Embedding(config.vocab_size, d)
        else:
            self.token_embed = nn.Linear(config.latent_channels, d)
        self.video_mask_token = nn.Parameter(torch.zeros(d))
        self.spatial_pos = nn.Parameter(torch.zeros(s, d))
        self.action_pos = nn.Parameter(torch.zeros(self.spec.tokens, d))
        self.action_mask_token = nn.Parameter(torch.zeros(d))
        self.action_null_token = nn.Parameter(torch.zeros(d))
        self.embodiments = Embodiments(config.datasets, d, config.stem_hidden)
        self.states = Embodiments(config.states, d, config.stem_hidden, kind="state")
        # Only models with state have the parameter, so older checkpoints load unchanged.
        self.state_mask_token = nn.Parameter(torch.zeros(d)) if config.states else None
        self.blocks = nn.ModuleList(
            SpatialTemporalBlock(
                d,
                config.heads,
                config.mlp_ratio,
                config.rope_base,
                modulated=self.spec.modulate,
                cross_attention=self.spec.cross_attention,
            )
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(d)
        self._init_trunk()
        self.video_head = build_head(config)  # initialises itself

    def _init_trunk(self) -> None:
        for module in [self.token_embed, self.embodiments, self.states, self.blocks]:
            for m in module.modules():
                if isinstance(m, nn.Linear | nn.Embedding):
                    nn.init.normal_(m.weight, std=INIT_STD)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
        for p in [self.video_mask_token, self.spatial_pos, self.action_pos]:
            nn.init.normal_(p, std=INIT_STD)
        for p in [self.action_mask_token, self.action_null_token, self.state_mask_token]:
            if p is not None:
                nn.init.normal_(p, std=INIT_STD)
        for block in self.blocks:
            if block.modulation is not None:  # adaLN-zero: blocks start unmodulated
                nn.init.zeros_(block.modulation[1].weight)
                nn.init.zeros_(block.modulation[1].bias)

    # ----------------------------------------------------------------------------- shapes

    @property
    def action_width(self) -> int:
        return self.embodiments.action_width

    def flatten_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """vq [B,T,h,w] -> [B,T,S]; soft [B,T,C,h,w] -> [B,T,S,C]; checks the grid."""
        h, w = self.config.grid
        if self.config.token_kind == "vq":
            if tokens.dim() != 4 or tuple(tokens.shape[2:]) != (h, w):
                raise ValueError(f"vq tokens must be [B,T,{h},{w}], got {list(tokens.shape)}")
            return tokens.flatten(2)  # [B,T,S]
        c = self.config.latent_channels
        if tokens.dim() != 5 or tuple(tokens.shape[2:]) != (c, h, w):
            raise ValueError(f"soft tokens must be [B,T,{c},{h},{w}], got {list(tokens.shape)}")
        return tokens.flatten(3).transpose(2, 3)  # [B,T,S,C]

    def unflatten_tokens(self, flat: torch.Tensor) -> torch.Tensor:
        """Inverse of flatten_tokens: [B,T,S] or [B,T,S,C] -> the grid layout."""
        h, w = self.config.grid
        if self.config.token_kind == "vq":
            return flat.unflatten(2, (h, w))  # [B,T,h,w]
        return flat.transpose(2, 3).unflatten(3, (h, w))  # [B,T,C,h,w]

    # ----------------------------------------------------------------------------- forward

    def embed_video(self, flat: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Flat tokens [B,T,S(,C)] and mask bool [B,T,S] -> [B,T,S,D]."""
        if self.config.token_kind == "vq":
            if flat.numel() and (flat.min() < 0 or flat.max() >= self.config.vocab_size):
                raise ValueError(f"vq token out of range 0..{self.config.vocab_size - 1}")
            x = self.token_embed(flat)
        else:
            x = self.token_embed(flat.to(self.spatial_pos.dtype))
        if mask is not None:
            x = torch.where(mask[..., None], self.video_mask_token.to(x.dtype), x)
        return x + self.spatial_pos

    def embed_actions(
        self,
        actions: torch.Tensor,
        datasets: Sequence[str],
        mask: torch.Tensor | None,
        null: bool,
    ) -> torch.Tensor:
        """Normalised actions [B,T,A_max] -> [B,T,D]; masked frames (bool [B,T]) take the mask
        embedding, and every frame the null embedding when `null` (passive mode)."""
        b, t = actions.shape[:2]
        if null:
            return self.action_null_token.expand(b, t, -1)
        e = self.embodiments.embed(actions.to(self.spatial_pos.dtype), datasets)
        if mask is not None:
            e = torch.where(mask[..., None], self.action_mask_token.to(e.dtype), e)
        return e

    def _state_rows(self, datasets: Sequence[str]) -> list[int]:
        return [i for i, name in enumerate(datasets) if name in self.config.states]

    def embed_state(
        self,
        state: torch.Tensor | None,
        datasets: Sequence[str],
        mask: torch.Tensor,
    ) -> torch.Tensor | None:
        """Normalised state [B,T,P_max] (None: unknown everywhere) -> [B,T,D], zero on rows of
        datasets without state; frames where mask (bool [B,T]) is True take the mask embedding.
        None when no row has state."""
        rows = self._state_rows(datasets)
        if not rows or self.state_mask_token is None:
            return None
        b, t = mask.shape
        dtype = self.spatial_pos.dtype
        if state is None:
            state = torch.zeros(b, t, self.config.state_width, dtype=dtype, device=mask.device)
            mask = torch.ones_like(mask)
        out = torch.zeros(b, t, self.config.d_model, dtype=dtype, device=mask.device)
        index = torch.tensor(rows, device=mask.device)
        embedded = self.states.embed(state[index].to(dtype), [datasets[i] for i in rows])
        hidden = mask[index][..., None]  # [R,T,1]
        out[index] = torch.where(hidden, self.state_mask_token.to(dtype), embedded)
        return out

    def predict_state(self, video: torch.Tensor, datasets: Sequence[str]) -> torch.Tensor | None:
        """Video features [B,T,S,D] -> normalised state [B,T,P_max] (zero on rows without
        state); None when no row has state."""
        rows = self._state_rows(datasets)
        if not rows:
            return None
        b, t = video.shape[:2]
        out = video.new_zeros((b, t, self.config.state_width))
        index = torch.tensor(rows, device=video.device)
        pooled = video[index].mean(dim=2)  # [R,T,D]
        names = [datasets[i] for i in rows]
        out[index] = self.states.predict(pooled, names, self.config.state_width)
        return out

    def trunk(
        self,
        x: torch.Tensor,
        action: torch.Tensor,
        cache: KVCache | None = None,
        append: bool | int = False,
    ) -> torch.Tensor:
        """x [B,T,S',D], per-frame action embeddings [B,T,D] -> features [B,T,S',D]. With a
        cache, x holds the frames after the cached ones; `append` commits them to the cache:
        True all T frames, an int the first that many (the later frames are queries only;
        attention is causal in time, so the committed frames' keys/values do not see them)."""
        t = x.shape[1]
        commit = t if append is True else int(append)
        if not 0 <= commit <= t:
            raise ValueError(f"append must be a bool or 0..{t} frames, got {append}")
        temporal = self._temporal_context(t, cache, x.device)
        context = None
        if self.spec.cross_attention:
            context = action
            if cache is not None and cache.context is not None:
                context = torch.cat((cache.context, action), dim=1)  # [B,P'+T,D]
        cond = action if self.spec.modulate else None
        for i, block in enumerate(self.blocks):
            x = block(x, temporal, i, cond=cond, context=context)
        if cache is not None:
            if context is not None:
                context = context[:, : context.shape[1] - (t - commit)]  # [B,P'+c,D]
            cache.end(commit, context)
        return self.norm(x)

    def _temporal_context(
        self, t: int, cache: KVCache | None, device: torch.device
    ) -> TemporalContext:
        """Positions and masks of T frames in flight: frames 0..T-1 without a cache; with one,
        the frames after the cached ones, whose keys are the cache's slots."""
        window = self.config.window
        first = cache.next_position if cache is not None else 0
        positions = torch.arange(first, first + t, device=device)  # [T]
        past_frames = cache.frames if cache is not None else 0
        context_positions = torch.arange(first - past_frames, first + t, device=device)  # [P'+T]
        context_band = band_mask(positions, context_positions, window)
        band = context_band  # no cache: the keys are the frames in flight
        if cache is not None:
            band = band_mask(positions, cache.begin(t, device), window)  # keys: the cache's slots
        return TemporalContext(
            positions=positions,
            band=band,
            plain_causal=cache is None and t <= window,
            context_positions=context_positions,
            context_band=context_band,
            cache=cache,
        )

    def forward(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        datasets: Sequence[str],
        video_mask: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
        null_actions: bool = False,
        cache: KVCache | None = None,
        append: bool | int = False,
        state: torch.Tensor | None = None,
        state_mask: torch.Tensor | None = None,
    ) -> Output:
        """tokens [B,T,h,w] | [B,T,C,h,w], actions [B,T,A_max], masks bool [B,T,S] / [B,T],
        state [B,T,P_max] (None: unknown). The state of frames with any masked video token is
        hidden; `state_mask` (bool [B,T]) hides more (frames whose state is not known).
        `append` (with a cache): True commits every frame, an int the first that many."""
        flat = self.flatten_tokens(tokens)
        if actions.shape[:2] != tokens.shape[:2]:
            raise ValueError(
                f"actions {list(actions.shape)} do not match tokens {list(tokens.shape)} in [B,T]"
            )
        video = self.embed_video(flat, video_mask)
        hidden = hidden_state(video_mask, flat.shape[:2], flat.device)
        if state_mask is not None:
            hidden = hidden | state_mask
        proprio = self.embed_state(state, datasets, hidden)
        if proprio is not None:
            video = video + proprio[:, :, None]  # on every video token of the frame
        action = self.embed_actions(actions, datasets, action_mask, null_actions)
        x = compose(video, action, self.spec, self.action_pos)  # [B,T,S',D]
        out = self.trunk(x, action, cache, append)
        s = self.config.tokens_per_frame
        if null_actions:  # passive mode: no action space to predict in
            predicted = torch.zeros_like(actions, dtype=out.dtype)
        else:
            predicted = self.embodiments.predict(
                readout(out, self.spec, s), datasets, max(actions.shape[-1], self.action_width)
            )[..., : actions.shape[-1]]
        video_out = out[:, :, :s]
        return Output(video_out, predicted, self.predict_state(video_out, datasets))

    def new_cache(self) -> KVCache:
        return KVCache(window=self.config.window, layers=len(self.blocks))

    # ----------------------------------------------------------------------------- training

    def loss(
        self,
        batch: Batch,
        mode: str = "forward",
        generator: torch.Generator | None = None,
        masks: Masks | None = None,
    ) -> dict[str, torch.Tensor]:
        """Masked-autoregression losses {"video", "action", "total"} for `mode` (masking.py)."""
        check_mode(mode)
        flat = self.flatten_tokens(batch.tokens)
        b, t, s = flat.shape[:3]
        if masks is None:
            masks = sample_masks(
                mode, b, t, s, self.config.masking, batch.tokens.device, generator=generator
            )
        out = self(
            batch.tokens,
            batch.actions,
            batch.datasets,
            video_mask=masks.video,
            action_mask=masks.action,
            null_actions=masks.null_actions,
            state=batch.state,
        )
        return self.losses(batch, out, masks)

    def losses(self, batch: Batch, out: Output, masks: Masks) -> dict[str, torch.Tensor]:
        """The losses of `out`, this model's output for `batch` under `masks` (see `loss`):
        {"video", "action", "state", "total"}; the state loss is zero without state."""
        flat = self.flatten_tokens(batch.tokens)
        video = self.video_head.loss(
            flat.flatten(0, 1),  # [B*T,S(,C)]
            out.video.flatten(0, 1),  # [B*T,S,D]
            masks.video.flatten(0, 1),  # [B*T,S]
        )
        valid = self.embodiments.valid(batch.datasets, batch.actions.shape[-1], flat.device)
        action = masked_mse(out.action, batch.actions, masks.action, valid)
        state = video * 0.0  # a zero in the graph
        if out.state is not None and batch.state is not None:
            widths = [self.config.states.get(d, 0) for d in batch.datasets]
            valid = widths_mask(widths, out.state.shape[-1], flat.device)  # [B,P_max]
            hidden = hidden_state(masks.video, flat.shape[:2], flat.device)  # [B,T]
            state = masked_mse(out.state, batch.state, hidden, valid)
        total = (
            video + self.config.action_loss_weight * action + self.config.state_loss_weight * state
        )
        return {"video": video, "action": action, "state": state, "total": total}

    # ----------------------------------------------------------------------------- heterogeneity

    def add_dataset(self, name: str, width: int, state_width: int = 0) -> None:
        """Give dataset `name` (flat action width `width`, state width `state_width`, 0: none)
        new stems and heads; nothing else."""
        datasets = {**self.config.datasets, name: width}
        states = {**self.config.states, **({name: state_width} if state_width else {})}
        data = {**self.config.model_dump(), "datasets": datasets, "states": states}
        config = ModelConfig(**data)
        param = self.spatial_pos
        groups = [self.embodiments]
        self.embodiments.add(name, width)
        if state_width:
            self.states.add(name, state_width)
            groups.append(self.states)
            if self.state_mask_token is None:
                self.state_mask_token = nn.Parameter(torch.empty_like(param[0]))
                nn.init.normal_(self.state_mask_token, std=INIT_STD)
        for group in groups:
            for part in (group.stems[name], group.heads[name]):
                part.to(device=param.device, dtype=param.dtype)
                for m in part.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.normal_(m.weight, std=INIT_STD)
                        nn.init.zeros_(m.bias)
        self.config = config

    def freeze_trunk(self) -> None:
        """Train only the action and state stems and heads (adapting to a new embodiment)."""
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith(("embodiments.", "states.", "state_mask_token")))

    def rollout(self, *args, **kwargs):
        """See hma.model.sampling.rollout."""
        from hma.model.sampling import rollout

        return rollout(self, *args, **kwargs)
