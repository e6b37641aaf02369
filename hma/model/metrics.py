"""World-model metrics: perplexity (vq tokens), PSNR/SSIM on decoded frames, controllability.

    B rollouts, T frames (T0 prompt frames + H generated), h x w token grid, C latent channels,
    K vocabulary, A_max flattened action width, Hp x Wp pixels

Controllability follows the paper (Wang et al. 2025, after IRASim): Delta-PSNR = PSNR of a rollout
driven by the true actions minus the mean PSNR of rollouts driven by random actions, both against
the same reference frames. A model that ignores its actions scores ~0; a higher score means the
actions steer the video. Random actions are N(0, 1) in the normalised action space the model sees.

Everything here is written against a `rollout_fn` and a `Tokenizer`, so it scores any model (HMA
with either head, the DiT baseline, or a hand-written function in a test).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hma.tokenize.base import Tokenizer
from hma.tokenize.metrics import psnr, ssim

__all__ = [
    "ControllabilityResult",
    "controllability",
    "decode_video",
    "model_rollout_fn",
    "perplexity",
    "perplexity_from_nll",
    "psnr",
    "ssim",
    "video_psnr",
    "video_ssim",
]

RolloutFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
"""(prompt tokens [B,T0,...], actions [B,H,A_max], generator) -> tokens [B,T0+H,...]."""


def model_rollout_fn(
    model: Any, datasets: Sequence[str] | None = None, **rollout_kwargs: Any
) -> RolloutFn:
    """A `rollout_fn` for an HMA model (forward mode): horizon = the number of actions given.

    `rollout_kwargs` go to `model.rollout` (steps, temperature, top_k, ...).
    """

    def rollout_fn(
        prompts: torch.Tensor, actions: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        out = model.rollout(
            prompts,
            actions,
            datasets=datasets,
            horizon=actions.shape[1],
            generator=generator,
            **rollout_kwargs,
        )
        return out.tokens

    return rollout_fn


def perplexity_from_nll(nll: torch.Tensor | float) -> float:
    """exp(mean negative log-likelihood in nats); accepts one value or per-token values."""
    mean = torch.as_tensor(nll, dtype=torch.float64).mean()
    return float(mean.exp())


def perplexity(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """Perplexity of integer `targets` [...] under `logits` [...,K], over `mask` (True = scored).

    exp of the mean cross-entropy: uniform logits over K codes give exactly K.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {list(logits.shape)} must be targets {list(targets.shape)} plus a vocab dim"
        )
    nll = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).double(),  # (N, K)
        targets.reshape(-1).long(),  # (N,)
        reduction="none",
    )
    if mask is not None:
        if mask.shape != targets.shape:
            raise ValueError(f"mask {list(mask.shape)} must match targets {list(targets.shape)}")
        nll = nll[mask.reshape(-1).bool()]
        if nll.numel() == 0:
            raise ValueError("perplexity over an empty mask")
    return perplexity_from_nll(nll)


def decode_video(tokenizer: Tokenizer, tokens: torch.Tensor) -> torch.Tensor:
    """Tokens vq [B,T,h,w] | soft [B,T,C,h,w] -> uint8 frames [B,T,Hp,Wp,3]."""
    per_frame = 2 if tokenizer.kind == "vq" else 3
    if tokens.ndim != 2 + per_frame:
        raise ValueError(
            f"{tokenizer.kind} video tokens must have {2 + per_frame} dims [B,T,...], "
            f"got {list(tokens.shape)}"
        )
    b, t = tokens.shape[:2]
    frames = tokenizer.decode(tokens.reshape(b * t, *tokens.shape[2:]))  # (B*T, Hp, Wp, 3)
    return frames.reshape(b, t, *frames.shape[1:])  # (B, T, Hp, Wp, 3)


def _frames(reference: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if reference.shape != other.shape or reference.ndim != 5:
        raise ValueError(
            f"videos must both be uint8 [B,T,Hp,Wp,3], got {list(reference.shape)} and "
            f"{list(other.shape)}"
        )
    return reference.flatten(0, 1), other.flatten(0, 1)  # (B*T, Hp, Wp, 3)


def video_psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Mean per-frame PSNR (dB) of two uint8 videos [B,T,Hp,Wp,3]."""
    return float(psnr(*_frames(reference, other)).mean())


def video_ssim(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Mean per-frame SSIM of two uint8 videos [B,T,Hp,Wp,3]."""
    return float(ssim(*_frames(reference, other)).mean())


@dataclass(frozen=True)
class ControllabilityResult:
    """Per rollout, the mean PSNR (dB) over its generated frames: with the true actions [B], and
    per random-action trial [K][B]; every figure is derived from these."""

    rollout_true: tuple[float, ...]
    rollout_random: tuple[tuple[float, ...], ...]

    @property
    def psnr_true(self) -> float:
        """dB, the rollouts with the true actions."""
        return float(np.mean(self.rollout_true))

    @property
    def psnr_random(self) -> tuple[float, ...]:
        """dB, one per random-action trial."""
        return tuple(float(np.mean(r)) for r in self.rollout_random)

    @property
    def delta_psnr(self) -> float:
        """psnr_true - mean(psnr_random)."""
        return self.psnr_true - sum(self.psnr_random) / len(self.psnr_random)

    @property
    def rollout_delta(self) -> np.ndarray:
        """ΔPSNR of each rollout, float [B]; its mean is delta_psnr."""
        return np.asarray(self.rollout_true) - np.asarray(self.rollout_random).mean(axis=0)

    @property
    def delta_psnr_se(self) -> float | None:
        """Standard error of delta_psnr over the rollouts (None from one: no spread)."""
        delta = self.rollout_delta
        return float(delta.std(ddof=1) / math.sqrt(len(delta))) if len(delta) > 1 else None

    def __str__(self) -> str:
        spread = ", ".join(f"{p:.2f}" for p in self.psnr_random)
        se = self.delta_psnr_se
        error = f" +- {se:.2f}" if se is not None else ""
        return (
            f"dPSNR {self.delta_psnr:.2f}{error} dB (true actions {self.psnr_true:.2f} dB; "
            f"random {spread})"
        )


def controllability(
    rollout_fn: RolloutFn,
    tokenizer: Tokenizer,
    prompts: torch.Tensor,
    true_actions: torch.Tensor,
    reference: torch.Tensor,
    trials: int = 5,
    seed: int = 0,
    action_mask: torch.Tensor | None = None,
) -> ControllabilityResult:
    """Delta-PSNR of `rollout_fn` on `prompts` [B,T0,...] with `true_actions` [B,H,A_max].

    `reference`: what the H generated frames are scored against: uint8 frames [B,H,Hp,Wp,3], or
    tokens [B,H,...] (decoded here). `action_mask` (bool, broadcastable to the actions) marks the
    real action columns; random actions are zero elsewhere, as padding is in a batch.

    Every rollout gets a generator freshly seeded with `seed` (common random numbers), so the
    actions are the only thing that differs between the true and the random rollouts; the random
    actions come from their own generator seeded with `seed + 1`.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if true_actions.ndim != 3 or true_actions.shape[0] != prompts.shape[0]:
        raise ValueError(
            f"true_actions must be [B,H,A_max] with B = {prompts.shape[0]}, "
            f"got {list(true_actions.shape)}"
        )
    horizon = true_actions.shape[1]
    if reference.dtype != torch.uint8:
        reference = decode_video(tokenizer, reference)
    if tuple(reference.shape[:2]) != (prompts.shape[0], horizon):
        raise ValueError(
            f"reference must cover the {horizon} generated frames of {prompts.shape[0]} rollouts, "
            f"got {list(reference.shape)}"
        )
    device = prompts.device
    reference = reference.to(tokenizer.device)

    def score(actions: torch.Tensor) -> tuple[float, ...]:
        """Mean PSNR over the generated frames of each rollout, [B]."""
        generator = torch.Generator(device=device).manual_seed(seed)
        tokens = rollout_fn(prompts, actions, generator)
        if tokens.shape[1] != prompts.shape[1] + horizon:
            raise ValueError(
                f"rollout_fn returned {tokens.shape[1]} frames, expected the "
                f"{prompts.shape[1]} prompt frames + {horizon} generated"
            )
        generated = decode_video(tokenizer, tokens[:, prompts.shape[1] :])  # (B, H, Hp, Wp, 3)
        per_frame = psnr(*_frames(reference, generated.to(reference.device)))  # (B*H,)
        return tuple(per_frame.view(-1, horizon).mean(dim=1).double().tolist())

    rollout_true = score(true_actions)
    action_gen = torch.Generator(device=true_actions.device).manual_seed(seed + 1)
    rollout_random = []
    for _ in range(trials):
        random_actions = torch.randn(
            true_actions.shape,
            generator=action_gen,
            device=true_actions.device,
            dtype=true_actions.dtype,
        )
        if action_mask is not None:
            random_actions = random_actions * action_mask.to(random_actions.device)
        rollout_random.append(score(random_actions))
    return ControllabilityResult(rollout_true, tuple(rollout_random))
