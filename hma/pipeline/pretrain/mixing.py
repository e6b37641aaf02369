"""Mixed-dataset training batches from token stores: weights, a resumable sampling stream, prefetch.

    B windows per micro-batch, T frames per window, h x w token grid, C soft channels,
    A_max widest flattened action chunk (stride * action_dim) over the mixed datasets

Dataset i of the mix is drawn with weight w_i proportional to (n_i / N) ** (1 / tau_i), where n_i
counts its training windows and tau defaults to 3 (DESIGN.md "Training"): tau = 1 samples in
proportion to size, a larger tau flattens the mix towards uniform so small robots are not drowned.

The stream is a pure function of (seed, index): micro-batch `index` draws its rows' datasets and
windows from `np.random.default_rng([seed, index])`. Worker `rank` of `world` reads indices
rank, rank + world, rank + 2 world, ... (its shard of one global stream), so its whole state is
(seed, rank, world, position) and a resumed worker continues exactly where it stopped, without
replaying anything. A background thread reads ahead into a bounded queue so the model never
waits on store I/O.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from pydantic import Field

from hma.config import StorageURL, StrictModel
from hma.episodes import DatasetSpec
from hma.model.batch import Batch
from hma.pipeline.store.layout import StoreError, TokenizerInfo
from hma.pipeline.store.reader import TokenStore, Window, WindowSampler
from hma.stats import ActionStats

DEFAULT_TEMPERATURE = 3.0  # paper / DESIGN.md: w_i ∝ (n_i / N)^(1/3)
QUEUE_POLL_SECONDS = 0.1  # how often a blocked producer re-checks that it should stop


class StoreSource(StrictModel):
    """One token store of the mix."""

    url: StorageURL = Field(description="token store (local path or s3://)")
    datasets: list[str] | None = Field(
        default=None, description="datasets of this store to train on (default: all)"
    )
    temperature: float | None = Field(
        default=None, gt=0, description="tau for this store's datasets (default: the mix's)"
    )


class MixConfig(StrictModel):
    """Where training windows come from and how the datasets are mixed."""

    stores: list[StoreSource] = Field(min_length=1)
    temperature: float = Field(
        default=DEFAULT_TEMPERATURE, gt=0, description="tau of w_i ∝ (n_i/N)^(1/tau)"
    )
    temperatures: dict[str, float] = Field(
        default_factory=dict, description="per-dataset tau, overriding the store's and the mix's"
    )
    batch_size: int = Field(default=8, gt=0, description="windows per micro-batch per worker")
    prefetch: int = Field(default=4, gt=0, description="micro-batches read ahead per worker")


def mixing_weights(counts: dict[str, int], temperatures: dict[str, float]) -> dict[str, float]:
    """w_i ∝ (n_i / N) ** (1 / tau_i), normalised to sum to 1; datasets with n_i = 0 get 0."""
    total = sum(counts.values())
    if total <= 0:
        raise ValueError(f"no training windows in any dataset: {counts}")
    raw = {
        name: (n / total) ** (1.0 / temperatures[name]) if n > 0 else 0.0
        for name, n in counts.items()
    }
    norm = sum(raw.values())
    return {name: w / norm for name, w in raw.items()}


class MixedSource:
    """The datasets of one or more token stores, made by one tokenizer, behind one sampler."""

    def __init__(self, config: MixConfig, window: int, split: str = "train"):
        self.config = config
        self.window = window
        self.split = split
        self.stores: list[TokenStore] = [TokenStore.open(s.url) for s in config.stores]
        first = self.stores[0]
        for store in self.stores[1:]:
            if store.fingerprint != first.fingerprint:
                raise StoreError(
                    f"token stores {first.url} and {store.url} were made by different tokenizers "
                    f"({first.fingerprint[:12]} vs {store.fingerprint[:12]}); one model trains on "
                    "one tokenizer's tokens"
                )
        self.owner: dict[str, int] = {}  # dataset -> index of its store
        temperatures: dict[str, float] = {}
        for i, (source, store) in enumerate(zip(config.stores, self.stores, strict=True)):
            names = source.datasets if source.datasets is not None else store.datasets
            for name in names:
                store.dataset(name)  # StoreError naming the store if absent
                if name in self.owner:
                    raise StoreError(
                        f"dataset {name!r} is in both {self.stores[self.owner[name]].url} and "
                        f"{store.url}; list it under one store only (`datasets:`)"
                    )
                self.owner[name] = i
                temperatures[name] = source.temperature or config.temperature
        unknown = sorted(set(config.temperatures) - set(self.owner))
        if unknown:
            raise ValueError(f"temperatures name datasets not in the mix: {unknown}")
        temperatures.update(config.temperatures)
        self.datasets = sorted(self.owner)
        self.samplers = {
            name: WindowSampler(self.stores[i], window, split, [name])
            for name, i in self.owner.items()
        }
        self.counts = {name: self.samplers[name].num_windows(name) for name in self.datasets}
        self.temperatures = {name: temperatures[name] for name in self.datasets}

    @property
    def tokenizer(self) -> TokenizerInfo:
        return self.stores[0].tokenizer

    def view(self, name: str):
        return self.stores[self.owner[name]].dataset(name)

    @property
    def widths(self) -> dict[str, int]:
        """Flat action width (stride * action_dim) per dataset."""
        return {n: self.view(n).stride * self.view(n).action_dim for n in self.datasets}

    @property
    def state_widths(self) -> dict[str, int]:
        """Proprioceptive state width per dataset that has state."""
        return {n: self.view(n).state_dim for n in self.datasets if self.view(n).state_dim}

    @property
    def stats(self) -> dict[str, ActionStats | None]:
        return {n: self.view(n).stats for n in self.datasets}

    @property
    def specs(self) -> dict[str, DatasetSpec | None]:
        return {n: self.view(n).spec for n in self.datasets}

    def weights(self) -> dict[str, float]:
        return mixing_weights(self.counts, self.temperatures)

    def sample(self, name: str, n: int, rng: np.random.Generator) -> list[Window]:
        return self.samplers[name].sample(name, n, rng)


def collate(windows: list[Window], action_width: int, state_width: int = 0) -> Batch:
    """Windows -> Batch: tokens stacked, actions zero-padded to `action_width` columns, state
    to `state_width` (0: a model without state, no state in the batch)."""
    tokens = np.stack([w.tokens for w in windows])  # [B,T,h,w] | [B,T,C,h,w]
    names = [w.dataset for w in windows]
    actions = _padded([w.actions for w in windows], action_width)  # [B,T,A_max]
    if not state_width:
        return Batch(torch.from_numpy(tokens), torch.from_numpy(actions), names)
    state = _padded([w.state for w in windows], state_width)  # [B,T,P_max]
    return Batch(
        torch.from_numpy(tokens), torch.from_numpy(actions), names, torch.from_numpy(state)
    )


def _padded(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Rows [T,W_i] -> float32 [B,T,width], zero past each row's own W_i."""
    out = np.zeros((len(rows), rows[0].shape[0], width), np.float32)
    for i, row in enumerate(rows):
        out[i, :, : row.shape[1]] = row
    return out


@dataclass
class StreamState:
    """Everything needed to continue a worker's sampling stream exactly."""

    seed: int
    rank: int
    world: int
    position: int = 0  # micro-batches this worker has consumed

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def resumed(self, rank: int, world: int) -> StreamState:
        """This state for `rank` of `world` workers: the global stream continues where it stopped
        (a change of world size re-deals the remaining indices)."""
        consumed = self.position * self.world
        if consumed % world:
            raise ValueError(
                f"cannot resume a sampling stream of {self.world} workers at position "
                f"{self.position} with {world} workers ({consumed} micro-batches consumed)"
            )
        return StreamState(self.seed, rank, world, consumed // world)


class SamplingStream:
    """Worker `state.rank`'s shard of the global, deterministic stream of mixed micro-batches."""

    def __init__(
        self,
        source: MixedSource,
        batch_size: int,
        action_width: int,
        state: StreamState,
        state_width: int = 0,
    ):
        self.source = source
        self.batch_size = batch_size
        self.action_width = action_width
        self.state_width = state_width
        self.state = state
        weights = source.weights()
        self.names = [n for n in source.datasets if weights[n] > 0]
        self.p = np.array([weights[n] for n in self.names])

    def global_index(self, position: int) -> int:
        return position * self.state.world + self.state.rank

    def batch(self, position: int) -> Batch:
        """The micro-batch at this worker's `position`: rows' datasets then windows, one rng."""
        rng = np.random.default_rng([self.state.seed, self.global_index(position)])
        rows = rng.choice(len(self.names), size=self.batch_size, p=self.p)
        windows: list[Window | None] = [None] * self.batch_size
        for k in np.unique(rows):  # sorted: a fixed order of draws from rng
            where = np.flatnonzero(rows == k)
            for i, w in zip(where, self.source.sample(self.names[k], len(where), rng), strict=True):
                windows[i] = w
        return collate(windows, self.action_width, self.state_width)  # type: ignore[arg-type]

    def prefetch(self, depth: int) -> Prefetcher[Batch]:
        return Prefetcher(self.batch, self.state.position, depth)


T = TypeVar("T")


class Prefetcher(Generic[T]):
    """Calls produce(start), produce(start + 1), ... on a background thread, at most `depth` ahead.

    `next()` returns items in order and advances `position` (the next item to hand out), which is
    what a checkpoint records; items read ahead but not consumed are simply produced again after
    a resume. An exception in `produce` is raised by the `next()` that would have returned its item.
    """

    def __init__(self, produce: Callable[[int], T], start: int, depth: int):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.position = start
        self._produce = produce
        self._queue: queue.Queue[tuple[T | None, BaseException | None]] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hma-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        index = self.position
        while not self._stop.is_set():
            try:
                item: tuple[Any, BaseException | None] = (self._produce(index), None)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                item = (None, e)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=QUEUE_POLL_SECONDS)
                    break
                except queue.Full:
                    continue
            if item[1] is not None:
                return
            index += 1

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        item, error = self._queue.get()
        if error is not None:
            raise error
        self.position += 1
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
