"""Fixtures of the generation tests: a tiny untrained checkpoint (tests.helpers.generate) loaded
once per module; every test module here runs torch single-threaded (`_one_thread`)."""

from __future__ import annotations

import pytest

from hma.generate.world_model import WorldModel
from tests.helpers.generate import build_checkpoint
from tests.helpers.threads import one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """URL of a tiny checkpoint for robosuite_lift and tabletop (see the module docstring)."""
    return build_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "tiny"), head_scale=0.6)


@pytest.fixture(scope="session")
def collapsed_checkpoint(tmp_path_factory) -> str:
    """The same tiny model with training's initial action heads: proposals ~ the mean action."""
    return build_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "collapsed"), head_scale=None)


@pytest.fixture(scope="session")
def state_checkpoint(tmp_path_factory) -> str:
    """The tiny model with proprioceptive state for robosuite_lift."""
    url = str(tmp_path_factory.mktemp("ckpt") / "state")
    return build_checkpoint(url, head_scale=0.6, state=True)


@pytest.fixture(scope="module")
def world_model(tiny_checkpoint) -> WorldModel:
    """The tiny checkpoint loaded for generation (one per test module)."""
    return WorldModel.load(tiny_checkpoint)
