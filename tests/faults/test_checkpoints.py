"""Checkpoints whose bytes changed are refused by fingerprint, with one line naming the file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hma.checkpoint import CheckpointError
from hma.cli import main
from hma.model import HMA
from hma.model.checkpoint import WEIGHTS_FILE, load_model, save_model
from tests.helpers.model import tiny


def _flip_one_weight(path) -> None:
    """Change one value of one tensor, keeping a valid safetensors file (and its header)."""
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1.0
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        metadata = json.loads(f.read(header_len)).get("__metadata__")
    save_file(tensors, str(path), metadata=metadata)


def test_flipped_model_weights_are_refused_naming_the_file(tmp_path):
    url = tmp_path / "model"
    fingerprint = save_model(HMA(tiny()), str(url))
    assert json.loads((url / "config.json").read_text())["fingerprint"] == fingerprint
    load_model(str(url))  # intact: loads
    _flip_one_weight(url / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match=rf"{url / WEIGHTS_FILE}: weights do not match"):
        load_model(str(url))


def test_a_pretraining_checkpoint_with_flipped_weights_fails_generation_in_one_line(
    tmp_path, capsys
):
    from tests.helpers.generate import build_checkpoint

    torch.manual_seed(0)
    url = build_checkpoint(str(tmp_path / "ckpt"), head_scale=None)
    _flip_one_weight(tmp_path / "ckpt" / "model" / WEIGHTS_FILE)
    code = main(["report", url, "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("hma: error:") and "model.safetensors: weights do not match" in err[0]
