"""Presets, validation errors, and the size of HMA-Base (paper: ~44M with one embodiment)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hma.errors import ConfigError
from hma.model import HMA, model_config

PAPER_BASE_PARAMS = 44e6


def test_presets():
    base = model_config("base")
    assert (base.d_model, base.layers, base.heads) == (256, 32, 8)
    assert model_config("xl").d_model == 768
    assert model_config("tiny", layers=3).layers == 3
    assert model_config("tiny", masking={"random_context_prob": 0.5}).masking.context_frames == 1
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        model_config("huge")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"heads": 3}, "not divisible by heads"),
        ({"datasets": {"a.b": 2}}, "dataset name 'a.b'"),
        ({"conditioning": "film"}, "conditioning"),
        ({"token_kind": "soft", "head": "maskgit"}, "soft tokens need head 'diffusion'"),
        ({"vocab_size": 16, "maskgit": {"factors": (3, 5)}}, "multiply to 15"),
        ({"window_size": 4}, "window_size"),
    ],
)
def test_invalid_configs_name_the_key(overrides, message):
    with pytest.raises(ValidationError, match=message):
        model_config("tiny", **overrides)


def test_base_parameter_count():
    """HMA-Base with one 7-D embodiment (stride 1) and a 1000-code FSQ vocabulary."""
    model = HMA(model_config("base", datasets={"robot": 7}))
    count = sum(p.numel() for p in model.parameters())
    print(f"HMA base parameters: {count / 1e6:.2f}M (paper ~44M)")
    assert 0.9 * PAPER_BASE_PARAMS < count < 1.1 * PAPER_BASE_PARAMS
