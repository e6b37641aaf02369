"""Validation of a pretraining run on held-out episodes, per dataset.

    B windows, T frames per window, T0 prompt frames, H = T - T0 generated frames,
    h x w token grid, Hp x Wp pixels

Per dataset, on a fixed set of val-split windows (drawn once, so every validation scores the same
data):
- loss: the forward-mode training loss under fixed masks (a fixed generator), and for vq tokens
  perplexity = exp(mean NLL of the masked tokens); a model that knows nothing scores the
  vocabulary size (the uniform baseline).
- PSNR / ΔPSNR (hma.model.metrics.controllability): T0 prompt frames, then the model rolls out H
  frames driven by the true actions, and by random actions; frames are decoded with the store's
  tokenizer and scored against the decoded real tokens. A PNG per dataset shows real frames over
  predicted ones.
Nothing here touches the training RNG streams (torch.random.fork_rng).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field

from hma import storage
from hma.config import StrictModel
from hma.model.hma import HMA
from hma.model.masking import sample_masks
from hma.model.metrics import controllability, decode_video, perplexity_from_nll
from hma.pipeline.mixing import MixedSource, collate

PNG_GAP = 2  # pixels between frames and rows of the predicted-vs-real PNG


class ValidationConfig(StrictModel):
    every: int = Field(default=500, gt=0, description="steps between validations (and at the end)")
    windows: int = Field(default=16, ge=1, description="val windows per dataset for loss/ppl")
    rollouts: int = Field(default=4, ge=0, description="rollouts per dataset for PSNR/ΔPSNR")
    prompt_frames: int = Field(default=1, ge=1, description="T0 real frames before the rollout")
    steps: int = Field(default=2, ge=1, description="MaskGIT/MAR passes per generated frame")
    temperature: float = Field(default=0.0, ge=0, description="0: greedy (maskgit)")
    trials: int = Field(default=5, ge=1, description="random-action rollouts for ΔPSNR")
    tokenizer: str | None = Field(
        default=None, description="tokenizer checkpoint to decode with (default: the store's)"
    )
    png: bool = True
    seed: int = 0


@dataclass
class DatasetScores:
    loss: float
    perplexity: float | None = None
    psnr: float | None = None
    delta_psnr: float | None = None


@dataclass
class ValidationResult:
    step: int
    scores: dict[str, DatasetScores]
    skipped: dict[str, str] = field(default_factory=dict)  # dataset -> why it was not scored
    pngs: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        out = {}
        for name, s in self.scores.items():
            for key in ("loss", "perplexity", "psnr", "delta_psnr"):
                value = getattr(s, key)
                if value is not None:
                    out[f"val/{name}/{key}"] = float(value)
        return out


class Validator:
    """Holds the fixed val windows and the tokenizer; `run(model, step)` scores the model."""

    def __init__(
        self,
        config: ValidationConfig,
        source: MixedSource,
        action_width: int,
        out_url: str | None,
        device: torch.device,
    ):
        if source.split != "val":
            raise ValueError("the validation source must read the val split")
        self.config = config
        self.device = device
        self.out_url = out_url
        self.batches = {}
        self.skipped: dict[str, str] = {}
        rng = np.random.default_rng(config.seed)
        for name in source.datasets:
            if source.counts[name] == 0:
                self.skipped[name] = f"no val episode of >= {source.window} kept frames"
                continue
            windows = source.sample(name, config.windows, rng)
            self.batches[name] = collate(windows, action_width)
        self.info = source.tokenizer
        self._tokenizer: Any = None
        self.tokenizer_error: str | None = None

    def tokenizer(self):
        """The store's tokenizer, loaded once; None (with `tokenizer_error`) if unavailable."""
        if self._tokenizer is None and self.tokenizer_error is None:
            from hma.tokenize.checkpoint import load_tokenizer

            url = self.config.tokenizer or self.info.url
            try:
                tok = load_tokenizer(url, device=self.device)
            except Exception as e:  # noqa: BLE001 - PSNR is skipped with the reason, training goes on
                self.tokenizer_error = f"tokenizer {url} not loadable: {e}"
                return None
            if tok.fingerprint != self.info.fingerprint:
                self.tokenizer_error = (
                    f"tokenizer {url} has fingerprint {tok.fingerprint[:12]}, the store's tokens "
                    f"come from {self.info.fingerprint[:12]}"
                )
                return None
            self._tokenizer = tok
        return self._tokenizer

    @torch.no_grad()
    def run(self, model: HMA, step: int) -> ValidationResult:
        was_training = model.training
        model.eval()
        result = ValidationResult(step, {}, dict(self.skipped))
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                for i, (name, batch) in enumerate(sorted(self.batches.items())):
                    torch.manual_seed(self.config.seed + i)
                    result.scores[name] = self._losses(model, batch.to(self.device))
                    if self.config.rollouts and self.tokenizer() is not None:
                        self._rollouts(model, name, batch.to(self.device), step, result)
            if self.config.rollouts and self.tokenizer_error:
                for name in self.batches:
                    result.skipped.setdefault(name, f"no PSNR: {self.tokenizer_error}")
        finally:
            model.train(was_training)
        return result

    def _losses(self, model: HMA, batch) -> DatasetScores:
        flat = model.flatten_tokens(batch.tokens)
        b, t, s = flat.shape[:3]
        gen = torch.Generator(device=batch.tokens.device).manual_seed(self.config.seed)
        masks = sample_masks("forward", b, t, s, model.config.masking, flat.device, generator=gen)
        out = model(
            batch.tokens,
            batch.actions,
            batch.datasets,
            video_mask=masks.video,
            action_mask=masks.action,
            null_actions=masks.null_actions,
        )
        # One forward pass serves both the loss and the per-token NLL of perplexity.
        scores = DatasetScores(loss=float(model.losses(batch, out, masks)["total"]))
        head = model.video_head
        if model.config.token_kind == "vq" and hasattr(head, "nll") and masks.video.any():
            nll = head.nll(flat.flatten(0, 1), out.video.flatten(0, 1))  # [B*T,S]
            scores.perplexity = perplexity_from_nll(nll[masks.video.flatten(0, 1)])
        return scores

    def _rollouts(self, model: HMA, name: str, batch, step: int, result: ValidationResult) -> None:
        cfg = self.config
        n = min(cfg.rollouts, batch.tokens.shape[0])
        t0 = cfg.prompt_frames
        t = batch.tokens.shape[1]
        if t0 >= t:
            result.skipped[name] = f"prompt_frames {t0} leaves nothing to generate in {t} frames"
            return
        tokens, actions = batch.tokens[:n], batch.actions[:n]
        datasets = batch.datasets[:n]
        width = model.embodiments.widths[name]
        mask = torch.zeros(actions.shape[-1], dtype=torch.bool, device=actions.device)
        mask[:width] = True
        captured: list[torch.Tensor] = []

        def rollout_fn(prompt, acts, generator):
            out = model.rollout(
                prompt,
                acts,
                datasets,
                horizon=t - t0,
                mode="forward",
                steps=cfg.steps,
                temperature=cfg.temperature,
                generator=generator,
            ).tokens
            if not captured:
                captured.append(out)  # the true-action rollout comes first
            return out

        tok = self.tokenizer()
        scores = controllability(
            rollout_fn,
            tok,
            tokens[:, :t0],
            actions[:, t0 - 1 : t - 1],
            tokens[:, t0:],
            trials=cfg.trials,
            seed=cfg.seed,
            action_mask=mask,
        )
        result.scores[name].psnr = scores.psnr_true
        result.scores[name].delta_psnr = scores.delta_psnr
        if cfg.png and self.out_url:
            url = storage.join(self.out_url, f"step_{step:07d}", f"{name}.png")
            real = decode_video(tok, tokens).cpu().numpy()  # (n, T, Hp, Wp, 3)
            predicted = decode_video(tok, captured[0]).cpu().numpy()
            storage.write_png(real_vs_predicted(real, predicted), url)
            result.pngs[name] = url


def real_vs_predicted(real: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """uint8 [n,T,Hp,Wp,3] twice -> one image: per rollout a row of real frames over a row of
    predicted ones (the prompt frames are real in both)."""
    n, t, hp, wp, _ = real.shape
    rows = 2 * n
    image = np.full(
        (rows * hp + (rows - 1) * PNG_GAP, t * wp + (t - 1) * PNG_GAP, 3), 255, np.uint8
    )
    for r in range(rows):
        video = real[r // 2] if r % 2 == 0 else predicted[r // 2]
        for f in range(t):
            y, x = r * (hp + PNG_GAP), f * (wp + PNG_GAP)
            image[y : y + hp, x : x + wp] = video[f]
    return image


def table(result: ValidationResult, vocab: int | None) -> list[str]:
    """A console table of the scores, one row per dataset (with the uniform perplexity)."""
    header = f"{'dataset':<22}{'loss':>8}{'ppl':>9}{'psnr':>8}{'dpsnr':>8}"
    if vocab:
        header += f"   (uniform ppl {vocab})"
    lines = [f"validation at step {result.step}", header]

    def fmt(value: float | None, spec: str) -> str:
        return format(value, spec) if value is not None else "-"

    for name, s in sorted(result.scores.items()):
        lines.append(
            f"{name:<22}{s.loss:>8.3f}{fmt(s.perplexity, '9.2f'):>9}{fmt(s.psnr, '8.2f'):>8}"
            f"{fmt(s.delta_psnr, '8.2f'):>8}"
        )
    for name, why in sorted(result.skipped.items()):
        lines.append(f"{name:<22}skipped: {why}")
    return lines
