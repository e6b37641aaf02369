"""What the command modules share: exit codes, and options that mean the same in every command."""

from __future__ import annotations

import argparse
from typing import Any

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # the command ran, but not every input made it (counts are printed)
EXIT_USAGE = 2  # bad input, bad config, or a refusal; one line on stderr


def add_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        action="append",
        default=[],
        metavar="YAML",
        help="extra dataset registry file (repeatable; also $HMA_REGISTRY)",
    )


def add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else a local cluster on 127.0.0.1)",
    )


def given(args: argparse.Namespace, **names: str) -> dict[str, Any]:
    """{config field: value} for the options the user gave (argparse dest -> field name);
    options left out take their config's default (the typed configs are where defaults live)."""
    return {
        field: getattr(args, dest)
        for dest, field in names.items()
        if getattr(args, dest) is not None
    }
