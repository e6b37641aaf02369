"""The Cosmos adapter against small TorchScript modules with the published encoder/decoder contract."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from hma import storage
from hma.tokenize import load_tokenizer
from hma.tokenize.cosmos import DECODER_FILE, ENCODER_FILE, CosmosError

# The published Cosmos files are TorchScript, which torch now deprecates; building fakes warns.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

FACTOR = 8
VOCAB = 64000


class DiscreteEncoder(nn.Module):
    """x [N,3,H,W] bf16 -> (indices [N,h,w] int64, codes [N,6,h,w]), like Cosmos-DI."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 6, FACTOR, stride=FACTOR)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = torch.tanh(self.proj(x))
        indices = ((codes[:, 0] + 1) * 0.5 * (VOCAB - 1)).round().long()
        return indices, codes


class DiscreteDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 3)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        x = self.embed(indices).permute(0, 3, 1, 2)
        return torch.tanh(nn.functional.interpolate(x, scale_factor=float(FACTOR)))


class ContinuousEncoder(nn.Module):
    def __init__(self, channels: int = 16):
        super().__init__()
        self.proj = nn.Conv2d(3, channels, FACTOR, stride=FACTOR)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.proj(x),)


class ContinuousDecoder(nn.Module):
    def __init__(self, channels: int = 16):
        super().__init__()
        self.proj = nn.ConvTranspose2d(channels, 3, FACTOR, stride=FACTOR)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(z))


def write_cosmos(url: str, encoder: nn.Module, decoder: nn.Module) -> None:
    """Trace both modules in bf16, as the published files are, and save them under `url`."""
    storage.makedirs(url)
    image = torch.zeros(1, 3, 32, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        tokens = encoder.to(torch.bfloat16).eval()(image)[0]
    for module, name, example in ((encoder, ENCODER_FILE, image), (decoder, DECODER_FILE, tokens)):
        with torch.no_grad():
            scripted = torch.jit.trace(module.to(torch.bfloat16).eval(), example)
        local = f"/tmp/hma-test-{os.getpid()}-{name}"
        torch.jit.save(scripted, local)
        with open(local, "rb") as src, storage.open_file(storage.join(url, name), "wb") as dst:
            dst.write(src.read())
        os.remove(local)


@pytest.mark.parametrize("remote", [False, True])
def test_discrete_cosmos(tmp_path, s3_bucket, frames, remote):
    url = f"{s3_bucket}/cosmos-di" if remote else str(tmp_path / "cosmos-di")
    torch.manual_seed(0)
    encoder, decoder = DiscreteEncoder(), DiscreteDecoder()
    write_cosmos(url, encoder, decoder)
    tok = load_tokenizer(url)
    assert (tok.kind, tok.downsample, tok.vocab_size, tok.latent_channels) == ("vq", 8, VOCAB, None)
    tokens = tok.encode(frames)
    assert tokens.dtype == torch.int32 and tokens.shape == (6, 4, 4)
    # the adapter's contract: [-1, 1] bf16 images in, the module's own indices out
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.inference_mode():
        expected, _ = encoder(x.to(torch.bfloat16))
    assert torch.equal(tokens, expected.to(torch.int32))
    out = tok.decode(tokens)
    assert out.dtype == torch.uint8 and out.shape == frames.shape
    assert len(tok.fingerprint) == 64 and tok.fingerprint == load_tokenizer(url).fingerprint


def test_continuous_cosmos(tmp_path, frames):
    url = str(tmp_path / "cosmos-ci")
    write_cosmos(url, ContinuousEncoder(), ContinuousDecoder())
    tok = load_tokenizer(url)
    assert (tok.kind, tok.downsample, tok.latent_channels, tok.vocab_size) == ("soft", 8, 16, None)
    tokens = tok.encode(frames)
    assert tokens.dtype == torch.float32 and tokens.shape == (6, 16, 4, 4)
    assert tok.decode(tokens).shape == frames.shape


def test_damaged_cosmos_file_fails_clearly(tmp_path):
    url = str(tmp_path / "cosmos-bad")
    write_cosmos(url, ContinuousEncoder(), ContinuousDecoder())
    with open(os.path.join(url, DECODER_FILE), "wb") as f:
        f.write(b"not a zip archive")
    with pytest.raises(CosmosError, match=f"{DECODER_FILE}: not a loadable TorchScript"):
        load_tokenizer(url)
