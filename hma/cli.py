"""Command line: `hma …` subcommands and `hma-generate`.

Errors a user can cause print one line naming the culprit and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from hma.errors import HmaError

EXIT_USAGE = 2
EXIT_INCOMPLETE = 1


def _add_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        action="append",
        default=[],
        metavar="YAML",
        help="extra dataset registry file (repeatable; also $HMA_REGISTRY)",
    )


def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else a local cluster on 127.0.0.1)",
    )


def build_parser() -> argparse.ArgumentParser:
    from hma.formats import FORMATS

    parser = argparse.ArgumentParser(
        prog="hma",
        description="Heterogeneous Masked Autoregression: robot episodes -> token stores -> "
        "action-conditioned video world model -> synthetic robot data.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fmt = sub.add_parser("formats", help="episode formats: list, convert").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    fmt.add_parser("list", help="list the supported formats")
    conv = fmt.add_parser("convert", help="convert an episode source to another format")
    conv.add_argument("src", help="source URL (local path or s3://)")
    conv.add_argument("dst", help="destination URL (must not exist)")
    conv.add_argument("--to", required=True, choices=FORMATS, help="destination format")
    conv.add_argument("--from", dest="src_format", choices=FORMATS, help="source format")
    conv.add_argument("--dataset", help="registry dataset name, where the source does not say")
    conv.add_argument("--strict", action="store_true", help="exit 1 if any episode was rejected")
    _add_registry(conv)
    _add_address(conv)

    ds = sub.add_parser("datasets", help="dataset registry and sources: list, show").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    lst = ds.add_parser("list", help="list the registry's datasets")
    _add_registry(lst)
    show = ds.add_parser("show", help="episodes, frames, action stats and a thumbnail strip")
    show.add_argument("uri", help="source URL (local path or s3://)")
    show.add_argument("--format", choices=FORMATS, help="source format (default: detected)")
    show.add_argument("--dataset", help="registry dataset name, where the source does not say")
    show.add_argument("--png", help="where to write the thumbnail strip (default: none)")
    show.add_argument("--episodes", type=int, default=6, help="episodes in the strip")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_registry(show)
    _add_address(show)

    sim = sub.add_parser("sim", help="simulated robots: generate expert datasets").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    gen = sim.add_parser("generate", help="record scripted-expert episodes into a dataset")
    gen.add_argument("--env", required=True, help="simulator (a registry dataset name)")
    gen.add_argument("--episodes", type=int, required=True)
    gen.add_argument("--out", required=True, help="destination URL (must not exist)")
    gen.add_argument(
        "--format",
        choices=FORMATS,
        help="default: robomimic for robosuite, rlds for tabletop, lerobot otherwise",
    )
    gen.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    gen.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="expert action noise: std as a share of half the action range",
    )
    gen.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    gen.add_argument("--workers", type=int, default=1, help="> 1: fan out over Ray actors")
    gen.add_argument(
        "--only-success", action="store_true", help="drop unsuccessful episodes (default: keep)"
    )
    _add_address(gen)

    tok = sub.add_parser("tokenizer", help="image tokenizers: train, eval").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    tr = tok.add_parser(
        "train",
        help="train an FSQ or KL tokenizer on Ray Train (re-running a config resumes its run)",
    )
    tr.add_argument("--config", required=True, help="YAML TrainConfig (see jobs/tokenizer_*.yaml)")
    tr.add_argument("--quiet", action="store_true", help="no per-step progress on the console")
    _add_address(tr)
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
    _add_address(ev)

    store = sub.add_parser("store", help="token stores: inspect").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    ins = store.add_parser(
        "inspect", help="datasets, counts, action stats, tokenizer fingerprint, quarantine"
    )
    ins.add_argument("url", help="token store URL (local path or s3://)")
    ins.add_argument("--json", action="store_true", help="print everything as JSON")
    ins.add_argument("--decode", type=int, metavar="N", help="decode N stored episodes to a PNG")
    ins.add_argument("--out", help="PNG path for --decode (default: <store>.png)")
    ins.add_argument("--tokenizer", help="tokenizer checkpoint (default: the one the store names)")

    tz = sub.add_parser("tokenize", help="episode sources -> token store on Ray Data (resumable)")
    tz.add_argument(
        "--config", required=True, help="YAML TokenizeJobConfig (see jobs/tokenize.yaml)"
    )
    _add_address(tz)
    tz.set_defaults(action=None)

    pre = sub.add_parser(
        "pretrain",
        help="pretrain or fine-tune HMA on token stores with Ray Train (re-running resumes)",
    )
    pre.add_argument(
        "--config", required=True, help="YAML PretrainConfig (see jobs/pretrain*.yaml)"
    )
    pre.add_argument("--quiet", action="store_true", help="no per-step progress on the console")
    _add_address(pre)
    pre.set_defaults(action=None)

    _add_generation_commands(sub)
    return parser


def _add_generation_commands(sub) -> None:  # sub: the `hma` subparsers
    from hma.generate import commands as gen  # builds parsers without importing torch

    simulate = sub.add_parser("simulate", help="learned simulator: train-success").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    gen.configure_train_success(
        simulate.add_parser(
            "train-success", help="train a success classifier on real episodes' success labels"
        )
    )
    ev = sub.add_parser(
        "evaluate-policy", help="score policies in the ground-truth and the learned simulator"
    )
    gen.configure_evaluate_policy(ev)
    ev.set_defaults(action=None)
    rep = sub.add_parser("report", help="HTML report of a run: rollouts, metrics, curves")
    gen.configure_report(rep)
    rep.set_defaults(action=None)


def _formats_list(args: argparse.Namespace) -> int:
    from hma.formats import FORMATS, get_format

    for name in FORMATS:
        doc = (get_format(name).__doc__ or "").strip().splitlines()
        print(f"{name:<10} {doc[0] if doc else ''}")
    return 0


def _formats_convert(args: argparse.Namespace) -> int:
    from hma import storage
    from hma.episodes import extend_registry
    from hma.pipeline import cluster
    from hma.pipeline.convert import convert

    if storage.exists(args.dst):
        raise HmaError(f"{args.dst}: destination exists; choose a new path")
    registry = extend_registry(args.registry)
    cluster.connect(args.address)
    summary = convert(args.src, args.dst, args.to, args.src_format, args.dataset, registry)
    print("\n".join(summary.lines()))
    if not summary.conserved or (args.strict and summary.rejected):
        return EXIT_INCOMPLETE
    return 0


def _datasets_list(args: argparse.Namespace) -> int:
    from hma.episodes import extend_registry

    registry = extend_registry(args.registry)
    print(f"{'dataset':<22}{'embodiment':<20}{'A':>3}{'hz':>6}{'stride':>7}  camera  frame")
    for name, s in sorted(registry.datasets.items()):
        h, w = s.frame_size
        print(
            f"{name:<22}{s.embodiment:<20}{s.action_dim:>3}{s.hz:>6g}{s.stride:>7}  "
            f"{s.camera:<7} {h}x{w}"
        )
    return 0


def _datasets_show(args: argparse.Namespace) -> int:
    from hma.episodes import extend_registry
    from hma.pipeline import cluster
    from hma.pipeline.describe import describe

    if args.episodes < 1:
        raise HmaError(f"--episodes must be >= 1, got {args.episodes}")
    registry = extend_registry(args.registry)
    cluster.connect(args.address)
    summary = describe(
        args.uri, args.format, args.dataset, args.png, args.episodes, registry=registry
    )
    print(json.dumps(summary.to_dict(), indent=2) if args.json else "\n".join(summary.lines()))
    return 0


def _sim_generate(args: argparse.Namespace) -> int:
    from hma import storage
    from hma.envs import ENVS
    from hma.envs.record import RecordJob, default_format, record
    from hma.pipeline import cluster

    if args.env not in ENVS:
        raise HmaError(f"unknown env {args.env!r} (known: {', '.join(sorted(ENVS))})")
    if storage.exists(args.out):
        raise HmaError(f"{args.out}: destination exists; choose a new path")
    if args.episodes < 1 or args.size < 8 or args.workers < 1:
        raise HmaError("--episodes and --workers must be >= 1 and --size >= 8")
    job = RecordJob(
        env=args.env,
        episodes=args.episodes,
        out=args.out,
        fmt=args.format or default_format(args.env),
        size=args.size,
        noise=args.noise,
        seed=args.seed,
        workers=args.workers,
        only_success=args.only_success,
    )
    if job.workers > 1:
        cluster.connect(args.address)
    print("\n".join(record(job).lines()))
    return 0


def _tokenizer_train(args: argparse.Namespace) -> int:
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
    return 0


def _tokenizer_eval(args: argparse.Namespace) -> int:
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
    return 0


def _store_inspect(args: argparse.Namespace) -> int:
    from hma.pipeline.store import decode_strip, inspect_store
    from hma.pipeline.store_summary import inspect_lines
    from hma.tokenize.checkpoint import load_tokenizer

    info = inspect_store(args.url)
    print(json.dumps(info, indent=2) if args.json else "\n".join(inspect_lines(info)))
    if args.decode:
        tokenizer = load_tokenizer(args.tokenizer or info["tokenizer"]["url"])
        out = args.out or args.url.rstrip("/") + ".png"
        print(f"decoded strip: {decode_strip(args.url, args.decode, tokenizer, out)}")
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    from hma.pipeline.tokenize_job import cli_main

    return cli_main(args)  # 0 = OK, 1 = counts do not balance or a unit failed


def _pretrain(args: argparse.Namespace) -> int:
    from hma.pipeline.pretrain import command

    return command(args)


def _simulate_train_success(args: argparse.Namespace) -> int:
    from hma.generate.commands import train_success_command

    return train_success_command(args)


def _evaluate_policy(args: argparse.Namespace) -> int:
    from hma.generate.commands import evaluate_policy_command

    return evaluate_policy_command(args)


def _report(args: argparse.Namespace) -> int:
    from hma.generate.commands import report_command

    return report_command(args)


COMMANDS: dict[tuple[str, str | None], Callable[[argparse.Namespace], int]] = {
    ("formats", "list"): _formats_list,
    ("formats", "convert"): _formats_convert,
    ("datasets", "list"): _datasets_list,
    ("datasets", "show"): _datasets_show,
    ("sim", "generate"): _sim_generate,
    ("tokenizer", "train"): _tokenizer_train,
    ("tokenizer", "eval"): _tokenizer_eval,
    ("store", "inspect"): _store_inspect,
    ("tokenize", None): _tokenize,
    ("pretrain", None): _pretrain,
    ("simulate", "train-success"): _simulate_train_success,
    ("evaluate-policy", None): _evaluate_policy,
    ("report", None): _report,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[(args.command, args.action)](args)
    except HmaError as e:
        print(f"hma: error: {e}", file=sys.stderr)
        return EXIT_USAGE


def generate_main(argv: Sequence[str] | None = None) -> int:
    """`hma-generate`: synthetic trajectories from a trained model, mixed with real ones."""
    from hma.generate.synthesize import generate_main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
