"""Reading a token store: committed units only, an in-memory episode index, random windows.

    E episodes, T window (kept frames), s stride, A action dim, S state dim, h x w token grid,
    c channels

`TokenStore.open` lists `_commits/` once and reads every commit record in one batched call; the
records carry each unit's episode index, so nothing else is read until frames are. A window read
slices only its frame range out of the shard's arrays (zarr reads the shard index and the chunks
it needs); opened arrays are cached per shard. Remote stores read a batch of windows on a thread
pool, since each window is a few small range requests whose latency dominates.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import zarr

from hma import storage
from hma.episodes import DatasetSpec
from hma.pipeline.store.layout import (
    ACTIONS,
    COMMITS,
    QUARANTINE,
    STATE,
    TOKENS,
    StoreError,
    TokenizerInfo,
    list_json,
    read_jsons,
    read_root,
    shard_path,
    zarr_store,
)
from hma.stats import ActionStats

READ_THREADS = 16  # concurrent window reads on a remote store (latency-bound small requests)
ACTIONS_CACHE_BYTES = 256 * 2**20  # per TokenStore: whole shards' actions and state in memory


@dataclass
class DatasetView:
    """One dataset of a store: layout, train-split action and state stats, the episode index."""

    name: str
    stride: int
    action_dim: int
    state_dim: int  # S of the stored state [F,S]; 0: the dataset has no state
    stats: ActionStats | None  # train split, merged over commits in unit order; None: no train
    state_stats: ActionStats | None  # the same for the state; None also when state_dim is 0
    spec: DatasetSpec | None  # registry entry recorded by `finalize`; None before finalize
    units: list[str]  # committed units holding this dataset, sorted
    unit: np.ndarray  # int64 [E] index into `units`
    start: np.ndarray  # int64 [E] first frame of the episode in its shard
    length: np.ndarray  # int64 [E] kept frames
    split: np.ndarray  # str [E] "train" | "val"
    success: np.ndarray  # int8 [E] -1 unknown, 0, 1
    episode_ids: list[str]

    def __len__(self) -> int:
        return len(self.episode_ids)


@dataclass
class Window:
    dataset: str
    episode_id: str
    start: int  # first kept frame of the window within its episode
    tokens: np.ndarray  # vq int64 [T,h,w] | soft float32 [T,c,h,w]
    actions: np.ndarray  # float32 [T, s*A], normalised with the dataset's train stats
    state: np.ndarray  # float32 [T, S], normalised with the train state stats; [T, 0]: none
    episode: int  # index of the episode in the dataset's view


class _Shard(NamedTuple):
    """One shard's arrays; actions and state are read into memory while the cache has room."""

    tokens: zarr.Array
    actions: zarr.Array | np.ndarray
    state: zarr.Array | np.ndarray | None  # None: the dataset has no state


class TokenStore:
    """A read-only view of the committed units of the token store at `url`."""

    def __init__(self, url: str, attrs: dict[str, Any], commits: dict[str, dict[str, Any]]):
        self.url = url
        self.tokenizer = TokenizerInfo.from_dict(attrs["tokenizer"])
        self.units = sorted(commits)
        self.read = sum(int(c["read"]) for c in commits.values())
        self._views = build_views(url, self.units, commits)
        self._arrays: dict[tuple[str, int], _Shard] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._cached_bytes = 0

    @classmethod
    def open(cls, url: str) -> TokenStore:
        attrs = read_root(url)
        units = list_json(url, COMMITS)
        return cls(url, attrs, read_jsons(url, COMMITS, units))

    # -- description ------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.tokenizer.kind

    @property
    def fingerprint(self) -> str:
        return self.tokenizer.fingerprint

    @property
    def datasets(self) -> list[str]:
        return sorted(self._views)

    def dataset(self, name: str) -> DatasetView:
        try:
            return self._views[name]
        except KeyError:
            known = ", ".join(self.datasets) or "none"
            raise StoreError(f"{self.url}: no dataset {name!r} (stored: {known})") from None

    def quarantine(self) -> list[dict[str, Any]]:
        """Every episode the committed units rejected: dataset, episode_id, source, reason, unit."""
        records = read_jsons(self.url, QUARANTINE, self.units)
        return [{**r, "unit": u} for u in self.units for r in records.get(u, [])]

    # -- reading ----------------------------------------------------------------------------
    def read_episode(self, name: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, raw actions float32 [F,s,A]) of episode `i` of dataset `name`."""
        return self.read_frames(name, i, 0, int(self.dataset(name).length[i]))

    def read_frames(
        self, name: str, i: int, start: int, stop: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Kept frames [start, stop) of episode `i`: (tokens vq int64 | soft float32, actions
        float32 [stop-start, s, A]); reads only that range of the shard."""
        shard, rows = self._rows(name, i, start, stop)
        out = shard.tokens[rows]
        out = out.astype(np.int64) if self.kind == "vq" else out.astype(np.float32)
        return out, np.asarray(shard.actions[rows], dtype=np.float32)

    def read_state(self, name: str, i: int, start: int, stop: int) -> np.ndarray:
        """Raw state float32 [stop-start, S] at kept frames [start, stop) of episode `i`;
        [stop-start, 0] when the dataset has no state."""
        shard, rows = self._rows(name, i, start, stop)
        if shard.state is None:
            return np.zeros((stop - start, 0), np.float32)
        return np.asarray(shard.state[rows], dtype=np.float32)

    def read_many(
        self, name: str, requests: list[tuple[int, int, int]]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(tokens, actions, state) of `read_frames` and `read_state` for each (episode, start,
        stop); concurrent on remote stores."""

        def read(r: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return (*self.read_frames(name, *r), self.read_state(name, *r))

        if len(requests) < 2 or not storage.is_remote(self.url):
            return [read(r) for r in requests]
        view = self.dataset(name)
        for unit in sorted({int(view.unit[r[0]]) for r in requests}):
            self._open(name, unit)  # once each, before the threads (no herd of duplicate opens)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="token-store")
        return list(self._pool.map(read, requests))

    def _rows(self, name: str, i: int, start: int, stop: int) -> tuple[_Shard, slice]:
        """Episode `i`'s shard and the rows of its kept frames [start, stop) in it."""
        view = self.dataset(name)
        if not 0 <= start < stop <= view.length[i]:
            raise ValueError(
                f"frames [{start}, {stop}) outside episode {view.episode_ids[i]!r} "
                f"of {view.length[i]} frames"
            )
        first = int(view.start[i]) + start
        return self._open(name, int(view.unit[i])), slice(first, first + (stop - start))

    def _open(self, name: str, unit: int) -> _Shard:
        """The shard's arrays, opened once. Actions and state are small (s*A and S floats per
        frame), so a shard's whole arrays of them are read into memory on first use while the
        process holds less than ACTIONS_CACHE_BYTES of them: each window then costs only the
        token reads (on S3, two range requests instead of four or six)."""
        key = (name, unit)
        if key not in self._arrays:
            store = zarr_store(self.url, read_only=True)
            view = self.dataset(name)
            path = shard_path(name, view.units[unit])
            names = (TOKENS, ACTIONS, STATE) if view.state_dim else (TOKENS, ACTIONS)
            try:
                arrays = [
                    zarr.open_array(store, path=f"{path}/{a}", mode="r", zarr_format=3)
                    for a in names
                ]
            except (FileNotFoundError, zarr.errors.ArrayNotFoundError) as e:
                raise StoreError(f"{self.url}: committed shard {path} is missing: {e}") from e
            tokens, small = arrays[0], [self._cached(a) for a in arrays[1:]]
            self._arrays[key] = _Shard(tokens, small[0], small[1] if view.state_dim else None)
        return self._arrays[key]

    def _cached(self, array: zarr.Array) -> zarr.Array | np.ndarray:
        """`array` read whole into memory while the cache has room, else the array itself."""
        if self._cached_bytes + array.nbytes > ACTIONS_CACHE_BYTES:
            return array
        self._cached_bytes += array.nbytes
        return array[:]

    def close(self) -> None:
        """Stop the read threads (a later read starts them again)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- pickling (Ray workers, DataLoader workers): ship the index, reopen arrays lazily ------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        state["_pool"] = None
        state["_cached_bytes"] = 0
        return state


class WindowSampler:
    """Uniformly random windows of `window` consecutive kept frames, each inside one episode.

    Episodes of `split` (None: every split) shorter than the window are skipped; `skipped[name]`
    counts them. Actions come normalised with the dataset's train stats and flattened [T, s*A],
    state normalised with its train state stats [T, S] ([T, 0] for a dataset without state).
    """

    def __init__(
        self,
        store: TokenStore,
        window: int,
        split: str | None = "train",
        datasets: list[str] | None = None,
        seed: int = 0,
    ):
        if window < 1:
            raise ValueError(f"window must be >= 1 frame, got {window}")
        self.store = store
        self.window = window
        self.split = split
        self.datasets = list(datasets) if datasets is not None else store.datasets
        self.rng = np.random.default_rng(seed)
        self.skipped: dict[str, int] = {}
        self._episodes: dict[str, np.ndarray] = {}  # eligible episodes (view indices)
        self._firsts: dict[str, np.ndarray] = {}  # global number of each one's first window
        self._counts: dict[str, np.ndarray] = {}  # windows in each one
        for name in self.datasets:
            view = store.dataset(name)
            chosen = np.ones(len(view), bool) if split is None else view.split == split
            long_enough = chosen & (view.length >= window)
            self.skipped[name] = int((chosen & ~long_enough).sum())
            self._episodes[name] = np.flatnonzero(long_enough)
            self._counts[name] = view.length[long_enough] - window + 1
            self._firsts[name] = np.cumsum(self._counts[name]) - self._counts[name]

    def num_windows(self, dataset: str) -> int:
        if dataset not in self._counts:
            raise StoreError(f"dataset {dataset!r} is not one of this sampler's {self.datasets}")
        return int(self._counts[dataset].sum())

    def sample(
        self,
        dataset: str,
        n: int,
        rng: np.random.Generator | None = None,
        replace: bool = True,
    ) -> list[Window]:
        """`n` windows of `dataset`, drawn uniformly over all its windows, with replacement or
        (`replace=False`) distinct, at most all of them."""
        rng = rng if rng is not None else self.rng
        total = self.num_windows(dataset)
        view = self.store.dataset(dataset)
        if total == 0:
            raise StoreError(
                f"{self.store.url}: dataset {dataset!r} has no {self.split or 'any'}-split "
                f"episode of >= {self.window} kept frames ({self.skipped[dataset]} shorter)"
            )
        if view.stats is None:
            raise StoreError(
                f"{self.store.url}: dataset {dataset!r} has no train episodes, so no action "
                "stats to normalise with"
            )
        if replace:
            picks = rng.integers(0, total, size=n)  # global window numbers
        else:
            picks = rng.choice(total, size=min(n, total), replace=False)
        slot = np.searchsorted(self._firsts[dataset], picks, side="right") - 1
        starts = picks - self._firsts[dataset][slot]  # first frame inside the episode
        episodes = self._episodes[dataset][slot]
        T = self.window
        requests = [(int(e), int(o), int(o) + T) for e, o in zip(episodes, starts, strict=True)]
        out = []
        read = self.store.read_many(dataset, requests)
        for (e, o, _), (tokens, actions, state) in zip(requests, read, strict=True):
            flat = view.stats.normalise(actions).reshape(T, -1)  # (T, s, A) -> (T, s*A)
            if view.state_dim:  # state stats exist: train episodes exist and all have state
                state = view.state_stats.normalise(state)  # (T, S)
            out.append(Window(dataset, view.episode_ids[e], o, tokens, flat, state, episode=e))
        return out


def build_views(
    url: str, units: list[str], commits: dict[str, dict[str, Any]]
) -> dict[str, DatasetView]:
    """Every dataset's view from the commit records of `units` (sorted): the episode index, and
    train stats merged in unit order (`finalize` records the same merge)."""
    parts: dict[str, dict[str, Any]] = {}
    for unit in units:  # sorted: the stats merge order `finalize` uses
        for name, rec in commits[unit]["datasets"].items():
            shape = _shape(rec)
            p = parts.setdefault(
                name, {"units": [], "cols": [], "stats": None, "state_stats": None, "shape": shape}
            )
            if p["units"]:
                _check_shape(url, name, (p["units"][0], p["shape"]), (unit, shape))
            p["cols"].append((len(p["units"]), rec["index"]))
            p["units"].append(unit)
            p["stats"] = _merged(p["stats"], rec["train_stats"])
            p["state_stats"] = _merged(p["state_stats"], rec.get("state_train_stats"))
    views = {}
    specs = _finalized_specs(url, list(parts))
    for name, p in parts.items():
        cols = p["cols"]
        views[name] = DatasetView(
            name=name,
            stride=p["shape"]["stride"],
            action_dim=p["shape"]["action_dim"],
            state_dim=p["shape"]["state_dim"],
            stats=p["stats"],
            state_stats=p["state_stats"],
            spec=specs.get(name),
            units=p["units"],
            unit=np.concatenate([np.full(len(c["start"]), u, np.int64) for u, c in cols]),
            start=np.concatenate([np.asarray(c["start"], np.int64) for _, c in cols]),
            length=np.concatenate([np.asarray(c["length"], np.int64) for _, c in cols]),
            split=np.concatenate([np.asarray(c["split"], dtype=str) for _, c in cols]),
            success=np.concatenate([np.asarray(c["success"], np.int8) for _, c in cols]),
            episode_ids=[e for _, c in cols for e in c["episode_id"]],
        )
    return views


def _shape(rec: dict[str, Any]) -> dict[str, int]:
    """A commit record's layout of one dataset; stores written before state was kept have no
    "state_dim" (no state)."""
    return {
        "stride": int(rec["stride"]),
        "action_dim": int(rec["action_dim"]),
        "state_dim": int(rec.get("state_dim", 0)),
    }


def _check_shape(
    url: str, name: str, first: tuple[str, dict[str, int]], other: tuple[str, dict[str, int]]
) -> None:
    """Two (unit, layout) of dataset `name` agree: every unit of a dataset joins one view."""
    (unit_a, a), (unit_b, b) = first, other
    for key in a:
        if a[key] != b[key]:
            raise StoreError(
                f"{url}: dataset {name!r} has {key} {a[key]} in unit {unit_a!r} but {b[key]} "
                f"in unit {unit_b!r}"
            )


def _merged(total: ActionStats | None, part: dict[str, Any] | None) -> ActionStats | None:
    """`total` with one commit's exact train stats merged in (in unit order); None: neither has
    train rows."""
    if not part:
        return total
    stats = ActionStats.from_dict(part)
    return stats if total is None else total.merge(stats)


def _finalized_specs(url: str, names: list[str]) -> dict[str, DatasetSpec]:
    """Registry entries `finalize` recorded in dataset attrs (absent before finalize)."""
    store = zarr_store(url, read_only=True)
    specs = {}
    for name in names:
        try:
            attrs = zarr.open_group(store, path=name, mode="r", zarr_format=3).attrs
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            continue
        if "registry" in attrs:
            specs[name] = DatasetSpec.model_validate(attrs["registry"])
    return specs
