"""The workers of `hma-generate`: one WorldModel per worker, batch jobs in, staged episodes out.

    job {attempt, seed, members: [{index, episode_id, split, prompt ref, skip}]}
      ─▶ load prompt episodes ─▶ keep every s-th frame, chunk actions [F,s,A]
      ─▶ WorldModel.rollout (model: proposed; replay: real chunks; perturb: real + noise)
      ─▶ per row: cut to its own horizon, hold + resize, sanity checks ─▶ staged or rejected

Rows of a batch may have different horizons: the batch rolls out to the longest, and each row is
cut to its own length. The model is causal in time, so the frames a row keeps never depend on
the padding after it. `skip` members (staged before an interruption) are recomputed, because the
batch is sampled as a whole, but not written again.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hma.episodes import chunk_actions, keep_frames
from hma.generate import synthetic as syn
from hma.generate.config import SCHEMA_FORMATS, GenerateConfig, GenerateError, Plan


class BatchRunner:
    """Holds one WorldModel; turns a batch job into staged (or rejected) synthetic episodes."""

    def __init__(self, config: dict[str, Any], plan_fmt: str, provenance: dict[str, Any]):
        import torch

        from hma.episodes import load_registry
        from hma.generate.world_model import WorldModel

        self.config = GenerateConfig(**config)
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.wm = WorldModel.load(self.config.checkpoint, device, self.config.tokenizer)
        self.fmt = plan_fmt
        self.provenance = syn.Provenance(**provenance)
        self.success = None  # the success classifier the plan resolved, if any
        if self.provenance.success_model:
            from hma.generate.success import SuccessClassifier

            self.success = SuccessClassifier.load(self.provenance.success_model, device)
            if self.success.fingerprint != self.provenance.success_fingerprint:
                raise GenerateError(
                    f"success classifier {self.provenance.success_model} changed since the run "
                    "was planned (its fingerprint differs)"
                )
        self.registry = load_registry()
        self.root = syn.staging_url(self.config.out)

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        from hma.frames import resize

        c, wm, start = self.config, self.wm, time.perf_counter()
        attempt, members = job["attempt"], job["members"]
        rows, results = [], []
        for m in members:
            ep, reason = syn.load_valid(m["prompt"], self.registry)
            if ep is None:
                results.append(self._reject(m, attempt, f"prompt episode: {reason}"))
                continue
            stride = wm.stride(ep.dataset)
            kept = ep.frames[keep_frames(len(ep), stride)]
            chunks = chunk_actions(ep.actions, stride)  # [F,s,A]
            available = len(chunks) - c.prompt_frames
            horizon = c.horizon or available
            if c.actions != "model":
                horizon = min(horizon, available)
            if horizon < 1:
                reason = (
                    f"prompt episode {ep.episode_id!r} has {len(chunks)} kept frames; it needs "
                    f"more than the {c.prompt_frames} prompt frames"
                )
                results.append(self._reject(m, attempt, reason))
                continue
            rows.append((m, ep, resize(kept[: c.prompt_frames], wm.frame_size), chunks, horizon))
        prompt_state = wm.prompt_state([r[1] for r in rows], c.prompt_frames)
        frames_decoded = 0
        if rows:
            dataset = rows[0][1].dataset
            longest = max(r[4] for r in rows)
            prompt = np.stack([r[2] for r in rows])  # [B,T0,h,w,3]
            given = None
            if c.actions != "model":
                given = np.stack(
                    [
                        self._actions(r[3], dataset, longest, [job["seed"], r[0]["index"]])
                        for r in rows
                    ]
                )
            out = wm.rollout(
                dataset,
                prompt,
                longest,
                given,
                c.steps,
                c.temperature,
                seed=job["seed"],
                prompt_state=prompt_state,
            )
            frames_decoded = out.frames.shape[0] * out.frames.shape[1]
            stats = wm.stats(dataset)
            for b, (m, ep, _, _, horizon) in enumerate(rows):
                results.append(self._finish(m, attempt, ep, out, b, horizon, job["seed"], stats))
        return {
            "results": results,
            "seconds": time.perf_counter() - start,
            "frames_decoded": frames_decoded,
        }

    def _actions(
        self, chunks: np.ndarray, dataset: str, horizon: int, seed: list[int]
    ) -> np.ndarray:
        """Real chunks for all T0 + horizon frames [N,s,A]; perturbed in perturb mode. Past the
        episode's end the last chunk repeats: those frames are cut off (causal model)."""
        n = self.config.prompt_frames + horizon
        a = chunks[: min(n, len(chunks))]
        if len(a) < n:
            a = np.concatenate([a, np.repeat(a[-1:], n - len(a), axis=0)])
        if self.config.actions == "perturb":
            st = self.wm.stats(dataset)
            rng = np.random.default_rng(seed)
            noise = rng.normal(0.0, 1.0, a.shape) * self.config.perturb_scale * st.std
            a = np.clip(a + noise, st.min, st.max)
        return a.astype(np.float32)

    def _finish(self, m, attempt, ep, out, row, horizon, seed, stats) -> dict[str, Any]:
        c = self.config
        n = c.prompt_frames + horizon
        meta = self.provenance.meta(
            index=m["index"],
            attempt=attempt,
            batch_seed=seed,
            prompt_episode_id=ep.episode_id,
            prompt_frames=c.prompt_frames,
            horizon=horizon,
            stride=self.wm.stride(ep.dataset),
        )
        judged = self.success is not None  # never in replay mode (synthesize.success_judge)
        solved = None
        if judged:  # on the generated frames only: the prompt frames are the real episode's
            probs = self.success.predict(out.frames[row, c.prompt_frames : n])
            first = self.success.first_success(probs)
            solved = None if first is None else c.prompt_frames + first
        synthetic = syn.build_episode(
            ep,
            m["episode_id"],
            m["split"],
            out.frames[row, :n],
            out.actions_raw[row, :n],
            self.wm.stride(ep.dataset),
            keep_state=c.actions == "replay",
            placeholders=self.fmt in SCHEMA_FORMATS,
            meta=meta,
            state_raw=None if out.state_raw is None else out.state_raw[row, :n],
            judged=judged,
            solved_frame=solved,
        )
        reason = syn.check_episode(
            synthetic, bool(out.finite[row]), stats, c.range_tolerance, self.registry
        )
        if reason:
            return self._reject(m, attempt, reason)
        if m["skip"]:
            return {"index": m["index"], "skipped": True}
        record = syn.save_staged(self.root, m["index"], attempt, synthetic)
        return {"index": m["index"], "accepted": record}

    def _reject(self, m: dict, attempt: int, reason: str) -> dict[str, Any]:
        if m["skip"]:
            return {"index": m["index"], "skipped": True}
        record = syn.save_rejection(
            self.root, m["index"], attempt, reason, m["prompt"]["episode_id"]
        )
        return {"index": m["index"], "rejected": record}


class Executor:
    """Runs batch jobs in-process (workers 0) or on a pool of Ray actors, one model each."""

    def __init__(self, config: GenerateConfig, plan: Plan, address: str | None):
        args = (config.model_dump(mode="json"), plan.fmt, plan.provenance.__dict__)
        self.actors: list[Any] = []
        if config.workers == 0:
            self.local: BatchRunner | None = BatchRunner(*args)
            return
        import ray

        from hma.pipeline import cluster

        self.local = None
        cluster.connect(address)
        gpus = config.device == "cuda" or (
            config.device == "auto" and ray.cluster_resources().get("GPU", 0) >= 1
        )
        remote = ray.remote(BatchRunner).options(
            num_cpus=config.cpus_per_worker, num_gpus=1 if gpus else 0
        )
        self.actors = [remote.remote(*args) for _ in range(config.workers)]

    def map(self, jobs: list[dict[str, Any]]):
        if self.local is not None:
            for job in jobs:
                yield self.local.run(job)
            return
        from ray.util import ActorPool

        yield from ActorPool(self.actors).map_unordered(lambda a, j: a.run.remote(j), jobs)

    def close(self) -> None:
        import contextlib

        if self.actors:
            import ray

            for actor in self.actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
