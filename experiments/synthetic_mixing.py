"""Paper Table 6 at CPU scale: do synthetic episodes from the world model make policies better?

    python -m experiments.synthetic_mixing [--root DIR] [--smoke] [--only lift|tabletop]
        [--robomimic-python /tmp/scratch-robomimic/bin/python]

A fixed set of 10 real episodes, mixed with 0 / 10 / 50 / 90 synthetic ones that `hma-generate`
writes from those 10 (`--n N --mix 10 --actions model`: the world model proposes the actions and
renders the video, with proprioception, prompted by the real episodes' first frames). Each mix
trains the project's visuomotor policy (`hma policy train`, image + proprio) with several seeds.

    lift      robosuite Lift, robomimic HDF5 at the source's 84 px: success over `episodes`
              ground-truth rollouts per policy, mean ± se over seeds; with --robomimic-python
              (a scratch venv with robomimic 0.3.0: experiments/robomimic_check.py says how to
              make one) each mix is also trained by robomimic's own BC trainer, as an external
              client would (experiments/generate_robomimic_check.py: image through ShallowConv
              + the proprio keys every demo has), and scored by robomimic's own rollouts
    tabletop  the Language-Table-like board, RLDS: the policy's action error (raw-unit MSE of
              its action chunks) on held-out real episodes, mean ± se over seeds

The world model of each dataset is trained on a pool of scripted-expert and noisy-expert
episodes that excludes the 10 real ones, in full-dynamics and forward modes (so that it can
propose actions) and with state. As in the paper, the world model has seen more robot data than
the policy; the question is whether what it generates from 10 episodes helps a policy that
sees only those 10.

Stages per dataset (resumable; `<root>/<dataset>/<stage>.json` marks a stage done):
record, tokenizer, store, world_model (experiments/stages.py), then generate (one mixed file
per N), policies (train + score each mix and seed), robomimic (lift, when asked). The tables go into docs/results.md with the
command, commit, wall time and load, and a plot per dataset into docs/img/. `--smoke` runs every
stage at toy size (the code path, not the claim); `make test` runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from experiments import stages as st
from experiments.results import RESULTS, Run, write_image, write_section
from experiments.stages import (
    CPU_MODEL,
    CPU_MODEL_MINUTES,
    CPU_TOKENIZER,
    CPU_TOKENIZER_MINUTES,
    Recording,
    Stages,
    WorldModelSizes,
)

SECTION = "Synthetic data for policy learning (paper Table 6)"


@dataclass(frozen=True)
class Sizes:
    env: str
    fmt: str
    metric: str  # "success" (ground-truth rollouts) | "action_error" (held-out real episodes)
    record_frame: int  # pixels the episodes are recorded at (synthetic ones are written at it)
    model_frame: int  # pixels the tokenizer and world model see
    pool: tuple[Recording, ...]  # the world model's training episodes
    real: int = 10  # real episodes every mix shares (expert, seeds from real_seed)
    real_seed: int = 0
    held_out: int = 0  # real held-out episodes (action_error)
    mixes: tuple[int, ...] = (0, 10, 50, 90)
    seeds: tuple[int, ...] = (0, 1, 2)
    tokenizer: dict[str, Any] = field(default_factory=lambda: dict(CPU_TOKENIZER))
    tokenizer_minutes: float = CPU_TOKENIZER_MINUTES
    world_model: WorldModelSizes = WorldModelSizes(
        model=dict(CPU_MODEL),
        minutes=CPU_MODEL_MINUTES,
        steps=20000,
        modes={"full": 0.5, "forward": 0.5},
    )
    generate_batch: int = 8
    range_tolerance: float = 0.1  # hma-generate's sanity checks, at their defaults
    min_std_ratio: float = 0.25
    policy: str = "small"
    policy_steps: int = 2000
    episodes: int = 50  # ground-truth rollouts per policy (success)
    max_steps: int | None = None  # per rollout; None: the env's time limit
    robomimic_steps: int = 2000  # robomimic BC gradient steps per mix and seed
    robomimic_epochs: int = 4
    workers: int = 2


LIFT = Sizes(
    env="robosuite_lift",
    fmt="robomimic",
    metric="success",
    record_frame=84,
    model_frame=64,
    pool=(Recording("expert", 150, 0.0, 1000), Recording("noise05", 50, 0.5, 2000)),
)
TABLETOP = Sizes(
    env="tabletop",
    fmt="rlds",
    metric="action_error",
    record_frame=64,
    model_frame=64,
    pool=(Recording("expert", 300, 0.0, 1000), Recording("noise05", 100, 0.5, 2000)),
    held_out=50,
)


def smoke(sizes: Sizes) -> Sizes:
    return replace(
        sizes,
        record_frame=32,
        model_frame=32,
        pool=(Recording("expert", 4, 0.0, 1000),),
        real=3,
        held_out=2 if sizes.held_out else 0,
        mixes=(0, 2),
        seeds=(0,),
        tokenizer={"arch": "fsq", "preset": "tiny"},
        tokenizer_minutes=0.1,
        world_model=WorldModelSizes(
            model={"preset": "tiny", "window": 3},
            minutes=0.2,
            steps=4,
            modes={"full": 0.5, "forward": 0.5},
        ),
        generate_batch=2,
        range_tolerance=1e6,  # a 4-step model's proposals: only the code path is checked
        min_std_ratio=0.0,
        policy="tiny",
        policy_steps=6,
        episodes=2,
        max_steps=16,
        robomimic_steps=4,
        robomimic_epochs=2,
        workers=1,
    )


DATASETS = {"lift": LIFT, "tabletop": TABLETOP}


def real_recordings(sizes: Sizes) -> tuple[Recording, ...]:
    """The real episodes every mix shares, and the held-out real ones (seeds apart from the
    world model's pool)."""
    real = (Recording("real", sizes.real, 0.0, sizes.real_seed, val_every=0),)
    if sizes.held_out:
        real += (Recording("held_out", sizes.held_out, 0.0, sizes.real_seed + 500),)
    return real


def generate(root: Path, sizes: Sizes, real: str, checkpoint: str) -> dict[str, Any]:
    """One dataset per mix: the real file itself for 0, else `hma-generate --n N --mix REAL`."""
    from hma.generate.config import GenerateConfig
    from hma.generate.synthesize import generate as generate_mix

    mixes = {}
    for n in sizes.mixes:
        if n == 0:
            mixes[str(n)] = {"url": real, "synthetic": 0, "real": sizes.real}
            continue
        out = str(root / "mixes" / f"mix_{n}")
        if not Path(out).exists():
            config = GenerateConfig(
                checkpoint=checkpoint,
                source=real,
                out=out,
                n=n,
                mix=sizes.real,
                actions="model",
                valid_fraction=0.0,
                batch_size=sizes.generate_batch,
                range_tolerance=sizes.range_tolerance,
                min_std_ratio=sizes.min_std_ratio,
                workers=1,
                seed=n,
            )
            report = generate_mix(config, echo=False)
            print("\n".join(report.lines()), flush=True)
        mixes[str(n)] = {"url": out, "synthetic": n, "real": sizes.real}
    return {"mixes": mixes}


def each_run(
    folder: Path, sizes: Sizes, mixes: dict, make: Callable[[str, dict, int], dict]
) -> dict[str, dict[str, Any]]:
    """`make(key, mix, seed)` -> {"value", "se", "line", ...} for every mix x seed, each result
    kept in <folder>/<mix>_<seed>.json (written whole: a killed run redoes only that one)."""
    scores: dict[str, dict[str, Any]] = {}
    for n, mix in mixes.items():
        for seed in sizes.seeds:
            key = f"{n}_{seed}"
            path = folder / f"{key}.json"
            if not path.exists():
                folder.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".partial")
                partial.write_text(json.dumps(make(key, mix, seed)))
                partial.rename(path)
            scores[key] = json.loads(path.read_text())
            print(f"[synthetic_mixing] {sizes.env} mix {n} seed {seed}: {scores[key]['line']}")
    return scores


def train_and_score(root: Path, sizes: Sizes, mixes: dict, held_out: str | None) -> dict:
    """Every mix x seed: a policy trained on the mix, then scored (ground-truth success or
    held-out action error)."""

    def make(key: str, mix: dict, seed: int) -> dict:
        return score(sizes, train_policy(root, sizes, mix["url"], key, seed), held_out)

    return {"scores": each_run(root / "scores", sizes, mixes, make)}


def train_policy(root: Path, sizes: Sizes, data: str, key: str, seed: int) -> str:
    from hma.policy.train import config_from_flags
    from hma.policy.train import train_policy as train

    out = root / "policies" / key
    config = config_from_flags(
        [data],
        str(out),
        sizes.policy_steps,
        policy={"preset": sizes.policy, "use_state": True},
        checkpoint_every=sizes.policy_steps,
        seed=seed,
        torch_threads=2,
    )
    run = train(config, echo=False)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)
    return run.checkpoints[-1].url


def score(sizes: Sizes, policy: str, held_out: str | None) -> dict[str, Any]:
    from hma.envs import make_env
    from hma.formats import iter_episodes
    from hma.policy.agent import Agent
    from hma.policy.evaluate import action_error, evaluate_in_env

    agent = Agent.load(policy)
    if sizes.metric == "action_error":
        error = action_error(agent, iter_episodes(held_out or ""))
        return {"value": error.mse, "se": error.se, "line": error.line(), "policy": policy}
    env = make_env(sizes.env, sizes.record_frame)
    try:
        rate = evaluate_in_env(agent, env, sizes.episodes, 100_000, sizes.max_steps)
    finally:
        env.close()
    return {"value": rate.rate, "se": rate.se, "line": rate.line(), "policy": policy}


def robomimic_scores(root: Path, sizes: Sizes, mixes: dict, python: str) -> dict[str, Any]:
    """Every mix x seed trained and rolled out by robomimic 0.3.0 itself, in its own venv
    (`python`)."""
    from hma.envs import make_env

    env = make_env(sizes.env, sizes.record_frame)
    horizon = sizes.max_steps or env.max_steps
    env.close()
    script = Path(__file__).with_name("generate_robomimic_check.py")
    folder = root / "robomimic"

    def make(key: str, mix: dict, seed: int) -> dict:
        out = folder / "runs" / f"{key}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [
            python,
            str(script),
            mix["url"],
            *("--steps", str(sizes.robomimic_steps), "--epochs", str(sizes.robomimic_epochs)),
            *("--rollouts", str(sizes.episodes), "--horizon", str(horizon)),
            *("--seed", str(seed + 1), "--json", str(out), "--out", str(folder / "runs")),
        ]
        subprocess.run(command, check=True)
        result = json.loads(out.read_text())
        rate = result["rollouts"]["success_rate"]
        se = math.sqrt(rate * (1 - rate) / sizes.episodes)
        line = f"robomimic BC: success {rate:.0%} ± {se:.0%} over {sizes.episodes} rollouts"
        return {
            "value": rate,
            "se": se,
            "line": line,
            "observations": result["rgb"] + result["low_dim"],
        }

    return {"scores": each_run(folder, sizes, mixes, make)}


@dataclass(frozen=True)
class Given:
    """What the user brings instead of this script making it (command-line options)."""

    tokenizer: str | None = None  # a trained image tokenizer: the tokenizer stage is skipped
    robomimic_python: str | None = None  # a Python with robomimic 0.3.0: Lift's external client


def run_dataset(name: str, sizes: Sizes, root: Path, run: Run, given: Given) -> dict[str, Any]:
    stages = Stages(root, f"synthetic_mixing/{name}")
    results: dict[str, Any] = {}
    recordings = (*real_recordings(sizes), *sizes.pool)
    results["record"] = stages.run(
        "record",
        lambda: st.record(
            root, sizes.env, recordings, sizes.record_frame, sizes.fmt, sizes.workers
        ),
    )
    sources = results["record"]["sources"]
    pool = [sources[r.name] for r in sizes.pool]
    run.sample_load()
    results["tokenizer"] = stages.run(
        "tokenizer",
        lambda: st.tokenizer(
            root, pool, sizes.model_frame, sizes.tokenizer, sizes.tokenizer_minutes, given.tokenizer
        ),
    )
    results["store"] = stages.run(
        "store", lambda: st.store(root, pool, results["tokenizer"]["checkpoint"], sizes.model_frame)
    )
    run.sample_load()
    results["world_model"] = stages.run(
        "world_model",
        lambda: st.world_model(root, name, results["store"]["store"], sizes.world_model),
    )
    checkpoint = results["world_model"]["checkpoint"]
    results["generate"] = stages.run(
        "generate", lambda: generate(root, sizes, sources["real"], checkpoint)
    )
    run.sample_load()
    mixes = results["generate"]["mixes"]
    results["policies"] = stages.run(
        "policies", lambda: train_and_score(root, sizes, mixes, sources.get("held_out"))
    )
    if given.robomimic_python and sizes.fmt == "robomimic":
        python = given.robomimic_python
        results["robomimic"] = stages.run(
            "robomimic", lambda: robomimic_scores(root, sizes, mixes, python)
        )
    return results


@dataclass
class Row:
    synthetic: int
    mean: float
    se: float  # over seeds
    values: list[float]


def table(sizes: Sizes, scores: dict[str, dict[str, Any]]) -> list[Row]:
    rows = []
    for n in sizes.mixes:
        values = [scores[f"{n}_{seed}"]["value"] for seed in sizes.seeds]
        mean = sum(values) / len(values)
        spread = 0.0
        if len(values) > 1:
            var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
            spread = math.sqrt(var / len(values))
        rows.append(Row(n, mean, spread, values))
    return rows


def plot(name: str, sizes: Sizes, rows: list[Row]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    xs = [r.synthetic for r in rows]
    ax.errorbar(xs, [r.mean for r in rows], yerr=[r.se for r in rows], marker="o", capsize=3)
    for r in rows:
        ax.scatter([r.synthetic] * len(r.values), r.values, s=8, color="grey", alpha=0.6)
    ax.set_xlabel(f"synthetic episodes added to {sizes.real} real")
    ax.set_ylabel(
        "ground-truth success rate" if sizes.metric == "success" else "held-out action MSE"
    )
    ax.set_title(f"{name}: {sizes.env}")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def report(
    done: dict[str, tuple[Sizes, dict[str, Any]]], run: Run, smoke_run: bool, path: Path
) -> Path:
    parts = []
    if smoke_run:
        parts.append("Smoke run (toy sizes: the code path, not the claim).\n")
    for name, (sizes, results) in done.items():
        rows = table(sizes, results["policies"]["scores"])
        image = write_image(
            plot(name, sizes, rows),
            f"synthetic_mixing_{name}{'_smoke' if smoke_run else ''}.png",
            path,
        )
        what = (
            f"ground-truth success over {sizes.episodes} rollouts"
            if sizes.metric == "success"
            else "action MSE (raw units) on held-out real episodes"
        )
        client = results.get("robomimic")
        external = table(sizes, client["scores"]) if client else None
        header = (
            f"| real + synthetic | {what}, mean ± se over {len(sizes.seeds)} seeds | per seed |"
        )
        if external:
            header += " robomimic 0.3.0 BC, success ± se | per seed |"
        lines = []
        for i, r in enumerate(rows):
            line = (
                f"| {sizes.real} + {r.synthetic} | {fmt(sizes, r.mean)} ± {fmt(sizes, r.se)} | "
                f"{', '.join(fmt(sizes, v) for v in r.values)} |"
            )
            if external:
                e = external[i]
                line += f" {e.mean:.0%} ± {e.se:.0%} | {', '.join(f'{v:.0%}' for v in e.values)} |"
            lines.append(line)
        parts += [
            f"### {name} ({sizes.env}, {sizes.fmt}, {sizes.record_frame} px)",
            "",
            header,
            "|---" * (header.count("|") - 1) + "|",
            *lines,
            "",
            *(
                ["- robomimic 0.3.0's own trainer: not run here (pass --robomimic-python)."]
                if sizes.fmt == "robomimic" and not external
                else []
            ),
            f"- World model: {results['world_model']['checkpoint']}; its last validation:",
            "",
            "```",
            *results["world_model"]["validation"],
            "```",
            "",
            f"![{name}]({image.relative_to(image.parent.parent)})",
            "",
        ]
    parts.append(run.provenance())
    return write_section(SECTION + (" — smoke" if smoke_run else ""), "\n".join(parts), path)


def fmt(sizes: Sizes, value: float) -> str:
    return f"{value:.0%}" if sizes.metric == "success" else f"{value:.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/hma_experiments/synthetic_mixing")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: the code path only")
    parser.add_argument("--only", choices=sorted(DATASETS), help="one dataset (default: both)")
    parser.add_argument("--results", default=str(RESULTS), help="the results file to update")
    parser.add_argument(
        "--tokenizer", help="a trained image tokenizer to use instead of training one"
    )
    parser.add_argument(
        "--robomimic-python",
        help="a Python with robomimic 0.3.0: also train each Lift mix with robomimic's own BC",
    )
    args = parser.parse_args(argv)
    run = Run([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    from hma.pipeline import cluster

    cluster.connect()
    done = {}
    for name, sizes in DATASETS.items():
        if args.only and name != args.only:
            continue
        sizes = smoke(sizes) if args.smoke else sizes
        given = Given(args.tokenizer, args.robomimic_python)
        results = run_dataset(name, sizes, Path(args.root) / name, run, given)
        done[name] = (sizes, results)
    print(f"results: {report(done, run, args.smoke, Path(args.results))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
