"""Image reconstruction metrics on uint8 frames: PSNR and SSIM, one value per frame.

    N frames, H x W pixels, frames uint8 [N,H,W,3] (numpy or torch, any device)

SSIM follows Wang et al. 2004 ("Image quality assessment: from error visibility to structural
similarity"): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, computed per colour
channel over the valid region and averaged. PSNR uses a data range of 255.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DATA_RANGE = 255.0
PSNR_CAP_DB = 100.0  # identical frames: report a finite ceiling instead of inf


@dataclass(frozen=True)
class SSIMConfig:
    window: int = 11
    sigma: float = 1.5
    k1: float = 0.01
    k2: float = 0.03


def _as_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    return frames.float()


def psnr(reference: np.ndarray | torch.Tensor, other: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB: float32 [N]."""
    a, b = _as_float(reference), _as_float(other).to(_as_float(reference).device)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {list(a.shape)} vs {list(b.shape)}")
    mse = (a - b).pow(2).flatten(1).mean(dim=1)  # (N,)
    db = 10 * torch.log10(DATA_RANGE**2 / mse.clamp_min(1e-12))
    return db.clamp_max(PSNR_CAP_DB)


def _gaussian_window(config: SSIMConfig, channels: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(config.window, dtype=torch.float32, device=device) - config.window // 2
    g = torch.exp(-(coords**2) / (2 * config.sigma**2))
    g = g / g.sum()
    window = torch.outer(g, g)  # (k, k)
    return window.expand(channels, 1, config.window, config.window).contiguous()  # (3, 1, k, k)


def ssim(
    reference: np.ndarray | torch.Tensor,
    other: np.ndarray | torch.Tensor,
    config: SSIMConfig | None = None,
) -> torch.Tensor:
    """Per-frame SSIM in [-1, 1]: float32 [N]. Frames must be at least `window` pixels wide."""
    config = config or SSIMConfig()
    a = _as_float(reference)
    b = _as_float(other).to(a.device)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {list(a.shape)} vs {list(b.shape)}")
    if min(a.shape[1], a.shape[2]) < config.window:
        raise ValueError(f"SSIM needs frames of at least {config.window} px, got {list(a.shape)}")
    x = a.permute(0, 3, 1, 2)  # (N, 3, H, W)
    y = b.permute(0, 3, 1, 2)
    window = _gaussian_window(config, x.shape[1], x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=x.shape[1])  # (N, 3, H-k+1, W-k+1)

    c1 = (config.k1 * DATA_RANGE) ** 2
    c2 = (config.k2 * DATA_RANGE) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(dim=1)
