"""RLDS episodes in a TFDS dataset directory (TFRecord shards), read and written without TensorFlow.

A TFDS version directory, as `tensorflow_datasets` writes it and `tfds.builder_from_directory` reads:

    <dir>/dataset_info.json                      name, version, fileFormat, splits + shardLengths
    <dir>/features.json                          FeaturesDict JSON: `steps` (a Dataset), `episode_metadata`
    <dir>/<name>-<split>.tfrecord-00000-of-0000N one `tf.train.Example` per episode

In an episode's Example the step fields are flattened into lists: `steps/action` holds T x A floats,
`steps/observation/<camera>` T encoded PNG/JPEG images, `steps/is_first` T int64s, and so on.
(A SequenceExample would be read by TFDS as 0 steps, silently.)

Two step schemas are written:
  * Language Table (`tabletop`): observation/{rgb, effector_translation, effector_target_translation,
    instruction int32[512] (UTF-8 bytes, zero padded)}, action, reward, is_first/is_last/is_terminal.
  * Open-X for every other dataset: observation/{image, state?}, action, reward, discount,
    is_first/is_last/is_terminal, language_instruction.
Extras named `reward` / `discount` fill those step fields; other extras become observation/<key>.
`episode_metadata` holds episode_id, dataset, file_path, success and `hma` (JSON: hz, success
including "unknown", meta, the names of the extras) so a round trip is exact. Datasets written by
other tools lack it: episode ids become `<shard file>#<index>` and hz comes from the registry.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from hma import storage
from hma.episodes import Episode, Registry, load_registry, validate_episode
from hma.errors import EpisodeError, FormatError, UnsafePathError
from hma.formats import tfrecord
from hma.formats.base import EpisodeRef, Listed, Unit, make_unit, ranges
from hma.formats.tfds_features import Field, features_json, parse_features

FORMAT = "rlds"
INFO_FILE = "dataset_info.json"
FEATURES_FILE = "features.json"
FILE_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"  # TFDS's default
MODULE_NAME = "hma.formats.rlds"  # dataset_info `moduleName`: marks a directory this module wrote
EPISODES_PER_SHARD = 100
LANGUAGE_TABLE_DATASETS = frozenset({"tabletop"})
INSTRUCTION_BYTES = 512  # Language Table's observation/instruction width
DEFAULT_HZ = 10.0  # foreign data of a dataset the registry does not know
PNG_COMPRESS_LEVEL = 1  # PNG is lossless at every level; 1 writes ~4x faster than the default 6
JPEG_QUALITY = 95
# Split names other tools use for held-out data, read as our "val".
_VAL_SPLITS = frozenset({"val", "valid", "validation", "test"})
_SCAN_BLOCK = 1 << 16  # read size for header scans on object stores
LISTING_CACHE = 8  # datasets / shards whose listing a worker keeps


def _read_json(url: str) -> dict[str, Any]:
    try:
        with storage.open_file(url, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise FormatError(f"{url}: missing (an RLDS/TFDS directory needs it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{url}: not valid JSON ({e})") from None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split("."))


def _resolve(url: str) -> str:
    """The version directory: `url` itself, or its newest `<x.y.z>/` child holding dataset_info.json."""
    url = url.rstrip("/")
    if storage.exists(storage.join(url, INFO_FILE)) or not storage.isdir(url):
        return url
    fs, path = storage.filesystem(url)
    versions = [
        storage.basename(p)
        for p in fs.ls(path, detail=False)
        if re.fullmatch(r"\d+\.\d+\.\d+", storage.basename(p))
        and fs.exists(f"{p.rstrip('/')}/{INFO_FILE}")
    ]
    return storage.join(url, max(versions, key=_version_key)) if versions else url


def sniff(url: str) -> bool:
    try:
        root = _resolve(url)
        if not storage.exists(storage.join(root, FEATURES_FILE)):
            return False
        info = _read_json(storage.join(root, INFO_FILE))
    except Exception:  # noqa: BLE001 - sniffing never fails, it just says no
        return False
    return info.get("fileFormat", "tfrecord") == "tfrecord" and "splits" in info


def _shard_name(template: str, name: str, split: str, index: int, count: int) -> str:
    width = max(5, len(str(count)))
    mapping = {
        "DATASET": name,
        "SPLIT": split,
        "FILEFORMAT": "tfrecord",
        "SHARD_INDEX": f"{index:0{width}d}",
        "NUM_SHARDS": f"{count:0{width}d}",
        "SHARD_X_OF_Y": f"{index:0{width}d}-of-{count:0{width}d}",
    }
    return template.format(**mapping)


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Shard:
    url: str
    split: str  # the split's name in dataset_info.json ("train", "test", ...)
    records: int  # as dataset_info.json lists them

    @property
    def ours(self) -> str:
        """The Episode split: "val" for TFDS's held-out split names, else "train"."""
        return "val" if self.split in _VAL_SPLITS else "train"


def shards(url: str, dataset: str | None) -> tuple[str, str, list[Shard]]:
    """(version directory, dataset name, shards) from dataset_info.json alone. The dataset is
    `dataset`, else the name a directory this module wrote records; any other needs `dataset`."""
    root = _resolve(url)
    info_url = storage.join(root, INFO_FILE)
    info = _read_json(info_url)
    _fields(root)  # a damaged features.json fails here, on the driver, naming the file
    if info.get("fileFormat", "tfrecord") != "tfrecord":
        raise FormatError(f"{info_url}: fileFormat {info['fileFormat']!r} is not supported")
    name = info.get("name")
    if not name:
        raise FormatError(f"{info_url}: no dataset 'name'")
    if dataset is None and info.get("moduleName") == MODULE_NAME:
        dataset = name
    if dataset is None:
        raise FormatError(
            f"{root}: RLDS dataset {name!r} was not written by HMA; "
            "pass the registry dataset name it belongs to"
        )
    out = []
    for split in info.get("splits", []):
        lengths = [int(n) for n in split.get("shardLengths", [])]
        template = split.get("filepathTemplate") or FILE_TEMPLATE
        for i, length in enumerate(lengths):
            try:
                shard = storage.child(
                    root, _shard_name(template, name, split["name"], i, len(lengths))
                )
            except UnsafePathError as e:
                raise FormatError(f"{info_url}: filepathTemplate {template!r}: {e}") from None
            out.append(Shard(shard, split["name"], length))
    return root, dataset, out


def _offsets(shard: str) -> list[tuple[int, int]]:
    """(offset, length) of every record of a shard: a header-only scan."""
    fs, path = storage.filesystem(shard)
    with fs.open(path, "rb", block_size=_SCAN_BLOCK) as f:
        return tfrecord.scan_offsets(f, shard)


# A worker lists many units of one dataset: it reads each listing once (a dataset directory
# does not change while it is read).
_cached_shards = lru_cache(maxsize=LISTING_CACHE)(shards)
_cached_offsets = lru_cache(maxsize=LISTING_CACHE)(_offsets)


def _ref(root: str, dataset: str, shard: Shard, index: int, offset: int, length: int) -> EpisodeRef:
    return {
        "format": FORMAT,
        "url": root,
        "file": shard.url,
        "offset": offset,
        "length": length,
        "index": index,
        "split": shard.ours,
        "dataset": dataset,
        "episode_id": f"{storage.basename(shard.url)}#{index}",
    }


def list_refs(url: str, dataset: str | None) -> list[EpisodeRef]:
    """One ref per episode, from dataset_info.json and a header-only scan of each shard."""
    root, dataset, listed = shards(url, dataset)
    refs: list[EpisodeRef] = []
    for shard in listed:
        try:
            offsets = _offsets(shard.url)
        except FileNotFoundError:
            raise FormatError(f"{shard.url}: shard listed in {INFO_FILE} is missing") from None
        if len(offsets) != shard.records:
            raise FormatError(
                f"{shard.url}: {len(offsets)} records but {INFO_FILE} lists {shard.records}"
            )
        refs += [_ref(root, dataset, shard, j, *where) for j, where in enumerate(offsets)]
    return refs


def plan_units(url: str, dataset: str | None, n: int) -> Iterator[Unit]:
    """Units of up to n records of one shard, from dataset_info.json's shard lengths; the
    shards themselves are scanned on the workers: loc {"file", "split", "start", "stop"}."""
    _, _, listed = shards(url, dataset)
    for shard in listed:
        for start, stop in ranges(shard.records, n):
            loc = {"file": shard.url, "split": shard.ours, "start": start, "stop": stop}
            yield make_unit(FORMAT, url, dataset, stop - start, loc)


def list_unit(unit: Unit) -> list[Listed]:
    """Refs of records [start, stop) of one shard; records the shard lacks are rejections."""
    loc = unit["loc"]
    root, dataset, _ = _cached_shards(unit["url"], unit["dataset"])
    shard = Shard(loc["file"], loc["split"], loc["stop"])
    try:
        offsets = _cached_offsets(shard.url)
    except FileNotFoundError:
        offsets, missing = [], f"{shard.url}: shard listed in {INFO_FILE} is missing"
    else:
        missing = f"{shard.url}: only {len(offsets)} records, {INFO_FILE} lists more"
    out = []
    for j in range(loc["start"], loc["stop"]):
        if j >= len(offsets):
            episode_id = f"{storage.basename(shard.url)}#{j}"
            out.append(Listed(None, dataset, episode_id, shard.url, missing))
        else:
            out.append(Listed.accepted(_ref(root, dataset, shard, j, *offsets[j]), shard.url))
    return out


@lru_cache(maxsize=16)
def _fields(root: str) -> dict[str, Field]:
    """The parsed features.json of a dataset, once per process (not once per episode: on S3
    that is a GET each). A written dataset directory does not change."""
    return parse_features(_read_json(storage.join(root, FEATURES_FILE)), root)


def load(ref: EpisodeRef) -> Episode:
    """Read and decode the one record `ref` points to."""
    shard, index = ref["file"], ref["index"]
    fields = _fields(ref["url"])
    fs, path = storage.filesystem(shard)
    size = tfrecord.HEADER_SIZE + int(ref["length"]) + tfrecord.FOOTER_SIZE
    try:
        with fs.open(path, "rb", block_size=max(size, _SCAN_BLOCK)) as f:
            payload = tfrecord.read_record(f, shard, index, int(ref["offset"]))
    except FileNotFoundError:
        raise FormatError(f"{shard}: missing") from None
    if payload is None:
        raise FormatError(f"{shard}: record {index} at byte {ref['offset']}: past end of file")
    try:
        example = tfrecord.decode_example(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{shard}: record {index}: not a tf.train.Example ({e})") from None
    return _EpisodeDecoder(example, fields, ref).episode()


class _EpisodeDecoder:
    """Turns one parsed Example (flattened RLDS episode) back into an Episode."""

    def __init__(self, example: dict[str, Any], fields: dict[str, Field], ref: EpisodeRef):
        self.example, self.fields, self.ref = example, fields, ref
        self.where = f"{ref['file']}: record {ref['index']}"
        raw = self._text("episode_metadata/hma")
        try:
            self.hma: dict[str, Any] | None = json.loads(raw) if raw else None
        except json.JSONDecodeError as e:
            raise self.fail("episode_metadata/hma", f"not valid JSON ({e})") from None
        self.steps = self._num_steps()

    def fail(self, key: str, problem: str) -> FormatError:
        return FormatError(f"{self.where}: key {key!r}: {problem}")

    def _text(self, key: str) -> str | None:
        value = self.example.get(key)
        return value[0].decode("utf-8", "replace") if isinstance(value, list) and value else None

    def _num_steps(self) -> int:
        for key in ("steps/is_first", "steps/is_last", "steps/reward"):
            if isinstance(self.example.get(key), np.ndarray):
                return len(self.example[key])
        for key, f in self.fields.items():
            if key.startswith("steps/") and key in self.example:
                per_step = math.prod(f.shape) if f.kind == "tensor" else 1
                if per_step > 0 and f.encoding == "none":
                    return len(self.example[key]) // per_step
        raise self.fail("steps", "cannot tell the number of steps")

    def array(self, key: str) -> np.ndarray:
        """A step tensor as [T, *shape] in its declared dtype."""
        f = self.fields.get(key)
        if f is None or f.kind != "tensor":
            raise self.fail(key, "not a tensor feature in features.json")
        if key not in self.example:
            raise self.fail(key, "missing from the example")
        value = self.example[key]
        dtype = np.dtype("bool" if f.dtype == "bool" else f.dtype)
        if f.encoding != "none":  # one serialised raw tensor per step
            import zlib

            blobs = [zlib.decompress(b) if f.encoding == "zlib" else b for b in value]
            value = np.frombuffer(b"".join(blobs), dtype.newbyteorder("<"))
        shape = (self.steps, *f.shape)
        if -1 in f.shape or np.size(value) != math.prod(shape):
            raise self.fail(key, f"{np.size(value)} values do not fill shape {list(shape)}")
        return np.asarray(value).reshape(shape).astype(dtype)

    def images(self, key: str) -> np.ndarray:
        blobs = self.example.get(key)
        if not isinstance(blobs, list) or len(blobs) != self.steps:
            raise self.fail(key, f"expected {self.steps} encoded images")
        frames = []
        for t, blob in enumerate(blobs):
            try:
                with Image.open(io.BytesIO(blob)) as im:
                    frames.append(np.asarray(im.convert("RGB")))
            except Exception as e:  # noqa: BLE001 - PIL raises many types on bad data
                raise self.fail(key, f"step {t}: undecodable image ({e})") from None
        return np.stack(frames)

    def _image_key(self) -> str:
        obs = [k for k, f in self.fields.items() if f.kind == "image" and k.startswith("steps/")]
        spec = load_registry().datasets.get(self.ref["dataset"])
        for name in (spec.camera if spec else None, "image", "rgb"):
            if name and f"steps/observation/{name}" in obs:
                return f"steps/observation/{name}"
        if not obs:
            raise self.fail("steps/observation", "no image feature")
        return sorted(obs)[0]

    def _actions(self) -> np.ndarray:
        if "steps/action" in self.fields:
            return self.array("steps/action").reshape(self.steps, -1).astype(np.float32)
        # Some Open-X datasets (RT-1) store a dict of action parts: concatenate them in order.
        parts = [
            self.array(k).reshape(self.steps, -1).astype(np.float32)
            for k, f in self.fields.items()
            if k.startswith("steps/action/") and f.kind == "tensor"
        ]
        if not parts:
            raise self.fail("steps/action", "missing from features.json")
        return np.concatenate(parts, axis=1)

    def _instruction(self) -> str:
        if self.fields.get("steps/language_instruction") is not None:
            value = self.example.get("steps/language_instruction")
            return value[0].decode("utf-8", "replace") if value else ""
        if "steps/observation/instruction" in self.fields:
            codes = self.array("steps/observation/instruction")[0].astype(np.int64)
            return bytes(codes[codes != 0].astype(np.uint8)).decode("utf-8", "replace")
        return ""

    def _extras(self) -> dict[str, np.ndarray]:
        if self.hma is not None:
            keys = {n: _extra_key(n) for n in self.hma.get("extras", [])}
        else:  # foreign data: every numeric step field not mapped to another Episode field
            used = {"observation/state", "observation/instruction", "action"}
            used |= {"is_first", "is_last", "is_terminal"}
            keys = {
                k.removeprefix("steps/").removeprefix("observation/"): k
                for k, f in self.fields.items()
                if k.startswith("steps/")
                and f.kind == "tensor"
                and f.dtype != "string"
                and not k.startswith("steps/action/")
                and k.removeprefix("steps/") not in used
            }
        return {name: self.array(key) for name, key in keys.items()}

    def episode(self) -> Episode:
        ref, hma = self.ref, self.hma
        state = None
        if "steps/observation/state" in self.fields:
            state = self.array("steps/observation/state").reshape(self.steps, -1)
        elif hma is None and "steps/observation/effector_translation" in self.fields:
            state = self.array("steps/observation/effector_translation")  # Language Table
        if hma is not None:
            hz, success = float(hma["hz"]), hma.get("success")
        else:
            spec = load_registry().datasets.get(ref["dataset"])
            hz, success = (spec.hz if spec else DEFAULT_HZ), None
        meta = dict(hma.get("meta", {})) if hma else {}
        if hma is None:
            meta["source"] = self._text("episode_metadata/file_path") or ref["file"]
        return Episode(
            dataset=ref["dataset"],
            episode_id=self._text("episode_metadata/episode_id") or ref["episode_id"],
            split=ref["split"],
            frames=self.images(self._image_key()),
            actions=self._actions(),
            state=None if state is None else state.astype(np.float32),
            hz=hz,
            instruction=self._instruction(),
            success=success,
            extras=self._extras(),
            meta=meta,
        )


def _extra_key(name: str) -> str:
    return f"steps/{name}" if name in ("reward", "discount") else f"steps/observation/{name}"


# ---------------------------------------------------------------------------------------------
# Writing


def _encode_image(frame: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(frame).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        Image.fromarray(frame).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _dump_json(hma: dict[str, Any], ep: Episode) -> str:
    try:
        return json.dumps(hma, sort_keys=True)
    except TypeError as e:
        raise EpisodeError(
            ep.dataset, ep.episode_id, "meta", f"not JSON-serialisable ({e})"
        ) from None


def _step_tensor(arr: np.ndarray) -> tuple[Field, Any]:
    """The Field and Example value of a [T, ...] step array.

    tf.train.Example has no double list: float64 would be rounded to float32, so float64 arrays
    use TFDS's `encoding: bytes` instead (one raw little-endian buffer per step), which is exact.
    """
    arr = np.asarray(arr)
    field = Field("tensor", arr.dtype.name, tuple(arr.shape[1:]))
    if arr.dtype == np.float64:
        raw = np.ascontiguousarray(arr, "<f8")
        return Field(field.kind, field.dtype, field.shape, "bytes"), [r.tobytes() for r in raw]
    return field, arr


def _encode_episode(ep: Episode, image_format: str) -> tuple[dict[str, Any], dict[str, Field]]:
    """The Example features of one episode and the step Fields they declare."""
    steps = len(ep)
    language_table = ep.dataset in LANGUAGE_TABLE_DATASETS
    image_key = "steps/observation/rgb" if language_table else "steps/observation/image"
    extras = dict(ep.extras)
    last = np.arange(steps) == steps - 1
    default_reward = (last & bool(ep.success)).astype(np.float32)  # Open-X demos: 1 at the end
    arrays: dict[str, np.ndarray] = {
        "steps/action": ep.actions.astype(np.float32),
        "steps/reward": extras.pop("reward", default_reward),
        "steps/is_first": np.arange(steps) == 0,
        "steps/is_last": last,
        "steps/is_terminal": last & (ep.success is not False),  # a failed episode was cut off
    }
    if ep.state is not None:
        arrays["steps/observation/state"] = ep.state.astype(np.float32)
    if language_table:
        for key in ("effector_translation", "effector_target_translation"):
            default = np.zeros((steps, 2), np.float32)
            arrays[f"steps/observation/{key}"] = extras.pop(key, default)
        code = ep.instruction.encode()
        if len(code) > INSTRUCTION_BYTES:
            raise EpisodeError(
                ep.dataset, ep.episode_id, "instruction", f"over {INSTRUCTION_BYTES} UTF-8 bytes"
            )
        padded = np.zeros(INSTRUCTION_BYTES, np.int32)
        padded[: len(code)] = np.frombuffer(code, np.uint8)
        arrays["steps/observation/instruction"] = np.tile(padded, (steps, 1))
    else:
        arrays["steps/discount"] = extras.pop("discount", np.ones(steps, np.float32))
    for name, arr in extras.items():
        key = _extra_key(name)
        if key in arrays or key == image_key or "/" in name or arr.dtype.kind not in "fiub":
            raise EpisodeError(
                ep.dataset, ep.episode_id, f"extras.{name}", "name or dtype cannot be an RLDS field"
            )
        arrays[key] = arr
    fields: dict[str, Field] = {}
    features: dict[str, Any] = {}
    for key, arr in arrays.items():
        fields[key], features[key] = _step_tensor(arr)
    fields[image_key] = Field("image", "uint8", tuple(ep.frames.shape[1:]), image_format)
    features[image_key] = [_encode_image(frame, image_format) for frame in ep.frames]
    if not language_table:
        fields["steps/language_instruction"] = Field("text")
        features["steps/language_instruction"] = [ep.instruction.encode()] * steps
    hma = {
        "hz": ep.hz,
        "success": ep.success,
        "meta": ep.meta,
        "extras": sorted(ep.extras),
    }
    features |= {
        "episode_metadata/episode_id": [ep.episode_id.encode()],
        "episode_metadata/dataset": [ep.dataset.encode()],
        "episode_metadata/file_path": [str(ep.meta.get("source", ep.episode_id)).encode()],
        "episode_metadata/success": np.array([bool(ep.success)]),
        "episode_metadata/hma": [_dump_json(hma, ep).encode()],
    }
    return features, fields


_EPISODE_FIELDS = {
    "episode_metadata/episode_id": Field("text"),
    "episode_metadata/dataset": Field("text"),
    "episode_metadata/file_path": Field("text", description="Where the episode came from."),
    "episode_metadata/success": Field("tensor", "bool", description="False where unknown."),
    "episode_metadata/hma": Field("text", description="HMA JSON: hz, success, meta, extras."),
}


class _SplitWriter:
    """Streams one split's records into shards of `per_shard` episodes (temporary names until
    `finish`, since the final names carry the shard count)."""

    def __init__(self, root: str, name: str, split: str, per_shard: int):
        self.root, self.name, self.split, self.per_shard = root, name, split, per_shard
        self.lengths: list[int] = []
        self.num_bytes = 0
        self.tmp: list[str] = []
        self._file = None

    def add(self, payload: bytes) -> None:
        if self._file is None or self.lengths[-1] >= self.per_shard:
            self.close()
            self.tmp.append(storage.join(self.root, f".tmp-{self.split}-{len(self.tmp):05d}"))
            self._file = storage.open_file(self.tmp[-1], "wb").open()
            self.lengths.append(0)
        self.num_bytes += tfrecord.write_record(self._file, payload)
        self.lengths[-1] += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        """Best-effort removal of this split's temporary shards after a failed write."""
        self.close()
        fs, _ = storage.filesystem(self.root)
        for tmp in self.tmp:
            with contextlib.suppress(OSError):
                fs.rm(storage.filesystem(tmp)[1])

    def finish(self) -> dict[str, Any]:
        self.close()
        fs, _ = storage.filesystem(self.root)
        for i, tmp in enumerate(self.tmp):
            final = _shard_name(FILE_TEMPLATE, self.name, self.split, i, len(self.tmp))
            fs.mv(
                storage.filesystem(tmp)[1], storage.filesystem(storage.child(self.root, final))[1]
            )
        return {
            "filepathTemplate": FILE_TEMPLATE,
            "name": self.split,
            "numBytes": str(self.num_bytes),
            "shardLengths": [str(n) for n in self.lengths],
        }


def write(
    episodes: Iterable[Episode],
    url: str,
    registry: Registry,
    *,
    episodes_per_shard: int = EPISODES_PER_SHARD,
    image_format: str = "png",
) -> int:
    """Stream episodes (all of one dataset) into a new TFDS version directory at `url`.

    Frames are PNG (lossless) or JPEG. The metadata files are written last, so a directory whose
    write failed part-way is never mistaken for a dataset.
    """
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    url = url.rstrip("/")
    if storage.exists(storage.join(url, INFO_FILE)):
        raise FormatError(f"{storage.join(url, INFO_FILE)}: a dataset already exists here")
    storage.makedirs(url)
    writers: dict[str, _SplitWriter] = {}
    steps: dict[str, Field] = {}
    name = None
    try:
        for ep in episodes:
            validate_episode(ep, registry)
            if name is None:
                name = ep.dataset
            elif ep.dataset != name:
                raise EpisodeError(
                    ep.dataset, ep.episode_id, "dataset", f"one RLDS directory holds {name!r} only"
                )
            features, fields = _encode_episode(ep, image_format)
            steps = _merge_fields(steps, fields, ep)
            if ep.split not in writers:
                writers[ep.split] = _SplitWriter(url, name, ep.split, episodes_per_shard)
            writers[ep.split].add(tfrecord.encode_example(features))
        if name is None:
            raise FormatError(f"{url}: no episodes to write")
        splits = [writers[s].finish() for s in sorted(writers)]
    except BaseException:
        for w in writers.values():
            w.discard()
        raise
    features_url = storage.join(url, FEATURES_FILE)
    with storage.open_file(features_url, "w") as f:
        json.dump(features_json(steps, _EPISODE_FIELDS), f, indent=2)
    version = storage.basename(url)
    info = {
        "name": name,
        "version": version if re.fullmatch(r"\d+\.\d+\.\d+", version) else "1.0.0",
        "description": f"{name} episodes in RLDS, written by HMA.",
        "fileFormat": "tfrecord",
        "moduleName": MODULE_NAME,
        "splits": splits,
    }
    with storage.open_file(storage.join(url, INFO_FILE), "w") as f:
        json.dump(info, f, indent=2)
    return sum(sum(w.lengths) for w in writers.values())


def _merge_fields(known: dict[str, Field], new: dict[str, Field], ep: Episode) -> dict[str, Field]:
    """One step schema for the dataset; frame sizes may differ between episodes, nothing else."""
    if not known:
        return new
    if known.keys() != new.keys():
        diff = sorted(known.keys() ^ new.keys())
        raise EpisodeError(ep.dataset, ep.episode_id, diff[0], "step fields differ from episode 1")
    merged = dict(known)
    for key, f in new.items():
        g = known[key]
        if f.kind == "image" and f.shape != g.shape:
            dims = tuple(a if a == b else -1 for a, b in zip(f.shape, g.shape, strict=True))
            merged[key] = Field("image", f.dtype, dims, f.encoding)
        elif f != g:
            raise EpisodeError(
                ep.dataset,
                ep.episode_id,
                key,
                f"{f.dtype}{list(f.shape)} but episode 1 had {g.dtype}{list(g.shape)}",
            )
    return merged
