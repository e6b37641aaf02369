"""`hma policy train|eval`: visuomotor policies by behaviour cloning, scored in a simulator."""

from __future__ import annotations

import argparse
import json

from hma.cli.common import EXIT_OK, add_address, given


def register(sub) -> None:  # sub: the `hma` subparsers
    pol = sub.add_parser("policy", help="visuomotor policies: train, eval").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    tr = pol.add_parser(
        "train",
        help="behaviour cloning on Ray Train; a checkpoint every --checkpoint-every steps "
        "(re-running resumes)",
    )
    tr.add_argument(
        "--data", action="append", required=True, metavar="SRC", help="demonstrations (repeatable)"
    )
    tr.add_argument("--steps", type=int, required=True, help="optimiser steps")
    tr.add_argument("--out", required=True, help="run directory (local or s3://)")
    tr.add_argument("--preset", default="small", help="policy preset: tiny | small | base")
    tr.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (500)")
    tr.add_argument("--batch-size", type=int, help="samples per step (64)")
    tr.add_argument("--seed", type=int, help="seed of the weights and the batches (0)")
    tr.add_argument("--torch-threads", type=int, help="torch threads per worker")
    tr.add_argument("--quiet", action="store_true", help="no per-step progress on the console")
    add_address(tr)
    tr.set_defaults(handler=train)

    ev = pol.add_parser("eval", help="success rate ± binomial standard error in a simulator")
    ev.add_argument("--policy", required=True, help="run directory, DIR@STEP, or a checkpoint")
    ev.add_argument("--env", required=True, help="ground-truth simulator (a registry dataset)")
    ev.add_argument("--episodes", type=int, required=True, help="episodes (seeds seed..)")
    ev.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    ev.add_argument("--size", type=int, default=64, help="frame size the env renders")
    ev.add_argument("--json", metavar="PATH", help="also write the outcomes as JSON")
    ev.set_defaults(handler=evaluate)


def train(args: argparse.Namespace) -> int:
    from hma.pipeline import cluster
    from hma.policy.train import config_from_flags, train_policy

    fields = given(
        args,
        checkpoint_every="checkpoint_every",
        batch_size="batch_size",
        seed="seed",
        torch_threads="torch_threads",
    )
    config = config_from_flags(
        args.data, args.out, args.steps, policy={"preset": args.preset}, **fields
    )
    cluster.connect(args.address)
    run = train_policy(config, echo=not args.quiet)
    print(f"trained in {run.seconds:.0f}s; checkpoints (use {run.url}@STEP):")
    print("  steps " + ", ".join(str(c.step) for c in run.checkpoints))
    return EXIT_OK


def evaluate(args: argparse.Namespace) -> int:
    from hma import storage
    from hma.envs import make_env
    from hma.errors import HmaError
    from hma.policy.agent import Agent
    from hma.policy.evaluate import evaluate_in_env

    if args.episodes < 1:
        raise HmaError(f"--episodes must be >= 1, got {args.episodes}")
    agent = Agent.load(args.policy)
    env = make_env(args.env, args.size)
    try:
        result = evaluate_in_env(agent, env, args.episodes, args.seed)
    finally:
        env.close()
    print(result.line())
    if args.json:
        with storage.open_file(args.json, "w") as f:
            json.dump(result.to_dict(), f, indent=2)
    return EXIT_OK
