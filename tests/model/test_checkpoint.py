"""Model checkpoints: safetensors + JSON round trip, locally and on S3; clear refusals."""

from __future__ import annotations

import json

import pytest
import torch

from hma.model import HMA
from hma.model.checkpoint import CheckpointError, load_model, load_weights, save_model
from tests.helpers.model import random_batch, tiny


def _same_outputs(a: HMA, b: HMA) -> None:
    batch = random_batch(a.config)
    out_a = a.eval()(batch.tokens, batch.actions, batch.datasets)
    out_b = b.eval()(batch.tokens, batch.actions, batch.datasets)
    assert torch.equal(out_a.video, out_b.video) and torch.equal(out_a.action, out_b.action)


def test_round_trip_local(tmp_path):
    model = HMA(tiny(conditioning="cross_attention"))
    model.add_dataset("gripper", 10)
    save_model(model, str(tmp_path / "ckpt"))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = load_model(str(tmp_path / "ckpt"))
    assert loaded.config == model.config
    _same_outputs(model, loaded)


def test_round_trip_s3(s3_bucket):
    model = HMA(tiny())
    url = f"{s3_bucket}/models/tiny"
    save_model(model, url)
    _same_outputs(model, load_model(url))


def test_refuses_mismatched_shapes(tmp_path):
    save_model(HMA(tiny()), str(tmp_path / "a"))
    wider = HMA(tiny(d_model=64, heads=2))
    with pytest.raises(
        CheckpointError,
        match=r"tensor '.*' is torch.float32 \[\d+.*\], the model needs torch.float32",
    ):
        load_weights(wider, str(tmp_path / "a"))
    # a config edited by hand no longer matches its weights: named, not loaded silently
    record = json.loads((tmp_path / "a" / "config.json").read_text())
    record["config"]["datasets"]["arm"] = 7
    (tmp_path / "a" / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"embodiments\.(stems|heads)\.arm"):
        load_model(str(tmp_path / "a"))


def test_partial_load_for_a_new_dataset(tmp_path):
    pretrained = HMA(tiny())
    save_model(pretrained, str(tmp_path / "p"))
    model = HMA(tiny())
    model.add_dataset("gripper", 10)
    with pytest.raises(CheckpointError, match="missing.*gripper"):
        load_weights(model, str(tmp_path / "p"))
    load_weights(model, str(tmp_path / "p"), strict=False)
    assert torch.equal(
        model.blocks[0].temporal.qkv.weight, pretrained.blocks[0].temporal.qkv.weight
    )


def test_damaged_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: missing"):
        load_model(str(tmp_path / "nothing"))
    save_model(HMA(tiny()), str(tmp_path / "c"))
    (tmp_path / "c" / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="model.safetensors: corrupted"):
        load_model(str(tmp_path / "c"))
