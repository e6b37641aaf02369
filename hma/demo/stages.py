"""The model half of `make demo`, after the image tokenizer: tokens -> world model -> synthetic data.

    recorded sources + tokenizer ──hma tokenize──▶ store.zarr ──hma pretrain (tiny)──▶ runs/<name>
        ──hma-generate (robosuite Lift, perturbed real actions)──▶ lift_mixed.hdf5
        ──hma report──▶ model_report/index.html

Each stage calls the project's own entry point on the demo's Ray cluster with the settings of
the matching job file in jobs/ (loaded from there, then shrunk to the demo's budget), and
returns what the demo report shows. `Stages` times every stage and keeps going past a failed one
(its dependants are skipped), so the report always shows how far the path got and why it stopped.
"""

from __future__ import annotations

import html
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from hma import formats

if TYPE_CHECKING:
    from hma.generate.synthesize import GenerateReport
    from hma.pipeline.pretrain.driver import PretrainResult
    from hma.pipeline.tokenize_summary import TokenizeSummary

T = TypeVar("T")
PRETRAIN_NAME = "demo-tiny"
PRETRAIN_MINUTES = 2.5
PRETRAIN_STEPS = 400
GENERATE = {"n": 8, "mix": 2, "actions": "perturb"}  # hma-generate options
GENERATE_OUT = "lift_mixed.hdf5"
# the closed-loop stage: policies of two training steps in both simulators, at toy size
CLOSED_LOOP = {
    "env": "metaworld_reach",
    "frame": 64,  # the world model's frame size: the policy sees the same frames in both
    "demos": 10,
    "policy_steps": 60,
    "success_steps": 300,
    "episodes": 3,
    "max_steps": 80,  # raw steps (10 generated frames)
}
STORE = "store.zarr"
MODEL_REPORT = "model_report"
VAL_KEYS = ("loss", "perplexity", "psnr", "delta_psnr")


# ---------------------------------------------------------------------------------------------
# Timing and failures


@dataclass
class StageTime:
    name: str
    seconds: float
    error: str | None = None  # "Type: message" when the stage failed
    skipped: bool = False  # not run: a stage it needs failed


@dataclass
class Stages:
    """Runs the demo's stages in order, timing each; a failure is recorded, not raised."""

    times: list[StageTime] = field(default_factory=list)

    def run(self, name: str, fn: Callable[[], T], needs: tuple[Any, ...] = ()) -> T | None:
        if any(x is None for x in needs):
            self.times.append(StageTime(name, 0.0, skipped=True))
            print(f"[demo] {name}: skipped (an earlier stage failed)", flush=True)
            return None
        print(f"[demo] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001 - the report shows it; main exits non-zero
            traceback.print_exc()
            self.times.append(
                StageTime(name, time.perf_counter() - start, f"{type(e).__name__}: {e}")
            )
            print(f"[demo] {name}: FAILED", flush=True)
            return None
        seconds = time.perf_counter() - start
        self.times.append(StageTime(name, seconds))
        print(f"[demo] {name}: {seconds:.0f}s", flush=True)
        return value

    def add(self, name: str, seconds: float) -> None:
        self.times.append(StageTime(name, seconds))

    @property
    def failed(self) -> list[StageTime]:
        return [t for t in self.times if t.error or t.skipped]


# ---------------------------------------------------------------------------------------------
# Stages


def tokenize_store(
    out: str, jobs: str, sources: list[str], tokenizer: str, address: str
) -> TokenizeSummary:
    """`jobs`/tokenize.yaml on the demo's recorded sources, with the demo's tokenizer."""
    from hma.pipeline.tokenize_job import TokenizeJobConfig, load_job_config, run_tokenize

    base = load_job_config(os.path.join(jobs, "tokenize.yaml")).model_dump()
    config = TokenizeJobConfig.model_validate(
        {
            **base,
            # the built-in strides: the job's stride-3 override (jobs/registry_sim64.yaml) would
            # leave the demo's few short tabletop episodes without a validation window
            "registry": [],
            "sources": [{"url": u} for u in sources],
            "tokenizer": tokenizer,
            "store": os.path.join(out, STORE),
            "progress": False,
        }
    )
    summary = run_tokenize(config, address)
    print("\n".join(summary.lines()), flush=True)
    if not summary.ok:
        raise RuntimeError(f"{config.store}: counts do not balance or units failed")
    return summary


def pretrain(out: str, jobs: str, store: str, address: str) -> PretrainResult:
    """`jobs`/pretrain.yaml on the demo's store, cut to PRETRAIN_MINUTES; validates once, at
    the end."""
    from hma.pipeline.pretrain.config import PretrainConfig
    from hma.pipeline.pretrain.driver import load_pretrain_config, run_pretrain

    base = load_pretrain_config(os.path.join(jobs, "pretrain.yaml")).model_dump()
    base["data"]["stores"] = [{"url": store}]
    base["validation"].update(every=PRETRAIN_STEPS, windows=16, rollouts=2)
    config = PretrainConfig.model_validate(
        {
            **base,
            "name": PRETRAIN_NAME,
            "storage_path": os.path.join(out, "runs"),
            "max_steps": PRETRAIN_STEPS,
            "max_minutes": PRETRAIN_MINUTES,
            "log_every": 50,
            "checkpoint_every": PRETRAIN_STEPS,
        }
    )
    return run_pretrain(config, address)  # prints progress and the validation table


@dataclass
class Generated:
    report: GenerateReport
    provenance: dict[str, Any]  # meta of the first synthetic episode, as read back


def generate(out: str, source: str, run_dir: str, address: str) -> Generated:
    """`hma-generate` on the recorded robosuite Lift file, then read back what it wrote."""
    from hma.generate.config import GenerateConfig
    from hma.generate.synthesize import generate

    config = GenerateConfig(
        checkpoint=run_dir, source=source, out=os.path.join(out, GENERATE_OUT), **GENERATE
    )
    report = generate(config, address, echo=False)
    print("\n".join(report.lines()), flush=True)
    first = next(ep for ep in formats.iter_episodes(config.out) if ep.meta.get("synthetic"))
    return Generated(report, dict(first.meta))


@dataclass
class ClosedLoop:
    evaluation: Any  # hma.generate.policy_eval.Evaluation
    plot: str
    classifier: list[str]  # the success classifier's training summary


def closed_loop(out: str, run_dir: str, address: str) -> ClosedLoop:
    """Policies of two training steps, closed-loop in Meta-World reach and in the learned
    simulator from the same first frames (`hma evaluate-policy` at toy size)."""
    from hma.envs import make_env
    from hma.envs.record import RecordJob, record
    from hma.formats import iter_episodes
    from hma.generate.policy_eval import SCATTER, evaluate
    from hma.generate.simulator import Simulator, SimulatorConfig
    from hma.generate.success import SuccessConfig, tokenizer_round_trip, train_success
    from hma.generate.world_model import WorldModel
    from hma.policy.agent import Agent
    from hma.policy.train import config_from_flags, train_policy

    env_name, frame = CLOSED_LOOP["env"], CLOSED_LOOP["frame"]
    demos = os.path.join(out, f"{env_name}-closed-loop-demos")
    print(
        "\n".join(
            record(
                RecordJob(env_name, CLOSED_LOOP["demos"], demos, "lerobot", frame, workers=2)
            ).lines()
        )
    )
    policy_out = os.path.join(out, "runs", "policy")
    config = config_from_flags(
        [demos],
        policy_out,
        CLOSED_LOOP["policy_steps"],
        policy={"preset": "tiny", "image_size": frame},
        checkpoint_every=CLOSED_LOOP["policy_steps"] // 2,
        batch_size=16,
        torch_threads=2,
    )
    run = train_policy(config, echo=False)
    wm = WorldModel.load(run_dir)
    success_config = SuccessConfig(steps=CLOSED_LOOP["success_steps"], image_size=frame)
    classifier, summary = train_success(
        iter_episodes(demos), success_config, env_name, tokenizer_round_trip(wm)
    )
    env = make_env(env_name, frame)
    try:
        sim_config = SimulatorConfig(max_steps=CLOSED_LOOP["max_steps"])
        sim = Simulator(wm, env_name, classifier, sim_config)
        agents = [Agent.load(f"{run.url}@{c.step}") for c in run.checkpoints]
        evaluation = evaluate(env, agents, sim, CLOSED_LOOP["episodes"], batch=4, log=print)
    finally:
        env.close()
    evaluation.success_model = "trained on the demo's reach episodes"
    print("\n".join(evaluation.lines()), flush=True)
    plot = evaluation.scatter(os.path.join(out, SCATTER))
    return ClosedLoop(evaluation, plot, summary.lines())


def model_report(out: str, run_dir: str) -> str:
    """`hma report` of the pretraining run into out/model_report (2 clips, 8 generated frames)."""
    from hma.generate.report import ReportConfig, build_report

    return build_report(run_dir, os.path.join(out, MODEL_REPORT), ReportConfig(clips=2, horizon=8))


def vocab_size(result: PretrainResult) -> int | None:
    """The uniform perplexity of the trained model: its token vocabulary (vq tokens only)."""
    from hma.model.checkpoint import model_url, read_config

    model = read_config(model_url(result.checkpoint))
    return model.vocab_size if model.token_kind == "vq" else None


def validation_scores(result: PretrainResult) -> tuple[int, dict[str, dict[str, float]], dict]:
    """(step, {dataset: {loss, perplexity, psnr, delta_psnr}}, {dataset: png}) of the last validation."""
    records = [r for r in result.records if any(str(k).startswith("val/") for k in r)]
    if not records:
        return 0, {}, {}
    last = records[-1]
    scores: dict[str, dict[str, float]] = {}
    for key, value in last.items():
        parts = str(key).split("/")
        if len(parts) == 3 and parts[0] == "val" and parts[2] in VAL_KEYS:
            scores.setdefault(parts[1], {})[parts[2]] = float(value)
    return int(last.get("step", 0)), scores, dict(last.get("pngs") or {})


# ---------------------------------------------------------------------------------------------
# Report sections


def _rel(path: str, out: str) -> str:
    return html.escape(os.path.relpath(path, out))


def render_times(stages: Stages) -> str:
    rows = []
    for t in stages.times:
        status = "skipped" if t.skipped else (f"FAILED: {t.error}" if t.error else "ok")
        rows.append(
            f"<tr><td>{html.escape(t.name)}</td><td>{t.seconds:.0f}</td>"
            f"<td>{html.escape(status)}</td></tr>"
        )
    total = sum(t.seconds for t in stages.times)
    return (
        "<h2>Stage timings</h2><table><tr><th>stage</th><th>seconds</th><th>status</th></tr>"
        + "".join(rows)
        + f"<tr><th>total</th><th>{total:.0f}</th><th></th></tr></table>"
    )


def render_tokenize(summary: TokenizeSummary | None, out: str) -> str:
    if summary is None:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{c.read}</td><td>{c.committed}</td>"
        f"<td>{c.quarantined}</td><td>{c.frames}</td></tr>"
        for name, c in sorted(summary.datasets.items())
    )
    rate = summary.frames / max(summary.wall_seconds, 1e-9)
    return (
        f"<h2>Token store</h2><p><code>hma tokenize</code> on Ray Data: every recorded dataset "
        f"encoded with the tokenizer above into <code>{_rel(summary.store, out)}</code>. "
        f"{summary.units_committed}/{summary.units_planned} units committed; "
        f"{summary.frames} frames in {summary.wall_seconds:.1f}s = {rate:.1f} frames/s end to end "
        f"({summary.steady_fps:.1f} steady after {summary.startup_seconds:.1f}s start-up). "
        f"Counts {'balance' if summary.ok else 'DO NOT balance'}.</p>"
        "<table><tr><th>dataset</th><th>read</th><th>committed</th><th>quarantined</th>"
        "<th>frames</th></tr>" + rows + "</table>"
    )


def render_pretrain(result: PretrainResult | None, out: str) -> str:
    if result is None:
        return ""
    vocab = vocab_size(result)
    step, scores, pngs = validation_scores(result)
    rows = []
    for name, s in sorted(scores.items()):
        ppl = s.get("perplexity")
        img = f"<img src='{_rel(pngs[name], out)}'>" if pngs.get(name) else ""
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{s.get('loss', float('nan')):.3f}</td>"
            f"<td>{'-' if ppl is None else f'{ppl:.1f}'}</td><td>{vocab or '-'}</td>"
            f"<td>{s.get('psnr', float('nan')):.2f}</td>"
            f"<td>{s.get('delta_psnr', float('nan')):.2f}</td>"
            f"<td>{img}</td></tr>"
        )
    return (
        f"<h2>World model (HMA tiny)</h2><p><code>hma pretrain</code> on Ray Train for "
        f"{PRETRAIN_MINUTES} minutes (at most {PRETRAIN_STEPS} steps) on the token store; "
        f"validated at step {step} on held-out episodes. Perplexity: a model that knows nothing "
        "scores the uniform value (the vocabulary). PSNR: frames rolled out from the true actions "
        "vs the real ones; &Delta;PSNR: true actions minus random ones (the model follows the "
        "actions when it is positive). Images: real frames over predicted ones. Checkpoint "
        f"<code>{_rel(result.checkpoint, out)}</code>.</p>"
        "<table><tr><th>dataset</th><th>loss</th><th>perplexity</th><th>uniform</th>"
        "<th>PSNR dB</th><th>&Delta;PSNR dB</th><th>real / predicted</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def render_generate(gen: Generated | None, out: str) -> str:
    if gen is None:
        return ""
    report = gen.report
    minutes = max(report.seconds, 1e-9) / 60
    keys = ("generator", "actions", "checkpoint", "checkpoint_fingerprint", "tokenizer_fingerprint")
    keys += ("seed", "steps", "temperature")
    prov = "".join(
        f"<tr><td>{k}</td><td>{html.escape(str(gen.provenance[k]))}</td></tr>"
        for k in keys
        if k in gen.provenance
    )
    splits = ", ".join(f"{k} {v}" for k, v in sorted(report.splits.items()))
    options = " ".join(f"--{k} {v}" for k, v in GENERATE.items())
    return (
        f"<h2>Synthetic data (hma-generate)</h2><p><code>hma-generate {html.escape(options)}"
        f"</code> on the recorded robosuite Lift file, written to "
        f"<a href='{_rel(report.out, out)}'>{_rel(report.out, out)}</a> (robomimic): "
        f"{report.real} real + {report.synthetic} synthetic episodes; splits {splits}; "
        f"{report.synthetic / minutes:.1f} trajectories/min including model load and Ray actor "
        "start-up.</p>"
        "<p>Provenance recorded in each synthetic episode's meta, as read back:</p><table>"
        + (prov or "<tr><td>none found</td></tr>")
        + "</table><pre>"
        + html.escape("\n".join(report.lines()))
        + "</pre>"
    )


def render_closed_loop(loop: ClosedLoop | None, out: str) -> str:
    if loop is None:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(s.policy.rsplit('/', 1)[-1])}</td><td>{s.true.rate:.0%} ± "
        f"{s.true.se:.0%}</td><td>{s.learned.rate:.0%} ± {s.learned.se:.0%}</td>"
        f"<td>{s.classifier_accuracy:.0%}</td></tr>"
        for s in loop.evaluation.scores
    )
    ranking = "".join(f"<p>{html.escape(line)}</p>" for line in loop.evaluation.lines()[-2:])
    return (
        "<h2>Policies in the loop (hma evaluate-policy)</h2><p>A tiny visuomotor policy trained "
        f"by behaviour cloning on {CLOSED_LOOP['demos']} reach demonstrations; its checkpoints "
        "at two training steps run closed-loop in Meta-World and in the learned simulator, "
        f"{CLOSED_LOOP['episodes']} episodes each from the same first frames, "
        f"{CLOSED_LOOP['max_steps']} raw steps at most. The learned simulator's success is the "
        "success classifier's verdict on the generated frames. Toy sizes: the code path, not "
        "the claim (docs/results.md has the full experiment).</p>"
        "<table><tr><th>policy</th><th>ground truth</th><th>learned sim</th>"
        "<th>classifier accuracy on real</th></tr>"
        + rows
        + "</table>"
        + ranking
        + f"<pre>{html.escape(chr(10).join(loop.classifier))}</pre>"
        + f"<p><img src='{_rel(loop.plot, out)}' alt='ground truth vs learned success' "
        "style='height:auto;width:360px'></p>"
    )


def render_model_report(page: str | None, out: str) -> str:
    if page is None:
        return ""
    return (
        "<h2>Model report</h2><p><code>hma report</code> of the pretraining run: real and "
        "generated clips side by side, metrics and training curves: "
        f"<a href='{_rel(page, out)}'>{_rel(page, out)}</a></p>"
    )


def render_failures(stages: Stages) -> str:
    if not stages.failed:
        return ""
    items = "".join(
        f"<li>{html.escape(t.name)}: {html.escape(t.error or 'skipped')}</li>"
        for t in stages.failed
    )
    return f"<h2 style='color:#b00'>Stages that did not finish</h2><ul>{items}</ul>"
