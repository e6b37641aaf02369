"""One tokenizer training step, its optimizer and schedule, and its checkpoints. No Ray in here.

    B batch, H x W pixels, frames uint8 [B,H,W,3], images float [B,3,H,W] in [-1, 1]

`train.py` drives these from a Ray Train worker; tests drive them directly (the overfit test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import Field
from torch import nn

from hma.config import StrictModel
from hma.lr_schedule import warmup_cosine
from hma.tokenize import checkpoint
from hma.tokenize.base import frames_to_images, images_to_frames
from hma.tokenize.fsq import FSQConfig
from hma.tokenize.kl import KLConfig
from hma.tokenize.losses import (
    LossConfig,
    PatchDiscriminator,
    discriminator_hinge_loss,
    generator_adversarial_loss,
    reconstruction_loss,
)
from hma.tokenize.metrics import psnr


class OptimConfig(StrictModel):
    """AdamW with linear warm-up, then cosine decay over the run's budget (steps or time)."""

    lr: float = Field(default=2e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=50, ge=0)
    min_lr_ratio: float = Field(default=0.05, ge=0, le=1, description="final lr / lr")
    grad_clip: float = Field(default=1.0, gt=0, description="max global gradient norm")


@dataclass
class TrainState:
    net: nn.Module  # the tokenizer net, possibly wrapped (DDP) by the caller
    optimizer: torch.optim.Optimizer
    tokenizer_config: FSQConfig | KLConfig
    loss: LossConfig
    optim: OptimConfig
    disc: nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None
    step: int = 0
    seconds: float = 0.0  # training-loop time so far, across resumes
    extra: dict[str, Any] = field(default_factory=dict)


def unwrap(net: nn.Module) -> nn.Module:
    """The tokenizer net inside a DistributedDataParallel wrapper, or `net` itself."""
    return getattr(net, "module", net)


def make_state(
    tokenizer_config: FSQConfig | KLConfig,
    loss: LossConfig,
    optim: OptimConfig,
    device: torch.device | str = "cpu",
) -> TrainState:
    net = tokenizer_config.build().to(device).train()
    opt = torch.optim.AdamW(
        net.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay
    )
    disc = disc_opt = None
    if loss.adversarial:
        disc = PatchDiscriminator(loss).to(device).train()
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=loss.disc_lr, betas=optim.betas)
    return TrainState(net, opt, tokenizer_config, loss, optim, disc, disc_opt)


def learning_rate(optim: OptimConfig, step: int, progress: float) -> float:
    """lr at `step` with `progress` in [0, 1] of the run's budget done."""
    return optim.lr * warmup_cosine(step, optim.warmup_steps, progress, optim.min_lr_ratio)


def train_step(state: TrainState, frames: torch.Tensor, progress: float) -> dict[str, float]:
    """One optimizer step on uint8 frames [B,H,W,3] (already on the net's device)."""
    lr = learning_rate(state.optim, state.step, progress)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    images = frames_to_images(frames)  # (B, 3, H, W)
    out = state.net(images)
    loss, metrics = reconstruction_loss(out.images, images, state.loss)
    loss = loss + out.regularizer
    use_gan = state.disc is not None and state.step >= state.loss.adversarial_start
    if use_gan:
        adv = generator_adversarial_loss(state.disc, out.images)
        loss = loss + state.loss.adversarial_weight * adv
        metrics["gen_adv"] = float(adv.detach())
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(state.net.parameters(), state.optim.grad_clip)
    state.optimizer.step()
    if use_gan:
        d_loss = discriminator_hinge_loss(state.disc, images, out.images)
        state.disc_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        state.disc_optimizer.step()
        metrics["disc"] = float(d_loss.detach())
    state.step += 1
    # PSNR of this batch on the [-1, 1] scale: the range is 2, so 10 log10(4 / mse).
    mse = max(metrics["l2"], 1e-12)
    metrics.update(out.metrics)
    metrics.update(
        loss=float(loss.detach()), psnr=10 * math.log10(4 / mse), lr=lr, grad_norm=float(grad_norm)
    )
    return metrics


@torch.no_grad()
def validation_psnr(net: nn.Module, frames: torch.Tensor, batch_size: int) -> float:
    """Mean per-frame PSNR (dB) of the net's deterministic reconstruction of uint8 frames."""
    model = unwrap(net)
    was_training = model.training
    model.eval()
    scores = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start : start + batch_size]
        recon = images_to_frames(model(frames_to_images(chunk)).images)
        scores.append(psnr(chunk, recon))
    model.train(was_training)
    return float(torch.cat(scores).mean())


def save(state: TrainState, url: str) -> str:
    """A tokenizer checkpoint at `url` plus trainer state to resume from; returns the fingerprint."""
    fingerprint = checkpoint.save_net(
        unwrap(state.net), checkpoint.config_dict(state.tokenizer_config), url
    )
    trainer_state: dict[str, Any] = {
        "step": state.step,
        "seconds": state.seconds,
        "optimizer": state.optimizer.state_dict(),
        "extra": state.extra,
    }
    if state.disc is not None:
        trainer_state["disc"] = dict(state.disc.state_dict())
        trainer_state["disc_optimizer"] = state.disc_optimizer.state_dict()
    checkpoint.save_state(url, trainer_state)
    return fingerprint


def restore(state: TrainState, url: str) -> None:
    """Load weights, optimizer moments and counters saved by `save` into `state`."""
    net, _, _ = checkpoint.load_net(url)
    unwrap(state.net).load_state_dict(net.state_dict())
    saved = checkpoint.load_state(url)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.step = int(saved["step"])
    state.seconds = float(saved["seconds"])
    state.extra = dict(saved.get("extra") or {})
    if state.disc is not None and "disc" in saved:
        state.disc.load_state_dict(saved["disc"])
        state.disc_optimizer.load_state_dict(saved["disc_optimizer"])
