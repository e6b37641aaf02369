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

from hma import checkpoint
from hma.tokenize import checkpoint as tokenizer_checkpoint
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
from hma.training import optim as optimiser
from hma.training.distributed import unwrap
from hma.training.run import TrainState as RunState


class TokenizerOptimConfig(optimiser.OptimConfig):
    """The shared optimiser with the tokenizers' defaults: a higher peak lr, betas (0.9, 0.99),
    no weight decay, and a schedule over the run's step or time budget."""

    lr: float = Field(default=2e-3, gt=0, description="peak learning rate")
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = Field(default=0.0, ge=0, description="on matrices only")
    warmup_steps: int = Field(default=50, ge=0)
    min_lr_ratio: float = Field(default=0.05, ge=0, le=1, description="final lr / lr")


@dataclass(kw_only=True)
class TrainState(RunState):
    net: nn.Module  # the tokenizer net, possibly wrapped (DDP) by the caller
    tokenizer_config: FSQConfig | KLConfig
    loss: LossConfig
    optim: optimiser.OptimConfig
    disc: nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def make_state(
    tokenizer_config: FSQConfig | KLConfig,
    loss: LossConfig,
    optim: optimiser.OptimConfig,
    device: torch.device | str = "cpu",
) -> TrainState:
    net = tokenizer_config.build().to(device).train()
    disc = disc_opt = None
    if loss.adversarial:
        disc = PatchDiscriminator(loss).to(device).train()
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=loss.disc_lr, betas=optim.betas)
    return TrainState(
        optimizer=optimiser.build_optimizer(net, optim),
        net=net,
        tokenizer_config=tokenizer_config,
        loss=loss,
        optim=optim,
        disc=disc,
        disc_optimizer=disc_opt,
    )


def train_step(state: TrainState, frames: torch.Tensor, progress: float) -> dict[str, float]:
    """One optimizer step on uint8 frames [B,H,W,3] (already on the net's device); `progress`
    in [0, 1] is the share of the run's budget spent (the lr schedule follows it)."""
    lr = state.optim.lr * optimiser.lr_factor(state.optim, state.step, progress)
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
    grad_norm = optimiser.clip_and_step(
        state.optimizer, state.net.parameters(), state.optim.grad_clip
    )
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
        loss=float(loss.detach()), psnr=10 * math.log10(4 / mse), lr=lr, grad_norm=grad_norm
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
    fingerprint = tokenizer_checkpoint.save_net(
        unwrap(state.net), tokenizer_checkpoint.config_dict(state.tokenizer_config), url
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
    net, _, _ = tokenizer_checkpoint.load_net(url)
    unwrap(state.net).load_state_dict(net.state_dict())
    saved = checkpoint.load_state(url)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.step = int(saved["step"])
    state.seconds = float(saved["seconds"])
    state.extra = dict(saved.get("extra") or {})
    if state.disc is not None and "disc" in saved:
        state.disc.load_state_dict(saved["disc"])
        state.disc_optimizer.load_state_dict(saved["disc_optimizer"])
