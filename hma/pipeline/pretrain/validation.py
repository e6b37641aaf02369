"""Validation of a pretraining run on held-out episodes, per dataset.

    B windows, T frames per window, T0 prompt frames, H = T - T0 generated frames, n rollouts,
    K random-action trials, h x w token grid, S = h * w tokens per frame, Hp x Wp pixels

Per dataset, on fixed sets of val-split windows (drawn once, so every validation scores the same
data):
- loss: the forward-mode training loss under fixed masks (a fixed generator), and for vq tokens
  perplexity = exp(mean NLL of the masked tokens); a model that knows nothing scores the
  vocabulary size (the uniform baseline). action_gain: the mean NLL of the same masked tokens
  with random N(0, 1) actions minus that with the true actions (nats per token): > 0 when the
  model's predictions use the actions. It is teacher-forced, so far less noisy than ΔPSNR.
- PSNR / ΔPSNR (the protocol of hma.model.metrics.controllability): T0 prompt frames, then the
  model rolls out H frames driven by the true actions, and by K random ones; frames are decoded
  with the store's tokenizer and scored against the decoded real tokens. Rollout windows are
  `rollout_frames` long (the model slides its window past its training length) and distinct,
  so the standard error of ΔPSNR over the n rollouts is an honest noise scale. Rollouts of one
  episode are correlated, so with few val episodes it is still a lower bound.
  A PNG per dataset shows, per rollout, the real frames, the true-action and a random-action
  rollout.
Nothing here touches the training RNG streams (torch.random.fork_rng).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field

from hma import storage
from hma.config import StrictModel
from hma.frames import PNG_GAP, video_grid  # noqa: F401 - PNG_GAP: the PNG layout's public constant
from hma.model.batch import Batch
from hma.model.hma import HMA
from hma.model.masking import sample_masks
from hma.model.metrics import RolloutFn, controllability, decode_video, perplexity_from_nll
from hma.pipeline.pretrain.mixing import MixedSource, collate
from hma.pipeline.store.reader import Window, WindowSampler

# The rollout windows come from their own stream, so the loss windows do not change with the
# rollout knobs.
ROLLOUT_STREAM = 1


class ValidationConfig(StrictModel):
    every: int = Field(default=500, gt=0, description="steps between validations (and at the end)")
    windows: int = Field(default=16, ge=1, description="val windows per dataset for loss/ppl")
    rollouts: int = Field(
        default=32,
        ge=0,
        description="distinct val windows rolled out per dataset for PSNR/ΔPSNR (fewer if the "
        "split has fewer); ΔPSNR's standard error shrinks as 1/sqrt(rollouts)",
    )
    rollout_frames: int | None = Field(
        default=None,
        ge=2,
        description="frames per rollout window, prompt + generated (default: the model's "
        "window); a dataset whose val episodes are all shorter uses its longest",
    )
    prompt_frames: int = Field(default=1, ge=1, description="T0 real frames before the rollout")
    steps: int = Field(default=2, ge=1, description="MaskGIT/MAR passes per generated frame")
    temperature: float = Field(default=0.0, ge=0, description="0: greedy (maskgit)")
    trials: int = Field(default=5, ge=1, description="random-action rollouts for ΔPSNR")
    tokenizer: str | None = Field(
        default=None, description="tokenizer checkpoint to decode with (default: the store's)"
    )
    png: bool = True
    png_rollouts: int = Field(default=4, ge=1, description="rollouts drawn in each PNG")
    seed: int = 0


@dataclass
class DatasetScores:
    loss: float
    perplexity: float | None = None
    action_gain: float | None = None  # nats/token: NLL(random actions) - NLL(true actions)
    psnr: float | None = None
    delta_psnr: float | None = None
    delta_psnr_se: float | None = None  # standard error of delta_psnr over the rollouts
    rollouts: int | None = None
    rollout_frames: int | None = None


@dataclass
class ValidationResult:
    step: int
    scores: dict[str, DatasetScores]
    skipped: dict[str, str] = field(default_factory=dict)  # dataset -> why it was not scored
    pngs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        out = {"val/seconds": self.seconds}
        keys = ("loss", "perplexity", "action_gain", "psnr", "delta_psnr", "delta_psnr_se")
        for name, s in self.scores.items():
            for key in keys:
                value = getattr(s, key)
                if value is not None:
                    out[f"val/{name}/{key}"] = float(value)
        return out


def distinct_windows(
    sampler: WindowSampler, name: str, n: int, rng: np.random.Generator
) -> list[Window]:
    """Up to `n` distinct windows of `name` (all of them if it has fewer): a repeated rollout adds
    no evidence but would shrink the standard error."""
    return sampler.sample(name, n, rng, replace=False)


@dataclass
class RolloutSet:
    batch: Batch  # n distinct val windows of `frames` frames
    frames: int


class Validator:
    """Holds the fixed val windows and the tokenizer; `run(model, step)` scores the model."""

    def __init__(
        self,
        config: ValidationConfig,
        source: MixedSource,
        action_width: int,
        out_url: str | None,
        device: torch.device,
        state_width: int = 0,
    ):
        if source.split != "val":
            raise ValueError("the validation source must read the val split")
        self.config = config
        self.device = device
        self.out_url = out_url
        self.batches: dict[str, Batch] = {}
        self.rollout_sets: dict[str, RolloutSet] = {}
        self.skipped: dict[str, str] = {}
        rng = np.random.default_rng(config.seed)
        rollout_rng = np.random.default_rng([config.seed, ROLLOUT_STREAM])
        for name in source.datasets:
            if source.counts[name] == 0:
                self.skipped[name] = f"no val episode of >= {source.window} kept frames"
                continue
            windows = source.sample(name, config.windows, rng)
            self.batches[name] = collate(windows, action_width, state_width)
            if config.rollouts:
                self._draw_rollouts(source, name, action_width, rollout_rng)
        self.info = source.tokenizer
        self._tokenizer: Any = None
        self.tokenizer_error: str | None = None

    def _draw_rollouts(
        self, source: MixedSource, name: str, action_width: int, rng: np.random.Generator
    ) -> None:
        view = source.view(name)
        longest = int(view.length[view.split == "val"].max())
        frames = min(self.config.rollout_frames or source.window, longest)
        if frames <= self.config.prompt_frames:
            self.skipped[name] = (
                f"no PSNR: prompt_frames {self.config.prompt_frames} leaves nothing to generate "
                f"in {frames} frames"
            )
            return
        sampler = WindowSampler(source.stores[source.owner[name]], frames, "val", [name])
        windows = distinct_windows(sampler, name, self.config.rollouts, rng)
        self.rollout_sets[name] = RolloutSet(collate(windows, action_width), frames)

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
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        result = ValidationResult(step, {}, dict(self.skipped))
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                for i, (name, batch) in enumerate(sorted(self.batches.items())):
                    torch.manual_seed(self.config.seed + i)
                    result.scores[name] = self._losses(model, name, batch.to(self.device))
                    if name in self.rollout_sets and self.tokenizer() is not None:
                        self._rollouts(model, name, step, result)
            if self.rollout_sets and self.tokenizer_error:
                for name in self.rollout_sets:
                    result.skipped.setdefault(name, f"no PSNR: {self.tokenizer_error}")
        finally:
            model.train(was_training)
        result.seconds = time.perf_counter() - start
        return result

    def _losses(self, model: HMA, name: str, batch: Batch) -> DatasetScores:
        flat = model.flatten_tokens(batch.tokens)
        b, t, s = flat.shape[:3]
        gen = torch.Generator(device=batch.tokens.device).manual_seed(self.config.seed)
        masks = sample_masks("forward", b, t, s, model.config.masking, flat.device, generator=gen)

        def forward(actions: torch.Tensor):
            return model(
                batch.tokens,
                actions,
                batch.datasets,
                video_mask=masks.video,
                action_mask=masks.action,
                null_actions=masks.null_actions,
            )

        out = forward(batch.actions)
        # One forward pass serves both the loss and the per-token NLL of perplexity.
        scores = DatasetScores(loss=float(model.losses(batch, out, masks)["total"]))
        head = model.video_head
        if model.config.token_kind == "vq" and hasattr(head, "nll") and masks.video.any():
            video_mask = masks.video.flatten(0, 1)  # [B*T,S]
            nll = head.nll(flat.flatten(0, 1), out.video.flatten(0, 1))  # [B*T,S]
            scores.perplexity = perplexity_from_nll(nll[video_mask])
            # Random actions as ΔPSNR draws them (N(0, 1), zero beyond the dataset's width).
            random = torch.randn(batch.actions.shape, generator=gen, device=flat.device)
            random = random * _action_mask(model, batch)
            shuffled = forward(random)
            nll_random = head.nll(flat.flatten(0, 1), shuffled.video.flatten(0, 1))  # [B*T,S]
            scores.action_gain = float((nll_random - nll)[video_mask].double().mean())
        return scores

    def _rollouts(self, model: HMA, name: str, step: int, result: ValidationResult) -> None:
        cfg = self.config
        rollout_set = self.rollout_sets[name]
        batch = rollout_set.batch.to(self.device)
        t0, t = cfg.prompt_frames, rollout_set.frames
        tok = self.tokenizer()
        captured: list[torch.Tensor] = []  # the true-action rollout, then each trial's
        rollout = _forward_rollout(model, batch.datasets, t - t0, cfg)

        def rollout_fn(prompt, actions, generator):
            captured.append(rollout(prompt, actions, generator))
            return captured[-1]

        real = decode_video(tok, batch.tokens)  # (n, T, Hp, Wp, 3), once for scores and PNG
        scores = controllability(
            rollout_fn,
            tok,
            batch.tokens[:, :t0],
            batch.actions[:, t0 - 1 : t - 1],  # chunk f drives frame f + 1
            real[:, t0:],
            trials=cfg.trials,
            seed=cfg.seed,
            action_mask=_action_mask(model, batch),
        )
        s = result.scores[name]
        s.psnr = scores.psnr_true
        s.delta_psnr, s.delta_psnr_se = scores.delta_psnr, scores.delta_psnr_se
        s.rollouts, s.rollout_frames = int(batch.tokens.shape[0]), t
        if cfg.png and self.out_url:
            rows = min(cfg.png_rollouts, batch.tokens.shape[0])
            true_actions, random_actions = (
                decode_video(tok, x[:rows]).cpu().numpy()  # (rows, T, Hp, Wp, 3)
                for x in (captured[0], captured[1])
            )
            real = real[:rows].cpu().numpy()
            videos = [v[r] for r in range(rows) for v in (real, true_actions, random_actions)]
            url = storage.join(self.out_url, f"step_{step:07d}", f"{name}.png")
            storage.write_png(video_grid(videos), url)
            result.pngs[name] = url


def _action_mask(model: HMA, batch: Batch) -> torch.Tensor:
    """bool [B,1,A_max]: each row's real action columns (the rest is batch padding)."""
    width = batch.actions.shape[-1]
    return model.embodiments.valid(batch.datasets, width, batch.actions.device)[:, None]


def _forward_rollout(
    model: HMA, datasets: list[str], horizon: int, cfg: ValidationConfig
) -> RolloutFn:
    def rollout_fn(prompt, actions, generator):
        return model.rollout(
            prompt,
            actions,
            datasets,
            horizon=horizon,
            mode="forward",
            steps=cfg.steps,
            temperature=cfg.temperature,
            generator=generator,
        ).tokens

    return rollout_fn


def table(result: ValidationResult, vocab: int | None) -> list[str]:
    """A console table of the scores, one row per dataset (with the uniform perplexity)."""
    header = (
        f"{'dataset':<22}{'loss':>8}{'ppl':>9}{'again':>8}{'psnr':>8}{'dpsnr':>8}{'±se':>7}"
        f"{'n x T':>8}"
    )
    if vocab:
        header += f"   (uniform ppl {vocab})"
    lines = [f"validation at step {result.step}", header]

    def fmt(value: float | None, spec: str) -> str:
        return format(value, spec) if value is not None else "-"

    for name, s in sorted(result.scores.items()):
        shape = f"{s.rollouts}x{s.rollout_frames}" if s.rollouts else "-"
        lines.append(
            f"{name:<22}{s.loss:>8.3f}{fmt(s.perplexity, '9.2f'):>9}"
            f"{fmt(s.action_gain, '8.3f'):>8}{fmt(s.psnr, '8.2f'):>8}"
            f"{fmt(s.delta_psnr, '+8.2f'):>8}{fmt(s.delta_psnr_se, '7.2f'):>7}{shape:>8}"
        )
    for name, why in sorted(result.skipped.items()):
        lines.append(f"{name:<22}skipped: {why}")
    lines.append(
        f"again: NLL(random actions) - NLL(true) nats/token; dpsnr ± standard error over "
        f"n rollouts of T frames; {result.seconds:.1f} s"
    )
    return lines
