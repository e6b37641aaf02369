"""The one tokenizer interface every stage uses: uint8 frames <-> tokens, batched, on any device.

    N frames, H x W pixels, h x w token grid (H / downsample), C latent channels, K vocab size
    encode  uint8 [N,H,W,3]  ->  vq: int32 [N,h,w] in [0,K)   |   soft: float32 [N,C,h,w]
    decode  tokens           ->  uint8 [N,H,W,3]

A `Tokenizer` wraps a network that maps float images in [-1, 1], [N,3,H,W], to latents and back
(`TokenizerNet`). The wrapper owns the parts every tokenizer shares: uint8 <-> float conversion,
chunking into batches, `torch.inference_mode`, device placement, bf16 autocast on CUDA, and the
fingerprint (sha256 over the config and every weight) that stores and checkpoints record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from hma.checkpoint import fingerprint_of

Kind = Literal["vq", "soft"]
KINDS: tuple[Kind, ...] = ("vq", "soft")
UINT8_MAX = 255.0


class TokenizerNet(Protocol):
    """What a Tokenizer needs of a network (an nn.Module, or TorchScript files for Cosmos)."""

    kind: Kind
    downsample: int
    vocab_size: int | None
    latent_channels: int | None

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor: ...


def frames_to_images(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [N,H,W,3] -> float32 [N,3,H,W] in [-1, 1]."""
    return frames.permute(0, 3, 1, 2).float().div_(UINT8_MAX / 2).sub_(1.0)  # (N, 3, H, W)


def images_to_frames(images: torch.Tensor) -> torch.Tensor:
    """float [N,3,H,W] in [-1, 1] -> uint8 [N,H,W,3], rounded and clamped."""
    pixels = images.float().add(1.0).mul_(UINT8_MAX / 2).round_().clamp_(0, UINT8_MAX)
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # (N, H, W, 3)


def _is_uint8(array: np.ndarray | torch.Tensor) -> bool:
    if isinstance(array, torch.Tensor):
        return array.dtype == torch.uint8
    return array.dtype == np.uint8


class Tokenizer:
    """A trained tokenizer: `net` plus the config it was built from, ready for inference.

    Outputs live on `device`; inputs may be numpy arrays or tensors on any device. `batch_size`
    bounds how many frames go through the network at once (memory, not semantics).
    """

    def __init__(
        self,
        net: TokenizerNet,
        config: dict[str, Any],
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        extra_fingerprint: Callable[[], Iterator[tuple[str, torch.Tensor]]] | None = None,
    ):
        if net.kind not in KINDS:
            raise ValueError(f"tokenizer kind must be one of {KINDS}, got {net.kind!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.net = net
        self.config = config
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._extra_fingerprint = extra_fingerprint
        self._fingerprint_key: tuple | None = None
        self._fingerprint = ""
        if isinstance(net, nn.Module):
            net.to(self.device).eval()

    # -- description ------------------------------------------------------------------------
    @property
    def kind(self) -> Kind:
        return self.net.kind

    @property
    def downsample(self) -> int:
        return self.net.downsample

    @property
    def vocab_size(self) -> int | None:
        """Number of discrete codes (vq), else None."""
        return self.net.vocab_size

    @property
    def latent_channels(self) -> int | None:
        """Channels of a soft token (soft), else None."""
        return self.net.latent_channels

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) token grid of an H x W frame; H and W must be multiples of `downsample`."""
        f = self.downsample
        if height % f or width % f:
            raise ValueError(
                f"frame size {height}x{width} is not a multiple of the tokenizer's "
                f"downsampling factor {f}"
            )
        return height // f, width // f

    @property
    def fingerprint(self) -> str:
        """sha256 of config and weights; recomputed only when a weight changed (tensor versions)."""
        tensors = list(self._tensors())
        key = tuple((name, t.data_ptr(), t._version) for name, t in tensors)
        if key != self._fingerprint_key:
            self._fingerprint = fingerprint_of(self.config, iter(tensors))
            self._fingerprint_key = key
        return self._fingerprint

    def _tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        if isinstance(self.net, nn.Module):
            yield from self.net.state_dict(keep_vars=True).items()
        if self._extra_fingerprint is not None:
            yield from self._extra_fingerprint()

    # -- inference --------------------------------------------------------------------------
    def _autocast(self):
        # bf16 on GPU (the reference tokenizers run in bf16); CPU stays float32 for exactness.
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _as_tensor(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(array, np.ndarray):
            array = torch.from_numpy(np.ascontiguousarray(array))
        return array.to(self.device, non_blocking=True)

    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [N,H,W,3] -> tokens (vq: int32 [N,h,w]; soft: float32 [N,C,h,w]) on `device`."""
        if not _is_uint8(frames) or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"encode expects uint8 frames [N,H,W,3], got {frames.dtype} {list(frames.shape)}"
            )
        self.token_grid(int(frames.shape[1]), int(frames.shape[2]))
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, frames.shape[0], self.batch_size):
                chunk = self._as_tensor(frames[start : start + self.batch_size])
                tokens = self.net.encode_images(frames_to_images(chunk))
                out.append(tokens.to(torch.int32 if self.kind == "vq" else torch.float32))
        return torch.cat(out) if out else self._empty_tokens(frames.shape)

    def decode(self, tokens: np.ndarray | torch.Tensor) -> torch.Tensor:
        """tokens (as `encode` returns them) -> uint8 frames [N,H,W,3] on `device`."""
        expected = 3 if self.kind == "vq" else 4
        if tokens.ndim != expected:
            raise ValueError(
                f"decode expects {self.kind} tokens with {expected} dims, got {list(tokens.shape)}"
            )
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, tokens.shape[0], self.batch_size):
                chunk = self._as_tensor(tokens[start : start + self.batch_size])
                chunk = chunk.long() if self.kind == "vq" else chunk.float()
                out.append(images_to_frames(self.net.decode_tokens(chunk)))
        if not out:
            h, w = tokens.shape[-2:]
            f = self.downsample
            return torch.zeros((0, h * f, w * f, 3), dtype=torch.uint8, device=self.device)
        return torch.cat(out)

    def reconstruct(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """decode(encode(frames)): what a model trained on these tokens can at best reproduce."""
        return self.decode(self.encode(frames))

    def _empty_tokens(self, shape: tuple[int, ...]) -> torch.Tensor:
        h, w = self.token_grid(int(shape[1]), int(shape[2]))
        if self.kind == "vq":
            return torch.zeros((0, h, w), dtype=torch.int32, device=self.device)
        channels = self.latent_channels or 0
        return torch.zeros((0, channels, h, w), dtype=torch.float32, device=self.device)

    def describe(self) -> str:
        size = f"vocab {self.vocab_size}" if self.kind == "vq" else f"{self.latent_channels} ch"
        return (
            f"{self.config.get('arch', '?')} tokenizer ({self.kind}, /{self.downsample}, {size}), "
            f"fingerprint {self.fingerprint[:12]}"
        )
