"""The stages experiments share: resumable steps, and the chain from simulated robots to a world model.

    Stages(root, tag).run(name, fn)   fn() once; its JSON result kept in <root>/<name>.json
    record      scripted-expert (and noisy-expert) episodes of one env (hma sim generate)
    tokenizer   an image tokenizer on every recorded frame (hma tokenizer train)
    store       episodes -> token store (hma tokenize)
    world_model HMA on the store (hma pretrain)

Each experiment script (experiments/policy_eval.py, experiments/synthetic_mixing.py) picks its
sizes and strings these together with stages of its own.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The CPU-sized world model the experiments train (~1M parameters, 6-frame window): the tiny
# preset widened and deepened, measured to learn 64 px sim video within an hour on 2 cores.
CPU_MODEL: dict[str, Any] = {
    "preset": "tiny",
    "window": 6,
    "d_model": 96,
    "layers": 6,
    "heads": 4,
    "stem_hidden": 96,
}
CPU_MODEL_MINUTES = 60.0
# The tokenizer the experiments train, and its budget.
CPU_TOKENIZER: dict[str, Any] = {"arch": "fsq", "preset": "small"}
CPU_TOKENIZER_MINUTES = 12.0


class Stages:
    """Runs each stage once; its result (JSON) is kept in <root>/<stage>.json (delete the file to
    redo the stage; the Ray Train stages resume their own runs)."""

    def __init__(self, root: Path, tag: str):
        self.root = root
        self.tag = tag
        root.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        marker = self.root / f"{name}.json"
        if marker.exists():
            print(f"[{self.tag}] {name}: done earlier ({marker})", flush=True)
            return json.loads(marker.read_text())
        print(f"[{self.tag}] {name} ...", flush=True)
        start = time.perf_counter()
        result = fn()
        marker.write_text(json.dumps(result, indent=2))
        print(f"[{self.tag}] {name}: done in {time.perf_counter() - start:.0f}s", flush=True)
        return result


@dataclass(frozen=True)
class Recording:
    """One recorded source: `episodes` of the scripted expert with action noise `noise` (in
    units of the action range), seeds from `seed`, every `val_every`-th in the val split (0:
    all train)."""

    name: str
    episodes: int
    noise: float
    seed: int
    val_every: int = 10


@dataclass(frozen=True)
class WorldModelSizes:
    """What the world model stage trains: the model config (preset + overrides), its budget,
    learning rate and dynamics modes, and whether it models proprioceptive state."""

    model: dict[str, Any]
    minutes: float
    steps: int
    lr: float = 1.5e-3
    modes: dict[str, float] = field(default_factory=lambda: {"forward": 1.0})
    state: bool = True
    batch_size: int = 16


def record(
    root: Path,
    env: str,
    recordings: Sequence[Recording],
    frame: int,
    fmt: str,
    workers: int,
) -> dict[str, Any]:
    """Each recording into <root>/data/<name> (kept when it exists); {"sources": {name: url}}."""
    from hma.envs.record import RecordJob
    from hma.envs.record import record as record_episodes

    sources = {}
    for r in recordings:
        url = str(root / "data" / r.name)
        if not os.path.exists(url):
            job = RecordJob(
                env=env,
                episodes=r.episodes,
                out=url,
                fmt=fmt,
                size=frame,
                noise=r.noise,
                seed=r.seed,
                workers=workers,
                val_every=r.val_every,
            )
            print("\n".join(record_episodes(job).lines()), flush=True)
        sources[r.name] = url
    return {"sources": sources}


def tokenizer(
    root: Path,
    sources: list[str],
    frame: int,
    preset: dict[str, Any],
    minutes: float,
    given: str | None = None,
) -> dict[str, Any]:
    """An image tokenizer of `preset` trained for `minutes` on the frames of `sources`, or the
    trained one the user `given` (--tokenizer)."""
    if given:
        return given_tokenizer(given)
    from hma.tokenize.data import DataConfig, FrameSource
    from hma.tokenize.train import TrainConfig, train

    config = TrainConfig(
        name=preset.get("arch", "fsq"),
        storage_path=str(root / "tokenizers"),
        tokenizer=preset,
        data=DataConfig(sources=[FrameSource(url=u) for u in sources], frame_size=(frame, frame)),
        loss={"l1_weight": 1.0, "l2_weight": 10.0},
        batch_size=8,
        max_steps=100_000,
        max_minutes=minutes,
        log_every=500,
        checkpoint_every=100_000,
        val_frames=256,
        torch_threads=2,
    )
    result = train(config)
    return {"checkpoint": result.checkpoint, "val_psnr": result.metrics.get("val_psnr")}


def given_tokenizer(url: str) -> dict[str, Any]:
    """The tokenizer stage's result for a trained tokenizer the user passed (--tokenizer): an
    image tokenizer is not tied to a dataset, so one can serve several experiments."""
    from hma.tokenize.checkpoint import load_tokenizer

    load_tokenizer(url)  # refuse a missing or damaged one now, not stages later
    return {"checkpoint": url, "val_psnr": None, "given": True}


def store(root: Path, sources: list[str], tokenizer_url: str, frame: int) -> dict[str, Any]:
    """The token store of every episode of `sources` at <root>/store.zarr."""
    from hma.pipeline.tokenize_job import TokenizeJobConfig, run_tokenize

    config = TokenizeJobConfig(
        sources=[{"url": u} for u in sources],
        tokenizer=tokenizer_url,
        store=str(root / "store.zarr"),
        frame_size=(frame, frame),
        progress=False,
    )
    summary = run_tokenize(config)
    print("\n".join(summary.lines()), flush=True)
    if not summary.ok:
        raise RuntimeError("the token store's counts do not balance")
    return {"store": config.store, "frames": summary.frames}


def world_model(root: Path, name: str, store_url: str, sizes: WorldModelSizes) -> dict[str, Any]:
    """HMA pretrained on `store_url` as `sizes` says, under <root>/world_model/<name>."""
    from hma.pipeline.pretrain.config import PretrainConfig
    from hma.pipeline.pretrain.driver import run_pretrain

    window = int(sizes.model.get("window", 6))
    config = PretrainConfig(
        name=name,
        storage_path=str(root / "world_model"),
        data={"stores": [{"url": store_url}], "batch_size": sizes.batch_size, "prefetch": 4},
        model=sizes.model,
        optim={"lr": sizes.lr, "warmup_steps": 200, "weight_decay": 0.05},
        modes=sizes.modes,
        state=sizes.state,
        max_steps=sizes.steps,
        max_minutes=sizes.minutes,
        log_every=200,
        checkpoint_every=1000,
        validation={"every": 2000, "windows": 32, "rollouts": 32, "rollout_frames": window},
        torch_threads=2,
    )
    result = run_pretrain(config)
    return {"checkpoint": result.checkpoint, "validation": result.validation}
