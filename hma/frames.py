"""Frame arrays (uint8 [T,H,W,3]) shared by every stage; numpy and PIL only, no torch, so the
Ray Data decode workers stay light."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [T,H,W,3] -> uint8 [T,h,w,3]; a no-op when the size already matches."""
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    out = np.empty((len(frames), h, w, 3), np.uint8)
    for t, frame in enumerate(frames):
        # PIL's bilinear filter is antialiased when shrinking (area-weighted support).
        out[t] = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BILINEAR))
    return out
