"""LeRobot v3 datasets (parquet + packed mp4 + json), read and written on local paths or s3://.

The layout, as LeRobot's own code writes it (`lerobot/datasets/utils.py`, `dataset_writer.py`,
`dataset_metadata.py`; no lerobot release installs beside our torch, so this is our own code):

    meta/info.json                      codebase_version "v3.0", fps, features, totals, path templates
    meta/stats.json                     per feature: min, max, mean, std, count, q01 ... q99
    meta/tasks.parquet                  index "task" (the instruction) -> column task_index
    meta/episodes/chunk-000/file-000.parquet
                                        one row per episode: episode_index, tasks, length,
                                        data/chunk_index, data/file_index, dataset_from_index,
                                        dataset_to_index, videos/<key>/{chunk_index, file_index,
                                        from_timestamp, to_timestamp}, meta/episodes/..., stats/...
    data/chunk-000/file-000.parquet     one row per frame: action, observation.state, timestamp,
                                        frame_index, episode_index, index, task_index, ...
    videos/<key>/chunk-000/file-000.mp4 MANY episodes one after another; episode e's frame i is
                                        presented at videos/<key>/from_timestamp + timestamp[i]

Files roll over to the next file index once a size threshold would be passed. Our per-episode
fields that LeRobot has no column for (episode_id, split, success, dataset, hz, meta) are extra
columns of the episodes parquet; LeRobot's loader ignores columns it does not know.
Episode.extras become extra per-frame features under their own key (e.g. `rewards`), and every
extra numeric feature of a foreign dataset (e.g. `next.reward`) comes back as an extra.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hma import storage
from hma.episodes import Episode, Registry
from hma.errors import FormatError
from hma.formats import mp4
from hma.formats.base import (
    EpisodeRef,
    Listed,
    Unit,
    episode_from_ref,
    list_positions,
    position_units,
)
from hma.formats.lerobot_layout import (
    ACTION,
    CHUNKS_SIZE,
    DATA_FILES_SIZE_IN_MB,
    HMA_KEY,
    IMAGES_PREFIX,
    INFO_PATH,
    RESERVED,
    STATE,
    VIDEO_FILES_SIZE_IN_MB,
    column_array,
)

FORMAT = "lerobot"
LISTING_CACHE = 8  # datasets whose episode listing a worker keeps


# ---------------------------------------------------------------------------------------------
# Reading


def sniff(url: str) -> bool:
    try:
        return "codebase_version" in _read_json(storage.join(url, INFO_PATH))
    except Exception:  # noqa: BLE001 - sniffing never raises
        return False


def read_info(url: str) -> dict[str, Any]:
    info = _read_json(storage.join(url, INFO_PATH))
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise FormatError(
            f"{storage.join(url, INFO_PATH)}: LeRobot codebase_version {version!r}; only v3.x is "
            "supported (convert with `python -m lerobot.scripts.convert_dataset_v21_to_v30`)"
        )
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise FormatError(f"{storage.join(url, INFO_PATH)}: missing key {key!r}")
    return info


def list_refs(url: str, dataset: str | None, camera: str | None = None) -> list[EpisodeRef]:
    """One ref per episode, from meta/info.json and meta/episodes/*/*.parquet only.

    `camera` picks the video key (`observation.images.<camera>` or the full key); default: the
    registry camera of the dataset when present, else the first camera feature.
    """
    url = url.rstrip("/")
    info = read_info(url)
    features = info["features"]
    if ACTION not in features:
        raise FormatError(f"{storage.join(url, INFO_PATH)}: no {ACTION!r} feature")
    splits = _split_lookup(info.get("splits") or {})
    default_dataset = dataset or (info.get(HMA_KEY) or {}).get("dataset")
    extras = {
        key: ft
        for key, ft in features.items()
        if key not in RESERVED and ft.get("dtype") not in ("video", "image", "string")
    }
    refs = []
    camera_keys: dict[str, str] = {}  # per dataset name
    for table in _episode_tables(url):
        for row in table.to_pylist():
            try:
                index = int(row["episode_index"])
                name = dataset or row.get("dataset") or default_dataset
                if not name:
                    raise FormatError(
                        f"{url}: episode {index} has no dataset name; pass the registry dataset "
                        "name (dataset=...) for datasets not written by hma"
                    )
                if name not in camera_keys:
                    camera_keys[name] = _camera_key(features, camera, name, url)
                camera_key = camera_keys[name]
                tasks = row.get("tasks") or []
                ref: EpisodeRef = {
                    "format": "lerobot",
                    "url": url,
                    "index": index,
                    "episode_id": row.get("episode_id") or f"{url}#{index}",
                    "dataset": name,
                    "split": row.get("split") or splits.get(index, "train"),
                    "hz": float(row.get("hz") or info["fps"]),
                    "fps": float(info["fps"]),
                    "success": row.get("success"),
                    "instruction": tasks[0] if tasks else "",
                    "meta": json.loads(row.get("episode_meta") or "{}"),
                    "length": int(row["length"]),
                    "data_file": info["data_path"].format(
                        chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
                    ),
                    "has_state": STATE in features,
                    "extras": extras,
                    "camera_key": camera_key,
                    "camera_dtype": features[camera_key]["dtype"],
                    "frame_shape": list(features[camera_key]["shape"]),
                }
                if ref["camera_dtype"] == "video":
                    ref["video_file"] = info["video_path"].format(
                        video_key=camera_key,
                        chunk_index=row[f"videos/{camera_key}/chunk_index"],
                        file_index=row[f"videos/{camera_key}/file_index"],
                    )
                    ref["from_timestamp"] = float(row[f"videos/{camera_key}/from_timestamp"])
                refs.append(ref)
            except KeyError as e:
                raise FormatError(
                    f"{storage.join(url, 'meta')}: episode {row.get('episode_index')}: "
                    f"missing column or key {e} in info.json or the episodes parquet"
                ) from None
    return sorted(refs, key=lambda r: r["index"])


def plan_units(url: str, dataset: str | None, n: int) -> Iterator[Unit]:
    """Units over the episode index order; only the episode parquet files' row counts are read."""
    url = url.rstrip("/")
    read_info(url)
    fs, root = storage.filesystem(storage.join(url, "meta/episodes"))
    files = sorted(fs.glob(f"{root}/*/*.parquet"))
    if not files:
        raise FormatError(f"{storage.join(url, 'meta/episodes')}: no episode parquet files")
    total = 0
    for path in files:
        try:
            total += pq.read_metadata(path, filesystem=fs).num_rows
        except OSError as e:
            raise FormatError(f"{path}: cannot read episode metadata: {e}") from e
    yield from position_units(FORMAT, url, dataset, total, n)


@lru_cache(maxsize=LISTING_CACHE)
def _cached_refs(url: str, dataset: str | None) -> list[EpisodeRef]:
    # One listing per worker process and dataset: its episodes are read by many units.
    return list_refs(url, dataset)


def list_unit(unit: Unit) -> list[Listed]:
    return list_positions(unit, _cached_refs(unit["url"].rstrip("/"), unit["dataset"]))


def load(ref: EpisodeRef) -> Episode:
    """Decode one episode: its rows of one data parquet file and its span of one mp4."""
    data_url = storage.join(ref["url"], ref["data_file"])
    where = f"episode {ref['index']} ({ref['episode_id']!r})"
    columns = ["frame_index", "timestamp", ACTION]
    columns += [STATE] if ref["has_state"] else []
    columns += list(ref["extras"])
    columns += [ref["camera_key"]] if ref["camera_dtype"] == "image" else []
    fs, path = storage.filesystem(data_url)
    try:
        table = pq.read_table(
            path, filesystem=fs, columns=columns, filters=[("episode_index", "=", ref["index"])]
        )
    except FileNotFoundError:
        raise FormatError(f"{data_url}: data file of {where} not found") from None
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise FormatError(f"{data_url}: cannot read {where}: {e}") from e
    table = table.sort_by("frame_index")
    if table.num_rows != ref["length"]:
        raise FormatError(
            f"{data_url}: {where} has {table.num_rows} rows, meta/episodes says {ref['length']}"
        )
    actions = column_array(table, ACTION, np.float32)
    state = column_array(table, STATE, np.float32) if ref["has_state"] else None
    extras = {}
    for key, ft in ref["extras"].items():
        arr = column_array(table, key, np.dtype(ft["dtype"]))
        extras[key] = arr.reshape((len(arr), *ft.get("hma_shape", arr.shape[1:])))
    height, width = ref["frame_shape"][:2]
    if ref["camera_dtype"] == "video":
        video_url = storage.join(ref["url"], ref["video_file"])
        times = ref["from_timestamp"] + table.column("timestamp").to_numpy().astype(np.float64)
        try:
            frames = mp4.read_frames_at(video_url, times, ref["fps"], size=(height, width))
        except FormatError as e:
            raise FormatError(f"{where}: {e}") from e
    else:
        frames = _decode_images(table.column(ref["camera_key"]).to_pylist(), data_url, where)
    return episode_from_ref(ref, frames=frames, actions=actions, state=state, extras=extras)


def _read_json(url: str) -> dict[str, Any]:
    try:
        with storage.open_file(url, "r") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FormatError(f"{url}: not found (not a LeRobot dataset?)") from None
    except json.JSONDecodeError as e:
        raise FormatError(f"{url}: not valid JSON: {e}") from e


def _episode_tables(url: str) -> list[pa.Table]:
    fs, root = storage.filesystem(storage.join(url, "meta/episodes"))
    files = sorted(fs.glob(f"{root}/*/*.parquet"))
    if not files:
        raise FormatError(f"{storage.join(url, 'meta/episodes')}: no episode parquet files")
    tables = []
    for path in files:
        try:
            names = pq.read_schema(path, filesystem=fs).names
            # Per-episode stats are the bulk of these files and unused here (LeRobot drops them too).
            columns = [n for n in names if not n.startswith("stats/")]
            tables.append(pq.read_table(path, filesystem=fs, columns=columns))
        except (pa.ArrowInvalid, OSError) as e:
            raise FormatError(f"{path}: cannot read episode metadata: {e}") from e
    return tables


def _split_lookup(splits: dict[str, str]) -> dict[int, str]:
    """info.json splits ({"train": "0:8", "val": "8:10,12:13"}) -> episode index -> our split."""
    lookup = {}
    for name, spec in splits.items():
        ours = "val" if name in ("val", "valid", "validation", "test") else "train"
        for part in str(spec).split(","):
            if ":" in part:
                start, stop = part.split(":")
                lookup.update(dict.fromkeys(range(int(start), int(stop)), ours))
    return lookup


def _camera_key(features: dict, camera: str | None, dataset: str, url: str) -> str:
    cameras = [k for k, ft in features.items() if ft.get("dtype") in ("video", "image")]
    if not cameras:
        raise FormatError(f"{storage.join(url, INFO_PATH)}: no video or image feature")
    wanted = camera or _registry_camera(dataset)
    if wanted:
        for key in (wanted, IMAGES_PREFIX + wanted):
            if key in cameras:
                return key
        if camera:
            raise FormatError(f"{url}: no camera {camera!r} (has: {', '.join(cameras)})")
    return cameras[0]


def _registry_camera(dataset: str) -> str | None:
    from hma.episodes import load_registry

    spec = load_registry().datasets.get(dataset)
    return spec.camera if spec else None


def _decode_images(cells: list[Any], url: str, where: str) -> np.ndarray:
    """LeRobot "image" features: a struct {bytes, path} per frame holding PNG/JPEG bytes."""
    import io

    from PIL import Image

    frames = []
    for i, cell in enumerate(cells):
        blob = cell.get("bytes") if isinstance(cell, dict) else None
        if not blob:
            raise FormatError(f"{url}: {where} frame {i} has no embedded image bytes")
        frames.append(np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")))
    return np.stack(frames)


# ---------------------------------------------------------------------------------------------
# Writing


def write(
    episodes: Iterable[Episode],
    url: str,
    registry: Registry,
    *,
    encoding: mp4.VideoEncoding = mp4.DEFAULT_ENCODING,
    data_files_size_in_mb: float = DATA_FILES_SIZE_IN_MB,
    video_files_size_in_mb: float = VIDEO_FILES_SIZE_IN_MB,
    chunks_size: int = CHUNKS_SIZE,
) -> int:
    """Write episodes as a new LeRobot v3 dataset at `url`; returns the number written.

    All episodes share one fps, action/state width, frame size and extras (LeRobot keeps one
    feature set per dataset). Video is H.264 by default (decord reads it); pass
    `encoding=VideoEncoding(codec="av1")` for LeRobot's own default codec.
    """
    url = url.rstrip("/")
    if storage.exists(storage.join(url, INFO_PATH)):
        raise FormatError(f"{url}: already holds a LeRobot dataset; write to a new location")
    from hma.formats.lerobot_writer import LeRobotWriter  # the reader never needs it

    writer = LeRobotWriter(
        url, registry, encoding, data_files_size_in_mb, video_files_size_in_mb, chunks_size
    )
    try:
        for episode in episodes:
            writer.add(episode)
        return writer.finish()
    finally:
        writer.cleanup()
