"""PSNR and SSIM on uint8 frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hma.tokenize.metrics import PSNR_CAP_DB, psnr, ssim


def test_psnr_known_values(frames):
    assert psnr(frames, frames).tolist() == [PSNR_CAP_DB] * len(frames)
    shifted = np.clip(frames.astype(np.int16) + 4, 0, 255).astype(np.uint8)
    exact = np.mean((shifted.astype(np.float64) - frames) ** 2, axis=(1, 2, 3))
    assert psnr(frames, shifted).numpy() == pytest.approx(10 * np.log10(255**2 / exact), rel=1e-5)
    # an error of 1 everywhere: 20 log10(255) = 48.13 dB
    ones = np.zeros((1, 16, 16, 3), np.uint8)
    assert float(psnr(ones, ones + 1)[0]) == pytest.approx(20 * math.log10(255), abs=1e-4)


def test_ssim_orders_distortions(frames):
    rng = np.random.default_rng(0)
    assert ssim(frames, frames).numpy() == pytest.approx(1.0, abs=1e-5)
    mild, strong = (
        np.clip(frames + rng.normal(0, s, frames.shape), 0, 255).astype(np.uint8) for s in (4, 40)
    )
    a, b = ssim(frames, mild), ssim(frames, strong)
    assert (a < 1).all() and (b < a).all()
    assert ssim(mild, frames).numpy() == pytest.approx(a.numpy(), abs=1e-5)  # symmetric
    with pytest.raises(ValueError, match="at least 11 px"):
        ssim(frames[:, :8, :8], frames[:, :8, :8])
