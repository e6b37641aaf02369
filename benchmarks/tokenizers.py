"""Tokenizer throughput: encode and decode frames/s per kind and size, and the overhead share.

For each tokenizer (FSQ = vq, KL = soft; the chosen preset with its initial weights, since speed
does not depend on weight values) and each frame size, uint8 numpy frames go through
`Tokenizer.encode` and tokens through `Tokenizer.decode`. The network's own calls
(`encode_images` / `decode_tokens`) are timed separately, so

    overhead = 1 - network time / total time

is the share spent outside the forward pass: uint8 <-> float conversion, batching, device
transfer, concatenation (target < 10%). Absolute numbers drift on a shared machine.

    python -m benchmarks.tokenizers [--preset small] [--sizes 64 256] [--frames 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from hma.tokenize import build_tokenizer
from hma.tokenize.presets import PRESETS


class NetTimer:
    """Wraps a net method; accumulates the seconds spent inside it (synchronising CUDA)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device):
        self.fn, self.device, self.seconds = fn, device, 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._sync()
        start = time.perf_counter()
        out = self.fn(x)
        self._sync()
        self.seconds += time.perf_counter() - start
        return out


def measure(arch: str, preset: str, size: int, n: int, device: str, batch: int) -> dict:
    tok = build_tokenizer(PRESETS[arch](preset), device=device, batch_size=batch)
    frames = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    tok.encode(frames[:batch])  # warm-up: allocator, kernels, autocast caches
    enc = NetTimer(tok.net.encode_images, tok.device)
    dec = NetTimer(tok.net.decode_tokens, tok.device)
    tok.net.encode_images, tok.net.decode_tokens = enc, dec
    start = time.perf_counter()
    tokens = tok.encode(frames)
    if tok.device.type == "cuda":
        torch.cuda.synchronize()
    enc_total = time.perf_counter() - start
    start = time.perf_counter()
    tok.decode(tokens).cpu()
    dec_total = time.perf_counter() - start
    return {
        "tokenizer": f"{arch} ({tok.kind})",
        "size": size,
        "encode_fps": n / enc_total,
        "decode_fps": n / dec_total,
        "encode_overhead": 1 - enc.seconds / enc_total,
        "decode_overhead": 1 - dec.seconds / dec_total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--frames", type=int, default=256, help="frames per measurement")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"preset {args.preset}, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'tokenizer':<12}{'size':>6}{'enc f/s':>10}{'dec f/s':>10}{'enc ovh':>9}{'dec ovh':>9}")
    for arch in PRESETS:
        for size in args.sizes:
            n = max(args.batch, args.frames * 64 * 64 // (size * size))  # similar pixels per size
            r = measure(arch, args.preset, size, n, args.device, args.batch)
            print(
                f"{r['tokenizer']:<12}{size:>6}{r['encode_fps']:>10.0f}{r['decode_fps']:>10.0f}"
                f"{r['encode_overhead']:>9.1%}{r['decode_overhead']:>9.1%}"
            )


if __name__ == "__main__":
    main()
