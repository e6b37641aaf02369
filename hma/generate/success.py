"""A small image classifier that tells success frames from the rest, for the learned simulator.

    N frames, H x W pixels (any size), R = config.image_size, C conv widths

The world model predicts video only, so a learned simulator needs another judge of success: this
CNN, trained on real episodes' success labels (any episode source), scores generated frames.
Labels come from episode outcomes, not per-frame annotations: the last `positive_tail` frames of a
successful episode are success frames (our envs end an episode once the task has held solved for
a few steps, so those frames show the solved scene); frames of failed episodes and the leading
`negative_head` share of a successful episode are not; the rest of a successful episode (the task
being solved) is left out as ambiguous. An episode counts as a success once `hold` consecutive
frames score above `threshold` (one spurious frame does not make a success). Frame labels are
a proxy for the outcome that matters, so `threshold` and `hold` are then calibrated on held-out
episodes: the pair that judges their outcomes best (balanced over successes and failures, which
near-misses of a weak policy make the hard case).

Checkpoints: <dir>/success.safetensors (weights) and <dir>/success.json (config, dataset,
fingerprint, training summary; written last, so a directory without it is unfinished).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from hma import checkpoint, storage
from hma.checkpoint import CheckpointError
from hma.config import StrictModel
from hma.episodes import Episode, judged_frames, load_registry
from hma.errors import HmaError
from hma.vision import ConvEncoder, as_inputs, random_shift, resize_uint8

FORMAT = "hma-success"
VERSION = 1
WEIGHTS_FILE = "success.safetensors"
META_FILE = "success.json"
SUCCESS_DIR = "success"  # the classifier's default place inside a world-model checkpoint


LAYOUT = checkpoint.Layout("success classifier", FORMAT, VERSION, WEIGHTS_FILE, META_FILE)
IDENTITY = ("config", "dataset")  # what the fingerprint covers besides the weights


class SuccessModelError(HmaError, ValueError):
    """A success classifier is missing, damaged, or cannot be trained on the given episodes."""


class SuccessConfig(StrictModel):
    image_size: int = Field(64, ge=16, description="frames are resized to R x R before the CNN")
    widths: tuple[int, ...] = Field((16, 32, 64), min_length=1, description="conv widths, stride 2")
    positive_tail: int = Field(4, ge=1, description="last frames of a success labelled positive")
    negative_head: float = Field(
        0.5, ge=0, le=1, description="leading share of a success's frames labelled negative"
    )
    frames_per_episode: int = Field(
        64, ge=1, description="negatives drawn per episode (bounds memory on large sources)"
    )
    steps: int = Field(800, ge=1, description="optimiser steps")
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0)
    shift: int = Field(4, ge=0, description="random translation augmentation, pixels at R")
    threshold: float = Field(
        0.5, gt=0, lt=1, description="probability above which a frame succeeds"
    )
    hold: int = Field(
        2, ge=1, description="consecutive success frames that make an episode succeed"
    )
    calibrate: bool = Field(
        True,
        description="after training, set threshold and hold to the pair that judges the held-out "
        "(val-split) episodes best (balanced accuracy), when they hold successes and failures",
    )
    seed: int = 0


class SuccessNet(nn.Module):
    """The shared conv encoder (hma.vision), then one linear layer over the whole feature map:
    success is often *where* something is (a cube above the table)."""

    def __init__(self, widths: tuple[int, ...], image_size: int):
        super().__init__()
        self.widths, self.image_size = tuple(widths), image_size
        self.encoder = ConvEncoder(widths, image_size)
        self.logit = nn.Linear(self.encoder.out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N,3,R,R] in [0,1] -> logits [N]."""
        return self.logit(self.encoder(x))[:, 0]


def first_success(probs: np.ndarray, threshold: float, hold: int) -> int | None:
    """Index of the first frame at which `hold` consecutive probabilities have exceeded
    `threshold` (the frame that completes the run), or None if that never happens."""
    run = 0
    for i, p in enumerate(np.asarray(probs, dtype=np.float64)):
        run = run + 1 if p > threshold else 0
        if run >= hold:
            return i
    return None


def episode_success(probs: np.ndarray, threshold: float, hold: int) -> bool:
    """True once `hold` consecutive frame probabilities exceed `threshold`."""
    return first_success(probs, threshold, hold) is not None


class SuccessClassifier:
    """A trained SuccessNet with its config and the dataset whose frames it judges."""

    def __init__(
        self,
        net: SuccessNet,
        config: SuccessConfig,
        dataset: str,
        summary: dict[str, Any] | None = None,
    ):
        if (net.widths, net.image_size) != (tuple(config.widths), config.image_size):
            raise ValueError(
                f"net (widths {net.widths}, input {net.image_size}) differs from the config "
                f"(widths {config.widths}, input {config.image_size})"
            )
        self.net = net.eval()
        self.config = config
        self.dataset = dataset
        self.summary = summary or {}

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def fingerprint(self) -> str:
        record = {"config": self.config.model_dump(mode="json"), "dataset": self.dataset}
        return checkpoint.fingerprint_of(record, iter(self.net.state_dict().items()))

    @torch.no_grad()
    def predict(self, frames: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """uint8 frames [N,H,W,3] (any size) -> success probabilities float32 [N]."""
        out = []
        for start in range(0, len(frames), batch_size):
            x = as_inputs(frames[start : start + batch_size], self.config.image_size)
            out.append(torch.sigmoid(self.net(x.to(self.device))).cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    def episode_success(self, probs: np.ndarray) -> bool:
        return episode_success(probs, self.config.threshold, self.config.hold)

    def first_success(self, probs: np.ndarray) -> int | None:
        return first_success(probs, self.config.threshold, self.config.hold)

    def save(self, url: str) -> str:
        identity = {"config": self.config.model_dump(mode="json"), "dataset": self.dataset}
        checkpoint.save_module(
            url, LAYOUT, self.net.state_dict(), identity, {"summary": self.summary}
        )
        return url

    @classmethod
    def load(cls, url: str, device: str | torch.device = "cpu") -> SuccessClassifier:
        try:
            record, tensors = checkpoint.load_module(url, LAYOUT, IDENTITY)
        except CheckpointError as e:
            raise SuccessModelError(str(e)) from None
        config = SuccessConfig.model_validate(record["config"])
        net = SuccessNet(config.widths, config.image_size)
        checkpoint.check_tensors(
            net.state_dict(), tensors, storage.join(url, WEIGHTS_FILE), "the config"
        )
        net.load_state_dict(tensors)
        return cls(net.to(device), config, record["dataset"], record.get("summary"))


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class LabelledFrames:
    frames: np.ndarray  # uint8 [M,R,R,3]
    labels: np.ndarray  # float32 [M], 1 = success frame
    val: np.ndarray  # bool [M], from a val-split episode


@dataclass
class SuccessSummary:
    dataset: str
    episodes: int
    successes: int
    frames: int
    positives: int
    train_accuracy: float
    val_accuracy: float | None  # frames of val-split episodes
    val_episode_accuracy: float | None  # episode outcome (hold rule) vs label, val episodes
    val_episode_balanced: float | None  # the same, balanced over successes and failures
    threshold: float  # the decision rule in use (calibrated on the val episodes if asked)
    hold: int
    seconds: float

    def lines(self) -> list[str]:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.0%}"

        return [
            f"success classifier for {self.dataset}: {self.episodes} episodes "
            f"({self.successes} successful), {self.frames} labelled frames ({self.positives} "
            f"positive), {self.seconds:.0f}s",
            f"  frame accuracy: train {pct(self.train_accuracy)}, val {pct(self.val_accuracy)}; "
            f"val episode outcome accuracy {pct(self.val_episode_accuracy)} (balanced "
            f"{pct(self.val_episode_balanced)}) with threshold {self.threshold:.2f}, hold "
            f"{self.hold}",
        ]


def label_episode(
    ep: Episode, config: SuccessConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices, labels) for one episode with a known outcome."""
    t = len(ep)
    if ep.success:
        tail = min(config.positive_tail, t)
        positives = np.arange(t - tail, t)
        head = np.arange(int(t * config.negative_head))
        head = head[head < t - tail]
    else:
        positives, head = np.zeros(0, np.int64), np.arange(t)
    if len(head) > config.frames_per_episode:
        head = np.sort(rng.choice(head, config.frames_per_episode, replace=False))
    index = np.concatenate([head, positives]).astype(np.int64)
    labels = np.concatenate([np.zeros(len(head)), np.ones(len(positives))]).astype(np.float32)
    return index, labels


def train_success(
    episodes: Iterable[Episode],
    config: SuccessConfig | None = None,
    dataset: str | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[SuccessClassifier, SuccessSummary]:
    """Train on `episodes` (one dataset; those with unknown outcome are skipped).

    `transform` maps uint8 frames [N,H,W,3] to what the classifier will see at test time, e.g. a
    tokenizer round trip so that real training frames look like a world model's decoded ones."""
    config = config or SuccessConfig()
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    frames, labels, val = [], [], []
    val_episodes: list[tuple[np.ndarray, bool]] = []
    counted = successes = 0
    stride: int | None = None  # the dataset's frame stride (registry), for the episode check
    for ep in episodes:
        if ep.success is None:
            continue
        if dataset is None:
            dataset = ep.dataset
        elif ep.dataset != dataset:
            raise SuccessModelError(
                f"episode {ep.episode_id!r} is from dataset {ep.dataset!r}, expected {dataset!r}: "
                "train one classifier per dataset"
            )
        if stride is None:
            spec = load_registry().datasets.get(dataset)
            stride = spec.stride if spec else 1
        counted += 1
        successes += bool(ep.success)
        index, lab = label_episode(ep, config, rng)
        picked = ep.frames[index] if transform is None else transform(ep.frames[index])
        frames.append(resize_uint8(picked, config.image_size))
        labels.append(lab)
        val.append(np.full(len(index), ep.split == "val"))
        if ep.split == "val":  # judged on kept frames, as the learned simulator produces them
            kept = judged_frames(ep.frames, stride) if stride < len(ep) else ep.frames[-1:]
            kept = kept if transform is None else transform(kept)
            val_episodes.append((resize_uint8(kept, config.image_size), bool(ep.success)))
    if not counted:
        raise SuccessModelError("no episodes with a known success label to train on")
    data = LabelledFrames(np.concatenate(frames), np.concatenate(labels), np.concatenate(val))
    positives = int(data.labels.sum())
    if positives == 0 or positives == len(data.labels):
        raise SuccessModelError(
            f"dataset {dataset!r}: {counted} episodes give only "
            f"{'positive' if positives else 'negative'} frames; need both successful and failed "
            "episodes"
        )
    net = _fit(data, config, device)
    model = SuccessClassifier(net, config, str(dataset))
    val_probs = [model.predict(frames) for frames, _ in val_episodes]
    val_labels = [outcome for _, outcome in val_episodes]
    if config.calibrate:
        model.config = calibrate(config, val_probs, val_labels)
    judged = [model.episode_success(p) for p in val_probs]
    summary = SuccessSummary(
        dataset=str(dataset),
        episodes=counted,
        successes=successes,
        frames=len(data.labels),
        positives=positives,
        train_accuracy=_accuracy(model, data, ~data.val) or 0.0,
        val_accuracy=_accuracy(model, data, data.val),
        val_episode_accuracy=(
            float(np.mean([j == y for j, y in zip(judged, val_labels, strict=True)]))
            if val_episodes
            else None
        ),
        val_episode_balanced=balanced_accuracy(judged, val_labels) if val_episodes else None,
        threshold=model.config.threshold,
        hold=model.config.hold,
        seconds=time.perf_counter() - start,
    )
    model.summary = asdict(summary)
    return model, summary


# candidate decision rules for calibration: probability thresholds x consecutive frames
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(2, 20))
HOLDS = (1, 2, 3, 4)


def balanced_accuracy(judged: list[bool], labels: list[bool]) -> float:
    """Mean of the true-positive and true-negative rates (a class that is absent is skipped)."""
    rates = [
        float(np.mean([j == want for j, y in zip(judged, labels, strict=True) if y == want]))
        for want in (True, False)
        if want in labels
    ]
    return float(np.mean(rates))


def calibrate(config: SuccessConfig, probs: list[np.ndarray], labels: list[bool]) -> SuccessConfig:
    """`config` with the (threshold, hold) that judges held-out episodes (their frame
    probabilities, their outcomes) best by balanced accuracy; the configured pair wins ties, then
    the nearest to it. Unchanged when the episodes lack successes or failures (nothing to
    balance)."""
    if len(set(labels)) < 2:
        return config

    def score(rule: tuple[float, int]) -> tuple[float, float]:
        judged = [episode_success(p, *rule) for p in probs]
        near = abs(rule[0] - config.threshold) + abs(rule[1] - config.hold)
        return balanced_accuracy(judged, labels), -near

    best = max(
        [(config.threshold, config.hold)] + [(t, h) for t in THRESHOLDS for h in HOLDS], key=score
    )
    return config.model_copy(update={"threshold": best[0], "hold": best[1]})


def _accuracy(model: SuccessClassifier, data: LabelledFrames, rows: np.ndarray) -> float | None:
    if not rows.any():
        return None
    predicted = model.predict(data.frames[rows]) > model.config.threshold
    return float((predicted == (data.labels[rows] > 0.5)).mean())


def _fit(data: LabelledFrames, config: SuccessConfig, device: str | torch.device) -> SuccessNet:
    torch_gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        net = SuccessNet(config.widths, config.image_size).to(device)
    train = np.flatnonzero(~data.val)
    if len(train) == 0:  # a source with only val episodes: train on them rather than nothing
        train = np.arange(len(data.labels))
    x_all = as_inputs(data.frames[train], config.image_size)  # [M,3,R,R]
    y_all = torch.from_numpy(data.labels[train])
    # balanced batches (half success frames): successes are the rare frames in most sources
    pos, neg = torch.nonzero(y_all > 0.5)[:, 0], torch.nonzero(y_all <= 0.5)[:, 0]
    half = config.batch_size // 2
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr)
    net.train()
    for _ in range(config.steps):
        rows = torch.cat(
            [
                pos[torch.randint(0, len(pos), (half,), generator=torch_gen)],
                neg[torch.randint(0, len(neg), (config.batch_size - half,), generator=torch_gen)],
            ]
        )
        x = random_shift(x_all[rows], config.shift, torch_gen).to(device)
        loss = F.binary_cross_entropy_with_logits(net(x), y_all[rows].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def tokenizer_round_trip(world_model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """frames -> the world model's tokenizer reconstruction of them (at its frame size)."""

    def transform(frames: np.ndarray) -> np.ndarray:
        tokens = world_model.encode(frames)
        return world_model.tokenizer.decode(tokens).cpu().numpy()

    return transform
