"""`hma-generate`: a dataset of `mix` real and `n` synthetic episodes, in the source's own format.

    SRC (robomimic HDF5 | RLDS dir | LeRobot; local or s3://)
      │ plan (driver): checkpoint <-> tokenizer <-> dataset checks; seeded picks from the train
      │   split: `mix` real episodes, one prompt episode per synthetic episode and attempt
      ▼
    Ray actors, one WorldModel each ── batches of `batch_size` synthetic episodes:
      load prompt episodes ─▶ rollout (model | replay | perturb actions) ─▶ decode ─▶ hold and
      resize to the dataset's frames ─▶ sanity checks ─▶ <DST>.partial/ (staged, resumable)
      ▼
    driver: run-level action-spread check ─▶ format.write(real unchanged + synthetic) ─▶ DST

Determinism: batches are fixed by (seed, batch_size) and the attempt round, never by the worker
count; each batch samples with its own seed derived from (seed, round, member indices), so the
same settings give the same output on any number of workers. An episode that fails the sanity
checks is retried in the next round (`attempts` in all) with the next prompt episode; every
failure is reported, none is written. A re-run with the same settings resumes from the staging
directory and redoes only the batches it lacks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hma import storage
from hma.generate import synthetic as syn
from hma.generate.config import GenerateConfig, GenerateError, Plan


@dataclass
class GenerateReport:
    out: str
    format: str
    dataset: str
    real: int
    synthetic: int
    requested: int
    rejected: list[dict[str, Any]]  # every failed attempt: index, attempt, reason, prompt
    missing: list[int]  # synthetic episodes that failed every attempt
    seconds: float
    rollout_seconds: float  # summed over workers
    frames_decoded: int  # kept frames decoded this run (staged episodes from earlier excluded)
    resumed: int  # synthetic episodes found staged from an interrupted run
    splits: dict[str, int] = field(default_factory=dict)
    skipped_real: list[dict[str, str]] = field(default_factory=list)  # invalid, not copied
    success_model: str | None = None  # the classifier that judged the synthetic episodes
    successes: int = 0  # synthetic episodes it judged successful

    def lines(self) -> list[str]:
        minutes = max(self.seconds, 1e-9) / 60
        made = self.synthetic - self.resumed
        out = [
            f"{self.out} ({self.format}, {self.dataset}): {self.real} real + {self.synthetic} "
            f"synthetic episodes ({self.synthetic}/{self.requested} requested); splits "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.splits.items())),
            f"{made} generated in {self.seconds:.1f}s: {made / minutes:.1f} trajectories/min, "
            f"{self.frames_decoded / max(self.rollout_seconds, 1e-9):.1f} frames/s per worker "
            f"(load, rollout, decode, checks, staging); {self.resumed} resumed from staging",
        ]
        if self.success_model:
            out.append(
                f"success judged by {self.success_model}: {self.successes}/{self.synthetic} "
                "synthetic episodes successful"
            )
        for r in self.skipped_real:
            out.append(f"  skipped real episode {r['episode_id']}: {r['reason']}")
        for r in self.rejected:
            out.append(
                f"  rejected synthetic #{r['index']} attempt {r['attempt']} (prompt "
                f"{r['prompt_episode_id']}): {r['reason']}"
            )
        if self.missing:
            out.append(f"  MISSING after all attempts: synthetic {self.missing}")
        return out


# ---------------------------------------------------------------------------------------------
# Plan


def make_plan(config: GenerateConfig, wm: Any) -> Plan:
    """Check checkpoint, tokenizer and dataset against each other; pick episodes by seed."""
    from hma.episodes import load_registry
    from hma.formats import detect_format, list_refs

    if storage.exists(config.out):
        raise GenerateError(f"{config.out}: destination exists; choose a new path")
    fmt = config.format or detect_format(config.source)
    refs = list_refs(config.source, fmt, config.dataset_name)
    if not refs:
        raise GenerateError(f"{config.source}: no episodes")
    name = refs[0]["dataset"]
    record = wm.record(name)  # refuses a dataset the checkpoint was not trained on
    spec = load_registry().get(name)
    if (spec.stride, spec.action_dim) != (int(record["stride"]), int(record["action_dim"])):
        raise GenerateError(
            f"dataset mismatch: {name!r} has stride {spec.stride} x {spec.action_dim}-D actions "
            f"in the registry, but the checkpoint {wm.url} was trained with stride "
            f"{record['stride']} x {record['action_dim']}-D"
        )
    train = [r for r in refs if r["split"] == "train"]
    if config.mix > len(train):
        raise GenerateError(
            f"{config.source}: --mix {config.mix} but the train split has {len(train)} episodes"
        )
    if config.n and not train:
        raise GenerateError(f"{config.source}: no train episodes to prompt the model with")
    if config.require_keys and config.n:
        check_required_keys(config, wm, name, train, load_registry())
    real, skipped = pick_real(config, train, load_registry())
    n_valid = round(config.valid_fraction * config.n)
    valid = set(np.random.default_rng([config.seed, 2]).permutation(config.n)[:n_valid].tolist())
    success_url, success_fingerprint = success_judge(config, wm.url, name)
    provenance = syn.Provenance(
        checkpoint=wm.url,
        checkpoint_fingerprint=wm.fingerprint,
        tokenizer_fingerprint=wm.tokenizer_fingerprint,
        seed=config.seed,
        actions=config.actions,
        steps=config.steps,
        temperature=config.temperature,
        batch_size=config.batch_size,
        success_model=success_url,
        success_fingerprint=success_fingerprint,
    )
    decisive = config.model_dump(exclude={"workers", "device", "cpus_per_worker", "torch_threads"})
    run = {**decisive, "checkpoint_fingerprint": wm.fingerprint, "format": fmt, "dataset": name}
    run["success_fingerprint"] = success_fingerprint
    return Plan(fmt, name, train, real, config.seed, valid, run, provenance, skipped)


def success_judge(
    config: GenerateConfig, checkpoint: str, dataset: str
) -> tuple[str | None, str | None]:
    """(url, fingerprint) of the success classifier that judges the synthetic episodes:
    --success-model, else the checkpoint's own success/ if it has one; (None, None) when there
    is none, or in replay mode (the real actions' outcome stands). Refuses a classifier of
    another dataset."""
    from hma.generate.success import SUCCESS_DIR, SuccessClassifier

    url = config.success_model or storage.join(checkpoint, SUCCESS_DIR)
    if config.actions == "replay" or not (config.success_model or storage.exists(url)):
        return None, None
    classifier = SuccessClassifier.load(url)
    if classifier.dataset != dataset:
        raise GenerateError(
            f"success classifier {url} judges {classifier.dataset!r} episodes; the source "
            f"{config.source} is {dataset!r}"
        )
    return url, classifier.fingerprint


def check_required_keys(
    config: GenerateConfig, wm: Any, dataset: str, train: list[dict[str, Any]], registry: Any
) -> None:
    """GenerateError naming every key of `config.require_keys` that synthetic episodes of this
    run would not carry, and why, judged on the first valid train episode of the source."""
    real = next((ep for ep in (syn.load_valid(r, registry)[0] for r in train) if ep), None)
    if real is None:
        raise GenerateError(f"{config.source}: no valid train episode to check --require-keys on")
    producible = syn.producible_keys(real, config.actions, wm.state_dim(dataset))
    camera = registry.get(dataset).camera
    producible |= {camera, f"{camera}_image"}  # the frames under the formats' image keys
    missing = []
    for key in config.require_keys:
        field = key.split("/", 1)[1] if key.startswith(("obs/", "next_obs/")) else key
        if field not in producible:
            missing.append(f"{key!r} ({syn.why_absent(real, field, config.actions)})")
    if missing:
        raise GenerateError(
            f"--require-keys: synthetic {dataset!r} episodes cannot carry {', '.join(missing)}; "
            f"they can carry {', '.join(sorted(producible))}. Nothing written to {config.out}"
        )


def pick_real(
    config: GenerateConfig, train: list[dict[str, Any]], registry: Any
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """`mix` valid train episodes in a seeded order (source order in the result); each episode
    that fails to load or validate is skipped, with its reason, and the next one taken."""
    order = np.random.default_rng([config.seed, 0]).permutation(len(train))
    picked, skipped = [], []
    for i in order:
        if len(picked) == config.mix:
            break
        _, reason = syn.load_valid(train[int(i)], registry)
        if reason:
            skipped.append({"episode_id": str(train[int(i)]["episode_id"]), "reason": reason})
        else:
            picked.append(int(i))
    if len(picked) < config.mix:
        raise GenerateError(
            f"{config.source}: --mix {config.mix} but only {len(picked)} train episodes are valid "
            f"({len(skipped)} skipped, first: {skipped[0]['reason'] if skipped else '-'})"
        )
    return [train[i] for i in sorted(picked)], skipped


def batches(config: GenerateConfig, plan: Plan, accepted: dict, rejected: list) -> list[dict]:
    """The jobs of the earliest unfinished round: fixed batches, minus those fully staged."""
    failed: dict[int, set[int]] = {}
    for r in rejected:
        failed.setdefault(int(r["index"]), set()).add(int(r["attempt"]))
    for attempt in range(config.attempts):
        pending = [i for i in range(config.n) if set(range(attempt)) <= failed.get(i, set())]
        # `pending`: every episode that takes part in this round (done ones included, so the
        # batch composition is the same however much of the round was staged before).
        jobs = []
        for start in range(0, len(pending), config.batch_size):
            members = pending[start : start + config.batch_size]
            done = [i in accepted or attempt in failed.get(i, set()) for i in members]
            if all(done):
                continue
            seed = int(
                np.random.SeedSequence([config.seed, attempt, *members]).generate_state(1)[0]
            )
            jobs.append(
                {
                    "attempt": attempt,
                    "seed": seed,
                    "members": [
                        {
                            "index": i,
                            "episode_id": f"{plan.dataset}-synthetic-s{config.seed}-{i:05d}",
                            "split": "val" if i in plan.valid else "train",
                            "prompt": plan.prompt(i, attempt),
                            "skip": d,
                        }
                        for i, d in zip(members, done, strict=True)
                    ],
                }
            )
        if jobs:
            return jobs
    return []


def generate(
    config: GenerateConfig, address: str | None = None, echo: bool = True
) -> GenerateReport:
    """Plan, generate (resuming staged work), check, and write `config.out`; see module doc."""
    from tqdm import tqdm

    from hma.episodes import load_registry
    from hma.formats import get_format, write_episodes
    from hma.generate.batch_runner import Executor
    from hma.generate.world_model import WorldModel
    from hma.stats import ActionStats

    start = time.perf_counter()
    if config.n + config.mix == 0:
        raise GenerateError("nothing to write: --n and --mix are both 0")
    wm = WorldModel.load(config.checkpoint, "cpu", config.tokenizer)
    plan = make_plan(config, wm)
    root = syn.staging_url(config.out)
    syn.check_run_record(root, plan.run)
    accepted, rejected = syn.scan_staging(root)
    resumed, rollout_s, decoded = len(accepted), 0.0, 0
    bar = tqdm(total=config.n, initial=resumed, unit="ep", desc="hma-generate", disable=not echo)
    executor = Executor(config, plan, address) if config.n > resumed else None
    try:
        while executor and (jobs := batches(config, plan, accepted, rejected)):
            for result in executor.map(jobs):
                rollout_s += result["seconds"]
                decoded += result["frames_decoded"]
                for r in result["results"]:
                    if "accepted" in r:
                        accepted[r["index"]] = r["accepted"]
                        bar.update(1)
                    elif "rejected" in r:
                        rejected.append(r["rejected"])
                bar.set_postfix(rejected=len(rejected))
    finally:
        bar.close()
        if executor:
            executor.close()
    real_stats = wm.stats(plan.dataset)
    if accepted and config.actions != "replay":
        spread = ActionStats.from_dict(accepted[min(accepted)]["action_stats"])
        for i in sorted(accepted)[1:]:
            spread = spread.merge(ActionStats.from_dict(accepted[i]["action_stats"]))
        bad = syn.collapsed_dims(spread, real_stats, config.min_std_ratio)
        if bad:
            dims = "; ".join(
                f"dim {d}: std {s:.3g} vs real {r:.3g} ({s / r:.0%} of it)" for d, s, r in bad
            )
            raise GenerateError(
                f"synthetic actions collapsed (std below {config.min_std_ratio} x the real std): "
                f"{dims}. Nothing written to {config.out}; the episodes stay in {root} for "
                "inspection (an undertrained checkpoint? try --actions replay)"
            )
    if not accepted and not plan.real:
        raise GenerateError(
            f"no synthetic episode passed the sanity checks ({len(rejected)} attempts rejected, "
            f"first: {rejected[0]['reason'] if rejected else '-'}); nothing written to {config.out}"
        )
    reader = get_format(plan.fmt)

    def episodes():
        for ref in plan.real:
            yield reader.load(ref)
        for i in sorted(accepted):
            yield syn.load_staged(root, accepted[i])

    write_episodes(episodes(), config.out, plan.fmt, load_registry())
    fs, path = storage.filesystem(root)
    fs.rm(path, recursive=True)
    splits: dict[str, int] = {}
    for split in [r["split"] for r in plan.real] + [a["split"] for a in accepted.values()]:
        splits[split] = splits.get(split, 0) + 1
    return GenerateReport(
        out=config.out,
        format=plan.fmt,
        dataset=plan.dataset,
        real=len(plan.real),
        synthetic=len(accepted),
        requested=config.n,
        rejected=sorted(rejected, key=lambda r: (r["index"], r["attempt"])),
        missing=sorted(set(range(config.n)) - set(accepted)),
        seconds=time.perf_counter() - start,
        rollout_seconds=rollout_s,
        frames_decoded=decoded,
        resumed=resumed,
        splits=splits,
        skipped_real=plan.skipped_real,
        success_model=plan.provenance.success_model,
        successes=sum(bool(a.get("success")) for a in accepted.values()),
    )
