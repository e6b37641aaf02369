"""Small configs and frames shared by the tokenizer tests."""

from __future__ import annotations

import numpy as np
import pytest

from hma.envs.procedural import moving_block_frames
from hma.tokenize.presets import fsq, kl

SIZE = 32


@pytest.fixture(params=["fsq", "kl"])
def tiny_config(request):
    return fsq("tiny") if request.param == "fsq" else kl("tiny")


@pytest.fixture
def frames() -> np.ndarray:
    """uint8 [6, 32, 32, 3]: a block moving over a gradient."""
    return moving_block_frames(6, SIZE, seed=3)
