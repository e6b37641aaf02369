"""WorldModel: a pretraining checkpoint ready to imagine robot video, in pixels and raw actions.

    B batch, T0 prompt frames, H new (kept) frames, N = T0 + H, s stride, A action dim,
    h x w model frame size (pixels), gh x gw token grid

    WorldModel.load(checkpoint)         model + tokenizer + the checkpoint's meta (pretrain.json);
                                        refuses a tokenizer whose fingerprint differs from the one
                                        the model was trained on
    encode(frames uint8 [N,H,W,3])      -> tokens, after resizing to the model's frame size
    rollout(dataset, prompt [B,T0,H,W,3], horizon, actions_raw [B,H|N,s,A] | None,
            prompt_state [B,T0,P] | None)
                                        -> Rollout(frames uint8 [B,N,h,w,3], actions_raw [B,N,s,A],
                                                   state_raw [B,N,P] where the model has state)

Actions cross this boundary in the dataset's raw units and leave it in raw units; inside, they
are normalised with the checkpoint's per-dataset statistics (hma.stats.ActionStats). Kept frame f
covers raw steps f*s .. (f+1)*s - 1 and its chunk holds the s raw actions taken from kept frame f
to f+1 (the token store's layout, hma.episodes.chunk_actions). Proprioceptive state (P values
per kept frame, for datasets the model was trained with state) crosses in raw units as well,
normalised inside with the checkpoint's state statistics.

Given actions select forward dynamics (the model renders the video those actions cause); no
actions select full dynamics (the model proposes every chunk, then the video). The checkpoint
fingerprint is sha256 over the model config and weights (hma.checkpoint.fingerprint_of), the
provenance every synthetic episode records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hma.checkpoint import fingerprint_of
from hma.episodes import kept_steps
from hma.errors import HmaError
from hma.frames import resize
from hma.model import checkpoint as ckpt
from hma.stats import ActionStats

DEFAULT_STEPS = 2  # MaskGIT passes per frame: the reference evaluates and simulates with 2


class WorldModelError(HmaError, ValueError):
    """A checkpoint, tokenizer or dataset that does not fit together, or a bad rollout request."""


@dataclass
class Rollout:
    frames: np.ndarray  # uint8 [B,N,h,w,3] decoded at the model's frame size, prompt included
    actions_raw: np.ndarray  # float32 [B,N,s,A] raw units: given chunks, or the model's
    tokens: torch.Tensor  # [B,N,gh,gw] vq | [B,N,C,gh,gw] soft, on the model's device
    finite: np.ndarray  # bool [B]: every token and action of the row is finite (no NaN/inf)
    state_raw: np.ndarray | None = None  # float32 [B,N,P] raw: given prompt state, then predicted


class WorldModel:
    """An HMA checkpoint with its tokenizer and statistics; see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, meta: dict[str, Any], url: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.url = url
        self._fingerprint: str | None = None
        self._stats = {
            name: ActionStats.from_dict(d["action_stats"])
            for name, d in meta.get("datasets", {}).items()
            if d.get("action_stats")
        }
        self._state_stats = {
            name: ActionStats.from_dict(d["state_stats"])
            for name, d in meta.get("datasets", {}).items()
            if d.get("state_stats")
        }

    @classmethod
    def load(
        cls, checkpoint: str, device: str | torch.device = "cpu", tokenizer: str | None = None
    ) -> WorldModel:
        """Load a pretraining checkpoint (a checkpoint dir or a run dir holding checkpoint_*).

        `tokenizer` overrides the tokenizer URL recorded in the checkpoint (a moved copy); either
        way its fingerprint must equal the recorded one."""
        from hma.tokenize.checkpoint import load_tokenizer

        url = ckpt.resolve(checkpoint)
        meta = ckpt.read_meta(url)
        recorded = meta.get("tokenizer") or {}
        tok_url = tokenizer or recorded.get("url")
        if not tok_url:
            raise WorldModelError(f"{url}: the checkpoint records no tokenizer URL; pass one")
        tok = load_tokenizer(tok_url, device=device)
        if tok.fingerprint != recorded.get("fingerprint"):
            raise WorldModelError(
                f"tokenizer mismatch: the checkpoint {url} was trained on tokens of tokenizer "
                f"{recorded.get('fingerprint')}, but {tok_url} has fingerprint {tok.fingerprint}"
            )
        model = ckpt.load_model(ckpt.model_url(url), device=device)  # verifies its fingerprint
        expected = meta.get("model_fingerprint")
        if expected and expected != ckpt.read_fingerprint(ckpt.model_url(url)):
            raise WorldModelError(
                f"{ckpt.model_url(url)}: the model's fingerprint differs from the one "
                f"{ckpt.META_FILE} records ({expected[:12]}): the model directory was replaced"
            )
        missing = sorted(set(model.config.datasets) - set(meta.get("datasets", {})))
        if missing:
            raise WorldModelError(f"{url}: pretrain.json lacks the records of datasets {missing}")
        return cls(model, tok, meta, url)

    # -- description --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.spatial_pos.device

    @property
    def fingerprint(self) -> str:
        """sha256 of the model config and weights (computed once; weights do not change here)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_of(
                self.model.config.model_dump(mode="json"), iter(self.model.state_dict().items())
            )
        return self._fingerprint

    @property
    def tokenizer_fingerprint(self) -> str:
        return self.tokenizer.fingerprint

    @property
    def datasets(self) -> list[str]:
        return sorted(self.model.config.datasets)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) pixels of the frames the model's tokens encode."""
        size = (self.meta.get("tokenizer") or {}).get("frame_size")
        if size:
            return int(size[0]), int(size[1])
        gh, gw = self.model.config.grid
        return gh * self.tokenizer.downsample, gw * self.tokenizer.downsample

    def record(self, dataset: str) -> dict[str, Any]:
        """The checkpoint's record of `dataset` (stride, action_dim, action_stats, registry...)."""
        if dataset not in self.model.config.datasets:
            raise WorldModelError(
                f"dataset mismatch: the checkpoint {self.url} was not trained on {dataset!r} "
                f"(it knows: {', '.join(self.datasets)})"
            )
        return self.meta["datasets"][dataset]

    def stride(self, dataset: str) -> int:
        return int(self.record(dataset)["stride"])

    def action_dim(self, dataset: str) -> int:
        return int(self.record(dataset)["action_dim"])

    def stats(self, dataset: str) -> ActionStats:
        self.record(dataset)
        if dataset not in self._stats:
            raise WorldModelError(f"{self.url}: no action statistics recorded for {dataset!r}")
        return self._stats[dataset]

    def state_dim(self, dataset: str) -> int:
        """P: the state values per frame the model predicts for `dataset` (0: no state)."""
        self.record(dataset)
        return int(self.model.config.states.get(dataset, 0))

    def state_stats(self, dataset: str) -> ActionStats:
        if dataset not in self._state_stats:
            raise WorldModelError(f"{self.url}: no state statistics recorded for {dataset!r}")
        return self._state_stats[dataset]

    def prompt_state(self, episodes: list[Any], prompt_frames: int) -> np.ndarray | None:
        """Raw state [B,T0,P] of the first `prompt_frames` kept frames of `episodes` (Episodes of
        one dataset), where the model has state for it and every episode has state of its width;
        else None (the prompt's state is then unknown to the model)."""
        if not episodes:
            return None
        dataset = episodes[0].dataset
        width = self.state_dim(dataset)
        if not width or any(ep.state is None or ep.state.shape[1] != width for ep in episodes):
            return None
        kept = kept_steps(prompt_frames, self.stride(dataset))
        return np.stack([ep.state[kept] for ep in episodes])

    def normalised_state(self, dataset: str, state_raw: np.ndarray, prompt: int) -> torch.Tensor:
        """Raw prompt state [B,T0,P] -> the model's state input [B,T0,P_max] on the device."""
        width = self.state_dim(dataset)
        s = np.asarray(state_raw, np.float32)
        if s.ndim != 3 or s.shape[1:] != (prompt, width):
            raise WorldModelError(
                f"prompt_state for {dataset!r} must be [B, {prompt}, {width}] (batch, prompt "
                f"frames, state width), got {list(s.shape)}"
            )
        if not np.isfinite(s).all():
            raise WorldModelError(f"prompt_state for {dataset!r} holds non-finite values")
        normalised = self.state_stats(dataset).normalise(s)
        out = torch.zeros(*s.shape[:2], self.model.config.state_width, device=self.device)
        out[..., :width] = torch.from_numpy(normalised.astype(np.float32)).to(self.device)
        return out

    # -- pixels <-> tokens ----------------------------------------------------------------------
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [N,H,W,3] of any size -> tokens [N,gh,gw] | [N,C,gh,gw] at the model's size."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise WorldModelError(
                f"frames must be uint8 [N,H,W,3], got {frames.dtype} {list(frames.shape)}"
            )
        return self.tokenizer.encode(resize(frames, self.frame_size))

    def decode(self, tokens: torch.Tensor) -> np.ndarray:
        """tokens [N,...] -> uint8 frames [N,h,w,3] (numpy, on the host)."""
        return self.tokenizer.decode(tokens).cpu().numpy()

    # -- rollouts -------------------------------------------------------------------------------
    def rollout(
        self,
        dataset: str,
        prompt_frames: np.ndarray,
        horizon: int,
        actions_raw: np.ndarray | None = None,
        steps: int = DEFAULT_STEPS,
        temperature: float = 1.0,
        seed: int | None = None,
        prompt_state: np.ndarray | None = None,
    ) -> Rollout:
        """Imagine `horizon` new kept frames after `prompt_frames` ([B,T0,H,W,3], any size).

        `actions_raw` [B,H,s,A] drives the new frames (chunks of frames T0-1 .. N-2), or
        [B,N,s,A] gives every frame's chunk; None lets the model propose them (full dynamics).
        `prompt_state` [B,T0,P] (raw) is the prompt frames' proprioception, for a model with
        state (without it, their state counts as unknown)."""
        prompt = np.asarray(prompt_frames)
        if prompt.dtype != np.uint8 or prompt.ndim != 5 or prompt.shape[-1] != 3:
            raise WorldModelError(
                f"prompt_frames must be uint8 [B,T0,H,W,3], got {prompt.dtype} {list(prompt.shape)}"
            )
        b, t0 = prompt.shape[:2]
        tokens = self.encode(prompt.reshape(b * t0, *prompt.shape[2:]))  # [B*T0,...]
        tokens = tokens.reshape(b, t0, *tokens.shape[1:])  # [B,T0,gh,gw] | [B,T0,C,gh,gw]
        return self.rollout_tokens(
            dataset, tokens, horizon, actions_raw, steps, temperature, seed, prompt_state
        )

    def rollout_tokens(
        self,
        dataset: str,
        prompt_tokens: torch.Tensor,
        horizon: int,
        actions_raw: np.ndarray | None = None,
        steps: int = DEFAULT_STEPS,
        temperature: float = 1.0,
        seed: int | None = None,
        prompt_state: np.ndarray | None = None,
    ) -> Rollout:
        """`rollout` from already encoded prompt frames (a simulator keeps its tokens)."""
        if horizon < 0:
            raise WorldModelError(f"horizon must be >= 0, got {horizon}")
        stats, stride, dim = self.stats(dataset), self.stride(dataset), self.action_dim(dataset)
        b, t0 = prompt_tokens.shape[:2]
        n = t0 + horizon
        given = None
        if actions_raw is not None:
            given = self._normalised_chunks(dataset, actions_raw, b, (horizon, n))
        state_in = None
        if prompt_state is not None and self.state_dim(dataset):
            state_in = self.normalised_state(dataset, prompt_state, t0)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        result = self.model.rollout(
            prompt_tokens.to(self.device),
            actions=given,
            datasets=[dataset] * b,
            horizon=horizon,
            mode="full" if given is None else "forward",
            steps=steps,
            temperature=temperature,
            generator=generator,
            prompt_state=state_in,
        )
        width = stride * dim
        chunks = result.actions[:, :, :width].float().cpu().numpy()  # [B,N,s*A] normalised
        raw = stats.denormalise(chunks.reshape(b, n, stride, dim))  # [B,N,s,A]
        if actions_raw is not None:
            # the chunks we were given come back bit-exact, not through normalise/denormalise
            exact = np.asarray(actions_raw, np.float32)
            if exact.shape[1] == n:
                raw[:] = exact
            else:  # the H chunks that drive the new frames: frames T0-1 .. N-2
                raw[:, t0 - 1 : n - 1] = exact
        flat = result.tokens.reshape(b * n, *result.tokens.shape[2:])  # [B*N,...]
        frames = self.decode(flat)
        frames = frames.reshape(b, n, *frames.shape[1:])  # [B,N,h,w,3]
        finite = np.isfinite(raw).reshape(b, -1).all(1)
        if result.tokens.is_floating_point():
            finite &= torch.isfinite(result.tokens).reshape(b, -1).all(1).cpu().numpy()
        state_raw = self._raw_state(
            dataset, result.state, prompt_state if state_in is not None else None
        )
        if state_raw is not None:
            finite &= np.isfinite(state_raw).reshape(b, -1).all(1)
        return Rollout(frames, raw, result.tokens, finite, state_raw)

    def _raw_state(
        self, dataset: str, state: torch.Tensor | None, given: np.ndarray | None
    ) -> np.ndarray | None:
        """The rollout's normalised state [B,N,P_max] -> raw [B,N,P]; the given prompt state
        comes back bit-exact. None where the model has no state for `dataset`."""
        width = self.state_dim(dataset)
        if state is None or not width:
            return None
        normalised = state[..., :width].float().cpu().numpy()
        raw = self.state_stats(dataset).denormalise(normalised).astype(np.float32)
        if given is not None:
            raw[:, : given.shape[1]] = given
        return raw

    def _normalised_chunks(
        self, dataset: str, actions_raw: np.ndarray, batch: int, lengths: tuple[int, int]
    ) -> torch.Tensor:
        """Raw [B,L,s,A] -> normalised, flattened and zero-padded [B,L,A_max] on the device."""
        stride, dim = self.stride(dataset), self.action_dim(dataset)
        a = np.asarray(actions_raw, np.float32)
        if (
            a.ndim != 4
            or a.shape[0] != batch
            or a.shape[2:] != (stride, dim)
            or (a.shape[1] not in lengths)
        ):
            raise WorldModelError(
                f"actions_raw for {dataset!r} must be [{batch}, {lengths[0]} or {lengths[1]}, "
                f"{stride}, {dim}] (batch, frames, stride, action dim), got {list(a.shape)}"
            )
        if not np.isfinite(a).all():
            raise WorldModelError(f"actions_raw for {dataset!r} hold non-finite values")
        return self.normalised_chunks(dataset, a)

    def normalised_chunks(self, dataset: str, actions_raw: np.ndarray) -> torch.Tensor:
        """Raw chunks [...,s,A] -> the model's action input [...,A_max] on the device: normalised
        with the dataset's stats, flattened, zero-padded past the dataset's width."""
        normalised = self.stats(dataset).normalise(np.asarray(actions_raw, np.float32))
        flat = normalised.reshape(*normalised.shape[:-2], -1)  # [...,s*A]
        out = torch.zeros(*flat.shape[:-1], self.model.action_width, device=self.device)
        out[..., : flat.shape[-1]] = torch.from_numpy(flat).to(self.device)
        return out
