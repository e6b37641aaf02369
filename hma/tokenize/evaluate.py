"""`hma tokenizer eval`: reconstruction PSNR and SSIM per dataset on held-out episodes, plus grids.

    val frames ──Ray Data──▶ ReconstructionScorer (actor pool; tokenizer loaded once per actor)
               ──per-frame psnr, ssim──▶ driver: means per dataset
    a few frames per dataset ──driver──▶ grid_<dataset>.png (originals over reconstructions)

Scores are means of per-frame values (PSNR in dB on 0-255 pixels; SSIM per metrics.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hma import storage
from hma.frames import PNG_GAP, video_grid
from hma.tokenize.base import Tokenizer
from hma.tokenize.checkpoint import load_tokenizer
from hma.tokenize.data import DataConfig, frame_dataset
from hma.tokenize.metrics import psnr, ssim

GRID_CANDIDATE_STRIDE = 5  # consider every 5th val frame for the grid: spread over episodes


@dataclass
class DatasetScore:
    dataset: str
    frames: int = 0
    psnr: float = 0.0
    ssim: float = 0.0
    grid: str | None = None


@dataclass
class EvalSummary:
    checkpoint: str
    fingerprint: str
    split: str
    datasets: dict[str, DatasetScore] = field(default_factory=dict)
    grid: str | None = None

    def lines(self) -> list[str]:
        out = [f"{self.checkpoint} (fingerprint {self.fingerprint[:12]}), split {self.split}"]
        out.append(f"{'dataset':<22}{'frames':>8}{'PSNR dB':>10}{'SSIM':>8}")
        for s in self.datasets.values():
            out.append(f"{s.dataset:<22}{s.frames:>8}{s.psnr:>10.2f}{s.ssim:>8.4f}")
        if self.grid:
            out.append(f"grids: {self.grid} (and grid_<dataset>.png beside it)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ReconstructionScorer:
    """Ray Data callable class: loads the tokenizer once, scores batches of frame rows."""

    def __init__(self, checkpoint: str, device: str, batch_size: int):
        self.tokenizer = load_tokenizer(checkpoint, device=device, batch_size=batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        frames = batch["frame"]  # (B, H, W, 3) uint8
        recon = self.tokenizer.reconstruct(frames).cpu()
        return {
            "dataset": batch["dataset"],
            "psnr": psnr(frames, recon).numpy(),
            "ssim": ssim(frames, recon).numpy(),
        }


def evaluate(
    checkpoint: str,
    data: DataConfig,
    out: str | None = None,
    split: str = "val",
    grid_frames: int = 8,
    workers: int = 1,
    device: str = "cpu",
    batch_size: int = 64,
) -> EvalSummary:
    """Score `checkpoint` on the `split` frames of `data`; write grids + scores.json to `out`."""
    from ray.data import ActorPoolStrategy

    tokenizer = load_tokenizer(checkpoint, device=device, batch_size=batch_size)
    frames = frame_dataset(data, split)
    scores = frames.map_batches(
        ReconstructionScorer,
        fn_constructor_kwargs={
            "checkpoint": checkpoint,
            "device": device,
            "batch_size": batch_size,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=workers),
    )
    summary = EvalSummary(checkpoint, tokenizer.fingerprint, split)
    for batch in scores.iter_batches(batch_format="numpy", batch_size=None):
        for name, p, s in zip(batch["dataset"], batch["psnr"], batch["ssim"], strict=True):
            score = summary.datasets.setdefault(str(name), DatasetScore(str(name)))
            score.frames += 1
            score.psnr += float(p)
            score.ssim += float(s)
    for score in summary.datasets.values():
        score.psnr /= score.frames
        score.ssim /= score.frames
    summary.datasets = dict(sorted(summary.datasets.items()))
    if out:
        storage.makedirs(out)
        _write_grids(tokenizer, frames, summary, out, grid_frames)
        with storage.open_file(storage.join(out, "scores.json"), "w") as f:
            json.dump(summary.to_dict(), f, indent=2)
    return summary


def _grid_samples(frames, grid_frames: int) -> dict[str, np.ndarray]:
    """Up to `grid_frames` frames per dataset, evenly spread over the split's frames."""
    candidates: dict[str, list[np.ndarray]] = {}
    seen: dict[str, int] = {}
    for batch in frames.iter_batches(batch_format="numpy", batch_size=None):
        for frame, name in zip(batch["frame"], batch["dataset"], strict=True):
            i = seen.get(str(name), 0)
            seen[str(name)] = i + 1
            if i % GRID_CANDIDATE_STRIDE == 0:
                candidates.setdefault(str(name), []).append(frame)
    out = {}
    for name, pool in candidates.items():
        picks = np.linspace(0, len(pool) - 1, min(grid_frames, len(pool))).round().astype(int)
        out[name] = np.stack([pool[i] for i in picks])
    return out


def _write_grids(
    tokenizer: Tokenizer, frames, summary: EvalSummary, out: str, grid_frames: int
) -> None:
    grids = []
    for name, originals in _grid_samples(frames, grid_frames).items():
        image = video_grid([originals, tokenizer.reconstruct(originals).cpu().numpy()])
        url = storage.join(out, f"grid_{name}.png")
        storage.write_png(image, url)
        if name in summary.datasets:
            summary.datasets[name].grid = url
        grids.append(image)
    if grids:
        width = max(g.shape[1] for g in grids)
        padded = [
            np.pad(g, ((0, 2 * PNG_GAP), (0, width - g.shape[1]), (0, 0)), constant_values=255)
            for g in grids
        ]
        summary.grid = storage.join(out, "grid.png")
        storage.write_png(np.concatenate(padded), summary.grid)
