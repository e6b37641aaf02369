"""`make demo`: the longest end-to-end path the project supports, on one local Ray cluster and local files.

simulated robots -> their native dataset formats -> every other format and back -> an image
tokenizer -> a token store -> a pretrained world model -> synthetic robot data and a model report.
  1. Scripted experts of four simulators record episodes on a Ray actor pool, each into its default
     format (tabletop -> Language Table RLDS, pusht / metaworld -> LeRobot v3, robosuite -> robomimic).
  2. Each dataset is converted on Ray through every other format and back to where it started,
     each hop checked against the recorded episodes (actions exact, frames within codec tolerance).
  3. A `small` FSQ image tokenizer trains on Ray Train for a few minutes on every recorded dataset
     and is scored on their held-out episodes (PSNR / SSIM, reconstruction grids).
  4. `hma tokenize` encodes every recorded dataset with that tokenizer into a token store.
  5. `hma pretrain` trains the `tiny` HMA on the store for a few minutes, validating at the end.
  6. `hma-generate` writes 8 synthetic + 2 real Lift episodes (perturbed real actions) to robomimic.
  7. `hma report` of the pretraining run (real vs generated clips, metrics, curves).
  8. A tiny visuomotor policy (behaviour cloning on reach demonstrations) at two training steps,
     closed-loop in Meta-World and in the learned simulator (`hma evaluate-policy`).
  9. An HTML report: expert success rates, counts, conversion times, round-trip errors, thumbnails,
     tokenizer scores and grids, token store counts, validation scores, the synthetic dataset,
     a link to the model report, and the time of every stage.
Stages 4-8 live in hma.demo.stages; they start from the job specs in --jobs (the repository's
jobs/, so run `make demo` from the repository root).

"""

from __future__ import annotations

import argparse
import html
import os
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hma import formats
from hma.demo import stages as ds
from hma.envs.record import VAL_EVERY, RecordJob, RecordSummary, default_format, record
from hma.episodes import Episode, load_registry
from hma.formats import FORMATS
from hma.pipeline import cluster
from hma.pipeline.convert import convert
from hma.pipeline.describe import SourceSummary, describe

if TYPE_CHECKING:
    from hma.tokenize.evaluate import EvalSummary

# (simulator, episodes) recorded by the demo; each lands in its default format first
# VAL_EVERY episodes each, so every dataset has one held-out episode to score the tokenizer on
DEMO_SIMS = tuple(
    (env, VAL_EVERY) for env in ("tabletop", "pusht", "metaworld_reach", "robosuite_lift")
)
REPORT = "report.html"
TOKENIZER_FRAME = (64, 64)
SUFFIX = {"robomimic": ".hdf5", "rlds": "", "lerobot": "", "video": ""}
JOB_FILES = ("tokenize.yaml", "pretrain.yaml")  # the job specs the model stages start from


@dataclass
class Hop:
    fmt: str
    url: str
    seconds: float
    summary: SourceSummary
    max_action_error: float
    mean_frame_error: float


def compare(original: dict[str, Episode], url: str, fmt: str) -> tuple[float, float]:
    """Largest action difference and mean absolute frame difference over all episodes."""
    act, pix, n = 0.0, 0.0, 0
    for ep in formats.iter_episodes(url, fmt):
        ref = original[ep.episode_id]
        act = max(act, float(np.abs(ep.actions - ref.actions).max()))
        pix += float(np.abs(ep.frames.astype(np.int16) - ref.frames).mean())
        n += 1
    if n != len(original):
        raise RuntimeError(f"{url}: read back {n} episodes, wrote {len(original)}")
    return act, pix / n


def conversion_chain(start: str) -> list[str]:
    """Every other format once, then back to `start`."""
    return [f for f in FORMATS if f != start] + [start]


def train_tokenizer(out: str, sources: list[str], minutes: float) -> tuple[str, EvalSummary]:
    """Train the `small` FSQ tokenizer on every source's train split, score it on their val split.

    Returns the checkpoint and its scores."""
    from hma.tokenize.data import DataConfig, FrameSource
    from hma.tokenize.evaluate import evaluate
    from hma.tokenize.train import TrainConfig, train

    data = DataConfig(sources=[FrameSource(url=u) for u in sources], frame_size=TOKENIZER_FRAME)
    config = TrainConfig(
        name="demo-fsq-small",
        storage_path=os.path.join(out, "tokenizer-runs"),
        tokenizer={"arch": "fsq", "preset": "small"},
        data=data,
        max_steps=100_000,  # the time budget ends the run
        max_minutes=minutes,
        log_every=50,
        val_frames=0,
        torch_threads=2,
    )
    result = train(config)
    scores = evaluate(result.checkpoint, data, out=os.path.join(out, "tokenizer-eval"))
    return result.checkpoint, scores


def run(
    out: str, jobs: str, size: int, workers: int, tokenizer_minutes: float
) -> tuple[str, ds.Stages]:
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(os.path.join(out, REPORT)):
            raise SystemExit(f"{out}: exists and is not an earlier demo's output; choose --out")
        shutil.rmtree(out)  # an earlier demo run: start clean
    os.makedirs(out, exist_ok=True)
    registry = load_registry()
    address = cluster.connect()  # every later stage joins this cluster
    stages = ds.Stages()
    started = time.perf_counter()
    hops: list[Hop] = []
    recorded: list[RecordSummary] = []
    sources: dict[str, str] = {}
    for env, episodes in DEMO_SIMS:
        fmt = default_format(env)
        url = os.path.join(out, f"{env}-0-{fmt}{SUFFIX[fmt]}")
        summary = record(RecordJob(env, episodes, url, fmt, size=size, workers=workers))
        recorded.append(summary)
        print("\n".join(summary.lines()))
        sources[env] = url
        by_id = {ep.episode_id: ep for ep in formats.iter_episodes(url, fmt)}
        for i, dst_fmt in enumerate(conversion_chain(fmt), start=1):
            dst = os.path.join(out, f"{env}-{i}-{dst_fmt}{SUFFIX[dst_fmt]}")
            start = time.perf_counter()
            result = convert(url, dst, dst_fmt, registry=registry)
            seconds = time.perf_counter() - start
            if not result.conserved or result.rejected:
                raise RuntimeError("\n".join(result.lines()))
            png = os.path.join(out, f"{env}-{i}-{dst_fmt}.png")
            shown = describe(dst, dst_fmt, strip_url=png, strip_episodes=4, registry=registry)
            act, pix = compare(by_id, dst, dst_fmt)
            hops.append(Hop(dst_fmt, dst, seconds, shown, act, pix))
            print(f"  -> {dst_fmt:<9} {seconds:5.1f}s  max|da| {act:.2e}  mean|dframe| {pix:.2f}")
            url = dst
    stages.add("record + convert through every format", time.perf_counter() - started)
    urls = list(sources.values())
    tok = None
    if tokenizer_minutes:
        tok = stages.run(
            "tokenizer: train + score", lambda: train_tokenizer(out, urls, tokenizer_minutes)
        )
    scores = tok[1] if tok else None
    if scores:
        print("\n".join(scores.lines()))
    summary = stages.run(
        "tokenize into the token store",
        lambda: ds.tokenize_store(out, jobs, urls, tok[0], address),
        needs=(tok,),
    )
    trained = stages.run(
        "pretrain HMA tiny + validate",
        lambda: ds.pretrain(out, jobs, summary.store, address),
        needs=(summary,),
    )
    run_dir = os.path.join(out, "runs", ds.PRETRAIN_NAME)
    generated = stages.run(
        "hma-generate (robosuite Lift)",
        lambda: ds.generate(out, sources["robosuite_lift"], run_dir, address),
        needs=(trained,),
    )
    page = stages.run("hma report", lambda: ds.model_report(out, run_dir), needs=(trained,))
    loop = stages.run(
        "policies closed-loop in both simulators",
        lambda: ds.closed_loop(out, run_dir, address),
        needs=(trained,),
    )
    report = os.path.join(out, REPORT)
    extra = (
        ds.render_tokenize(summary, out)
        + ds.render_pretrain(trained, out)
        + ds.render_generate(generated, out)
        + ds.render_model_report(page, out)
        + ds.render_closed_loop(loop, out)
        + ds.render_times(stages)
    )
    with open(report, "w") as f:
        f.write(render(recorded, hops, scores, out, ds.render_failures(stages), extra))
    return report, stages


def render_scores(scores: EvalSummary | None, out: str) -> str:
    if scores is None:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(s.dataset)}</td><td>{s.frames}</td><td>{s.psnr:.2f}</td><td>{s.ssim:.3f}</td>"
        f"<td><img src='{os.path.relpath(s.grid, out) if s.grid else ''}'></td></tr>"
        for s in scores.datasets.values()
    )
    return (
        "<h2>Image tokenizer (FSQ, small)</h2><p>Trained on Ray Train for the demo's short budget "
        f"on every dataset above at {TOKENIZER_FRAME[0]} px; scored on held-out episodes. "
        "Each grid: originals over reconstructions.</p><table><tr><th>dataset</th><th>frames</th>"
        "<th>PSNR dB</th><th>SSIM</th><th>grid</th></tr>" + rows + "</table>"
    )


def render(
    recorded: list[RecordSummary],
    hops: list[Hop],
    scores: EvalSummary | None,
    out: str,
    top: str = "",
    extra: str = "",
) -> str:
    sims = "".join(
        f"<tr><td>{r.job.env}</td><td>{r.job.fmt}</td><td>{r.attempted}</td>"
        f"<td>{r.successes / max(r.attempted, 1):.0%}</td></tr>"
        for r in recorded
    )
    rows = []
    for hop in hops:
        for name, part in hop.summary.datasets.items():
            episodes = sum(part.episodes.values())
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{hop.fmt}</td><td>{episodes}</td>"
                f"<td>{part.frames}</td><td>{hop.seconds:.1f}</td>"
                f"<td>{hop.max_action_error:.1e}</td><td>{hop.mean_frame_error:.2f}</td>"
                f"<td><img src='{os.path.basename(hop.summary.strip_url or '')}'></td></tr>"
            )
    return (
        "<!doctype html><meta charset='utf-8'><title>HMA demo</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
        "img{height:96px}</style>"
        "<h1>HMA demo: simulated robots to a world model and synthetic data</h1>"
        + top
        + "<h2>Expert episodes recorded</h2><table><tr><th>simulator</th><th>native format</th>"
        "<th>episodes</th><th>expert success</th></tr>" + sims + "</table>"
        "<h2>Conversions</h2><p>Each dataset goes through every other format and back, each hop "
        "a Ray conversion of the previous one. Errors compare with the recorded episodes: actions "
        "must match exactly; frames within codec tolerance (mp4 hops are lossy).</p>"
        "<table><tr><th>dataset</th><th>format</th><th>episodes</th><th>frames</th>"
        "<th>convert s</th><th>max |&Delta;action|</th><th>mean |&Delta;pixel|</th>"
        "<th>thumbnails</th></tr>" + "".join(rows) + "</table>" + render_scores(scores, out) + extra
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hma.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo-out")
    parser.add_argument(
        "--jobs", default="jobs", help="the job specs the model stages start from (repo's jobs/)"
    )
    parser.add_argument("--size", type=int, default=96, help="frame height and width")
    parser.add_argument("--workers", type=int, default=2, help="simulator actors on Ray")
    parser.add_argument(
        "--tokenizer-minutes", type=float, default=3.0, help="tokenizer training budget (0: skip)"
    )
    args = parser.parse_args()
    for name in JOB_FILES:
        if not os.path.isfile(os.path.join(args.jobs, name)):
            raise SystemExit(
                f"{os.path.join(args.jobs, name)}: not found; run from the repository "
                "root or pass --jobs DIR"
            )
    start = time.perf_counter()
    report, stages = run(args.out, args.jobs, args.size, args.workers, args.tokenizer_minutes)
    print(f"demo finished in {time.perf_counter() - start:.0f}s; open {os.path.abspath(report)}")
    for t in stages.times:
        print(f"  {t.name:<40}{t.seconds:6.0f}s  {t.error or ('skipped' if t.skipped else 'ok')}")
    if stages.failed:
        raise SystemExit(f"{len(stages.failed)} stage(s) did not finish; see {report}")
