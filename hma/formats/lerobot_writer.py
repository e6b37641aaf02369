"""Writing LeRobot v3 datasets (layout: see `hma.formats.lerobot`), one episode at a time.

Each episode is encoded to its own mp4 and then copied onto the end of the current packed video
file, as LeRobot does; data, video and episode-metadata files each roll over to the next file
index when a size threshold would be passed. On S3 every file is built locally and uploaded as
soon as it is complete, so local disk holds about one file per stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hma import storage
from hma.episodes import Episode, Registry, validate_episode
from hma.errors import FormatError
from hma.formats import mp4
from hma.formats.lerobot_layout import (
    ACTION,
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_FEATURES,
    EPISODES_PATH,
    HMA_KEY,
    IMAGES_PREFIX,
    INFO_PATH,
    RESERVED,
    STATE,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    column_array,
)
from hma.stats import ActionStats

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot's DEFAULT_QUANTILES -> q01 ... q99
IMAGE_STATS_FRAMES = 64
IMAGE_STATS_SIDE = 128
EPISODE_ROWS_PER_GROUP = 256


class _Staging:
    """Local files for a dataset at `url`: written in place locally, uploaded one by one to S3."""

    def __init__(self, url: str):
        self.url = url
        self.remote = storage.is_remote(url)
        self.root = (
            tempfile.mkdtemp(prefix="hma-lerobot-") if self.remote else storage.local_path(url)
        )
        self.scratch = tempfile.mkdtemp(prefix="hma-lerobot-scratch-")

    def path(self, rel: str) -> str:
        local = storage.child(self.root, rel)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        return local

    def commit(self, rel: str) -> None:
        """The file `rel` is complete: upload it (remote) and drop the local copy."""
        if self.remote:
            local = storage.child(self.root, rel)
            fs, path = storage.filesystem(storage.child(self.url, rel))
            fs.put_file(local, path)
            os.remove(local)

    def cleanup(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self.remote:
            shutil.rmtree(self.root, ignore_errors=True)


class _Rolling:
    """Chunk/file indices of one stream of files (data, one video key, or episode metadata)."""

    def __init__(self, template: str, chunks_size: int, **fmt: str):
        self.template, self.chunks_size, self.fmt = template, chunks_size, fmt
        self.chunk_index = self.file_index = 0

    @property
    def rel(self) -> str:
        return self.template.format(
            chunk_index=self.chunk_index, file_index=self.file_index, **self.fmt
        )

    def advance(self) -> None:
        # LeRobot's update_chunk_file_indices: chunks_size files per chunk directory.
        self.file_index += 1
        if self.file_index == self.chunks_size:
            self.chunk_index, self.file_index = self.chunk_index + 1, 0


class LeRobotWriter:
    """Streams episodes into a new LeRobot v3 dataset: one episode in memory at a time."""

    def __init__(
        self,
        url: str,
        registry: Registry,
        encoding: mp4.VideoEncoding,
        data_mb: float,
        video_mb: float,
        chunks_size: int,
    ):
        self.url, self.registry, self.encoding = url, registry, encoding
        self.data_mb, self.video_mb, self.chunks_size = data_mb, video_mb, chunks_size
        self.data_limit = data_mb * 1024 * 1024
        self.video_limit = video_mb * 1024 * 1024
        self.staging = _Staging(url)
        self.layout: dict[str, Any] | None = None
        self.tasks: dict[str, int] = {}
        self.datasets: list[str] = []
        self.splits: list[str] = []
        self.total_frames = 0
        self.stats = _StatsAccumulator()
        self.episode_rows: list[dict[str, Any]] = []
        self.data = self.video = self.meta = None
        self.data_writer: pq.ParquetWriter | None = None
        self.data_file_frames = 0
        self.meta_writer: pq.ParquetWriter | None = None
        self.concat: mp4.Mp4Concat | None = None

    # -- per episode -----------------------------------------------------------------------

    def add(self, ep: Episode) -> None:
        spec = validate_episode(ep, self.registry)
        if self.layout is None:
            self._start(ep, spec)
        self._check_layout(ep)
        index = len(self.splits)
        task_index = self.tasks.setdefault(ep.instruction, len(self.tasks))
        if ep.dataset not in self.datasets:
            self.datasets.append(ep.dataset)
        table = self._frames_table(ep, index, task_index)
        row: dict[str, Any] = {"episode_index": index, "tasks": [ep.instruction], "length": len(ep)}
        row.update(self._write_data(table))
        row.update(self._write_video(ep))
        row.update(
            {
                "episode_id": ep.episode_id,
                "dataset": ep.dataset,
                "split": ep.split,
                "success": ep.success,
                "hz": float(ep.hz),
                "episode_meta": json.dumps(ep.meta, sort_keys=True),
            }
        )
        ep_stats = _episode_stats(table, self.layout["camera_key"], ep.frames)
        self.stats.add(ep_stats)
        row.update(_flatten_stats(ep_stats))
        self._write_episode_row(row)
        self.splits.append(ep.split)
        self.total_frames += len(ep)

    def _start(self, ep: Episode, spec: Any) -> None:
        camera_key = IMAGES_PREFIX + spec.camera
        h, w = ep.frames.shape[1:3]
        features: dict[str, Any] = {
            ACTION: {"dtype": "float32", "shape": [ep.actions.shape[1]], "names": None}
        }
        if ep.state is not None:
            features[STATE] = {"dtype": "float32", "shape": [ep.state.shape[1]], "names": None}
        for key, arr in sorted(ep.extras.items()):
            if key in RESERVED or key.startswith(IMAGES_PREFIX):
                raise FormatError(f"{self.url}: extras key {key!r} collides with a LeRobot feature")
            if arr.dtype.kind not in "biuf":
                raise FormatError(f"{self.url}: extras {key!r} has dtype {arr.dtype}; need numeric")
            step_shape = list(arr.shape[1:])
            size = int(np.prod(step_shape)) if step_shape else 1
            features[key] = {"dtype": arr.dtype.name, "shape": [size], "names": None}
            # Shapes LeRobot's [K] cannot say ((1,), or more than one axis) are kept for the reader.
            if step_shape != ([size] if size > 1 else []):
                features[key]["hma_shape"] = step_shape
        features[camera_key] = {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
            "info": {},  # filled from the first video file (as LeRobot's update_video_info does)
        }
        features.update(json.loads(json.dumps(DEFAULT_FEATURES)))
        fps = float(ep.hz)
        self.layout = {
            "fps": int(fps) if fps.is_integer() else fps,
            "features": features,
            "camera_key": camera_key,
            "frame_shape": (h, w),
            "robot_type": spec.embodiment,
            "extras": sorted(ep.extras),
        }
        self.data = _Rolling(DATA_PATH, self.chunks_size)
        self.video = _Rolling(VIDEO_PATH, self.chunks_size, video_key=camera_key)
        self.meta = _Rolling(EPISODES_PATH, self.chunks_size)

    def _check_layout(self, ep: Episode) -> None:
        features = self.layout["features"]
        expected = {
            "hz": float(self.layout["fps"]),
            "action width": features[ACTION]["shape"][0],
            "state width": features[STATE]["shape"][0] if STATE in features else None,
            "frame size": self.layout["frame_shape"],
            "extras": self.layout["extras"],
        }
        got = {
            "hz": float(ep.hz),
            "action width": ep.actions.shape[1],
            "state width": None if ep.state is None else ep.state.shape[1],
            "frame size": tuple(ep.frames.shape[1:3]),
            "extras": sorted(ep.extras),
        }
        for key, value in expected.items():
            if got[key] != value:
                raise FormatError(
                    f"{self.url}: dataset {ep.dataset!r}, episode {ep.episode_id!r}: {key} "
                    f"{got[key]} differs from {value} of the episodes before it (a LeRobot "
                    "dataset has one fps and one feature set)"
                )

    def _frames_table(self, ep: Episode, index: int, task_index: int) -> pa.Table:
        steps = len(ep)
        fps = float(self.layout["fps"])
        columns: dict[str, pa.Array] = {ACTION: _fixed_list(ep.actions.astype(np.float32))}
        if ep.state is not None:
            columns[STATE] = _fixed_list(ep.state.astype(np.float32))
        for key in sorted(ep.extras):
            arr = ep.extras[key].reshape(steps, -1)
            columns[key] = pa.array(arr[:, 0]) if arr.shape[1] == 1 else _fixed_list(arr)
        columns["timestamp"] = pa.array((np.arange(steps) / fps).astype(np.float32))
        columns["frame_index"] = pa.array(np.arange(steps, dtype=np.int64))
        columns["episode_index"] = pa.array(np.full(steps, index, np.int64))
        first = self.total_frames
        columns["index"] = pa.array(np.arange(first, first + steps, dtype=np.int64))
        columns["task_index"] = pa.array(np.full(steps, task_index, np.int64))
        return pa.table(columns)

    def _write_data(self, table: pa.Table) -> dict[str, Any]:
        if self.data_writer is not None:
            path = self.staging.path(self.data.rel)
            per_frame = os.path.getsize(path) / max(self.data_file_frames, 1)
            # LeRobot's rule: roll when this episode would take the file past the threshold.
            if os.path.getsize(path) + per_frame * table.num_rows >= self.data_limit:
                self._close_data()
                self.data.advance()
        if self.data_writer is None:
            self.data_writer = pq.ParquetWriter(
                self.staging.path(self.data.rel), table.schema, compression="snappy"
            )
            self.data_file_frames = 0
        self.data_writer.write_table(table)  # one row group per episode, as LeRobot writes
        self.data_file_frames += table.num_rows
        return {
            "data/chunk_index": self.data.chunk_index,
            "data/file_index": self.data.file_index,
            "dataset_from_index": self.total_frames,
            "dataset_to_index": self.total_frames + table.num_rows,
        }

    def _write_video(self, ep: Episode) -> dict[str, Any]:
        key = self.layout["camera_key"]
        episode_path = os.path.join(self.staging.scratch, "episode.mp4")
        count = mp4.encode_frames(ep.frames, episode_path, float(self.layout["fps"]), self.encoding)
        size = os.path.getsize(episode_path)
        if self.concat is not None and self.concat.size_bytes + size >= self.video_limit:
            self._close_video()
            self.video.advance()
        if self.concat is None:
            self.concat = mp4.Mp4Concat(
                self.staging.path(self.video.rel), float(self.layout["fps"])
            )
        start, stop = self.concat.append(episode_path, count)
        os.remove(episode_path)
        return {
            f"videos/{key}/chunk_index": self.video.chunk_index,
            f"videos/{key}/file_index": self.video.file_index,
            f"videos/{key}/from_timestamp": start,
            f"videos/{key}/to_timestamp": stop,
        }

    def _write_episode_row(self, row: dict[str, Any]) -> None:
        row["meta/episodes/chunk_index"] = self.meta.chunk_index
        row["meta/episodes/file_index"] = self.meta.file_index
        self.episode_rows.append(row)
        if len(self.episode_rows) >= EPISODE_ROWS_PER_GROUP:
            self._flush_episode_rows()

    def _flush_episode_rows(self) -> None:
        if not self.episode_rows:
            return
        table = pa.Table.from_pylist(self.episode_rows, schema=self._episodes_schema())
        self.episode_rows = []
        if self.meta_writer is None:
            self.meta_writer = pq.ParquetWriter(self.staging.path(self.meta.rel), table.schema)
        self.meta_writer.write_table(table)
        if os.path.getsize(self.staging.path(self.meta.rel)) >= self.data_limit:
            self._close_meta()
            self.meta.advance()

    def _episodes_schema(self) -> pa.Schema:
        sample = self.episode_rows[0]
        fields = []
        for name, value in sample.items():
            if name == "success":
                fields.append(pa.field(name, pa.bool_()))  # nullable: None = unknown
            elif name in ("episode_id", "dataset", "split", "episode_meta"):
                fields.append(pa.field(name, pa.string()))
            elif name == "tasks":
                fields.append(pa.field(name, pa.list_(pa.string())))
            else:
                fields.append(pa.field(name, pa.array([value]).type))
        return pa.schema(fields)

    # -- closing ---------------------------------------------------------------------------

    def _close_data(self) -> None:
        if self.data_writer is not None:
            self.data_writer.close()
            self.data_writer = None
            self.staging.commit(self.data.rel)

    def _close_video(self) -> None:
        if self.concat is not None:
            self.concat.close()
            self._record_video_info(self.staging.path(self.video.rel))
            self.concat = None
            self.staging.commit(self.video.rel)

    def _close_meta(self) -> None:
        if self.meta_writer is not None:
            self.meta_writer.close()
            self.meta_writer = None
            self.staging.commit(self.meta.rel)

    def _record_video_info(self, path: str) -> None:
        feature = self.layout["features"][self.layout["camera_key"]]
        if feature["info"]:
            return
        probe = mp4.probe(path)
        # The keys LeRobot's get_video_info writes (plus its encoder fields it records).
        feature["info"] = {
            "video.height": probe.height,
            "video.width": probe.width,
            "video.codec": probe.codec,
            "video.pix_fmt": probe.pix_fmt,
            "video.fps": self.layout["fps"],
            "video.channels": 3,
            "video.g": self.encoding.gop,
            "video.crf": self.encoding.crf,
            "has_audio": False,
            "is_depth_map": False,
        }

    def finish(self) -> int:
        count = len(self.splits)
        if count == 0:
            return 0
        self._close_data()
        self._close_video()
        self._flush_episode_rows()
        self._close_meta()
        self._write_tasks()
        stats = self.stats.result()
        self._put_json(STATS_PATH, stats)
        self._put_json(INFO_PATH, self._info(count))
        return count

    def _write_tasks(self) -> None:
        import pandas as pd

        # As LeRobot writes it: a DataFrame indexed by the task string, one task_index column.
        tasks = pd.DataFrame(
            {"task_index": list(self.tasks.values())},
            index=pd.Index(list(self.tasks), name="task"),
        )
        tasks.to_parquet(self.staging.path(TASKS_PATH))
        self.staging.commit(TASKS_PATH)

    def _info(self, count: int) -> dict[str, Any]:
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.layout["robot_type"],
            "total_episodes": count,
            "total_frames": self.total_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self.data_mb,
            "video_files_size_in_mb": self.video_mb,
            "fps": self.layout["fps"],
            "splits": _split_ranges(self.splits),
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": self.layout["features"],
            HMA_KEY: {
                "dataset": self.datasets[0] if len(self.datasets) == 1 else None,
                "datasets": self.datasets,
            },
        }

    def _put_json(self, rel: str, obj: Any) -> None:
        with open(self.staging.path(rel), "w") as f:
            json.dump(obj, f, indent=4)
        self.staging.commit(rel)

    def cleanup(self) -> None:
        """After a failure: release every writer and the temp dirs; the first error stands."""
        try:
            for writer in (self.data_writer, self.meta_writer, self.concat):
                if writer is not None:
                    with contextlib.suppress(Exception):  # a failed mux may fail to close too
                        writer.close()
        finally:
            self.staging.cleanup()


def _fixed_list(arr: np.ndarray) -> pa.Array:
    """[T, K] -> Arrow fixed_size_list<K> (what HF datasets' Sequence(length=K) writes)."""
    arr = np.ascontiguousarray(arr)
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])


def _split_ranges(splits: list[str]) -> dict[str, str]:
    """["train","train","val"] -> {"train": "0:2", "val": "2:3"}; non-contiguous: "0:2,5:7"."""
    ranges: dict[str, list[str]] = {}
    start = 0
    for i in range(1, len(splits) + 1):
        if i == len(splits) or splits[i] != splits[start]:
            ranges.setdefault(splits[start], []).append(f"{start}:{i}")
            start = i
    return {name: ",".join(parts) for name, parts in ranges.items()}


# ---------------------------------------------------------------------------------------------
# Statistics (meta/stats.json and the per-episode stats/... columns), as LeRobot computes them:
# per feature dimension for vectors, per channel in [0, 1] with shape (3, 1, 1) for cameras.


def _basic_stats(values: np.ndarray, axis: int | tuple[int, ...]) -> dict[str, np.ndarray]:
    values = values.astype(np.float64)
    stats = {
        "min": values.min(axis=axis),
        "max": values.max(axis=axis),
        "mean": values.mean(axis=axis),
        "std": values.std(axis=axis),
        "count": np.array([values.shape[0]]),
    }
    for q in QUANTILES:
        stats[f"q{int(q * 100):02d}"] = np.quantile(values, q, axis=axis)
    return stats


def _episode_stats(table: pa.Table, camera_key: str, frames: np.ndarray) -> dict[str, dict]:
    stats = {}
    for name in table.column_names:
        values = column_array(table, name, np.float64)
        stats[name] = _basic_stats(values.reshape(len(values), -1), axis=0)
    pixels = _sample_pixels(frames).astype(np.float64) / 255.0
    image = _basic_stats(pixels, axis=0)
    image = {k: (v if k == "count" else v.reshape(3, 1, 1)) for k, v in image.items()}
    image["count"] = np.array([len(frames)])
    stats[camera_key] = image
    return stats


def _sample_pixels(frames: np.ndarray) -> np.ndarray:
    """Pixels [N, 3] from at most IMAGE_STATS_FRAMES frames, each at most IMAGE_STATS_SIDE px a
    side: image stats need not touch every pixel (LeRobot samples and downsamples too)."""
    steps, h, w = frames.shape[:3]
    picked = frames[np.linspace(0, steps - 1, min(steps, IMAGE_STATS_FRAMES)).astype(int)]
    stride = max(1, -(-max(h, w) // IMAGE_STATS_SIDE))
    return picked[:, ::stride, ::stride].reshape(-1, 3)


def _flatten_stats(stats: dict[str, dict]) -> dict[str, Any]:
    return {
        f"stats/{key}/{name}": value.tolist()
        for key, group in stats.items()
        for name, value in group.items()
    }


class _StatsAccumulator:
    """Dataset stats from per-episode stats, keeping no frames. Like LeRobot's aggregate_stats:
    exact min/max, pooled mean/std (Chan's merge, `hma.stats`), count-weighted mean of the
    episodes' quantiles."""

    def __init__(self):
        self.moments: dict[str, ActionStats] = {}
        self.quantiles: dict[str, dict[str, np.ndarray]] = {}

    def add(self, episode: dict[str, dict]) -> None:
        for key, group in episode.items():
            n = int(group["count"][0])
            mean = np.asarray(group["mean"], np.float64)
            part = ActionStats(
                n,
                mean,
                np.asarray(group["std"], np.float64) ** 2 * n,
                np.asarray(group["min"]),
                np.asarray(group["max"]),
            )
            self.moments[key] = self.moments[key].merge(part) if key in self.moments else part
            weighted = self.quantiles.setdefault(key, {})
            for name in group:
                if name.startswith("q"):
                    weighted[name] = weighted.get(name, 0.0) + np.asarray(group[name]) * n

    def result(self) -> dict[str, dict[str, Any]]:
        out = {}
        for key, m in self.moments.items():
            group = {"min": m.min, "max": m.max, "mean": m.mean, "std": m.std}
            group |= {name: v / m.count for name, v in self.quantiles[key].items()}
            group["count"] = np.array([m.count])
            out[key] = {name: np.asarray(v).tolist() for name, v in group.items()}
        return out
