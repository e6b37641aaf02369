"""Frame arrays (uint8 [T,H,W,3]) shared by every stage; numpy and PIL only, no torch, so the
Ray Data decode workers stay light."""

from __future__ import annotations

import numpy as np
from PIL import Image

PNG_GAP = 2  # white pixels between the frames and rows of a video_grid image


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


def video_grid(videos: list[np.ndarray]) -> np.ndarray:
    """uint8 videos [T,Hp,Wp,3] (one T) -> one image, a video per row, frames left to right."""
    t, hp, wp, _ = videos[0].shape
    rows = len(videos)
    image = np.full(
        (rows * hp + (rows - 1) * PNG_GAP, t * wp + (t - 1) * PNG_GAP, 3), 255, np.uint8
    )
    for r, video in enumerate(videos):
        for f in range(t):
            y, x = r * (hp + PNG_GAP), f * (wp + PNG_GAP)
            image[y : y + hp, x : x + wp] = video[f]
    return image
