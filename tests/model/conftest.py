"""Fixtures of the model tests: a fixed seed, one torch thread (builders: tests.helpers.model)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.threads import one_torch_thread


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    with one_torch_thread():
        yield
