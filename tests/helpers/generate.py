"""A tiny pretraining checkpoint (untrained weights, real files) for the generation tests.

`build_checkpoint` writes (tests/generate/conftest.py's `tiny_checkpoint` once per session): a tiny FSQ
tokenizer (saved with save_tokenizer), a tiny HMA for robosuite_lift and tabletop (action widths
stride x action_dim from the registry) and a pretrain.json shaped like
hma.pipeline.pretrain.driver.plan()'s meta, with action statistics of the datasets' real action ranges
(uniform in robosuite's [-1, 1] OSC deltas, tabletop's +-0.1 effector deltas; the same ranges
`source_episode` draws from). Model frames are 32 px, so the 64 px test datasets exercise
resizing both ways.

The action heads are calibrated (`calibrate_heads`) so that the untrained model proposes actions
spread like real ones instead of collapsing onto the mean; `collapsed_checkpoint` keeps
training's initial heads, whose proposals collapse, for the sanity-check test.
"""

from __future__ import annotations

import numpy as np
import torch

from hma.envs.procedural import moving_block_frames
from hma.episodes import Episode, load_registry
from hma.generate.success import SuccessClassifier, SuccessConfig, SuccessNet
from hma.stats import ActionStats
from tests.helpers.checkpoints import save_untrained

FRAME = 32  # model frame size; the tiny FSQ tokenizer downsamples by 8 -> a 4 x 4 token grid
DATASETS = ("robosuite_lift", "tabletop")
# half-width of each dataset's raw action range (robosuite OSC delta + gripper; tabletop xy delta)
ACTION_RANGE = {"robosuite_lift": 1.0, "tabletop": 0.1}
STATE_DIM = 4  # proprioception of every source episode


def real_actions(dataset: str, steps: int, seed: int) -> np.ndarray:
    dim = load_registry().get(dataset).action_dim
    bound = ACTION_RANGE[dataset]
    return np.random.default_rng(seed).uniform(-bound, bound, (steps, dim)).astype(np.float32)


def build_checkpoint(url: str, head_scale: float | None, seed: int = 0, state: bool = False) -> str:
    """Write a tiny untrained checkpoint to `url` (tokenizer under `url`/tokenizer); with
    `state`, robosuite_lift has proprioceptive state (STATE_DIM values, stats of N(0, 1), the
    distribution `source_episode` draws from)."""

    def calibrate(model, tokenizer) -> None:
        clips = np.stack([source_episode("tabletop", i, 6, size=FRAME).frames for i in range(8)])
        grid = model.config.grid
        prompts = tokenizer.encode(clips.reshape(-1, FRAME, FRAME, 3)).reshape(8, 6, *grid)
        calibrate_heads(model, head_scale, prompts.long())

    torch.manual_seed(seed)
    return save_untrained(
        url,
        {name: ActionStats.of(real_actions(name, 4000, seed=1)) for name in DATASETS},
        FRAME,
        store=f"{url}/store.zarr",
        train_windows=10,
        prepare=None if head_scale is None else calibrate,
        state_stats={"robosuite_lift": ActionStats.of(_source_state(4000, seed=2))}
        if state
        else None,
    )


def _source_state(steps: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (steps, STATE_DIM)).astype(np.float32)


@torch.no_grad()
def calibrate_heads(model, scale: float, clips: torch.Tensor) -> None:
    """Rescale each untrained action head so that its full-mode proposals are ~N(0, scale^2) per
    dimension in normalised units (raw: the real mean +- scale x the real std) on tokens of moving-block `clips`: wide enough to
    pass the spread check, centred so they stay in the real range. Heads are linear, so
    out' = k (out - mean) with k = scale / std is a change of weight and bias."""
    rows, frames = clips.shape[:2]
    for name, head in model.embodiments.heads.items():
        out = model.rollout(clips[:, :2], datasets=[name] * rows, horizon=frames - 2, mode="full")
        chunks = out.actions[..., : head.out_features].reshape(-1, head.out_features)
        mean, std = chunks.mean(0), chunks.std(0).clamp_min(1e-6)
        k = scale / std
        head.weight.mul_(k[:, None])
        head.bias.copy_((head.bias - mean) * k)


def source_episode(dataset: str, index: int, steps: int, size: int = 64) -> Episode:
    """A real-looking episode: moving-block frames, actions in the dataset's real range,
    state and per-step extras (the fields a synthetic episode must reproduce or omit)."""

    spec = load_registry().get(dataset)
    rng = np.random.default_rng(100 + index)
    extras = {"reward": np.zeros(steps, np.float32)}
    if dataset == "tabletop":
        extras["effector_translation"] = rng.normal(0, 0.1, (steps, 2)).astype(np.float32)
    return Episode(
        dataset=dataset,
        episode_id=f"{dataset}-real-{index}",
        split="val" if index % 5 == 4 else "train",
        frames=moving_block_frames(steps, size, index),
        actions=real_actions(dataset, steps, seed=index),
        hz=spec.hz,
        state=rng.normal(0, 1, (steps, STATE_DIM)).astype(np.float32),
        instruction=f"task {index}",
        success=bool(index % 2),
        extras=extras,
        meta={"seed": index, "env_args": {"env_name": "Lift", "type": 1, "env_kwargs": {}}}
        if dataset == "robosuite_lift"
        else {"seed": index},
    )


def constant_classifier(dataset: str, logit: float, hold: int = 1) -> SuccessClassifier:
    """A success classifier of `dataset` whose every frame scores sigmoid(logit)."""
    net = SuccessNet((4,), 64)
    torch.nn.init.zeros_(net.logit.weight)
    torch.nn.init.constant_(net.logit.bias, logit)
    return SuccessClassifier(net, SuccessConfig(widths=(4,), hold=hold), dataset)
