"""One synthetic episode: built from a rollout row, sanity-checked, staged for resume.

    N kept frames (prompt + generated), s stride, A action dim, H x W the dataset's frame size

A synthetic episode lives at the dataset's raw step rate: kept frame f covers raw steps
f*s .. (f+1)*s - 1, so each generated frame is held for its s steps (zero-order hold) and resized
to the frame size of the source episode it was prompted with; its actions are the rollout's raw
chunks [N,s,A] flattened to [N*s,A].

State: in replay mode it and the per-step extras are the real episode's own (the actions are
real, so those are the true states of that trajectory; only the video is imagined). Otherwise a
model trained with state predicts it per kept frame (held for the frame's s steps like the
video) and it is written under the source's own keys (meta["state_keys"], e.g. robomimic's
robot0_eef_pos); without a state model the episode has none. Rewards and dones follow the
source's dtype, done at the last step; with a success classifier (hma simulate train-success)
the episode's success is its verdict on the generated frames and the reward is 1 from the first
raw step of the frame it judges solved (a sparse success reward), else success is unknown and
the reward 0. In replay mode the real episode's outcome and rewards stand (its actions are the
real ones). Other extras (simulator
states, object poses) are never generated: outside replay they are absent and listed in
meta["absent_fields"], except where the output format needs one step schema for every episode
(RLDS, LeRobot): there they are zero placeholders, listed in meta["placeholder_fields"] so
nobody mistakes them for data.

Staging (`<out>.partial/`, resume): `episode_<i>.safetensors` (frames, actions, state, extras)
plus `episode_<i>.json` (every other field; written last, so it marks the episode complete), and
`rejected_<i>_<attempt>.json` for each attempt that failed the sanity checks. No pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from hma import storage
from hma.episodes import Episode, Registry, hold_frames, unchunk_actions, validate_episode
from hma.errors import HmaError
from hma.frames import resize
from hma.stats import ACTION_STD_FLOOR, ActionStats

RUN_FILE = "run.json"


@dataclass(frozen=True)
class Provenance:
    """What every synthetic episode records about how it was made."""

    checkpoint: str
    checkpoint_fingerprint: str
    tokenizer_fingerprint: str
    seed: int
    actions: str  # model | replay | perturb
    steps: int
    temperature: float
    batch_size: int
    success_model: str | None = None  # the classifier that judged success, if any
    success_fingerprint: str | None = None

    def meta(self, **row: Any) -> dict[str, Any]:
        return {"synthetic": True, "generator": "hma-generate", **self.__dict__, **row}


def load_valid(ref: dict[str, Any], registry: Registry) -> tuple[Episode | None, str]:
    """(episode, "") if the episode `ref` names loads and passes validation, else (None, the
    reason, naming the episode): a bad real episode is never copied or used as a prompt."""
    from hma.formats import get_format

    try:
        episode = get_format(ref["format"]).load(ref)
        validate_episode(episode, registry)
    except HmaError as e:
        return None, str(e)
    except (OSError, ValueError) as e:
        return None, f"episode {ref.get('episode_id')!r}: {type(e).__name__}: {e}"
    return episode, ""


def build_episode(
    real: Episode,
    episode_id: str,
    split: str,
    frames: np.ndarray,
    actions_raw: np.ndarray,
    stride: int,
    keep_state: bool,
    placeholders: bool,
    meta: dict[str, Any],
    state_raw: np.ndarray | None = None,
    judged: bool = False,
    solved_frame: int | None = None,
) -> Episode:
    """The synthetic Episode from one rollout row: frames [N,h,w,3], actions_raw [N,s,A] and,
    from a model with state, the predicted state_raw [N,P]. If a success classifier `judged` the
    frames, `solved_frame` is the kept frame it judges the task solved at (None: never)."""
    n = frames.shape[0]
    steps = n * stride
    held = hold_frames(resize(frames, real.frames.shape[1:3]), stride)  # [N*s,H,W,3]
    meta = dict(meta)
    meta["frame_hold"] = "zero-order: each generated frame is held for its `stride` raw steps"
    for key in ("env_args", "model_file"):  # robomimic builds its env from these
        if key in real.meta:
            meta[key] = real.meta[key]
    if "state_keys" in real.meta and (keep_state or state_raw is not None):
        meta["state_keys"] = real.meta["state_keys"]
    success = None
    if keep_state:
        state = None if real.state is None else real.state[:steps]
        extras = {k: v[:steps] for k, v in real.extras.items()}
        meta["state"] = "real: the replayed trajectory's own states (video imagined)"
        success = real.success  # the real actions' outcome
    else:
        state, extras = _generated_state(real, state_raw, stride, steps, placeholders, meta)
        if judged:
            success = solved_frame is not None
            if success and "reward" in extras:
                extras["reward"][solved_frame * stride :] = 1
    return Episode(
        dataset=real.dataset,
        episode_id=episode_id,
        split=split,
        frames=held,
        actions=unchunk_actions(actions_raw),  # [N*s,A]
        hz=real.hz,
        state=state,
        instruction=real.instruction,
        success=success,
        extras=extras,
        meta=meta,
    )


SIGNALS = ("reward", "done")  # per-step extras every synthetic episode gets by convention


def _signal(name: str, steps: int, dtype: np.dtype) -> np.ndarray:
    out = np.zeros(steps, dtype)
    if name == "done":
        out[-1] = 1
    return out


def _generated_state(
    real: Episode,
    state_raw: np.ndarray | None,
    stride: int,
    steps: int,
    placeholders: bool,
    meta: dict[str, Any],
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """(state, extras) of an episode whose actions are not the real ones; records in `meta`
    what the state is and which fields are placeholders or absent."""
    state = None
    if state_raw is not None:
        state = np.repeat(np.asarray(state_raw, np.float32), stride, axis=0)[:steps]  # [N*s,P]
        meta["state"] = "predicted: the world model's proprioception, held for each frame's steps"
    elif placeholders and real.state is not None:
        state = np.zeros((steps, real.state.shape[1]), np.float32)
    else:
        meta["state"] = "none: the model generates video and actions only"
    zeroed = ["state"] if state is not None and state_raw is None else []
    # reward and done follow the source's convention and dtype: reward 0 (build_episode sets a
    # judged success's) and the episode ends at its last step
    extras = {k: _signal(k, steps, v.dtype) for k, v in real.extras.items() if k in SIGNALS}
    others = sorted(k for k in real.extras if k not in SIGNALS)
    if placeholders:
        extras |= {
            k: np.zeros((steps, *real.extras[k].shape[1:]), real.extras[k].dtype) for k in others
        }
        zeroed += others
    elif others:
        meta["absent_fields"] = others  # e.g. simulator states, object poses
    if zeroed:
        meta["placeholder_fields"] = zeroed
        meta.setdefault("state", "placeholder zeros: the model generates video and actions only")
    return state, extras


def state_names(real: Episode) -> list[str]:
    """The source's own names of the state columns: meta["state_keys"] or the one key state."""
    keys = real.meta.get("state_keys")
    return [str(k) for k, _ in keys] if keys else ["state"]


def producible_keys(real: Episode, actions: str, state_width: int) -> set[str]:
    """Per-step fields a synthetic episode prompted by `real` carries: frames, actions and the
    reward/done signals always; the state keys in replay mode or from a model with state of the
    source's width; every other extra only in replay mode (the real trajectory's own)."""
    keys = {"frames", "actions", "image", *SIGNALS}
    has_state = real.state is not None
    if has_state and (actions == "replay" or state_width == real.state.shape[1]):
        keys.update(state_names(real))
    if actions == "replay":
        keys.update(real.extras)
    return keys


def why_absent(real: Episode, key: str, actions: str) -> str:
    """Why `key` is not among `producible_keys` (for the refusal message)."""
    if real.state is not None and key in state_names(real):
        return "the world model was trained without state for this dataset"
    if key in real.extras:
        return f"the model does not generate it; --actions replay copies it, this run has {actions}"
    return "the source episodes do not have it"


def check_episode(
    ep: Episode, finite: bool, stats: ActionStats, tolerance: float, registry: Registry
) -> str | None:
    """None if `ep` may be written, else the reason it may not."""
    if not finite:
        return "non-finite (NaN/inf) tokens or actions in the rollout"
    try:
        validate_episode(ep, registry)
    except HmaError as e:
        return str(e)
    lo, hi = actions_range(stats, tolerance)
    amin, amax = ep.actions.min(0), ep.actions.max(0)
    for d in range(ep.actions.shape[1]):
        if amin[d] < lo[d] or amax[d] > hi[d]:
            return (
                f"action dim {d} spans [{amin[d]:.4g}, {amax[d]:.4g}], outside the real range "
                f"[{stats.min[d]:.4g}, {stats.max[d]:.4g}] widened by {tolerance:.0%}"
            )
    return None


def actions_range(stats: ActionStats, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """The real per-dimension [min, max], widened by `tolerance` of its span on each side."""
    span = np.maximum(stats.max - stats.min, ACTION_STD_FLOOR)
    return stats.min - tolerance * span, stats.max + tolerance * span


def collapsed_dims(
    synthetic: ActionStats, real: ActionStats, min_ratio: float
) -> list[tuple[int, float, float]]:
    """(dim, synthetic std, real std) for every dimension whose synthetic spread is under
    `min_ratio` of the real one: generated actions far smaller than real ones."""
    out = []
    for d, (s, r) in enumerate(zip(synthetic.std, real.std, strict=True)):
        if r > ACTION_STD_FLOOR and s < min_ratio * r:
            out.append((d, float(s), float(r)))
    return out


# ---------------------------------------------------------------------------------------------
# Staging


def staging_url(out: str) -> str:
    return out.rstrip("/") + ".partial"


def episode_name(index: int) -> str:
    return f"episode_{index:06d}"


def save_staged(root: str, index: int, attempt: int, ep: Episode) -> dict[str, Any]:
    """Persist `ep` (arrays first, JSON record last); returns the record."""
    arrays = {"frames": ep.frames, "actions": ep.actions}
    if ep.state is not None:
        arrays["state"] = ep.state
    arrays |= {f"extras.{k}": v for k, v in ep.extras.items()}
    name = episode_name(index)
    with storage.open_file(storage.join(root, f"{name}.safetensors"), "wb") as f:
        f.write(save_arrays({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
    record = {
        "index": index,
        "attempt": attempt,
        "dataset": ep.dataset,
        "episode_id": ep.episode_id,
        "split": ep.split,
        "hz": ep.hz,
        "instruction": ep.instruction,
        "success": ep.success,
        "meta": ep.meta,
        "steps": len(ep),
        "action_stats": ActionStats.of(ep.actions).to_dict(exact=True),
    }
    with storage.open_file(storage.join(root, f"{name}.json"), "w") as f:
        json.dump(record, f, sort_keys=True)
    return record


def load_staged(root: str, record: dict[str, Any]) -> Episode:
    # staged by Ray actors since this process listed the directory
    arrays = load_arrays(
        storage.read_fresh(storage.join(root, f"{episode_name(record['index'])}.safetensors"))
    )
    return Episode(
        dataset=record["dataset"],
        episode_id=record["episode_id"],
        split=record["split"],
        frames=arrays["frames"],
        actions=arrays["actions"],
        hz=record["hz"],
        state=arrays.get("state"),
        instruction=record["instruction"],
        success=record["success"],
        extras={k[len("extras.") :]: v for k, v in arrays.items() if k.startswith("extras.")},
        meta=record["meta"],
    )


def save_rejection(root: str, index: int, attempt: int, reason: str, prompt: str) -> dict:
    record = {"index": index, "attempt": attempt, "reason": reason, "prompt_episode_id": prompt}
    with storage.open_file(storage.join(root, f"rejected_{index:06d}_{attempt}.json"), "w") as f:
        json.dump(record, f, sort_keys=True)
    return record


def scan_staging(root: str) -> tuple[dict[int, dict], list[dict]]:
    """(accepted records by index, rejection records) found under `root`."""
    if not storage.isdir(root):
        return {}, []
    fs, path = storage.filesystem(root)
    fs.invalidate_cache(path)
    accepted: dict[int, dict] = {}
    rejected: list[dict] = []
    for entry in sorted(fs.ls(path, detail=False)):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not name.endswith(".json") or name == RUN_FILE:
            continue
        with storage.open_file(storage.join(root, name), "r") as f:
            record = json.load(f)
        if name.startswith("episode_"):
            accepted[int(record["index"])] = record
        elif name.startswith("rejected_"):
            rejected.append(record)
    return accepted, rejected


def check_run_record(root: str, run: dict[str, Any]) -> None:
    """Refuse to resume a staging dir that another configuration started; record a new one."""
    url = storage.join(root, RUN_FILE)
    if storage.exists(url):
        with storage.open_file(url, "r") as f:
            before = json.load(f)
        if before != run:
            diff = sorted(k for k in run.keys() | before.keys() if run.get(k) != before.get(k))
            raise HmaError(
                f"{root}: an interrupted run with other settings ({', '.join(diff)}) is staged "
                "here; rerun it with its settings, or delete the directory to start over"
            )
        return
    storage.makedirs(root)
    with storage.open_file(url, "w") as f:
        json.dump(run, f, sort_keys=True, indent=2)
