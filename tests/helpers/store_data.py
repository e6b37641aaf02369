"""Small token stores for the store tests, written with `write_unit` directly (no Ray).

Labelled episodes make mistakes visible: every vq token of kept frame f of episode e is
`e * LABEL + f` (soft tokens: channel 0 holds e and channel 1 holds f, small integers that float16
keeps exactly), and raw action step k is `e * LABEL + k` in every dimension (plus the dimension
index / 10), so a window's tokens say which episode and frames it came from. With `state_dim`, raw
state at step k is `e * LABEL + k` plus the dimension index / 100, kept at the kept frames' steps
as the pipeline keeps it (`state_label` is what kept frame f must hold).
"""

from __future__ import annotations

import numpy as np

from hma.episodes import chunk_actions, keep_frames
from hma.pipeline.store import EncodedEpisode, TokenizerInfo

LABEL = 1000  # labels stay below the vocab while e < 60 and f < LABEL
VOCAB = 60000
GRID = (2, 3)
CHANNELS = 4


def info(kind: str = "vq", fingerprint: str = "f" * 64, vocab: int = VOCAB) -> TokenizerInfo:
    return TokenizerInfo(
        kind=kind,
        fingerprint=fingerprint,
        config={"arch": "test"},
        url="memory://tokenizer",
        grid=GRID,
        vocab_size=vocab if kind == "vq" else None,
        latent_channels=CHANNELS if kind == "soft" else None,
        frame_size=(16, 24),
    )


def labelled(
    e: int,
    frames: int,
    stride: int = 2,
    action_dim: int = 7,
    split: str = "train",
    state_dim: int = 0,
    **kw,
) -> EncodedEpisode:
    """Episode number `e` with `frames` kept frames (and state if `state_dim`), labelled as the
    module docstring says."""
    kind = kw.pop("kind", "vq")
    dataset = kw.pop("dataset", "robosuite_lift")
    steps = frames * stride + (stride - 1)  # trailing steps that chunk_actions must drop
    raw = (e * LABEL + np.arange(steps, dtype=np.float32))[:, None] + np.arange(action_dim) / 10
    if kind == "vq":
        label = (e * LABEL + np.arange(frames)).reshape(frames, 1, 1)
        tokens = np.broadcast_to(label, (frames, *GRID)).astype(np.int32)
    else:
        tokens = np.zeros((frames, CHANNELS, *GRID), np.float32)
        tokens[:, 0] = e
        tokens[:, 1] = np.arange(frames).reshape(frames, 1, 1)
    return EncodedEpisode(
        dataset=dataset,
        episode_id=f"{dataset}-{e}",
        split=split,
        success=kw.pop("success", e % 2 == 0),
        tokens=tokens,
        actions=chunk_actions(raw.astype(np.float32), stride),
        state=_raw_state(e, steps, state_dim)[keep_frames(steps, stride)] if state_dim else None,
    )


def _raw_state(e: int, steps: int, state_dim: int) -> np.ndarray:
    return (e * LABEL + np.arange(steps)[:, None] + np.arange(state_dim) / 100).astype(np.float32)


def state_label(e: int, frames: np.ndarray, stride: int, state_dim: int) -> np.ndarray:
    """The state labelled episode `e` holds at kept frames `frames`: raw step f * stride's."""
    return _raw_state(e, (int(frames.max()) + 1) * stride, state_dim)[frames * stride]


def label_of(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(episode number, frame index) per frame of labelled tokens, vq [T,h,w] or soft [T,c,h,w];
    asserts every token of a frame carries the same label."""
    if tokens.ndim == 3:
        first = tokens[:, :1, :1]
        assert (tokens == first).all()
        return first[:, 0, 0] // LABEL, first[:, 0, 0] % LABEL
    assert (tokens[:, :2] == tokens[:, :2, :1, :1]).all() and not tokens[:, 2:].any()
    return tokens[:, 0, 0, 0].astype(int), tokens[:, 1, 0, 0].astype(int)


def random_episode(
    rng: np.random.Generator,
    name: str,
    frames: int,
    kind: str = "vq",
    split: str = "train",
    dataset: str = "robosuite_lift",
    stride: int = 2,
    action_dim: int = 7,
    offset: float = 0.0,
    vocab: int = VOCAB,
) -> EncodedEpisode:
    """Random tokens and actions (actions centred on `offset`)."""
    if kind == "vq":
        tokens = rng.integers(0, vocab, (frames, *GRID))
    else:
        tokens = rng.normal(0, 3, (frames, CHANNELS, *GRID)).astype(np.float32)
    actions = rng.normal(offset, 1, (frames, stride, action_dim)).astype(np.float32)
    return EncodedEpisode(dataset, name, split, None, tokens, actions)
