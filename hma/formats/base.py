"""The contract every format module meets, and the one row loader the Ray readers share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from hma.episodes import Episode, Registry, validate_episode

# A small JSON-able description of one episode in a source: at least "format", "url" and
# "episode_id"; formats add what they need to find the episode again (index, offsets, ...).
EpisodeRef = dict[str, Any]


class EpisodeFormat(Protocol):
    def sniff(self, url: str) -> bool: ...

    def list_refs(self, url: str, dataset: str | None) -> list[EpisodeRef]: ...

    def load(self, ref: EpisodeRef) -> Episode: ...

    def write(self, episodes: Iterable[Episode], url: str, registry: Registry) -> int: ...


def episode_from_ref(ref: EpisodeRef, **arrays: Any) -> Episode:
    """An Episode whose scalar fields come from a ref that carries them (dataset, episode_id,
    split, hz, instruction, success, meta) and whose arrays are given (frames, actions, ...)."""
    fields = ("dataset", "episode_id", "split", "hz", "instruction", "success", "meta")
    return Episode(**{k: ref[k] for k in fields}, **arrays)


def load_row(ref: EpisodeRef, registry: Registry) -> dict[str, Any]:
    """Load and validate the episode `ref` points to, as a Ray Data row with an `error` column.

    A failure (unreadable file, corrupt video, invalid field) gives a row with the reason and no
    frames, so bad input is accounted for instead of crashing or vanishing.
    """
    from hma import formats  # late import: formats imports this module

    try:
        episode = formats.get_format(ref["format"]).load(ref)
        validate_episode(episode, registry)
    except Exception as e:  # noqa: BLE001 - every failure becomes a labelled row
        return rejected_row(ref, f"{type(e).__name__}: {e}")
    return {**episode.to_row(), "error": ""}


def rejected_row(ref: EpisodeRef, reason: str) -> dict[str, Any]:
    """A row with the Episode row's columns, empty payload, and the rejection reason."""
    empty = Episode(
        dataset=str(ref.get("dataset") or ""),
        episode_id=str(ref.get("episode_id") or f"{ref.get('url')}#{ref.get('index')}"),
        frames=np.zeros((0, 1, 1, 3), np.uint8),
        actions=np.zeros((0, 1), np.float32),
        hz=0.0,
        meta={"source": ref.get("url", "")},
    )
    return {**empty.to_row(), "error": reason}
