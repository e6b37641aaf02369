"""robomimic HDF5: one file holds the demos of one dataset (one env, one action space).

Layout (robomimic 0.3.0 reads it with `get_env_metadata_from_dataset`,
`get_shape_metadata_from_dataset` and `SequenceDataset`):

    data                      attrs: total (samples in all demos), env_args (JSON: env_name, type,
                                     env_version, env_kwargs)
      demo_<i>                attrs: num_samples, model_file (MJCF XML, robosuite demos only)
        actions   [N,A]       float32 here (robomimic's own files: float64)
        rewards   [N]         extras["reward"], else 0 with 1 at the last step of a success
        dones     [N]         extras["done"], else 1 at the last step only
        states    [N,K]       extras["sim_state"] (simulator states, used only for replay), else [N,0]
        obs/<camera>_image     uint8 [N,H,W,3] upright: Episode.frames (key from the registry camera)
        obs/state              float32 [N,S]: Episode.state; or split over named keys such as
                               robot0_eef_pos when meta["state_keys"] = [[name, width], ...]
        obs/<extra>            every other extra (per-step low-dim obs, e.g. effector_translation)
        next_obs/<key>         obs shifted one step; the last step repeats the last obs
    mask/train, mask/valid    byte-string demo names of each split (Episode.split "val" -> valid)
    mask/real, mask/synthetic and their _train / _valid intersections, in a file that holds
                              synthetic demos (meta["synthetic"]): robomimic's
                              `train.hdf5_filter_key` then trains on either kind alone

Our own facts ride in `hma_*` attrs so a round trip is exact: data attrs hma_version,
hma_dataset, hma_image_key; demo attrs hma_episode_id, hma_instruction, hma_success (-1 unknown),
hma_hz, hma_meta (JSON), hma_state_keys (JSON [[obs key, width], ...]) and hma_extras (JSON
{extra name: path in the demo}). Files written by robomimic itself lack them and read with
defaults: episode_id "<url>#demo_<i>", hz from the registry (else env_kwargs.control_freq),
success unknown, state = robot0_eef_pos + robot0_eef_quat + robot0_gripper_qpos where present,
extras = states/rewards/dones and every other obs key, meta = env_args and model_file.

env_args: taken from the first episode's meta["env_args"] when a robosuite source put it there
(passed through verbatim); otherwise a description built from the registry (env name, type 1 for
robosuite datasets and 2 for others, camera name and frame size, control rate).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import h5py
import numpy as np

from hma import storage
from hma.episodes import SPLITS, DatasetSpec, Episode, Registry, load_registry
from hma.errors import FormatError
from hma.formats.base import Listed, Unit, list_positions, position_units

FORMAT = "robomimic"
LAYOUT_VERSION = 1
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# robomimic's proprioception keys for robosuite robots, in the order they form Episode.state.
PROPRIO_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
STATE_KEY = "state"
# Episode.extras that have a robomimic dataset of their own; other extras become obs keys.
EXTRA_DATASETS = {"sim_state": "states", "reward": "rewards", "done": "dones"}
# robosuite env names of the registry datasets that come from robosuite (EnvType.ROBOSUITE_TYPE).
ROBOSUITE_ENVS = {"robosuite_lift": "Lift", "robosuite_can": "PickPlaceCan"}
ROBOSUITE_TYPE, GYM_TYPE = 1, 2

CHUNK_BYTES = 1 << 18  # ~256 KiB chunks: a few frames at a time for robomimic's random access
GZIP_LEVEL = 4
REMOTE_BLOCK_SIZE = 1 << 22  # fsspec read block for HDF5 on object stores
_DEMO = re.compile(r"demo_(\d+)")
LISTING_CACHE = 8  # files whose demo listing a worker keeps


# ---------------------------------------------------------------------------------------------
# Reading


def sniff(url: str) -> bool:
    """An HDF5 file (signature at offset 0) with a top-level `data` group."""
    try:
        fs, path = storage.filesystem(url)
        if not fs.isfile(path):
            return False
        if fs.cat_file(path, start=0, end=len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            return False
        with _open(url) as h5:
            return isinstance(h5.get("data"), h5py.Group)
    except Exception:  # noqa: BLE001 - sniffing never raises
        return False


def list_refs(url: str, dataset: str | None = None) -> list[dict[str, Any]]:
    """One ref per demo, in numeric demo order. Reads attrs and masks only, never arrays.

    `dataset` names the registry entry; it overrides the name stored in the file, and is
    required for files robomimic wrote (they store none).
    """
    with _open(url) as f:
        data = _data_group(f, url)
        ours = "hma_version" in data.attrs
        name = dataset or _attr_str(data.attrs, "hma_dataset")
        if not name:
            raise FormatError(
                f"{url}: no dataset name stored in this robomimic file; pass the registry "
                "dataset it belongs to (e.g. --dataset robosuite_lift)"
            )
        demos = _demo_names(data)
        valid = _mask(f, "valid", url)
        spec = _registry_spec(name)
        image_key = _attr_str(data.attrs, "hma_image_key") or _guess_image_key(
            data, demos, spec, url
        )
        hz = spec.hz if spec else _control_freq(data.attrs)
        refs = []
        for index, demo in enumerate(demos):
            episode_id = _attr_str(data[demo].attrs, "hma_episode_id") if ours else ""
            refs.append(
                {
                    "format": FORMAT,
                    "url": url,
                    "episode_id": episode_id or f"{url}#{demo}",
                    "dataset": name,
                    "demo": demo,
                    "index": index,
                    "split": "val" if demo in valid else "train",
                    "image_key": image_key,
                    "hz": hz,
                }
            )
    return refs


@lru_cache(maxsize=LISTING_CACHE)
def _cached_refs(url: str, dataset: str | None) -> list[dict[str, Any]]:
    # One listing per worker process and file: a file's demos are read by many units.
    return list_refs(url, dataset)


def plan_units(url: str, dataset: str | None, n: int) -> Iterator[Unit]:
    """Units of up to n demos, by position in numeric demo order."""
    yield from position_units(FORMAT, url, dataset, len(_cached_refs(url, dataset)), n)


def list_unit(unit: Unit) -> list[Listed]:
    return list_positions(unit, _cached_refs(unit["url"], unit["dataset"]))


def load(ref: dict[str, Any]) -> Episode:
    """Read one demo: its actions, frames, state and extras, and nothing else of the file."""
    url, demo, image_key = ref["url"], ref["demo"], ref["image_key"]
    with _open(url) as f:
        data = _data_group(f, url)
        if not isinstance(data.get(demo), h5py.Group):
            raise FormatError(f"{url}: demo {demo!r} not found in 'data'")
        g = data[demo]
        ours = "hma_version" in data.attrs
        actions = _read(g, "actions", url, demo)
        if actions.ndim != 2:
            raise FormatError(f"{url}: {demo}/actions: expected [N,A], got {list(actions.shape)}")
        frames = _read(g, f"obs/{image_key}", url, demo)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise FormatError(
                f"{url}: {demo}/obs/{image_key}: expected uint8 [N,H,W,3], "
                f"got {frames.dtype} {list(frames.shape)}"
            )
        attrs = g.attrs
        if ours:
            state_keys = _attr_json(attrs, "hma_state_keys", url, demo, [])
            extras_at = _attr_json(attrs, "hma_extras", url, demo, {})
            meta = _attr_json(attrs, "hma_meta", url, demo, {})
        else:
            state_keys, extras_at, meta = _native_layout(data, g, image_key, url)
        state = _read_state(g, state_keys, len(frames), url, demo)
        extras = {name: _read(g, path, url, demo) for name, path in extras_at.items()}
        hz = float(attrs.get("hma_hz", ref.get("hz") or 0.0))
        if hz <= 0:
            raise FormatError(
                f"{url}: {demo}: no control rate stored and dataset {ref['dataset']!r} is not in "
                "the registry; add it to a registry file"
            )
        success = int(attrs.get("hma_success", -1))
        return Episode(
            dataset=ref["dataset"],
            episode_id=ref["episode_id"],
            split=ref["split"],
            frames=frames,
            actions=actions.astype(np.float32, copy=False),
            hz=hz,
            state=state,
            instruction=_attr_str(attrs, "hma_instruction") if ours else _native_instruction(attrs),
            success=None if success < 0 else bool(success),
            extras=extras,
            meta=meta,
        )


@contextmanager
def _open(url: str) -> Iterator[h5py.File]:
    """h5py on a local path, or on an fsspec file object for remote URLs (read only)."""
    fs, path = storage.filesystem(url)
    raw = None
    try:
        if storage.is_remote(url):
            raw = fs.open(path, "rb", block_size=REMOTE_BLOCK_SIZE, cache_type="blockcache")
        h5 = h5py.File(raw if raw is not None else path, "r")
    except (FileNotFoundError, OSError) as e:
        if raw is not None:
            raw.close()
        if isinstance(e, FileNotFoundError) or not fs.exists(path):
            raise FormatError(f"{url}: file not found") from None
        raise FormatError(f"{url}: not a readable HDF5 file ({e})") from None
    try:
        yield h5
    finally:
        h5.close()
        if raw is not None:
            raw.close()


def _data_group(f: h5py.File, url: str) -> h5py.Group:
    data = f.get("data")
    if not isinstance(data, h5py.Group):
        raise FormatError(f"{url}: no 'data' group; not a robomimic dataset")
    return data


def _demo_names(data: h5py.Group) -> list[str]:
    """demo_0, demo_1, ... sorted by number (h5py lists names lexically: demo_10 < demo_2)."""
    numbered = [(int(m.group(1)), k) for k in data if (m := _DEMO.fullmatch(k))]
    return [k for _, k in sorted(numbered)]


def _mask(f: h5py.File, name: str, url: str) -> set[str]:
    if f"mask/{name}" not in f:
        return set()
    try:
        return {_to_str(x) for x in f[f"mask/{name}"][()]}
    except (TypeError, ValueError) as e:
        raise FormatError(f"{url}: mask/{name}: expected byte-string demo names ({e})") from None


def _read(g: h5py.Group, key: str, url: str, demo: str) -> np.ndarray:
    item = g.get(key)
    if not isinstance(item, h5py.Dataset):
        have = ", ".join(sorted(g["obs"])) if key.startswith("obs/") and "obs" in g else ""
        hint = f" (obs has: {have})" if have else ""
        raise FormatError(f"{url}: {demo}: missing dataset {key!r}{hint}")
    try:
        return item[()]
    except OSError as e:
        raise FormatError(f"{url}: {demo}/{key}: unreadable ({e})") from None


def _read_state(
    g: h5py.Group, state_keys: list, steps: int, url: str, demo: str
) -> np.ndarray | None:
    if not state_keys:
        return None
    parts = []
    for key, width in state_keys:
        part = _read(g, f"obs/{key}", url, demo).reshape(-1, width)
        if part.shape[0] != steps:
            raise FormatError(f"{url}: {demo}/obs/{key}: {part.shape[0]} steps, frames {steps}")
        parts.append(part.astype(np.float32, copy=False))
    return np.concatenate(parts, axis=1)


def _native_layout(
    data: h5py.Group, g: h5py.Group, image_key: str, url: str
) -> tuple[list, dict[str, str], dict[str, Any]]:
    """state keys, extras and meta of a demo written by robomimic itself (no hma attrs)."""
    obs = g.get("obs")
    obs_keys = sorted(obs) if isinstance(obs, h5py.Group) else []
    state_keys = [[k, _row_width(obs[k])] for k in PROPRIO_KEYS if k in obs_keys]
    used = {image_key, *PROPRIO_KEYS}
    extras_at = {name: path for name, path in EXTRA_DATASETS.items() if path in g}
    extras_at |= {k: f"obs/{k}" for k in obs_keys if k not in used}
    meta: dict[str, Any] = {}
    if "env_args" in data.attrs:
        try:
            meta["env_args"] = json.loads(_attr_str(data.attrs, "env_args"))
        except json.JSONDecodeError as e:
            raise FormatError(f"{url}: data attr 'env_args' is not JSON ({e})") from None
    if "model_file" in g.attrs:
        meta["model_file"] = _attr_str(g.attrs, "model_file")
    if state_keys:
        meta["state_keys"] = state_keys
    return state_keys, extras_at, meta


def _native_instruction(attrs: h5py.AttributeManager) -> str:
    # robocasa-style datasets keep the language instruction in a JSON `ep_meta` attr.
    try:
        return str(json.loads(_attr_str(attrs, "ep_meta")).get("lang", ""))
    except (json.JSONDecodeError, AttributeError):
        return ""


def _row_width(ds: h5py.Dataset) -> int:
    return int(np.prod(ds.shape[1:], dtype=np.int64))


def _guess_image_key(data: h5py.Group, demos: list[str], spec: DatasetSpec | None, url: str) -> str:
    """The registry camera's key; for a dataset the registry lacks, the file's only image key."""
    if spec is not None:
        return spec.image_key
    obs = data[demos[0]].get("obs") if demos else None
    images = sorted(k for k in obs if k.endswith("_image")) if isinstance(obs, h5py.Group) else []
    if len(images) == 1:
        return images[0]
    raise FormatError(
        f"{url}: cannot tell which obs key holds the frames (image keys: {images or 'none'}); "
        "add the dataset with its camera to the registry"
    )


def _registry_spec(name: str) -> DatasetSpec | None:
    return load_registry().datasets.get(name)


def _control_freq(attrs: h5py.AttributeManager) -> float:
    try:
        env_args = json.loads(_attr_str(attrs, "env_args"))
        return float(env_args["env_kwargs"]["control_freq"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0.0


def _attr_str(attrs: h5py.AttributeManager, key: str) -> str:
    return _to_str(attrs[key]) if key in attrs else ""


def _attr_json(attrs: h5py.AttributeManager, key: str, url: str, demo: str, default: Any) -> Any:
    if key not in attrs:
        return default
    try:
        return json.loads(_attr_str(attrs, key))
    except json.JSONDecodeError as e:
        raise FormatError(f"{url}: {demo}: attr {key!r} is not JSON ({e})") from None


def _to_str(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes | np.bytes_) else str(value)


# ---------------------------------------------------------------------------------------------
# Writing


def write(episodes: Iterable[Episode], url: str, registry: Registry) -> int:
    """Write `episodes` (all of one dataset) as demo_0, demo_1, ... streaming one at a time.

    A remote `url` is written to a local temporary file and uploaded when complete; a failed
    local write leaves no partial file behind.
    """
    if storage.exists(url):
        raise FormatError(
            f"{url}: already exists; robomimic files are written new, not overwritten"
        )
    with storage.local_copy_for_writing(url, suffix=".hdf5") as local:
        try:
            with h5py.File(local, "w-") as f:
                count = _write_file(f, episodes, url, registry)
        except BaseException:
            if not storage.is_remote(url) and os.path.exists(local):
                os.remove(local)
            raise
    return count


def _write_file(f: h5py.File, episodes: Iterable[Episode], url: str, registry: Registry) -> int:
    data = f.create_group("data")
    names: dict[str, list[str]] = {split: [] for split in SPLITS}
    kinds: dict[str, list[str]] = {"real": [], "synthetic": []}  # demo names by provenance
    total, count = 0, 0
    dataset, image_key, env_args = "", "", {}
    for ep in episodes:
        spec = registry.get(ep.dataset, ep.episode_id)
        if not dataset:
            dataset, image_key, env_args = ep.dataset, spec.image_key, _env_args(ep, spec)
        elif ep.dataset != dataset:
            raise FormatError(
                f"{url}: a robomimic file holds one dataset; episode {ep.episode_id!r} is "
                f"{ep.dataset!r} but earlier episodes are {dataset!r}"
            )
        if ep.split not in names:
            raise FormatError(f"{url}: episode {ep.episode_id!r}: unknown split {ep.split!r}")
        demo = f"demo_{count}"
        _write_demo(data.create_group(demo), ep, image_key, url)
        names[ep.split].append(demo)
        kinds["synthetic" if ep.meta.get("synthetic") else "real"].append(demo)
        total += len(ep)
        count += 1
    data.attrs["total"] = total
    data.attrs["env_args"] = json.dumps(env_args)
    data.attrs["hma_version"] = LAYOUT_VERSION
    data.attrs["hma_dataset"] = dataset
    data.attrs["hma_image_key"] = image_key
    masks = {"train": names["train"], "valid": names["val"]}
    if kinds["synthetic"]:
        for kind, demos in kinds.items():
            masks[kind] = demos
            for split in ("train", "valid"):
                chosen = set(masks[split])
                masks[f"{kind}_{split}"] = [d for d in demos if d in chosen]
    mask = f.create_group("mask")
    for key, demos in masks.items():
        # robomimic decodes these with elem.decode("utf-8"): fixed-length byte strings
        mask.create_dataset(key, data=np.array(demos, dtype="S"))
    return count


def _write_demo(g: h5py.Group, ep: Episode, image_key: str, url: str) -> None:
    steps = len(ep)

    def check(name: str, arr: np.ndarray) -> np.ndarray:
        if arr.ndim == 0 or arr.shape[0] != steps:
            raise FormatError(
                f"{url}: episode {ep.episode_id!r}: {name} has {arr.shape[:1]} steps, "
                f"frames {steps}"
            )
        return arr

    frames = np.asarray(ep.frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise FormatError(
            f"{url}: episode {ep.episode_id!r}: frames must be uint8 [T,H,W,3], "
            f"got {frames.dtype} {list(frames.shape)}"
        )
    obs: dict[str, np.ndarray] = {image_key: frames}
    state_keys = _state_layout(ep)
    if ep.state is not None:
        state = check("state", np.asarray(ep.state, np.float32))
        start = 0
        for key, width in state_keys:
            if "/" in key or key in obs:
                raise FormatError(
                    f"{url}: episode {ep.episode_id!r}: state key {key!r} is not a usable obs key"
                )
            obs[key] = state[:, start : start + width]
            start += width
    datasets = {
        "actions": check("actions", np.asarray(ep.actions, np.float32)),
        "rewards": np.zeros(steps, np.float64),
        "dones": np.zeros(steps, np.int64),
        "states": np.zeros((steps, 0), np.float64),
    }
    datasets["rewards"][-1] = 1.0 if ep.success else 0.0
    datasets["dones"][-1] = 1
    extras_at = {}
    for name, arr in ep.extras.items():
        arr = check(f"extras[{name!r}]", np.asarray(arr))
        if name in EXTRA_DATASETS:
            extras_at[name] = EXTRA_DATASETS[name]
            datasets[EXTRA_DATASETS[name]] = arr
            continue
        if "/" in name or name in obs:
            raise FormatError(
                f"{url}: episode {ep.episode_id!r}: extra {name!r} cannot be an obs key "
                "(contains '/' or collides with the image or state keys)"
            )
        extras_at[name] = f"obs/{name}"
        obs[name] = arr
    for key, arr in datasets.items():
        _put(g, key, arr)
    for key, arr in obs.items():
        _put(g, f"obs/{key}", arr)
        # robomimic pairs every obs with the next one; the episode's last obs has no successor
        _put(g, f"next_obs/{key}", np.concatenate([arr[1:], arr[-1:]]))
    g.attrs["num_samples"] = steps
    if "model_file" in ep.meta:
        g.attrs["model_file"] = str(ep.meta["model_file"])
    g.attrs["hma_episode_id"] = ep.episode_id
    g.attrs["hma_instruction"] = ep.instruction
    g.attrs["hma_success"] = -1 if ep.success is None else int(bool(ep.success))
    g.attrs["hma_hz"] = float(ep.hz)
    g.attrs["hma_meta"] = json.dumps(ep.meta, sort_keys=True)
    g.attrs["hma_state_keys"] = json.dumps(state_keys if ep.state is not None else [])
    g.attrs["hma_extras"] = json.dumps(extras_at, sort_keys=True)


def _state_layout(ep: Episode) -> list[list]:
    """[[obs key, width], ...] that Episode.state is split into: meta["state_keys"] when its
    widths add up to the state width, else the single key `state`."""
    if ep.state is None:
        return []
    width = int(ep.state.shape[1])
    named = ep.meta.get("state_keys")
    if isinstance(named, list) and named:
        try:
            layout = [[str(k), int(w)] for k, w in named]
        except (TypeError, ValueError):
            layout = []
        if layout and sum(w for _, w in layout) == width and all(w > 0 for _, w in layout):
            return layout
    return [[STATE_KEY, width]]


def _put(g: h5py.Group, key: str, arr: np.ndarray) -> None:
    """A dataset chunked along time (~CHUNK_BYTES per chunk) and gzip-compressed."""
    arr = np.ascontiguousarray(arr)
    if arr.size == 0:
        g.create_dataset(key, data=arr)  # HDF5 chunks cannot have a zero-size dimension
        return
    rows = int(min(arr.shape[0], max(1, CHUNK_BYTES // max(1, arr[0].nbytes))))
    g.create_dataset(
        key,
        data=arr,
        chunks=(rows, *arr.shape[1:]),
        compression="gzip",
        compression_opts=GZIP_LEVEL,
        shuffle=True,
    )


def _env_args(ep: Episode, spec: DatasetSpec) -> dict[str, Any]:
    """robomimic env metadata: passed through from a robosuite source, else described."""
    given = ep.meta.get("env_args")
    if isinstance(given, str) and given:
        return json.loads(given)
    if isinstance(given, dict) and given:
        return given
    height, width = (int(x) for x in ep.frames.shape[1:3])
    hz = float(ep.hz)
    env_kwargs: dict[str, Any] = {
        "has_renderer": False,
        "has_offscreen_renderer": True,
        "use_camera_obs": True,
        "camera_names": [spec.camera],
        "camera_heights": height,
        "camera_widths": width,
        "control_freq": int(hz) if hz.is_integer() else hz,
    }
    robosuite = ep.dataset in ROBOSUITE_ENVS
    if robosuite:
        env_kwargs |= {"ignore_done": True, "reward_shaping": False}
        if spec.embodiment == "panda":
            env_kwargs["robots"] = ["Panda"]
    return {
        "env_name": ROBOSUITE_ENVS.get(ep.dataset, ep.dataset),
        "type": ROBOSUITE_TYPE if robosuite else GYM_TYPE,
        "env_version": None,  # unknown without the source env; robomimic only warns
        "env_kwargs": env_kwargs,
    }
