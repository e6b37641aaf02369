"""A learned simulator: the world model behind the reset/step interface of the ground-truth envs.

    B parallel episodes, T0 prompt frames, s stride (raw steps per kept frame), A action dim,
    S tokens per frame, h x w the model's frame size, A_max the model's widest action chunk

    obs = sim.reset(prompt)                 prompt: uint8 [B,T0,H,W,3] or B real Episodes
    obs, reward, done, info = sim.step(a)   a: raw actions [B,s,A] (one chunk) or [B,A] (one step)
    obs["image"]: uint8 [B,h,w,3]; reward, done: [B]; info["success"], ["success_prob"]: [B]
    obs["state"]: float32 [B,P] raw proprioception, from a model with state for the dataset once
                  known (the prompt's real state where reset got it, then the model's prediction)

Time. The model moves in kept frames: kept frame f is followed by f+1 after the s raw actions of
its chunk (the token store's layout). A policy acting at the raw control rate calls `step` with
one action [B,A] per raw step: the actions are buffered, the observation holds the last kept
frame (zero-order hold, as synthetic episodes hold each generated frame for s steps), and every
s-th call completes the chunk, which generates the next frame (`info["generated"]` says which
calls did). `step` with a whole chunk [B,s,A] generates at once. With stride 1 the two agree.

Generation. Frame t+1 is generated when frame t's chunk is complete, so the action embedding of
the new frame itself (the chunk the policy has not chosen yet) is the model's learned mask
embedding, as in full-dynamics training. Incremental, with a KV cache: the new frame is filled
in `steps` MaskGIT/MAR passes (hma.model.sampling); the completed frame rides along in the first
pass and is committed to the temporal cache there, causal in time, so a step costs
the same at frame 10 and frame 10,000; the cache holds the last window - 1 frames. With
`use_cache=False` every pass re-runs the trunk over the whole history with the banded causal
mask: O(t) per step, the reference the cached path must match. Prompt frames without known
actions (prompt given as bare frames) carry the mask embedding for their chunks.

Success. The world model predicts pixels only; a success classifier (hma.generate.success)
scores each generated frame, and a row succeeds once `hold` consecutive frames score above its
threshold. Rows end (done) on success or after `max_steps` raw steps, and stay done; the batch
keeps stepping in lockstep (a done row's later frames are still generated; ignore them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field

from hma.config import StrictModel
from hma.episodes import Episode, chunk_actions, kept_steps
from hma.errors import HmaError
from hma.generate.success import SuccessClassifier
from hma.generate.world_model import DEFAULT_STEPS, WorldModel
from hma.model.hma import Output
from hma.model.sampling import generate_frame


class SimulatorError(HmaError, ValueError):
    """A bad reset or step request (shapes, datasets, stepping before reset)."""


class SimulatorConfig(StrictModel):
    steps: int = Field(DEFAULT_STEPS, ge=1, description="MaskGIT/MAR passes per generated frame")
    temperature: float = Field(1.0, ge=0, description="sampling temperature (0: greedy, maskgit)")
    max_steps: int | None = Field(None, ge=1, description="raw steps before an episode times out")
    use_cache: bool = Field(True, description="incremental KV cache (False: O(t) reference)")


@dataclass
class _State:
    """Everything about the running batch. Frames are absolute kept-frame indices."""

    # Whole history (S tokens per frame and row, small next to the cache) for tokens() and the
    # uncached reference path.
    tokens: list[torch.Tensor]  # per frame [B,S] | [B,S,C] flat tokens
    chunks: list[torch.Tensor]  # per frame [B,A_max] normalised chunk (zeros where unknown)
    known: list[bool]  # per frame: chunk given
    proprio: list[torch.Tensor]  # per frame [B,P_max] normalised state (zeros where unknown)
    proprio_known: list[bool]  # per frame: state given or predicted
    cache: Any  # hma.model.blocks.KVCache | None
    committed: int = 0  # frames before this are in the cache
    pending: list[np.ndarray] = field(default_factory=list)  # raw actions [B,A] of the chunk
    raw_steps: int = 0
    image: np.ndarray | None = None  # uint8 [B,h,w,3], the current observation
    run: np.ndarray | None = None  # int [B] consecutive frames over the success threshold
    success: np.ndarray | None = None  # bool [B]
    done: np.ndarray | None = None  # bool [B]


class Simulator:
    """`world_model` on dataset `dataset` (one embodiment), optionally judged by `success`."""

    def __init__(
        self,
        world_model: WorldModel,
        dataset: str,
        success: SuccessClassifier | None = None,
        config: SimulatorConfig | None = None,
    ):
        world_model.record(dataset)  # WorldModelError naming the datasets it knows
        if success is not None and success.dataset != dataset:
            raise SimulatorError(
                f"the success classifier judges {success.dataset!r} frames, the simulator runs "
                f"{dataset!r}"
            )
        self.world_model = world_model
        self.model = world_model.model
        self.dataset = dataset
        self.success = success
        self.config = config or SimulatorConfig()
        self.stride = world_model.stride(dataset)
        self.action_dim = world_model.action_dim(dataset)
        self.stats = world_model.stats(dataset)
        self.state_dim = world_model.state_dim(dataset)  # P; 0: the model has no state here
        self._state: _State | None = None
        self._generator: torch.Generator | None = None

    # -- public interface -------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return 0 if self._state is None else int(self._state.tokens[0].shape[0])

    @property
    def frames(self) -> int:
        """Kept frames so far (prompt included)."""
        return 0 if self._state is None else len(self._state.tokens)

    def reset(
        self,
        prompt: np.ndarray | list[Episode],
        actions: np.ndarray | None = None,
        prompt_frames: int = 1,
        seed: int = 0,
        prompt_state: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Start B episodes from real frames: uint8 [B,T0,H,W,3] with optional raw `actions`
        [B,T0-1,s,A] (the chunks between them) and raw `prompt_state` [B,T0,P], or B Episodes
        whose first `prompt_frames` kept frames (raw steps 0, s, 2s, ...), actions and state are
        the prompt. Returns the first observation: the last prompt frame as the model sees it
        (its tokenizer reconstruction), and its state where known."""
        if isinstance(prompt, list):
            prompt, actions, prompt_state = self._prompt_from_episodes(prompt, prompt_frames)
        prompt = np.asarray(prompt)
        if prompt.dtype != np.uint8 or prompt.ndim != 5 or prompt.shape[-1] != 3:
            raise SimulatorError(
                f"prompt must be uint8 [B,T0,H,W,3], got {prompt.dtype} {list(prompt.shape)}"
            )
        b, t0 = prompt.shape[:2]
        if b < 1 or t0 < 1:
            raise SimulatorError(
                f"prompt needs >= 1 episode and >= 1 frame, got {list(prompt.shape)}"
            )
        tokens = self.world_model.encode(prompt.reshape(b * t0, *prompt.shape[2:]))  # [B*T0,...]
        flat = self.model.flatten_tokens(tokens.reshape(b, t0, *tokens.shape[1:]))  # [B,T0,S(,C)]
        device = self.world_model.device
        width = self.model.action_width
        state = _State(
            tokens=[flat[:, f] for f in range(t0)],
            chunks=[torch.zeros(b, width, device=device) for _ in range(t0)],
            known=[False] * t0,
            proprio=[torch.zeros(b, self.model.config.state_width, device=device)] * t0,
            proprio_known=[False] * t0,
            cache=self.model.new_cache() if self.config.use_cache else None,
        )
        if prompt_state is not None and self.state_dim:
            given = self.world_model.normalised_state(self.dataset, prompt_state, t0)
            state.proprio, state.proprio_known = list(given.unbind(1)), [True] * t0
        if actions is not None:
            actions = np.asarray(actions, np.float32)
            expected = (b, t0 - 1, self.stride, self.action_dim)
            if actions.shape != expected:
                raise SimulatorError(
                    f"prompt actions must be {list(expected)} (the chunks between the prompt "
                    f"frames), got {list(actions.shape)}"
                )
            for f in range(t0 - 1):
                state.chunks[f] = self.world_model.normalised_chunks(self.dataset, actions[:, f])
                state.known[f] = True
        self._generator = torch.Generator(device=device).manual_seed(int(seed))
        state.image = self.world_model.decode(state.tokens[-1].reshape(b, *tokens.shape[1:]))
        state.run = np.zeros(b, np.int64)
        state.success = np.zeros(b, bool)
        state.done = np.zeros(b, bool)
        self._state = state
        return self._observation()

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, Any]]:
        """Raw actions [B,s,A] (a chunk: generates the next frame) or [B,A] (one raw step,
        buffered until the chunk is complete). Returns (obs, reward, done, info)."""
        state = self._require_state()
        b = self.batch
        a = np.asarray(actions, np.float32)
        if not np.isfinite(a).all():
            raise SimulatorError("actions hold non-finite values")
        if a.ndim == 2 and a.shape == (b, self.action_dim):
            state.pending.append(a)
            state.raw_steps += 1
        elif a.ndim == 3 and a.shape == (b, self.stride, self.action_dim):
            if state.pending:
                raise SimulatorError(
                    f"{len(state.pending)} single-step actions are buffered; finish that chunk "
                    "with single steps before stepping a whole chunk"
                )
            state.pending = list(a.transpose(1, 0, 2))  # s x [B,A]
            state.raw_steps += self.stride
        else:
            raise SimulatorError(
                f"actions must be [{b}, {self.action_dim}] (one raw step) or "
                f"[{b}, {self.stride}, {self.action_dim}] (one chunk), got {list(a.shape)}"
            )
        probs = np.full(b, np.nan, np.float32)
        generated = len(state.pending) == self.stride
        if generated:
            chunk = np.stack(state.pending, axis=1)  # [B,s,A]
            state.pending = []
            self._advance(chunk)
            probs = self._judge(state.image)
        if self.config.max_steps is not None and state.raw_steps >= self.config.max_steps:
            state.done |= True
        reward = (state.success & generated).astype(np.float32)
        info = {
            "success": state.success.copy(),
            "success_prob": probs,
            "generated": generated,
            "frame": self.frames - 1,
            "raw_steps": state.raw_steps,
        }
        return self._observation(), reward, state.done.copy(), info

    def tokens(self) -> torch.Tensor:
        """Every kept frame's tokens so far: [B,T,gh,gw] vq | [B,T,C,gh,gw] soft."""
        state = self._require_state()
        return self.model.unflatten_tokens(torch.stack(state.tokens, dim=1))

    # -- internals ----------------------------------------------------------------------------
    def _require_state(self) -> _State:
        if self._state is None:
            raise SimulatorError("call reset() before step()")
        return self._state

    def _observation(self) -> dict[str, np.ndarray]:
        state = self._require_state()
        obs = {"image": state.image}
        if self.state_dim and state.proprio_known[-1]:
            normalised = state.proprio[-1][:, : self.state_dim].float().cpu().numpy()
            obs["state"] = self.world_model.state_stats(self.dataset).denormalise(normalised)
        return obs

    def _prompt_from_episodes(
        self, episodes: list[Episode], prompt_frames: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if not episodes or prompt_frames < 1:
            raise SimulatorError("reset needs >= 1 episode and prompt_frames >= 1")
        raw = (prompt_frames - 1) * self.stride + 1  # raw steps the prompt spans
        frames, chunks = [], []
        for ep in episodes:
            if ep.dataset != self.dataset:
                raise SimulatorError(
                    f"episode {ep.episode_id!r} is from {ep.dataset!r}, the simulator runs "
                    f"{self.dataset!r}"
                )
            if len(ep) < raw:
                raise SimulatorError(
                    f"episode {ep.episode_id!r} has {len(ep)} steps; {prompt_frames} prompt "
                    f"frames at stride {self.stride} need {raw}"
                )
            frames.append(ep.frames[kept_steps(prompt_frames, self.stride)])  # [T0,H,W,3]
            steps = ep.actions[: (prompt_frames - 1) * self.stride]
            chunks.append(chunk_actions(steps, self.stride))  # [T0-1,s,A]
        sizes = {f.shape[1:] for f in frames}
        if len(sizes) > 1:
            raise SimulatorError(f"prompt episodes differ in frame size: {sorted(sizes)}")
        states = self.world_model.prompt_state(episodes, prompt_frames)  # [B,T0,P] | None
        return np.stack(frames), np.stack(chunks).astype(np.float32), states

    @torch.no_grad()
    def _advance(self, chunk: np.ndarray) -> None:
        """Give the last frame its chunk, then generate the next frame."""
        state = self._require_state()
        last = len(state.tokens) - 1
        state.chunks[last] = self.world_model.normalised_chunks(self.dataset, chunk)
        state.known[last] = True
        t = last + 1
        b = self.batch
        state.tokens.append(torch.zeros_like(state.tokens[last]))
        state.chunks.append(torch.zeros_like(state.chunks[last]))
        state.known.append(False)  # the new frame's own chunk: not chosen yet (mask embedding)
        state.proprio.append(torch.zeros_like(state.proprio[last]))
        state.proprio_known.append(False)  # unknown until the frame's video is complete
        s = self.model.config.tokens_per_frame
        state.tokens[t], predicted = generate_frame(
            self.model,
            self._run,
            t,
            b,
            s,
            self.config.steps,
            self.config.temperature,
            self._generator,
            {},
            state.tokens[t],
        )
        if predicted is not None:
            state.proprio[t], state.proprio_known[t] = predicted, True
        grid = self.model.unflatten_tokens(state.tokens[t][:, None])[:, 0]  # [B,gh,gw] | [B,C,..]
        state.image = self.world_model.decode(grid)

    def _run(self, first: int, last: int, video_mask: torch.Tensor | None, append: bool) -> Output:
        """Trunk outputs for frames first..last-1 (the `run` hma.model.sampling expects). With
        the cache the finished frames committed..first-1 ride along in the same call and are
        committed to the cache (causal in time: the later frames do not change them); without,
        the whole history runs with the band mask."""
        state = self._require_state()
        cached = state.cache is not None
        start = state.committed if cached else 0
        b, device = self.batch, self.world_model.device
        flat = torch.stack(state.tokens[start:last], dim=1)  # [B,F,S(,C)]
        chunks = torch.stack(state.chunks[start:last], dim=1)  # [B,F,A_max]
        known = torch.tensor(state.known[start:last], dtype=torch.bool, device=device)  # [F]
        proprio = torch.stack(state.proprio[start:last], dim=1)  # [B,F,P_max]
        proprio_known = torch.tensor(state.proprio_known[start:last], device=device)  # [F]
        vm = None
        if video_mask is not None:
            vm = torch.zeros(b, last - start, flat.shape[2], dtype=torch.bool, device=device)
            vm[:, first - start :] = video_mask
        out = self.model(
            self.model.unflatten_tokens(flat),
            chunks,
            [self.dataset] * b,
            video_mask=vm,
            action_mask=(~known)[None].expand(b, -1),
            cache=state.cache,
            append=(last if append else first) - start if cached else False,
            state=proprio,
            state_mask=(~proprio_known)[None].expand(b, -1),
        )
        if cached:
            state.committed = last if append else first
        return out.frames(first - start)

    @torch.no_grad()
    def _judge(self, image: np.ndarray) -> np.ndarray:
        """Success probability of each row's new frame; updates success and done."""
        state = self._require_state()
        if self.success is None:
            return np.full(self.batch, np.nan, np.float32)
        probs = self.success.predict(image)
        over = probs > self.success.config.threshold
        state.run = np.where(over, state.run + 1, 0)
        newly = (state.run >= self.success.config.hold) & ~state.done
        state.success |= newly
        state.done |= newly
        return probs
