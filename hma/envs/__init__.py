"""Ground-truth simulators with scripted experts, one gym-like interface (`hma.envs.base.Env`).

`make_env(name, size)` builds any of them by registry dataset name; modules are imported on first
use, so a user of one simulator needs none of the others installed.
"""

from __future__ import annotations

import importlib

from hma.envs.base import Env
from hma.errors import ConfigError

# registry dataset name -> "module:factory"; each factory takes (size: int) and returns an Env
ENVS: dict[str, str] = {
    "pusht": "hma.envs.pusht:make",
    "tabletop": "hma.envs.tabletop:make",
    "robosuite_lift": "hma.envs.robosuite:make_lift",
    "robosuite_can": "hma.envs.robosuite:make_can",
    "metaworld_reach": "hma.envs.metaworld:make_reach",
    "metaworld_push": "hma.envs.metaworld:make_push",
    "metaworld_pick_place": "hma.envs.metaworld:make_pick_place",
}


def make_env(name: str, size: int = 64) -> Env:
    if name not in ENVS:
        raise ConfigError(f"unknown env {name!r} (known: {', '.join(sorted(ENVS))})")
    module, factory = ENVS[name].split(":")
    return getattr(importlib.import_module(module), factory)(size)
