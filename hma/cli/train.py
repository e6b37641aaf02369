"""`hma pretrain`: pretrain or fine-tune the world model on token stores (Ray Train)."""

from __future__ import annotations

import argparse

from hma.cli.common import EXIT_OK, add_address


def register(sub) -> None:  # sub: the `hma` subparsers
    pre = sub.add_parser(
        "pretrain",
        help="pretrain or fine-tune HMA on token stores with Ray Train (re-running resumes)",
    )
    pre.add_argument(
        "--config", required=True, help="YAML PretrainConfig (see jobs/pretrain*.yaml)"
    )
    pre.add_argument("--quiet", action="store_true", help="no per-step progress on the console")
    add_address(pre)
    pre.set_defaults(handler=pretrain)


def pretrain(args: argparse.Namespace) -> int:
    from hma.pipeline.pretrain.driver import load_pretrain_config, run_pretrain

    config = load_pretrain_config(args.config)
    result = run_pretrain(config, args.address, echo=not args.quiet)
    print(f"pretrained {config.name!r} in {result.seconds:.0f}s")
    print("\n".join(result.validation))
    print(f"checkpoint: {result.checkpoint}")
    print(f"tensorboard: {result.tensorboard_dir}")
    return EXIT_OK
