"""`hma tokenize`: episode sources -> token store, on Ray.

    plan (driver) ──▶ load_unit (CPU tasks) ──▶ TokenizeActor (actor pool, GPU when present)
        ──▶ driver: gather one unit's rows ──▶ write_unit (one Ray task per unit) ──▶ finalize

The plan cuts the sources into units (hma.pipeline.plan) and leaves out those the store has
committed, so re-running a job resumes it. Rows carry their unit, their position in it and the
unit's row count; the driver holds a unit's token rows (small: frames were dropped by the actor)
until the unit is complete, then hands them to exactly one writer task. A row that arrives twice
(a retried task) is ignored, so nothing is written twice. Every episode read ends committed or
quarantined, per dataset, and the summary says whether the counts balance.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import ray
from pydantic import Field

from hma.config import StorageURL, StrictModel, load_config
from hma.episodes import Registry, extend_registry
from hma.errors import ConfigError
from hma.pipeline import cluster, store
from hma.pipeline.plan import Source, plan_units, unique_sources
from hma.pipeline.tokenize_stages import EMPTY_UNIT, TokenizeActor, load_unit, write_unit
from hma.pipeline.tokenize_summary import TokenizeSummary
from hma.tokenize import checkpoint, cosmos

PLAN_CHUNK = 8192  # units per Arrow array while the plan streams in
MAX_PLAN_BLOCKS = 4096  # Ray Data input blocks: one unit each, up to this many


class TokenizeJobConfig(StrictModel):
    """A tokenize job (`jobs/tokenize.yaml`). Every size has a default that suits a laptop."""

    kind: Literal["tokenize"] = Field(default="tokenize", description="job spec kind")
    sources: list[Source] = Field(min_length=1, description="episode sources, any format mix")
    tokenizer: StorageURL = Field(description="tokenizer checkpoint dir (local or s3://)")
    store: StorageURL = Field(description="token store URL (local or s3://); re-running resumes it")
    frame_size: tuple[int, int] = Field(
        default=(64, 64), description="(H, W) frames are resized to"
    )
    episodes_per_unit: int = Field(default=64, ge=1, description="episodes per unit of work")
    actors: int | None = Field(
        default=None, ge=1, description="tokenizer actors; default one per GPU, else 1"
    )
    actor_cpus: float = Field(default=1.0, gt=0, description="CPUs per tokenizer actor")
    load_cpus: float = Field(default=1.0, gt=0, description="CPUs per load/decode task")
    load_tasks: int | None = Field(
        default=None,
        ge=1,
        description="load tasks at once; default: the CPUs the actors and a writer leave free",
    )
    write_cpus: float = Field(default=0.5, gt=0, description="CPUs per unit writer task")
    batch_episodes: int = Field(default=8, ge=1, description="episodes per tokenizer call")
    encode_batch: int = Field(default=256, ge=1, description="frames per tokenizer forward pass")
    max_inflight_writes: int = Field(default=8, ge=1, description="unit writers running at once")
    write_retries: int = Field(default=3, ge=0, description="retries of a failed unit writer")
    registry: list[str] = Field(default_factory=list, description="extra registry YAML files")
    progress: bool = Field(default=True, description="show a progress bar")


def load_job_config(url: str) -> TokenizeJobConfig:
    return load_config(TokenizeJobConfig, url)


# ---------------------------------------------------------------------------------------------
# Tokenizer metadata


def tokenizer_info(url: str, frame_size: tuple[int, int]) -> store.TokenizerInfo:
    """What the store records about the tokenizer at `url`. The driver verifies the weights
    against the recorded fingerprint (without building the model) before anything starts, so a
    damaged checkpoint is one error naming the file, not a failing actor; the actors check again
    when they load."""
    if cosmos.is_cosmos_dir(url):  # TorchScript files: nothing to read short of loading them
        tokenizer = checkpoint.load_tokenizer(url)
        return store.TokenizerInfo.from_tokenizer(tokenizer, url, frame_size)
    config, fingerprint = checkpoint.verify_weights(checkpoint.resolve(url))
    height, width = (int(v) for v in frame_size)
    downsample = config.backbone.downsample
    if height % downsample or width % downsample:
        raise ConfigError(
            f"frame size {height}x{width} is not a multiple of the tokenizer's "
            f"downsampling factor {downsample}"
        )
    vq = config.arch == "fsq"
    return store.TokenizerInfo(
        kind="vq" if vq else "soft",
        fingerprint=fingerprint,
        config=checkpoint.config_dict(config),
        url=url,
        grid=(height // downsample, width // downsample),
        vocab_size=math.prod(config.levels) if vq else None,
        latent_channels=None if vq else config.latent_channels,
        frame_size=(height, width),
    )


# ---------------------------------------------------------------------------------------------
# Plan


@dataclass
class Plan:
    """The units still to do, as one Arrow column of JSON (compact: no per-episode objects)."""

    table: pa.Table
    episodes: int  # planned episodes (video: manifest lines) in the units to do
    skipped: int  # units already committed
    repeated_sources: list[str] = field(default_factory=list)  # listed twice, read once

    @property
    def units(self) -> int:
        return self.table.num_rows

    def blocks(self) -> list[pa.Table]:
        """Ray Data input blocks: one unit per block, or an even share when units are many."""
        count = min(self.units, MAX_PLAN_BLOCKS)
        size = -(-self.units // count)
        return [self.table.slice(start, size) for start in range(0, self.units, size)]


def build_plan(config: TokenizeJobConfig, committed: set[str]) -> Plan:
    """Stream the sources' units into a compact Arrow plan, leaving out committed units."""
    chunks: list[pa.Array] = []
    pending: list[str] = []
    episodes = skipped = 0
    sources, repeats = unique_sources(config.sources)
    for unit in plan_units(sources, config.episodes_per_unit):
        if unit["unit"] in committed:
            skipped += 1
            continue
        pending.append(json.dumps(unit))
        episodes += unit["count"]
        if len(pending) == PLAN_CHUNK:
            chunks.append(pa.array(pending, pa.large_string()))
            pending = []
    chunks.append(pa.array(pending, pa.large_string()))
    table = pa.table({"unit": pa.chunked_array(chunks, pa.large_string())})
    repeated = [s.url for s in repeats]
    return Plan(table=table, episodes=episodes, skipped=skipped, repeated_sources=repeated)


# ---------------------------------------------------------------------------------------------
# The chain


def tokenize_dataset(
    plan: Plan, config: TokenizeJobConfig, registry: Registry, info: store.TokenizerInfo
):
    """The Ray Data chain: plan rows -> episode rows -> token rows (lazy)."""
    import ray.data
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    cluster_resources = ray.cluster_resources()
    gpus = int(cluster_resources.get("GPU", 0))
    actors = config.actors or max(gpus, 1)
    # GPUs when the cluster has them (one per actor), else the actor's CPU share.
    resources = {"num_gpus": 1} if gpus else {"num_cpus": config.actor_cpus}
    # Load tasks get the CPUs the tokenizer actors and one writer leave: unbounded, they take
    # every CPU first and the actors start only once loading is over (measured on 2 CPUs).
    reserved = (0 if gpus else actors * config.actor_cpus) + config.write_cpus
    free = cluster_resources.get("CPU", 0) - reserved
    load_tasks = config.load_tasks or max(1, int(free // config.load_cpus))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver shows one bar over episodes
    context.execution_options.preserve_order = False
    frame_size = tuple(config.frame_size)
    return (
        ray.data.from_arrow(plan.blocks())
        .flat_map(
            load_unit,
            fn_kwargs={
                "frame_size": frame_size,
                "registry": registry,
                "registry_files": list(config.registry),
            },
            num_cpus=config.load_cpus,
            compute=TaskPoolStrategy(size=load_tasks),
        )
        .map_batches(
            TokenizeActor,
            fn_constructor_kwargs={
                "checkpoint": config.tokenizer,
                "frame_size": frame_size,
                "encode_batch": config.encode_batch,
                "threads": max(1, int(config.actor_cpus)),
                "expected": info.to_dict(),
            },
            compute=ActorPoolStrategy(size=actors),
            batch_size=config.batch_episodes,
            batch_format="numpy",
            **resources,
        )
    )


def run_tokenize(config: TokenizeJobConfig, address: str | None = None) -> TokenizeSummary:
    """Run the job on the cluster at `address` (default $RAY_ADDRESS, else a local one)."""
    summary = TokenizeSummary(store=config.store)
    registry = extend_registry(config.registry)
    info = tokenizer_info(config.tokenizer, tuple(config.frame_size))
    store.create_store(config.store, info)
    summary.lap("setup")
    plan = build_plan(config, store.committed_units(config.store))
    summary.units_planned, summary.units_skipped = plan.units, plan.skipped
    summary.repeated_sources = plan.repeated_sources
    summary.lap("plan")
    if plan.units:
        cluster.connect(address)
        summary.mark("connected")
        rows = token_rows(tokenize_dataset(plan, config, registry, info))
        summary.mark("pipeline")
        writers = UnitWriters(config, summary)
        bar = _progress(config.progress, plan.episodes)
        try:
            for row in rows:
                bar.update(int(row["index"]) != EMPTY_UNIT)
                writers.add(row)
            writers.finish()
        finally:
            bar.close()
        summary.units_incomplete = sorted(writers.incomplete())
        summary.lap()
    summary.store_summary = store.finalize(config.store, registry)
    summary.lap("finalize")
    summary.wall_seconds = time.perf_counter() - summary.started
    return summary


def token_rows(dataset) -> Iterator[dict[str, Any]]:
    """The dataset's rows as they come. Not Dataset.iter_rows: it prefetches a block, so each
    block reached the driver only once the next one was done (measured: the first tokens one
    tokenizer batch, ~1.5 s, later)."""
    for batch in dataset.iter_batches(batch_size=None, prefetch_batches=0, batch_format="numpy"):
        for i in range(len(batch["unit"])):
            yield {name: column[i] for name, column in batch.items()}


def _progress(enabled: bool, total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="ep", desc="tokenize", disable=not enabled, smoothing=0.1)


class UnitWriters:
    """Gathers each unit's rows on the driver and runs one writer task per complete unit,
    with at most `max_inflight_writes` running at once."""

    def __init__(self, config: TokenizeJobConfig, summary: TokenizeSummary):
        self.url = config.store
        self.limit = config.max_inflight_writes
        self.summary = summary
        self.task = ray.remote(write_unit).options(
            num_cpus=config.write_cpus,
            max_retries=config.write_retries,
            retry_exceptions=True,  # transient object-store errors; a unit rewrite is idempotent
        )
        self.rows: dict[str, dict[int, dict[str, Any]]] = {}
        self.submitted: set[str] = set()
        self.running: dict[ray.ObjectRef, str] = {}
        # (dataset, episode_id) hashes of the episodes stored or on their way: a second copy
        # (the same episode in two sources) is quarantined, never stored twice
        self.episodes = {hash(key) for key in store.committed_episodes(config.store)}

    def add(self, row: dict[str, Any]) -> None:
        unit, index = str(row["unit"]), int(row["index"])
        if unit in self.submitted or index in self.rows.get(unit, {}):
            self.summary.duplicates += 1  # a retried upstream task sent this row again
            return
        if index != EMPTY_UNIT and not row["reason"]:
            key = hash((str(row["dataset"]), str(row["episode_id"])))
            if key in self.episodes:
                row["reason"] = (
                    f"duplicate episode: dataset {row['dataset']!r} already holds episode "
                    f"{row['episode_id']!r} (from another source or unit of this store)"
                )
            self.episodes.add(key)
        self.summary.count_row(row)
        rows = self.rows.setdefault(unit, {})
        rows[index] = row
        if index == EMPTY_UNIT or len(rows) == int(row["total"]):
            self._submit(unit, list(self.rows.pop(unit).values()))

    def _submit(self, unit: str, rows: list[dict[str, Any]]) -> None:
        while len(self.running) >= self.limit:
            self._wait(1)
        ref = self.task.remote(self.url, unit, rows)
        self.submitted.add(unit)
        self.running[ref] = unit

    def _wait(self, count: int) -> None:
        done, _ = ray.wait(list(self.running), num_returns=count)
        for ref in done:
            unit = self.running.pop(ref)
            try:
                commit, seconds = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - report the unit, keep the run going
                self.summary.units_failed.append((unit, f"{type(e).__name__}: {e}"))
                continue
            self.summary.count_commit(commit, seconds)

    def finish(self) -> None:
        if self.running:
            self._wait(len(self.running))

    def incomplete(self) -> set[str]:
        """Units some of whose rows never arrived (should not happen; reported if it does)."""
        return set(self.rows)
