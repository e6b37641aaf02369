"""Small image networks on robot frames, shared by the success classifier and visuomotor policies.

    N frames, H x W pixels (any size), R the network's input size, C conv widths

Frames enter as uint8 [N,H,W,3] from any source (an env, a dataset, a world model's decoder)
and are area-resized to R x R, so a policy or classifier sees the same preprocessing in the
ground-truth simulator and in the learned one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

UINT8_MAX = 255.0


def as_inputs(frames: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N,H,W,3] -> float32 [N,3,R,R] in [0, 1] (area resize: no aliasing when shrinking)."""
    if isinstance(frames, np.ndarray):
        contiguous = np.ascontiguousarray(frames)
        # torch cannot share a read-only buffer (e.g. a frame held by a simulator): copy it
        frames = torch.from_numpy(contiguous if contiguous.flags.writeable else contiguous.copy())
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [N,H,W,3], got {frames.dtype} {list(frames.shape)}")
    x = frames.permute(0, 3, 1, 2).float() / UINT8_MAX  # [N,3,H,W]
    if tuple(x.shape[2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")  # [N,3,R,R]
    return x


def resize_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N,H,W,3] -> uint8 [N,R,R,3]: how training frames are held in memory."""
    x = as_inputs(frames, size).mul(UINT8_MAX).round().clamp(0, UINT8_MAX)
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()  # [N,R,R,3]


def random_shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation of a batch [N,3,R,R] by up to `pixels` (edge padding), as DrQ and
    robomimic augment: generated frames are not pixel-aligned with real ones."""
    if pixels == 0:
        return x
    r = x.shape[-1]
    padded = F.pad(x, (pixels,) * 4, mode="replicate")  # [N,3,R+2p,R+2p]
    dy, dx = torch.randint(0, 2 * pixels + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + r, dx : dx + r]


class ConvEncoder(nn.Module):
    """Conv(3x3, stride 2) + GroupNorm + ReLU per width, flattened without pooling: what matters
    in a robot frame is often *where* something is, which a global average pool would discard."""

    def __init__(self, widths: tuple[int, ...], image_size: int):
        super().__init__()
        self.widths, self.image_size = tuple(widths), image_size
        layers: list[nn.Module] = []
        c, side = 3, image_size
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.GroupNorm(1, w), nn.ReLU()]
            c, side = w, (side + 1) // 2
        self.features = nn.Sequential(*layers)
        self.out_dim = c * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N,3,R,R] in [0,1] -> [N, out_dim]."""
        return self.features(x * 2 - 1).flatten(1)  # [N,C*r*r]
