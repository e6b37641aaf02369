"""The Tokenizer interface for FSQ and KL: shapes, dtypes, fingerprints, checkpoints, errors."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hma.tokenize import CheckpointError, build_tokenizer, load_tokenizer, save_tokenizer
from hma.tokenize.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from hma.tokenize.presets import fsq, kl, tokenizer_config
from hma.tokenize.quantizers import FSQ

SIZE = 32  # frame side, as in conftest.py


def test_encode_decode_shapes_and_dtypes(tiny_config, frames):
    tok = build_tokenizer(tiny_config, batch_size=4)  # 6 frames: two batches, one partial
    tokens = tok.encode(frames)
    grid = tok.token_grid(SIZE, SIZE)
    assert grid == (SIZE // 8, SIZE // 8)
    if tok.kind == "vq":
        assert tokens.dtype == torch.int32 and tokens.shape == (6, *grid)
        assert int(tokens.min()) >= 0 and int(tokens.max()) < tok.vocab_size == 1000
        assert tok.latent_channels is None
    else:
        assert tokens.dtype == torch.float32 and tokens.shape == (6, tok.latent_channels, *grid)
        assert tok.vocab_size is None
    out = tok.decode(tokens)
    assert out.dtype == torch.uint8 and out.shape == frames.shape
    # numpy and torch inputs give the same tokens; an empty batch keeps the trailing shape
    assert torch.equal(tok.encode(torch.from_numpy(frames)), tokens)
    assert tok.encode(frames[:0]).shape == (0, *tokens.shape[1:])
    assert tok.decode(tokens[:0]).shape == (0, SIZE, SIZE, 3)


def test_encode_rejects_bad_frames(frames):
    tok = build_tokenizer(fsq("tiny"))
    with pytest.raises(ValueError, match="uint8 frames"):
        tok.encode(frames.astype(np.float32))
    with pytest.raises(ValueError, match="not a multiple"):
        tok.encode(frames[:, :30, :30])


def test_fsq_indices_and_codes_round_trip():
    q = FSQ((8, 5, 5, 5))
    assert q.codebook_size == 1000
    indices = torch.arange(1000).view(10, 10, 10)
    codes = q.indices_to_codes(indices)
    assert codes.shape == (10, 4, 10, 10) and codes.abs().max() <= 1
    assert torch.equal(q.codes_to_indices(codes), indices)
    # every quantized latent is a valid code, whatever the input scale
    z = torch.randn(2, 4, 3, 3) * 10
    assert torch.equal(
        q.codes_to_indices(q(z)), q.codes_to_indices(q.indices_to_codes(q.codes_to_indices(q(z))))
    )
    with pytest.raises(ValueError, match="indices"):
        q.indices_to_codes(torch.tensor([[[1000]]]))


def test_64k_vocab_option():
    tok = build_tokenizer(
        tokenizer_config({"arch": "fsq", "preset": "tiny", "levels": [8, 8, 8, 5, 5, 5]})
    )
    assert tok.vocab_size == 64000


def test_fingerprint_changes_when_a_weight_changes(tiny_config):
    tok = build_tokenizer(tiny_config)
    before = tok.fingerprint
    assert before == tok.fingerprint and len(before) == 64
    with torch.no_grad():
        next(tok.net.parameters()).view(-1)[0] += 1e-3
    assert tok.fingerprint != before
    # and the config is part of it: same weights, another config, another fingerprint
    other = build_tokenizer(tiny_config)
    other.net.load_state_dict(tok.net.state_dict())
    assert other.fingerprint == tok.fingerprint
    other.config = {**other.config, "note": "x"}
    other._fingerprint_key = None
    assert other.fingerprint != tok.fingerprint


def test_save_load_bit_identical_local_and_s3(tiny_config, frames, tmp_path, s3_bucket):
    torch.manual_seed(0)
    tok = build_tokenizer(tiny_config)
    tokens, recon = tok.encode(frames), tok.reconstruct(frames)
    for url in (str(tmp_path / "ckpt"), f"{s3_bucket}/tok/ckpt"):
        assert save_tokenizer(tok, url) == tok.fingerprint
        loaded = load_tokenizer(url)
        assert loaded.fingerprint == tok.fingerprint
        assert loaded.kind == tok.kind and loaded.config == tok.config
        assert torch.equal(loaded.encode(frames), tokens)
        assert torch.equal(loaded.decode(tokens), tok.decode(tokens))
        assert torch.equal(loaded.reconstruct(frames), recon)


@pytest.fixture
def saved(tmp_path):
    tok = build_tokenizer(kl("tiny"))
    url = str(tmp_path / "ckpt")
    save_tokenizer(tok, url)
    return url


def test_corrupted_weights_fail_clearly(saved):
    path = os.path.join(saved, WEIGHTS_FILE)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE}: corrupted"):
        load_tokenizer(saved)


def test_modified_weights_fail_the_fingerprint(saved):
    path = os.path.join(saved, WEIGHTS_FILE)
    tensors = load_file(path)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match="do not match the fingerprint"):
        load_tokenizer(saved)


def test_weights_of_another_config_fail_with_names(saved, tmp_path):
    other = str(tmp_path / "other")
    save_tokenizer(build_tokenizer(fsq("tiny")), other)
    os.replace(os.path.join(other, WEIGHTS_FILE), os.path.join(saved, WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="(missing|is torch).*(unexpected|config needs)"):
        load_tokenizer(saved)


def test_bad_or_missing_config_fails_clearly(saved, tmp_path):
    with pytest.raises(CheckpointError, match="not a tokenizer checkpoint"):
        load_tokenizer(str(tmp_path / "nowhere"))
    path = os.path.join(saved, CONFIG_FILE)
    with open(path) as f:
        record = json.load(f)
    record["config"]["latent_channels"] = 2  # outside 4..16
    with open(path, "w") as f:
        json.dump(record, f)
    with pytest.raises(CheckpointError, match="latent_channels"):
        load_tokenizer(saved)
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: not valid JSON"):
        load_tokenizer(saved)


def test_no_pickle_is_ever_loaded(tiny_config, frames, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used to load weights")

    url = str(tmp_path / "ckpt")
    save_tokenizer(build_tokenizer(tiny_config), url)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    load_tokenizer(url).reconstruct(frames)
    assert sorted(os.listdir(url)) == [CONFIG_FILE, WEIGHTS_FILE]
