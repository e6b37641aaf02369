"""`hma sim generate`: record expert episodes from a simulator into a real dataset on disk.

    seeds ──(one process, or a Ray actor pool of --workers envs)──▶ Episodes ──stream──▶ format writer

Episode i uses seed `seed + i`, so a run is reproducible whatever the worker count. Unsuccessful
episodes are kept and labelled (`success=False`) unless `only_success`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from hma import formats
from hma.envs import make_env
from hma.envs.base import Env
from hma.envs.rollout import rollout
from hma.episodes import Episode, load_registry

DEFAULT_FORMAT = {"robosuite": "robomimic", "tabletop": "rlds"}
VAL_EVERY = 10  # every 10th episode goes to the val split


def default_format(env_name: str) -> str:
    """robomimic for robosuite, rlds (Language Table schema) for tabletop, lerobot otherwise."""
    for prefix, fmt in DEFAULT_FORMAT.items():
        if env_name.startswith(prefix):
            return fmt
    return "lerobot"


@dataclass(frozen=True)
class RecordJob:
    env: str
    episodes: int
    out: str
    fmt: str
    size: int = 64
    noise: float = 0.0
    seed: int = 0
    workers: int = 1
    only_success: bool = False
    val_every: int = VAL_EVERY  # every n-th episode goes to the val split; 0: none does


@dataclass
class RecordSummary:
    job: RecordJob
    attempted: int = 0
    successes: int = 0
    written: int = 0
    per_episode: list[tuple[str, bool]] = field(default_factory=list)

    def lines(self) -> list[str]:
        rate = self.successes / self.attempted if self.attempted else 0.0
        return [
            f"{self.job.env}: {self.attempted} episodes, {self.successes} successful ({rate:.0%}), "
            f"{self.written} written to {self.job.out} ({self.job.fmt})"
        ]


def episode_plan(job: RecordJob) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "seed": job.seed + i,
            "split": "val" if job.val_every and i % job.val_every == job.val_every - 1 else "train",
        }
        for i in range(job.episodes)
    ]


class ExpertRecorder:
    """Holds one env for its lifetime (a Ray actor in a pool, or the driver when workers=1)."""

    def __init__(self, env: str, size: int, noise: float):
        self.env_name, self.size, self.noise = env, size, noise
        self._env: Env | None = None

    @property
    def env(self) -> Env:
        # Built on first use, not in __init__: Ray Data may construct an actor's UDF on one thread
        # and call it on another, and an EGL context (MuJoCo offscreen rendering) is bound to the
        # thread that created it (eglMakeCurrent fails with EGL_BAD_ACCESS elsewhere).
        if self._env is None:
            self._env = make_env(self.env_name, self.size)
        return self._env

    def close(self) -> None:
        if self._env is not None:
            self._env.close()

    def record(self, item: dict[str, Any]) -> Episode:
        seed = int(item["seed"])
        return rollout(
            self.env,
            seed,
            self.noise,
            split=str(item["split"]),
            episode_id=f"{self.env.dataset}-seed{seed}",
        )

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        return self.record(item).to_row()


def _episodes(job: RecordJob) -> Iterator[Episode]:
    plan = episode_plan(job)
    if job.workers <= 1:
        recorder = ExpertRecorder(job.env, job.size, job.noise)
        try:
            yield from (recorder.record(item) for item in plan)
        finally:
            recorder.close()
        return
    import ray.data

    ds = ray.data.from_items(plan, override_num_blocks=len(plan)).map(
        ExpertRecorder,
        fn_constructor_kwargs={"env": job.env, "size": job.size, "noise": job.noise},
        compute=ray.data.ActorPoolStrategy(size=job.workers),
        num_cpus=1,
    )
    ds.context.execution_options.preserve_order = True  # output order = seed order
    for row in ds.iter_rows():
        yield Episode.from_row(row)


def record(job: RecordJob) -> RecordSummary:
    """Run the job; Ray must be up when `job.workers` > 1."""
    summary = RecordSummary(job)
    bar = tqdm(total=job.episodes, desc=f"sim {job.env}", unit="ep")

    def kept() -> Iterator[Episode]:
        for ep in _episodes(job):
            summary.attempted += 1
            summary.successes += bool(ep.success)
            summary.per_episode.append((ep.episode_id, bool(ep.success)))
            bar.update(1)
            bar.set_postfix(success=f"{summary.successes}/{summary.attempted}")
            if ep.success or not job.only_success:
                yield ep

    try:
        summary.written = formats.write_episodes(kept(), job.out, job.fmt, load_registry())
    finally:
        bar.close()
    return summary
