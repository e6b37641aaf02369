"""Rollouts: frame-by-frame masked autoregressive generation with a KV cache.

    B batch, T0 prompt frames, H new frames, N = T0 + H, S video tokens per frame, D width,
    C soft channels, A_max widest flattened action chunk, P_max widest state

Each new frame starts fully masked and is filled in `steps` passes (MaskGIT, Chang et al.
2022): a pass samples every still-masked token from the video head and commits the most
confident ones so that cos(pi/2 * k/steps) of the frame stays masked after pass k; committed
tokens are never re-sampled. In policy/full mode the frame's action chunk is then predicted by
one more pass (video given, action masked). A model with proprioceptive state predicts each
new frame's state in the frame's last pass (the state is unknown while any token is masked)
and feeds it, as known, to the later frames.

KV cache: only the frames in flight run through the trunk. Spatial attention stays within
the new frame; temporal attention reads the cached keys/values of earlier frames. A finished
frame is committed to the cache (its final tokens and action) in the same trunk call as the
first pass of the next frame: the two frames run together, causal in time, and only the
finished one's keys/values are appended. A new frame thus costs `steps` trunk calls, not
steps + 1, with results equal to a separate commit pass (the finished frame never sees the
next one). The arithmetic is the same either way; what is saved is one call's fixed cost
(dispatch through every layer), which dominates at small batch. Temporal positions are
rotary, so cached keys stay valid when the sliding window (config.window frames) drops the
oldest frame; the cache never holds more than window - 1 frames, so the cost per frame is
flat in the horizon. `use_cache=False` recomputes the trunk over every frame so far with the
same banded causal mask: the reference the cached path must equal (and, within the window,
exactly the training forward pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hma.model.masking import check_mode

if TYPE_CHECKING:
    from hma.model.hma import HMA, Output
    from hma.stats import ActionStats


@dataclass
class RolloutResult:
    tokens: torch.Tensor  # [B,N,h,w] vq | [B,N,C,h,w] soft: prompt then generated frames
    actions: torch.Tensor  # float [B,N,A_max] normalised chunks, given or predicted
    raw_actions: list[torch.Tensor] | None = None  # per row [N,stride,A] in raw units, with stats
    state: torch.Tensor | None = None  # [B,N,P_max] normalised: prompt's (given) then predicted


def unmasked_after(step: int, steps: int, tokens: int) -> int:
    """Tokens still masked after pass `step` (0-based) of `steps`: cosine schedule (MaskGIT)."""
    if step + 1 >= steps:
        return 0
    return math.floor(tokens * math.cos(math.pi / 2 * (step + 1) / steps))


def _frame_actions(
    actions: torch.Tensor | None, batch: int, prompt: int, horizon: int, width: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chunks [B,N,A_max], known bool [N]). `actions` covers every frame ([B,N,A]) or only
    the H chunks that drive the new frames ([B,H,A]: frames T0-1 .. N-2)."""
    n = prompt + horizon
    chunks = torch.zeros(batch, n, width, device=device)
    known = torch.zeros(n, dtype=torch.bool, device=device)
    if actions is None:
        return chunks, known
    if actions.dim() != 3 or actions.shape[0] != batch or actions.shape[2] != width:
        raise ValueError(f"actions must be [{batch}, N or H, {width}], got {list(actions.shape)}")
    if actions.shape[1] == n:
        chunks[:], known[:] = actions, True
    elif actions.shape[1] == horizon:
        chunks[:, prompt - 1 : n - 1], known[prompt - 1 : n - 1] = actions, True
    else:
        raise ValueError(
            f"actions cover {actions.shape[1]} frames; need all {n} (prompt + horizon) or the "
            f"{horizon} that drive the new frames"
        )
    return chunks, known


def _frame_states(
    model: HMA, prompt_state: torch.Tensor | None, batch: int, prompt: int, horizon: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(states [B,N,P_max], known bool [N]): the prompt's state where given, zeros elsewhere."""
    width = model.config.state_width
    states = torch.zeros(batch, prompt + horizon, width, device=device)
    known = torch.zeros(prompt + horizon, dtype=torch.bool, device=device)
    if prompt_state is None:
        return states, known
    if tuple(prompt_state.shape) != (batch, prompt, width):
        raise ValueError(
            f"prompt_state must be [{batch}, {prompt}, {width}], got {list(prompt_state.shape)}"
        )
    states[:, :prompt], known[:prompt] = prompt_state, True
    return states, known


@torch.no_grad()
def rollout(
    model: HMA,
    prompt_tokens: torch.Tensor,
    actions: torch.Tensor | None = None,
    datasets: Sequence[str] | None = None,
    horizon: int = 1,
    mode: str = "forward",
    steps: int = 2,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    stats: Mapping[str, ActionStats] | None = None,
    use_cache: bool = True,
    prompt_state: torch.Tensor | None = None,
) -> RolloutResult:
    """Generate `horizon` frames after `prompt_tokens` ([B,T0,h,w] | [B,T0,C,h,w]).
    `prompt_state` ([B,T0,P_max] normalised) is the prompt frames' state for a model with
    state; without it their state counts as unknown.

    forward: actions required; passive: none; policy: horizon 0, predicts the prompt frames'
    missing actions from the video; full: predicts video and every missing action."""
    check_mode(mode)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}")
    if mode == "policy" and horizon:
        raise ValueError("policy mode predicts actions for given video: use horizon 0 (or full)")
    if mode == "passive" and actions is not None:
        raise ValueError("passive mode takes no actions")
    if mode == "forward" and actions is None:
        raise ValueError("forward mode needs actions (or use passive/full mode)")
    if top_k is not None and model.config.head != "maskgit":
        raise ValueError("top_k applies to the maskgit head only")
    flat_prompt = model.flatten_tokens(prompt_tokens)
    b, t0, s = flat_prompt.shape[:3]
    if t0 < 1:
        raise ValueError("rollout needs at least one prompt frame")
    if datasets is None:
        if len(model.config.datasets) != 1 and mode != "passive":
            raise ValueError("pass `datasets` (one name per row): the model has several")
        datasets = [next(iter(model.config.datasets), "")] * b
    datasets = list(datasets)
    n = t0 + horizon
    device = prompt_tokens.device
    chunks, known = _frame_actions(actions, b, t0, horizon, model.action_width, device)
    flat = flat_prompt.new_zeros((b, n, *flat_prompt.shape[2:]))
    flat[:, :t0] = flat_prompt
    predict_actions = mode in ("policy", "full")
    states, state_known = _frame_states(model, prompt_state, b, t0, horizon, device)
    null = mode == "passive"
    cache = model.new_cache() if use_cache else None
    sample_kwargs: dict[str, Any] = {} if top_k is None else {"top_k": top_k}

    committed = 0  # frames before this are in the cache (cached path)

    def run(first: int, last: int, video_mask: torch.Tensor | None, append: bool) -> Output:
        """Trunk outputs for frames first..last-1 (video_mask [B,last-first,S]). Cached: the
        finished frames committed..first-1 ride along in the same call and are committed to
        the cache (causal in time: the later frames do not change them); uncached: every
        frame from 0 is recomputed."""
        nonlocal committed
        start = committed if cache is not None else 0
        vm = None
        if video_mask is not None:
            vm = torch.zeros(b, last - start, s, dtype=torch.bool, device=device)
            vm[:, first - start :] = video_mask
        out = model(
            model.unflatten_tokens(flat[:, start:last]),
            chunks[:, start:last],
            datasets,
            video_mask=vm,
            action_mask=(~known[start:last])[None].expand(b, -1),
            null_actions=null,
            cache=cache,
            append=(last if append else first) - start if cache is not None else False,
            state=states[:, start:last],
            state_mask=(~state_known[start:last])[None].expand(b, -1),
        )
        if cache is not None:
            committed = last if append else first
        return out.frames(first - start)

    for t in range(n):
        needs_video, needs_action = t >= t0, predict_actions and not bool(known[t])
        if needs_video:
            flat[:, t], state = generate_frame(
                model, run, t, b, s, steps, temperature, generator, sample_kwargs, flat[:, t]
            )
            if state is not None:
                states[:, t], state_known[t] = state, True
        if needs_action:
            chunks[:, t] = run(t, t + 1, None, append=False).action[:, 0]
            known[t] = True
    return RolloutResult(
        tokens=model.unflatten_tokens(flat),
        actions=chunks,
        raw_actions=None if stats is None else raw_chunks(model, chunks, datasets, stats),
        state=states if model.config.states else None,
    )


def generate_frame(
    model: HMA,
    run: Callable[..., Output],
    t: int,
    b: int,
    s: int,
    steps: int,
    temperature: float,
    generator: torch.Generator | None,
    sample_kwargs: dict[str, Any],
    values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fill frame t's tokens [B,S(,C)] in `steps` passes; committed tokens stay fixed. Returns
    them and the frame's state [B,P_max] predicted in the last pass (None without state)."""
    mask = torch.ones(b, s, dtype=torch.bool, device=values.device)
    values = values.clone()
    rows = torch.arange(b, device=values.device)[:, None]
    state = None
    for step in range(steps):
        out = run(t, t + 1, mask[:, None], append=False)
        cond = out.video[:, 0]  # [B,S,D]
        state = None if out.state is None else out.state[:, 0]  # [B,P_max]
        masked = mask.nonzero()[:, 1].view(b, -1)  # [B,M], same M for every row
        sampled, confidence = model.video_head.sample(
            cond[rows, masked], temperature, generator, **sample_kwargs
        )  # [B,M(,C)], [B,M]
        commit = masked.shape[1] - unmasked_after(step, steps, s)
        chosen = confidence.topk(max(commit, 1), dim=1).indices  # [B,n]
        positions = masked.gather(1, chosen)  # [B,n]
        values[rows, positions] = sampled[rows, chosen].to(values.dtype)
        mask[rows, positions] = False
    assert not mask.any()
    return values, state


def raw_chunks(
    model: HMA,
    chunks: torch.Tensor,
    datasets: Sequence[str],
    stats: Mapping[str, ActionStats],
) -> list[torch.Tensor]:
    """Normalised chunks [B,N,A_max] -> per row raw actions [N,stride,A] (dataset statistics)."""
    out = []
    for row, name in enumerate(datasets):
        if name not in stats:
            raise ValueError(f"no action statistics for dataset {name!r} (have {sorted(stats)})")
        st = stats[name]
        width, dim = model.embodiments.widths[name], int(np.asarray(st.mean).shape[0])
        if width % dim:
            raise ValueError(f"dataset {name!r}: action width {width} is not a multiple of {dim}")
        normalised = chunks[row, :, :width].reshape(chunks.shape[1], width // dim, dim)
        raw = st.denormalise(normalised.detach().cpu().double().numpy())  # [N,stride,A]
        out.append(torch.as_tensor(raw, dtype=torch.float32))
    return out
