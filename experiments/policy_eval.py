"""Paper Table 5 at CPU scale: does the learned simulator rank visuomotor policies as the real one does?

    python -m experiments.policy_eval [--root DIR] [--smoke]

On Meta-World reach (64 px, stride 8: one generated frame per 8 raw steps). Of the four simulated
robots, the world model learns reach best at 64 px (the largest action gain and ΔPSNR in
validation: the Sawyer arm moves several pixels a frame and nothing is in contact), and the task's
outcome is visible (the hand at the red goal marker), which a success classifier can judge.

Stages, in order; each writes `<root>/<stage>.json` when done and is skipped when it exists
(delete the file to redo a stage; the Ray Train stages resume their own runs):

    record      expert demonstrations and noisy-expert episodes (hma sim generate)
    tokenizer   the FSQ image tokenizer on every recorded frame (hma tokenizer train)
    store       episodes -> token store (hma tokenize)
    world_model HMA on the store, forward dynamics only (hma pretrain)
    policy      behaviour cloning on the expert demonstrations, a checkpoint every few dozen
                steps (hma policy train): policies of graded quality, as the paper took them
    screen      a ladder of checkpoints, each on a few ground-truth episodes (kept as a source);
                the policies to compare are picked to spread over the range of success rates
    success     the success classifier on tokenizer reconstructions of real frames (the recorded
                episodes and the screened policies' ones, whose near-misses are the hard
                negatives), labelled by the env's success signal; its decision rule calibrated
                on held-out episodes and its accuracy reported
    evaluate    each picked policy closed-loop in both simulators from the same first frames
                (hma evaluate-policy), on seeds no other stage used: the table, Pearson r,
                Spearman rho, MMRV with bootstrap intervals, and the scatter plot

The table goes into docs/results.md (with the command, commit, wall time and load) and the plot
into docs/img/. `--smoke` runs every stage at toy size in about a minute (the code path, not the
claim); `make test` runs it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
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

ENV = "metaworld_reach"
SECTION = "Policy evaluation in the learned simulator (paper Table 5)"


@dataclass(frozen=True)
class Sizes:
    frame: int = 64
    record: tuple[Recording, ...] = (
        Recording("expert", 300, 0.0, 0),
        Recording("noise05", 150, 0.5, 10000),
        Recording("noise10", 150, 1.0, 20000),
        Recording("noise20", 100, 2.0, 30000),
    )
    tokenizer: dict[str, Any] = field(default_factory=lambda: dict(CPU_TOKENIZER))
    tokenizer_minutes: float = CPU_TOKENIZER_MINUTES
    # forward dynamics only: the simulator renders the actions it is given
    world_model: WorldModelSizes = WorldModelSizes(
        model=dict(CPU_MODEL),
        minutes=CPU_MODEL_MINUTES,
        steps=20000,
        state=False,  # the paper's model: video and actions
    )
    success_steps: int = 1500
    policy: str = "small"
    policy_steps: int = 1500
    policy_every: int = 50
    # checkpoints screened: early ones are the weak policies, which the spread needs
    screen_steps: tuple[int, ...] = (50, 100, 200, 400, 800, 1500)
    screen_episodes: int = 16
    pick: int = 5
    episodes: int = 50
    batch: int = 25
    workers: int = 2
    max_steps: int | None = None  # raw steps per episode; None: the env's time limit


# Episode seeds per stage, disjoint from each other and from the recordings' (0, 10000, ...): the
# evaluation starts from first frames that neither the world model nor the classifier has seen.
SCREEN_SEED = 50_000
EVALUATE_SEED = 100_000
SCREEN_VAL_EVERY = 4  # every 4th screened episode is held out to calibrate the classifier

SMOKE = Sizes(
    frame=32,
    record=(Recording("expert", 4, 0.0, 0), Recording("noise20", 4, 2.0, 30000)),
    tokenizer={"arch": "fsq", "preset": "tiny"},
    tokenizer_minutes=0.1,
    world_model=WorldModelSizes(
        model={"preset": "tiny", "window": 3}, minutes=0.2, steps=4, state=False
    ),
    success_steps=20,
    policy="tiny",
    policy_steps=20,
    policy_every=10,
    screen_steps=(10, 20),
    screen_episodes=2,
    pick=2,
    episodes=2,
    batch=2,
    workers=1,
    max_steps=24,
)


def success(root: Path, sizes: Sizes, sources: list[str], checkpoint: str) -> dict[str, Any]:
    from hma.formats import iter_episodes
    from hma.generate.success import SuccessConfig, tokenizer_round_trip, train_success
    from hma.generate.world_model import WorldModel

    wm = WorldModel.load(checkpoint)
    episodes = (ep for url in sources for ep in iter_episodes(url))
    config = SuccessConfig(steps=sizes.success_steps, image_size=sizes.frame)
    model, summary = train_success(episodes, config, ENV, tokenizer_round_trip(wm))
    url = str(root / "success")
    model.save(url)
    print("\n".join(summary.lines()), flush=True)
    return {"classifier": url, "summary": asdict(summary)}


def policy(root: Path, sizes: Sizes, demos: str) -> dict[str, Any]:
    from hma.policy.train import config_from_flags, train_policy

    config = config_from_flags(
        [demos],
        str(root / "policy"),
        sizes.policy_steps,
        policy={"preset": sizes.policy},
        checkpoint_every=sizes.policy_every,
        torch_threads=2,
    )
    run = train_policy(config)
    return {"run": run.url, "steps": [c.step for c in run.checkpoints]}


def screen(root: Path, sizes: Sizes, run: str, steps: list[int]) -> dict[str, Any]:
    """Ground-truth success of the ladder's checkpoints on a few episodes each, kept as an episode
    source for the success classifier; then `pick` checkpoints whose rates spread over the range
    seen."""
    from hma.envs import make_env
    from hma.envs.rollout import rollout
    from hma.formats import write_episodes
    from hma.policy.agent import Agent
    from hma.policy.evaluate import SuccessRate

    ladder = [s for s in sizes.screen_steps if s in steps] or steps
    env = make_env(ENV, sizes.frame)
    rates, episodes = {}, []
    try:
        for step in ladder:
            agent = Agent.load(f"{run}@{step}")
            result = SuccessRate(agent.name)
            for i in range(sizes.screen_episodes):
                seed = SCREEN_SEED + i
                ep = rollout(
                    env,
                    seed,
                    split="val" if i % SCREEN_VAL_EVERY == SCREEN_VAL_EVERY - 1 else "train",
                    episode_id=f"policy{step}-seed{seed}",
                    max_steps=sizes.max_steps,
                    make_policy=agent.stepper,
                )
                result.outcomes.append(bool(ep.success))
                episodes.append(ep)
            rates[step] = result.rate
            print(result.line(), flush=True)
    finally:
        env.close()
    url = str(root / "data" / "screen")
    write_episodes(episodes, url, "lerobot")
    return {"rates": rates, "picked": pick_spread(rates, sizes.pick), "episodes": url}


def pick_spread(rates: dict[int, float], count: int) -> list[int]:
    """`count` steps whose rates lie closest to evenly spaced targets between the lowest and the
    highest rate (earliest step on ties), in step order."""
    steps = sorted(rates)
    low, high = min(rates.values()), max(rates.values())
    targets = [low + (high - low) * i / max(count - 1, 1) for i in range(count)]
    picked: list[int] = []
    for target in targets:
        free = [s for s in steps if s not in picked] or steps
        picked.append(min(free, key=lambda s: (abs(rates[s] - target), s)))
    return sorted(set(picked))


def evaluate(
    root: Path, sizes: Sizes, checkpoint: str, classifier: str, run: str, picked: list[int]
) -> dict[str, Any]:
    from hma.envs import make_env
    from hma.generate.policy_eval import evaluate as evaluate_policies
    from hma.generate.simulator import Simulator, SimulatorConfig
    from hma.generate.success import SuccessClassifier
    from hma.generate.world_model import WorldModel
    from hma.policy.agent import Agent

    agents = [Agent.load(f"{run}@{step}") for step in picked]
    env = make_env(ENV, sizes.frame)
    try:
        sim = Simulator(
            WorldModel.load(checkpoint),
            ENV,
            SuccessClassifier.load(classifier),
            SimulatorConfig(max_steps=sizes.max_steps or env.max_steps),
        )
        result = evaluate_policies(
            env, agents, sim, sizes.episodes, EVALUATE_SEED, sizes.batch, log=print
        )
    finally:
        env.close()
    result.success_model = classifier
    print("\n".join(result.lines()), flush=True)
    plot = result.scatter(str(root / "policy_eval.png"))
    return {"evaluation": result.to_dict(), "lines": result.lines(), "plot": plot}


def report(sizes: Sizes, results: dict[str, Any], run: Run, smoke: bool, path: Path) -> Path:
    evaluation = results["evaluate"]["evaluation"]
    rows = [
        "| policy (BC checkpoint) | ground-truth success ± se | learned-sim success ± se | "
        "classifier accuracy on real episodes |",
        "|---|---|---|---|",
    ]
    for p in evaluation["policies"]:
        rows.append(
            f"| step {p['policy'].rsplit('@', 1)[-1]} | {p['true']['rate']:.0%} ± "
            f"{p['true']['se']:.0%} | {p['learned']['rate']:.0%} ± {p['learned']['se']:.0%} | "
            f"{p['classifier_accuracy']:.0%} |"
        )
    ranking = evaluation["ranking"] or {}

    def interval(key: str, digits: int = 2) -> str:
        v = ranking.get(key)
        return (
            f"{v['value']:.{digits}f} [{v['low']:.{digits}f}, {v['high']:.{digits}f}]" if v else "-"
        )

    plot = Path(results["evaluate"]["plot"]).read_bytes()
    image = write_image(plot, "policy_eval_smoke.png" if smoke else "policy_eval.png", path)
    summary = results["success"]["summary"]
    screen_rates = ", ".join(
        f"{step}: {rate:.0%}"
        for step, rate in sorted(results["screen"]["rates"].items(), key=lambda kv: int(kv[0]))
    )
    body = "\n".join(
        [
            f"{'Smoke run (toy sizes: the code path, not the claim). ' if smoke else ''}"
            f"Meta-World reach at {sizes.frame} px; {evaluation['episodes']} episodes per policy "
            "and simulator, episode k of every policy starting from the same first frame in both.",
            "",
            *rows,
            "",
            f"- Pearson r {interval('pearson')}, Spearman ρ {interval('spearman')}, MMRV "
            f"{interval('mmrv', 3)}, mean |learned − true| {interval('mean_abs_difference')} "
            "(95% percentile-bootstrap intervals over episodes).",
            f"- Success classifier (tokenizer reconstructions of real frames of the recorded and "
            f"the screened episodes): frame accuracy train {summary['train_accuracy']:.0%}, "
            f"held-out {summary['val_accuracy'] or 0:.0%}; held-out episode outcome accuracy "
            f"{summary['val_episode_accuracy'] or 0:.0%} (balanced over successes and failures "
            f"{summary.get('val_episode_balanced') or 0:.0%}) with the decision rule calibrated "
            f"on those episodes: threshold {summary.get('threshold', 0.5):.2f}, hold "
            f"{summary.get('hold', 2)} frames. Its accuracy on the evaluation's real episodes "
            "(seeds it never saw) is the table's last column.",
            f"- Policy checkpoints screened on {sizes.screen_episodes} ground-truth episodes each "
            f"(step: success): {screen_rates}.",
            f"- World model: {results['world_model']['checkpoint']}; its last validation:",
            "",
            "```",
            *results["world_model"]["validation"],
            "```",
            "",
            f"![ground truth vs learned success]({image.relative_to(image.parent.parent)})",
            "",
            run.provenance(),
        ]
    )
    return write_section(SECTION + (" — smoke" if smoke else ""), body, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/hma_experiments/policy_eval")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: the code path only")
    parser.add_argument("--results", default=str(RESULTS), help="the results file to update")
    parser.add_argument(
        "--tokenizer", help="a trained image tokenizer to use instead of training one"
    )
    args = parser.parse_args(argv)
    run = Run([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    sizes = SMOKE if args.smoke else Sizes()
    root = Path(args.root)
    stages = Stages(root, "policy_eval")
    from hma.pipeline import cluster

    cluster.connect()
    results: dict[str, Any] = {}
    results["record"] = stages.run(
        "record", lambda: st.record(root, ENV, sizes.record, sizes.frame, "lerobot", sizes.workers)
    )
    sources = results["record"]["sources"]
    urls = list(sources.values())
    run.sample_load()
    results["tokenizer"] = stages.run(
        "tokenizer",
        lambda: st.tokenizer(
            root, urls, sizes.frame, sizes.tokenizer, sizes.tokenizer_minutes, args.tokenizer
        ),
    )
    results["store"] = stages.run(
        "store", lambda: st.store(root, urls, results["tokenizer"]["checkpoint"], sizes.frame)
    )
    run.sample_load()
    results["world_model"] = stages.run(
        "world_model",
        lambda: st.world_model(root, "reach", results["store"]["store"], sizes.world_model),
    )
    checkpoint = results["world_model"]["checkpoint"]
    results["policy"] = stages.run("policy", lambda: policy(root, sizes, sources["expert"]))
    run.sample_load()
    results["screen"] = stages.run(
        "screen",
        lambda: screen(root, sizes, results["policy"]["run"], results["policy"]["steps"]),
    )
    labelled = [*urls, results["screen"]["episodes"]]
    results["success"] = stages.run("success", lambda: success(root, sizes, labelled, checkpoint))
    results["evaluate"] = stages.run(
        "evaluate",
        lambda: evaluate(
            root,
            sizes,
            checkpoint,
            results["success"]["classifier"],
            results["policy"]["run"],
            results["screen"]["picked"],
        ),
    )
    print(f"results: {report(sizes, results, run, args.smoke, Path(args.results))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
