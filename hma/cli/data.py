"""`hma formats`, `hma datasets`, `hma sim`: episode sources, the registry, simulated robots."""

from __future__ import annotations

import argparse
import json

from hma.cli.common import EXIT_INCOMPLETE, EXIT_OK, add_address, add_registry
from hma.errors import HmaError


def register(sub) -> None:  # sub: the `hma` subparsers
    from hma.formats import FORMATS

    fmt = sub.add_parser("formats", help="episode formats: list, convert").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    fmt.add_parser("list", help="list the supported formats").set_defaults(handler=formats_list)
    conv = fmt.add_parser("convert", help="convert an episode source to another format")
    conv.add_argument("src", help="source URL (local path or s3://)")
    conv.add_argument("dst", help="destination URL (must not exist)")
    conv.add_argument("--to", required=True, choices=FORMATS, help="destination format")
    conv.add_argument("--from", dest="src_format", choices=FORMATS, help="source format")
    conv.add_argument("--dataset", help="registry dataset name, where the source does not say")
    conv.add_argument("--strict", action="store_true", help="exit 1 if any episode was rejected")
    add_registry(conv)
    add_address(conv)
    conv.set_defaults(handler=formats_convert)

    ds = sub.add_parser("datasets", help="dataset registry and sources: list, show").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    lst = ds.add_parser("list", help="list the registry's datasets")
    add_registry(lst)
    lst.set_defaults(handler=datasets_list)
    show = ds.add_parser("show", help="episodes, frames, action stats and a thumbnail strip")
    show.add_argument("uri", help="source URL (local path or s3://)")
    show.add_argument("--format", choices=FORMATS, help="source format (default: detected)")
    show.add_argument("--dataset", help="registry dataset name, where the source does not say")
    show.add_argument("--png", help="where to write the thumbnail strip (default: none)")
    show.add_argument("--episodes", type=int, default=6, help="episodes in the strip")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_registry(show)
    add_address(show)
    show.set_defaults(handler=datasets_show)

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
    add_address(gen)
    gen.set_defaults(handler=sim_generate)


def formats_list(args: argparse.Namespace) -> int:
    from hma.formats import FORMATS, get_format

    for name in FORMATS:
        doc = (get_format(name).__doc__ or "").strip().splitlines()
        print(f"{name:<10} {doc[0] if doc else ''}")
    return EXIT_OK


def formats_convert(args: argparse.Namespace) -> int:
    from hma import formats, storage
    from hma.episodes import extend_registry
    from hma.pipeline import cluster
    from hma.pipeline.convert import convert

    if storage.exists(args.dst):
        raise HmaError(f"{args.dst}: destination exists; choose a new path")
    registry = extend_registry(args.registry)
    fmt = args.src_format or formats.detect_format(args.src)
    refs = formats.list_refs(args.src, fmt, args.dataset)  # a bad source fails before Ray starts
    cluster.connect(args.address)
    summary = convert(args.src, args.dst, args.to, fmt, args.dataset, registry, refs)
    print("\n".join(summary.lines()))
    if not summary.conserved or not summary.written or (args.strict and summary.rejected):
        return EXIT_INCOMPLETE
    return EXIT_OK


def datasets_list(args: argparse.Namespace) -> int:
    from hma.episodes import extend_registry

    registry = extend_registry(args.registry)
    print(f"{'dataset':<22}{'embodiment':<20}{'A':>3}{'hz':>6}{'stride':>7}  camera  frame")
    for name, s in sorted(registry.datasets.items()):
        h, w = s.frame_size
        print(
            f"{name:<22}{s.embodiment:<20}{s.action_dim:>3}{s.hz:>6g}{s.stride:>7}  "
            f"{s.camera:<7} {h}x{w}"
        )
    return EXIT_OK


def datasets_show(args: argparse.Namespace) -> int:
    from hma import formats
    from hma.episodes import extend_registry
    from hma.pipeline import cluster
    from hma.pipeline.describe import describe

    if args.episodes < 1:
        raise HmaError(f"--episodes must be >= 1, got {args.episodes}")
    registry = extend_registry(args.registry)
    # list first: a missing, unreachable or wrong-kind source fails before a cluster starts
    fmt = args.format or formats.detect_format(args.uri)
    refs = formats.list_refs(args.uri, fmt, args.dataset)
    cluster.connect(args.address)
    summary = describe(
        args.uri, fmt, args.dataset, args.png, args.episodes, registry=registry, refs=refs
    )
    print(json.dumps(summary.to_dict(), indent=2) if args.json else "\n".join(summary.lines()))
    return EXIT_OK


def sim_generate(args: argparse.Namespace) -> int:
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
    return EXIT_OK
