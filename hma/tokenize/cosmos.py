"""Adapter for NVIDIA's published Cosmos image tokenizers (TorchScript `encoder.jit`/`decoder.jit`).

    N frames, H x W pixels, h x w token grid, C latent channels

The published checkpoints (e.g. Cosmos-Tokenizer-DI8x8, -CI16x16) are TorchScript archives with
this contract, which the adapter relies on and nothing more:
    encoder(x: [N,3,H,W] in [-1, 1], in the module's dtype, bf16 as published)
        discrete:   (indices int [N,h,w], codes [N,6,h,w])
        continuous: latent [N,C,h,w]  (or a tuple whose first element it is)
    decoder(indices [N,h,w] | latent [N,C,h,w]) -> [N,3,H,W] in [-1, 1]
Kind, grid factor and channels are found by running the encoder once on a blank probe image.

Loading uses `torch.jit.load`, not Python's pickle: a TorchScript archive is a zip of serialized
TorchScript code and tensors read by the C++ loader, which restores only TorchScript types.
Its code does run when called, so load Cosmos files only from a source you trust, as with any
model code. Files may live on a local path or s3:// (read into memory, then loaded).
"""

from __future__ import annotations

import hashlib
import io
import warnings

import torch
from pydantic import Field
from torch import nn

from hma import storage
from hma.checkpoint import CheckpointError, read_bytes
from hma.config import StrictModel
from hma.tokenize.base import Tokenizer

ENCODER_FILE = "encoder.jit"
DECODER_FILE = "decoder.jit"
COSMOS_DISCRETE_VOCAB = 64000  # FSQ levels (8, 8, 8, 5, 5, 5) of the Cosmos discrete tokenizers


class CosmosError(CheckpointError):
    """Cosmos tokenizer files are missing, unreadable, or break the expected contract."""


class CosmosConfig(StrictModel):
    arch: str = "cosmos"
    vocab_size: int = Field(default=COSMOS_DISCRETE_VOCAB, gt=0, description="discrete codes")
    probe_size: int = Field(default=64, gt=0, description="side of the blank probe image (px)")
    latent_scale: float = Field(
        default=1.0, gt=0, description="continuous tokens = latent * latent_scale"
    )


def is_cosmos_dir(url: str) -> bool:
    return storage.exists(storage.join(url, ENCODER_FILE)) and storage.exists(
        storage.join(url, DECODER_FILE)
    )


def _load_script(url: str, device: torch.device) -> tuple[torch.jit.ScriptModule, str]:
    data = read_bytes(url)
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 deprecates TorchScript; the published Cosmos files are TorchScript.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(io.BytesIO(data), map_location=device)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CosmosError(f"{url}: not a loadable TorchScript archive ({first})") from None
    return module.eval(), hashlib.sha256(data).hexdigest()


def _module_dtype(module: nn.Module) -> torch.dtype:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class CosmosNet(nn.Module):
    """The two TorchScript modules behind the Tokenizer net interface."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, config: CosmosConfig):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.config = config
        self.dtype = _module_dtype(encoder)
        self.kind, self.downsample, self.latent_channels = self._probe()
        self.vocab_size = config.vocab_size if self.kind == "vq" else None

    def _raw_encode(self, images: torch.Tensor) -> torch.Tensor:
        out = self.encoder(images.to(self.dtype))
        return out[0] if isinstance(out, (tuple, list)) else out

    def _probe(self) -> tuple[str, int, int | None]:
        size = self.config.probe_size
        device = next((t.device for t in self.encoder.parameters()), torch.device("cpu"))
        with torch.inference_mode():
            tokens = self._raw_encode(torch.zeros(1, 3, size, size, device=device))
        if tokens.is_floating_point():
            if tokens.ndim != 4:
                raise CosmosError(
                    f"continuous encoder gave shape {list(tokens.shape)}, not [N,C,h,w]"
                )
            kind, channels = "soft", int(tokens.shape[1])
        else:
            if tokens.ndim != 3:
                raise CosmosError(
                    f"discrete encoder gave indices {list(tokens.shape)}, not [N,h,w]"
                )
            kind, channels = "vq", None
        if size % tokens.shape[-1]:
            raise CosmosError(f"a {size} px probe gave a {tokens.shape[-1]}-wide grid")
        return kind, size // int(tokens.shape[-1]), channels

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self._raw_encode(images)
        if self.kind == "vq":
            return tokens  # (N, h, w)
        return tokens.float() * self.config.latent_scale  # (N, C, h, w)

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.kind == "soft":
            tokens = (tokens / self.config.latent_scale).to(self.dtype)
        return self.decoder(tokens).float()  # (N, 3, H, W)


def load_cosmos(
    url: str,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    config: CosmosConfig | None = None,
) -> Tokenizer:
    """A Tokenizer over the Cosmos `encoder.jit` and `decoder.jit` in directory `url`."""
    config = config or CosmosConfig()
    device = torch.device(device)
    encoder, enc_sha = _load_script(storage.join(url, ENCODER_FILE), device)
    decoder, dec_sha = _load_script(storage.join(url, DECODER_FILE), device)
    net = CosmosNet(encoder, decoder, config)
    # The archives' own hashes cover their TorchScript code as well as their weights.
    record = {
        **config.model_dump(mode="json"),
        "encoder_sha256": enc_sha,
        "decoder_sha256": dec_sha,
    }
    return Tokenizer(net, record, device, batch_size)
