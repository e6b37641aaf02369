"""`hma tokenizer`, `hma tokenize`, `hma store`: image tokenizers and token stores."""

from __future__ import annotations

import argparse
import json

from hma.cli.common import EXIT_INCOMPLETE, EXIT_OK, add_address
from hma.errors import HmaError


def register(sub) -> None:  # sub: the `hma` subparsers
    tok = sub.add_parser("tokenizer", help="image tokenizers: train, eval").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    tr = tok.add_parser(
        "train",
        help="train an FSQ or KL tokenizer on Ray Train (re-running a config resumes its run)",
    )
    tr.add_argument("--config", required=True, help="YAML TrainConfig (see jobs/tokenizer_*.yaml)")
    tr.add_argument("--quiet", action="store_true", help="no per-step progress on the console")
    add_address(tr)
    tr.set_defaults(handler=tokenizer_train)
    ev = tok.add_parser("eval", help="PSNR/SSIM per dataset on held-out episodes, and PNG grids")
    ev.add_argument(
        "--checkpoint", required=True, help="checkpoint dir, a run dir, or Cosmos .jit files' dir"
    )
    ev.add_argument("--config", help="take the sources and frame size from this TrainConfig")
    ev.add_argument("--source", action="append", default=[], metavar="URL", help="episode source")
    ev.add_argument("--size", type=int, default=64, help="frame size for --source (square)")
    ev.add_argument("--split", default="val", choices=("train", "val"))
    ev.add_argument("--out", help="where to write grid PNGs and scores.json")
    ev.add_argument("--grid-frames", type=int, default=8, help="frames per dataset in a grid")
    ev.add_argument("--workers", type=int, default=1, help="tokenizer actors")
    ev.add_argument("--device", default="cpu", help="torch device of the tokenizer (cpu, cuda)")
    ev.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_address(ev)
    ev.set_defaults(handler=tokenizer_eval)

    tz = sub.add_parser("tokenize", help="episode sources -> token store on Ray Data (resumable)")
    tz.add_argument(
        "--config", required=True, help="YAML TokenizeJobConfig (see jobs/tokenize.yaml)"
    )
    add_address(tz)
    tz.set_defaults(handler=tokenize)

    store = sub.add_parser("store", help="token stores: inspect").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    ins = store.add_parser(
        "inspect",
        help="datasets, counts, action and state stats, tokenizer fingerprint, quarantine",
    )
    ins.add_argument("url", help="token store URL (local path or s3://)")
    ins.add_argument("--json", action="store_true", help="print everything as JSON")
    ins.add_argument("--decode", type=int, metavar="N", help="decode N stored episodes to a PNG")
    ins.add_argument("--out", help="PNG path for --decode (default: <store>.png)")
    ins.add_argument("--tokenizer", help="tokenizer checkpoint (default: the one the store names)")
    ins.set_defaults(handler=store_inspect)


def tokenizer_train(args: argparse.Namespace) -> int:
    from hma.pipeline import cluster
    from hma.tokenize.train import load_train_config, train

    config = load_train_config(args.config)
    cluster.connect(args.address)
    result = train(config, echo=not args.quiet)
    print(f"trained {config.tokenizer.arch} tokenizer in {result.seconds:.0f}s")
    for key in ("step", "val_psnr", "fingerprint"):
        if key in result.metrics:
            print(f"  {key}: {result.metrics[key]}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"tensorboard: {result.tensorboard_dir}")
    return EXIT_OK


def tokenizer_eval(args: argparse.Namespace) -> int:
    from hma.pipeline import cluster
    from hma.tokenize.data import DataConfig, FrameSource
    from hma.tokenize.evaluate import evaluate
    from hma.tokenize.train import load_train_config

    if bool(args.config) == bool(args.source):
        raise HmaError("give either --config or one or more --source URLs")
    if args.config:
        data = load_train_config(args.config).data
    else:
        data = DataConfig(
            sources=[FrameSource(url=u) for u in args.source], frame_size=(args.size, args.size)
        )
    cluster.connect(args.address)
    summary = evaluate(
        args.checkpoint,
        data,
        out=args.out,
        split=args.split,
        grid_frames=args.grid_frames,
        workers=args.workers,
        device=args.device,
    )
    print(json.dumps(summary.to_dict(), indent=2) if args.json else "\n".join(summary.lines()))
    return EXIT_OK


def tokenize(args: argparse.Namespace) -> int:
    """Run the job, print the summary; exit 1 if the counts do not balance or a unit failed."""
    from hma.pipeline.tokenize_job import load_job_config, run_tokenize

    config = load_job_config(args.config)
    summary = run_tokenize(config, args.address)
    print("\n".join(summary.lines()))
    return EXIT_OK if summary.ok else EXIT_INCOMPLETE


def store_inspect(args: argparse.Namespace) -> int:
    from hma.pipeline.store import decode_strip, inspect_store
    from hma.pipeline.store.summary import inspect_lines
    from hma.tokenize.checkpoint import load_tokenizer

    info = inspect_store(args.url)
    print(json.dumps(info, indent=2) if args.json else "\n".join(inspect_lines(info)))
    if args.decode:
        tokenizer = load_tokenizer(args.tokenizer or info["tokenizer"]["url"])
        out = args.out or args.url.rstrip("/") + ".png"
        print(f"decoded strip: {decode_strip(args.url, args.decode, tokenizer, out)}")
    return EXIT_OK
