"""`hma-generate` (synthetic datasets) and the learned simulator's commands: `hma simulate
train-success`, `hma evaluate-policy`, `hma report`."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from hma.cli.common import EXIT_INCOMPLETE, EXIT_OK, add_address, add_registry, given
from hma.errors import HmaError


def register(sub) -> None:  # sub: the `hma` subparsers
    simulate = sub.add_parser("simulate", help="learned simulator: train-success").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    ts = simulate.add_parser(
        "train-success", help="train a success classifier on real episodes' success labels"
    )
    configure_train_success(ts)
    ts.set_defaults(handler=train_success_command)
    ev = sub.add_parser(
        "evaluate-policy", help="score policies in the ground-truth and the learned simulator"
    )
    configure_evaluate_policy(ev)
    ev.set_defaults(handler=evaluate_policy_command)
    rep = sub.add_parser("report", help="HTML report of a run: rollouts, metrics, curves")
    configure_report(rep)
    rep.set_defaults(handler=report_command)


# ---------------------------------------------------------------------------------------------
# hma-generate


def generate_parser() -> argparse.ArgumentParser:
    from hma.generate.config import GenerateConfig

    p = argparse.ArgumentParser(
        prog="hma-generate",
        description="Write synthetic trajectories from a trained HMA checkpoint into a robomimic, "
        "Language Table (RLDS) or LeRobot dataset, mixed with real ones.",
    )
    fields = GenerateConfig.model_fields

    def arg(flag: str, name: str, **kw: Any) -> None:
        p.add_argument(flag, dest=name, help=fields[name].description, **kw)

    arg("--checkpoint", "checkpoint", required=True)
    arg("--dataset", "source", required=True, metavar="SRC")
    arg("--out", "out", required=True, metavar="DST")
    for flag, name, typ in [
        ("--n", "n", int),
        ("--mix", "mix", int),
        ("--horizon", "horizon", int),
        ("--prompt-frames", "prompt_frames", int),
        ("--seed", "seed", int),
        ("--workers", "workers", int),
        ("--batch-size", "batch_size", int),
        ("--steps", "steps", int),
        ("--temperature", "temperature", float),
        ("--perturb-scale", "perturb_scale", float),
        ("--valid-fraction", "valid_fraction", float),
        ("--attempts", "attempts", int),
        ("--range-tolerance", "range_tolerance", float),
        ("--min-std-ratio", "min_std_ratio", float),
        ("--torch-threads", "torch_threads", int),
    ]:
        arg(flag, name, type=typ, default=fields[name].default)
    arg("--actions", "actions", choices=("model", "replay", "perturb"), default="model")
    arg("--require-keys", "require_keys", nargs="+", default=[], metavar="KEY")
    arg("--success-model", "success_model", default=None, metavar="DIR")
    arg("--format", "format", default=None)
    arg("--dataset-name", "dataset_name", default=None)
    arg("--tokenizer", "tokenizer", default=None)
    arg("--device", "device", choices=("auto", "cpu", "cuda"), default="auto")
    add_address(p)
    add_registry(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def generate_command(args: argparse.Namespace) -> int:
    from hma.config import validate
    from hma.episodes import extend_registry
    from hma.generate.config import GenerateConfig
    from hma.generate.synthesize import generate

    options = vars(args).copy()
    address, registry, quiet = options.pop("address"), options.pop("registry"), options.pop("quiet")
    if registry:
        extend_registry(registry)
    config = validate(GenerateConfig, options, "hma-generate arguments")
    report = generate(config, address, echo=not quiet)
    print("\n".join(report.lines()))
    return EXIT_INCOMPLETE if report.missing else EXIT_OK


# ---------------------------------------------------------------------------------------------
# hma simulate train-success


def configure_train_success(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="URL",
        help="episode source with success labels (repeatable; one dataset)",
    )
    p.add_argument("--format", help="source format (default: detected)")
    p.add_argument("--dataset", help="registry dataset name, where the source does not say")
    p.add_argument("--out", required=True, help="directory for the classifier (local or s3://)")
    p.add_argument("--checkpoint", help="HMA checkpoint: train on its tokenizer's reconstructions")
    p.add_argument("--steps", type=int, help="optimiser steps (default 800)")
    p.add_argument("--size", type=int, help="classifier input size R, frames resized to R x R (64)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")


def train_success_command(args: argparse.Namespace) -> int:
    from hma.formats import iter_episodes
    from hma.generate.success import SuccessConfig, tokenizer_round_trip, train_success

    config = SuccessConfig(**given(args, steps="steps", size="image_size", seed="seed"))
    transform = None
    if args.checkpoint:
        from hma.generate.world_model import WorldModel

        transform = tokenizer_round_trip(WorldModel.load(args.checkpoint, device=args.device))

    def episodes():
        for url in args.source:
            yield from iter_episodes(url, args.format, args.dataset)

    model, summary = train_success(episodes(), config, args.dataset, transform, args.device)
    model.save(args.out)
    print("\n".join(summary.lines()))
    print(f"classifier: {args.out}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# hma evaluate-policy


def configure_evaluate_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        action="append",
        required=True,
        metavar="DIR[@STEP]",
        help="a policy run (its newest checkpoint), a run's checkpoint of one step, or a "
        "checkpoint directory (repeatable; `hma policy train` makes them)",
    )
    p.add_argument("--env", required=True, help="ground-truth simulator (a registry dataset)")
    p.add_argument(
        "--learned",
        required=True,
        metavar="CKPT",
        help="HMA pretraining checkpoint (or run dir) trained on the env's dataset",
    )
    p.add_argument("--episodes", type=int, required=True, help="episodes per policy and simulator")
    p.add_argument(
        "--success-model",
        metavar="DIR",
        help="success classifier (default: CKPT/success); make one with `hma simulate "
        "train-success`",
    )
    p.add_argument("--seed", type=int, default=0, help="episode i of every policy uses seed + i")
    p.add_argument("--size", type=int, default=64, help="ground-truth frame size in pixels")
    p.add_argument("--steps", type=int, help="MaskGIT/MAR passes per generated frame (2)")
    p.add_argument("--temperature", type=float, help="sampling temperature (1.0)")
    p.add_argument(
        "--batch", type=int, default=8, help="episodes the learned simulator runs at once"
    )
    p.add_argument("--device", default="cpu", help="torch device of the world model and policies")
    p.add_argument("--out", help="folder for the scatter plot and scores.json")


def evaluate_policy_command(args: argparse.Namespace) -> int:
    from hma import storage
    from hma.envs import make_env
    from hma.generate.policy_eval import SCATTER, PolicyEvalError, evaluate
    from hma.generate.simulator import Simulator, SimulatorConfig
    from hma.generate.success import SUCCESS_DIR, SuccessClassifier
    from hma.generate.world_model import WorldModel
    from hma.policy.agent import Agent

    if args.episodes < 1 or args.batch < 1:
        raise PolicyEvalError("--episodes and --batch must be >= 1")
    agents = [Agent.load(spec, args.device) for spec in args.policy]
    world_model = WorldModel.load(args.learned, device=args.device)
    clf_url = args.success_model or storage.join(world_model.url, SUCCESS_DIR)
    if not args.success_model and not storage.exists(clf_url):
        raise PolicyEvalError(
            f"no success classifier given and none at {clf_url}; train one with `hma simulate "
            f"train-success --source <episodes of {args.env}> --out DIR` and pass --success-model"
        )
    classifier = SuccessClassifier.load(clf_url, device=args.device)
    env = make_env(args.env, args.size)
    try:
        config = SimulatorConfig(
            max_steps=env.max_steps, **given(args, steps="steps", temperature="temperature")
        )
        sim = Simulator(world_model, args.env, classifier, config)
        result = evaluate(env, agents, sim, args.episodes, args.seed, args.batch, log=print)
    finally:
        env.close()
    result.success_model = clf_url
    print("\n".join(result.lines()))
    if args.out:
        storage.makedirs(args.out)
        with storage.open_file(storage.join(args.out, "scores.json"), "w") as f:
            json.dump(result.to_dict(), f, indent=2)
        print(f"scatter plot: {result.scatter(storage.join(args.out, SCATTER))}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# hma report


def configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="pretraining run dir or checkpoint (local or s3://)")
    p.add_argument("--out", help="report directory (default: <run dir>/report)")
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="DATASET=URL",
        help="real episodes of a dataset from this source instead of its token store",
    )
    p.add_argument("--clips", type=int, help="real clips per dataset (2)")
    p.add_argument("--horizon", type=int, help="generated frames per clip (16)")
    p.add_argument("--prompt-frames", type=int, help="real frames before each rollout (1)")
    p.add_argument("--steps", type=int, help="MaskGIT/MAR passes per frame (2)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu")


def report_command(args: argparse.Namespace) -> int:
    from hma import storage
    from hma.generate.report import ReportConfig, build_report

    sources = {}
    for item in args.source:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise HmaError(f"--source {item!r}: expected DATASET=URL")
        sources[name] = url
    config = ReportConfig(
        **given(
            args,
            clips="clips",
            horizon="horizon",
            prompt_frames="prompt_frames",
            steps="steps",
            seed="seed",
        )
    )
    page = build_report(args.run, args.out, config, sources, args.device)
    print(f"report: {page if storage.is_remote(page) else os.path.abspath(page)}")
    return EXIT_OK
