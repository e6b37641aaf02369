"""`hma tokenize` throughput and driver memory.

1. End to end: a video source of E episodes x T steps (64 px; default 1000 x 100, ~2 minutes of
   bare encode on a 2-core CPU, so the fixed start-up weighs about as little as in a real run)
   goes through the whole job on a local Ray cluster (plan, decode, tokenize, write, finalize);
   frames/s = kept frames / job wall time (cluster start excluded, actor start included), with
   the start-up (job start -> first token row) cut into phases, and the steady rate between the
   first and the last token row. "Bare" is `Tokenizer.encode` on frames of the same source
   already in memory, called as one tokenizer actor calls it (episodes per call, forward batch,
   device, torch threads), times the number of actors; ratio = end to end / bare (target >= 0.8).
   The source is generated once and reused from --workdir.
2. Planning: a synthetic video manifest of 3,000,000 episodes (the mp4s need not exist to plan);
   seconds and peak RSS of the planning process (targets < 60 s, < 2 GB).
3. Flat memory: peak RSS of a planning process for N and 10 N episodes, and of a whole-job
   driver for n and 10 n episodes; each in a fresh process (VmHWM); ratio target <= 1.3.

    python -m benchmarks.tokenize_pipeline [--episodes 1000 --steps 100] [--preset small]
        [--bare-episodes 200] [--plan-episodes 3000000] [--small-run 16]
        [--workdir /tmp/hma_bench_tokenize] [--skip-e2e | --skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SIZE = 64
KIB = 1024


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that across
    exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * KIB / 2**20  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def write_manifest(path: str, episodes: int) -> None:
    """A manifest of `episodes` lines pointing at files that need not exist (planning only)."""
    if os.path.exists(path) and _lines(path) == episodes:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    line = '{"episode_id": "ep%09d", "dataset": "pusht", "video": "videos/%09d.mp4", '
    line += '"actions": "actions/%09d.parquet"}\n'
    block = 100_000
    with open(path, "w") as f:
        for start in range(0, episodes, block):
            f.write("".join(line % (i, i, i) for i in range(start, min(start + block, episodes))))


def _lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))


def child_plan(manifest_dir: str) -> dict:
    """Plan a run over the manifest in this process; report seconds and peak RSS."""
    from hma.pipeline.tokenize_job import TokenizeJobConfig, build_plan

    config = TokenizeJobConfig(
        sources=[{"url": manifest_dir, "format": "video"}], tokenizer="unused", store="unused"
    )
    start = time.perf_counter()
    plan = build_plan(config, committed=set())
    return {
        "seconds": time.perf_counter() - start,
        "units": plan.units,
        "episodes": plan.episodes,
        "peak_rss_mb": peak_rss_mb(),
    }


def job_config(source: str, checkpoint: str, store: str, episodes_per_unit: int):
    """The benchmark's whole-job config over the video source at `source`."""
    from hma.pipeline.tokenize_job import TokenizeJobConfig

    return TokenizeJobConfig(
        sources=[{"url": source, "format": "video"}],
        tokenizer=checkpoint,
        store=store,
        episodes_per_unit=episodes_per_unit,
        progress=False,
        load_cpus=0.5,
        write_cpus=0.25,
    )


def child_run(source: str, checkpoint: str, store: str) -> dict:
    """Run the whole job with a fresh local cluster; report the driver's peak RSS."""
    from hma.pipeline.cluster import LocalClusterConfig, connect
    from hma.pipeline.tokenize_job import run_tokenize

    connect(local=LocalClusterConfig(num_cpus=os.cpu_count()))
    config = job_config(source, checkpoint, store, episodes_per_unit=4)
    summary = run_tokenize(config)
    return {"ok": summary.ok, "episodes": summary.episodes, "peak_rss_mb": peak_rss_mb()}


def in_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"child {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1])


def make_source(url: str, episodes: int, steps: int, seed: int = 0) -> str:
    from hma.envs.procedural import procedural_episodes
    from hma.formats import write_episodes

    if not os.path.exists(os.path.join(url, "manifest.jsonl")):
        write_episodes(procedural_episodes("pusht", episodes, steps, SIZE, seed), url, "video")
    return url


def make_checkpoint(url: str, preset: str) -> str:
    from hma.tokenize.checkpoint import build_tokenizer, save_tokenizer
    from hma.tokenize.presets import fsq

    if not os.path.exists(os.path.join(url, "config.json")):
        save_tokenizer(build_tokenizer(fsq(preset)), url)
    return url


def sample_clips(source: str, episodes: int, per_call: int) -> list[np.ndarray]:
    """The first `episodes` episodes of `source`, decoded, concatenated `per_call` episodes at a
    time: the frames one tokenizer actor call gets."""
    from hma import formats

    episodes_iter = formats.iter_episodes(source, "video")
    frames = [ep.frames for _, ep in zip(range(episodes), episodes_iter, strict=False)]
    return [np.concatenate(frames[i : i + per_call]) for i in range(0, len(frames), per_call)]


def bare_encode_fps(clips: list[np.ndarray], checkpoint: str, batch: int, threads: int) -> float:
    """Tokenizer.encode alone on frames already in memory, called as the actor calls it (same
    frames per call, forward batch and torch threads)."""
    import torch

    from hma.tokenize.checkpoint import load_tokenizer

    torch.set_num_threads(threads)
    tok = load_tokenizer(checkpoint, batch_size=batch)
    tok.encode(clips[0][:batch])  # warm-up
    start = time.perf_counter()
    for clip in clips:
        tok.encode(clip)
    return sum(len(c) for c in clips) / (time.perf_counter() - start)


def load_average() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def end_to_end(args: argparse.Namespace, source: str, checkpoint: str) -> None:
    import shutil

    from hma.pipeline import tokenize_job
    from hma.pipeline.cluster import LocalClusterConfig, connect, shutdown

    store = os.path.join(args.workdir, "e2e.zarr")
    shutil.rmtree(store, ignore_errors=True)
    config = job_config(source, checkpoint, store, episodes_per_unit=8)
    threads, actors = max(1, int(config.actor_cpus)), config.actors or 1
    # Bare speed on a sample of the same frames (a conv net's encode time does not depend on
    # the pixels), before and after the job; the faster is used: a conservative ratio on a
    # shared machine whose load drifts.
    clips = sample_clips(source, args.bare_episodes, config.batch_episodes)
    bare = [bare_encode_fps(clips, checkpoint, config.encode_batch, threads)]
    load_before = load_average()
    connect(local=LocalClusterConfig(num_cpus=os.cpu_count()))
    summary = tokenize_job.run_tokenize(config)
    shutdown()
    assert summary.ok, summary.lines()
    load_job = load_average()
    bare.append(bare_encode_fps(clips, checkpoint, config.encode_batch, threads))
    best = max(bare) * actors
    frames, wall, startup = summary.frames, summary.wall_seconds, summary.startup_seconds
    e2e, steady = frames / wall, summary.steady_fps
    print(f"end to end: {summary.episodes} episodes, {frames} frames of {SIZE} px")
    print(f"  job wall time {wall:.1f}s -> {e2e:.0f} frames/s end to end")
    print(f"  start-up (job start -> first token row): {startup:.1f}s")
    for phase, seconds in summary.startup_breakdown().items():
        print(f"    {phase:<48}{seconds:6.1f}s")
    first_load = summary.milestones.get("load_at", 0.0)
    print(f"    (first unit being decoded at {first_load:.1f}s, in parallel with the actor start)")
    print(f"  steady (first to last token row): {steady:.0f} frames/s")
    print(f"  after the start-up (wall - start-up): {frames / (wall - startup):.0f} frames/s")
    # the actor's own encode rate in the job: below bare means it shared its CPU (decode, writes,
    # driver, Ray), not that it waited for data
    encoding = frames / max(summary.stage_seconds["encode"], 1e-9)
    print(f"  actor encode rate inside the job (frames / encode seconds): {encoding:.0f} frames/s")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary.stage_seconds.items())
    print(f"  seconds per stage (driver wall / workers summed): {stages}")
    print(
        f"  bare Tokenizer.encode ({actors} actor x {threads} thread, {config.batch_episodes} "
        f"episodes per call, forward batch {config.encode_batch}, {args.bare_episodes} episodes): "
        f"{' / '.join(f'{b:.0f}' for b in bare)} frames/s (before / after)"
    )
    print(f"  {load_before} before the job, {load_job} after it")
    print(f"  ratio end to end / bare = {e2e / best:.2f}  (target >= 0.8)")
    print(f"  ratio steady / bare     = {steady / best:.2f}")
    print(
        f"  ratio start-up excluded (frames / (wall - start-up)) / bare = "
        f"{frames / (wall - startup) / best:.2f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=1000, help="episodes of the end-to-end job")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument(
        "--bare-episodes", type=int, default=200, help="episodes the bare encode speed is timed on"
    )
    p.add_argument("--skip-memory", action="store_true", help="only the end-to-end part")
    p.add_argument("--preset", default="small", help="FSQ preset of the tokenizer")
    p.add_argument("--plan-episodes", type=int, default=3_000_000)
    p.add_argument("--small-run", type=int, default=16, help="episodes of the n-vs-10n job")
    p.add_argument("--workdir", default="/tmp/hma_bench_tokenize")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        print(json.dumps(child_plan(*rest) if kind == "plan" else child_run(*rest)))
        return

    os.makedirs(args.workdir, exist_ok=True)
    checkpoint = make_checkpoint(os.path.join(args.workdir, f"fsq_{args.preset}"), args.preset)
    if not args.skip_e2e:
        src = os.path.join(args.workdir, f"video_{args.episodes}x{args.steps}")
        end_to_end(args, make_source(src, args.episodes, args.steps), checkpoint)
    if args.skip_memory:
        return

    big, small = args.plan_episodes, args.plan_episodes // 10
    for n in (small, big):
        write_manifest(os.path.join(args.workdir, f"manifest_{n}", "manifest.jsonl"), n)
    plans = {n: in_child("plan", os.path.join(args.workdir, f"manifest_{n}")) for n in (small, big)}
    b = plans[big]
    print(
        f"planning {big:,} episodes: {b['seconds']:.1f}s, {b['units']:,} units, "
        f"peak RSS {b['peak_rss_mb']:.0f} MB  (targets < 60 s, < 2048 MB)"
    )
    ratio = b["peak_rss_mb"] / plans[small]["peak_rss_mb"]
    print(
        f"planning peak RSS: {small:,} episodes {plans[small]['peak_rss_mb']:.0f} MB, "
        f"{big:,} episodes {b['peak_rss_mb']:.0f} MB, ratio {ratio:.2f}  (target <= 1.3)"
    )

    n = args.small_run
    runs = {}
    for count in (n, 10 * n):
        src = make_source(os.path.join(args.workdir, f"video_{count}x16"), count, 16, seed=1)
        store = os.path.join(args.workdir, f"rss_{count}.zarr")
        subprocess.run(["rm", "-rf", store], check=True)
        runs[count] = in_child("run", src, checkpoint, store)
    ratio = runs[10 * n]["peak_rss_mb"] / runs[n]["peak_rss_mb"]
    print(
        f"job driver peak RSS: {n} episodes {runs[n]['peak_rss_mb']:.0f} MB, {10 * n} episodes "
        f"{runs[10 * n]['peak_rss_mb']:.0f} MB, ratio {ratio:.2f}  (target <= 1.3)"
    )


if __name__ == "__main__":
    main()
