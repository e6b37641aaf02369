"""The stages of `hma tokenize`, each a small function or class that the chain in tokenize_job runs.

    F kept frames, H x W job frame size, s stride, A action dim, S state dim, h x w token grid,
    c channels

    load_unit      one unit -> one row per episode (CPU task): list the unit's refs, load and
                   validate each episode, keep every s-th frame and its state [F,S], chunk actions
                   [F,s,A], resize frames to [F,H,W,3]. Failures become rejection rows (`reason`
                   set), never errors.
    TokenizeActor  rows -> rows with `tokens` instead of `frames` (actor: the tokenizer loads once)
    write_unit     all rows of one unit -> the store (one Ray task per unit, retried on failure)

A row: unit, index (position in the unit), total (rows the unit yields), dataset, episode_id,
split, success (-1/0/1), source, reason ("" = good), steps (raw T), frames | tokens, actions,
state ([F,S]; [0,0] for an episode without),
and the seconds its stage spent on it (load_s, resize_s, encode_s) for the summary; start-up
milestones (epoch seconds: load_at, and the actor's actor_boot, actor_init, actor_ready).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from hma import formats
from hma.episodes import (
    Registry,
    chunk_actions,
    extend_registry,
    keep_frames,
    validate_episode,
)
from hma.formats.base import Listed, Unit
from hma.frames import resize
from hma.pipeline import store
from hma.pipeline.plan import list_unit

EMPTY_UNIT = -1  # `index` of the one marker row of a unit that holds no episodes


def _row(unit: Unit, index: int, total: int, item: Listed, frame_size: tuple[int, int]) -> dict:
    h, w = frame_size
    return {
        "unit": unit["unit"],
        "index": index,
        "total": total,
        "dataset": item.dataset,
        "episode_id": item.episode_id,
        "split": "train",
        "success": -1,
        "source": item.source,
        "reason": item.reason,
        "steps": 0,
        "frames": np.zeros((0, h, w, 3), np.uint8),
        "actions": np.zeros((0, 1, 1), np.float32),
        "state": np.zeros((0, 0), np.float32),
        "load_s": 0.0,
        "resize_s": 0.0,
        "load_at": time.time(),  # epoch seconds the load task reached this row (start-up)
    }


def load_unit(
    item: dict[str, Any], frame_size: tuple[int, int], registry: Registry, registry_files: list[str]
) -> Iterator[dict[str, Any]]:
    """Rows of every episode of one unit (a flat_map over plan rows {"unit": JSON})."""
    if registry_files:
        extend_registry(registry_files)  # format readers consult the registry of this process
    unit: Unit = json.loads(item["unit"])
    listed = list_unit(unit)
    if not listed:
        marker = Listed(None, "", "", unit["url"])
        yield _row(unit, EMPTY_UNIT, 0, marker, frame_size)
        return
    for index, entry in enumerate(listed):
        row = _row(unit, index, len(listed), entry, frame_size)
        if entry.ref is not None:
            _load_episode(row, entry, frame_size, registry)
        yield row


def _load_episode(
    row: dict[str, Any], entry: Listed, frame_size: tuple[int, int], registry: Registry
) -> None:
    """Fill `row` with the episode's kept frames, their state and chunked actions, or with a
    rejection reason. Validation has refused state that is not [T,S] or not finite."""
    start = time.perf_counter()
    try:
        episode = formats.get_format(entry.ref["format"]).load(entry.ref)
        row["dataset"], row["episode_id"] = episode.dataset, episode.episode_id
        spec = validate_episode(episode, registry)
    except Exception as e:  # noqa: BLE001 - every failure becomes a quarantined episode
        row["reason"] = f"{type(e).__name__}: {e}"
        row["load_s"] = time.perf_counter() - start
        return
    steps, stride = len(episode), spec.stride
    row.update(
        split=episode.split,
        success=-1 if episode.success is None else int(bool(episode.success)),
        steps=steps,
        load_s=time.perf_counter() - start,
    )
    if steps < stride:
        row["reason"] = f"episode shorter than stride ({steps} steps < stride {stride})"
        return
    start = time.perf_counter()
    kept = keep_frames(steps, stride)
    row["frames"] = resize(episode.frames[kept], frame_size)
    row["actions"] = chunk_actions(episode.actions, stride)  # (F, s, A)
    if episode.state is not None:
        row["state"] = np.ascontiguousarray(episode.state[kept], dtype=np.float32)  # (F, S)
    row["resize_s"] = time.perf_counter() - start


class TokenizeActor:
    """Encodes the frames of a batch of rows with one tokenizer, loaded once per actor.

    `expected` is the tokenizer description the driver read from the checkpoint's metadata and
    recorded in the store; the actor checks the model it loaded (weights hashed against the
    recorded fingerprint) matches it, so the store never claims a tokenizer that did not run.
    """

    def __init__(
        self,
        checkpoint: str,
        frame_size: tuple[int, int],
        encode_batch: int,
        threads: int,
        expected: dict[str, Any] | None = None,
    ):
        self.timing = {"actor_boot": process_start_time(), "actor_init": time.time()}
        import torch

        from hma.tokenize.checkpoint import CheckpointError, load_tokenizer

        if not torch.cuda.is_available():
            torch.set_num_threads(threads)  # the actor's CPU share, not every core of the node
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = load_tokenizer(checkpoint, device=device, batch_size=encode_batch)
        info = store.TokenizerInfo.from_tokenizer(self.tokenizer, checkpoint, frame_size)
        if expected is not None and info.to_dict() != expected:
            raise CheckpointError(
                f"{checkpoint}: the loaded tokenizer {info.to_dict()} does not match its "
                f"metadata {expected}"
            )
        self.dtype = np.dtype(info.token_dtype)  # the store's on-disk dtype: small rows
        self.empty = np.zeros((0, *info.token_shape), self.dtype)
        self.timing["actor_ready"] = time.time()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        frames = batch.pop("frames")
        rows = len(batch["unit"])
        good = [i for i in range(rows) if not batch["reason"][i]]
        clips = [np.asarray(frames[i], dtype=np.uint8) for i in good]
        sizes = [len(c) for c in clips]
        start = time.perf_counter()
        parts = []
        if clips:
            encoded = self.tokenizer.encode(np.concatenate(clips)).cpu().numpy()
            parts = np.split(encoded.astype(self.dtype), np.cumsum(sizes)[:-1])
        seconds = time.perf_counter() - start
        tokens = np.empty(rows, dtype=object)
        tokens[:] = [self.empty] * rows
        encode_s = np.zeros(rows)
        for i, part, size in zip(good, parts, sizes, strict=True):
            tokens[i] = part
            encode_s[i] = seconds * size / max(sum(sizes), 1)  # the batch's time, shared by frames
        batch["tokens"] = tokens
        batch["encode_s"] = encode_s
        for name, at in self.timing.items():
            batch[name] = np.full(rows, at)  # start-up milestones, for the summary
        return batch


def process_start_time() -> float:
    """When this process started (epoch seconds): the actor's worker boot shows in the summary."""
    import psutil

    return psutil.Process().create_time()


def encoded_unit(
    rows: list[dict[str, Any]],
) -> tuple[list[store.EncodedEpisode], list[store.Rejection]]:
    """The store's view of one unit's rows (in unit order)."""
    episodes, rejected = [], []
    for row in sorted(rows, key=lambda r: int(r["index"])):
        if int(row["index"]) == EMPTY_UNIT:
            continue
        if row["reason"]:
            rejected.append(
                store.Rejection(
                    str(row["dataset"]),
                    str(row["episode_id"]),
                    str(row["source"]),
                    str(row["reason"]),
                )
            )
            continue
        success = int(row["success"])
        episodes.append(
            store.EncodedEpisode(
                dataset=str(row["dataset"]),
                episode_id=str(row["episode_id"]),
                split=str(row["split"]),
                success=None if success < 0 else bool(success),
                tokens=np.asarray(row["tokens"]),
                actions=np.asarray(row["actions"], dtype=np.float32),
                state=_state(row),
            )
        )
    return episodes, rejected


def _state(row: dict[str, Any]) -> np.ndarray | None:
    """The row's kept-frame state [F,S], None for an episode without (its row carries [0,0]: every
    row has the same column type)."""
    state = np.asarray(row["state"], dtype=np.float32)
    return state if state.ndim == 2 and state.shape[1] > 0 else None


def write_unit(url: str, unit: str, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], float]:
    """Write one unit (run as one Ray task); returns the commit record and the seconds it took."""
    start = time.perf_counter()
    episodes, rejected = encoded_unit(rows)
    commit = store.write_unit(url, unit, episodes, rejected, len(episodes) + len(rejected))
    return commit, time.perf_counter() - start
