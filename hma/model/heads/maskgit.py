"""MaskGIT video head: logits over the codebook per token, cross-entropy on masked tokens.

    N rows (batch x frames), S tokens per frame, D width, K vocab, F vocabulary factors

With `factors` (e.g. (8, 125) for K = 1000) the vocabulary is factorised as in the 1X GENIE
world model that HMA builds on: a code is a mixed-radix number whose digits are predicted by
independent softmaxes (sum(factors) outputs instead of K), and its loss is the mean of the
digits' cross-entropies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from hma.config import StrictModel
from hma.model.heads.base import empty_loss


def categorical(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of probs [...,K] -> int64 [...], by inverse CDF: one uniform per row
    against the running sum. torch.multinomial races K exponential draws per row instead, which
    was ~10% of a MaskGIT rollout's CPU time at K = 1000. Codes of probability 0 (top-k) are
    never drawn: the first index whose running sum exceeds u always adds mass."""
    cdf = probs.cumsum(-1)  # [...,K]
    u = torch.rand(
        (*probs.shape[:-1], 1), generator=generator, device=probs.device, dtype=cdf.dtype
    )
    drawn = torch.searchsorted(cdf, u * cdf[..., -1:], right=True)  # [...,1]
    return drawn.clamp_max_(probs.shape[-1] - 1)[..., 0]  # float rounding at the top end


class MaskGITHeadConfig(StrictModel):
    factors: tuple[int, ...] | None = Field(
        None, description="factorised vocabulary: digit sizes whose product is vocab_size"
    )


class MaskGITHead(nn.Module):
    def __init__(self, config: MaskGITHeadConfig, d_model: int, vocab_size: int):
        super().__init__()
        self.config = config
        self.factors = tuple(config.factors) if config.factors else (vocab_size,)
        self.proj = nn.Linear(d_model, sum(self.factors))
        # Place value of each digit; the first factor is the most significant.
        radix = [1] * len(self.factors)
        for i in range(len(self.factors) - 2, -1, -1):
            radix[i] = radix[i + 1] * self.factors[i + 1]
        self.register_buffer("radix", torch.tensor(radix, dtype=torch.long), persistent=False)

    def logits(self, cond: torch.Tensor) -> list[torch.Tensor]:
        """One logits tensor [N,S,K_f] per factor."""
        return list(self.proj(cond).split(self.factors, dim=-1))

    def digits(self, tokens: torch.Tensor) -> torch.Tensor:
        """int64 [N,S] codes -> int64 [N,S,F] digits."""
        sizes = torch.tensor(self.factors, device=tokens.device)
        return (tokens[..., None] // self.radix) % sizes  # [N,S,F]

    def loss(self, target: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over masked tokens (0 when nothing is masked)."""
        if not mask.any():
            return empty_loss(self, cond)
        digits = self.digits(target)[mask]  # [M,F]
        picked = cond[mask]  # [M,D]
        losses = [
            F.cross_entropy(logit, digits[:, i]) for i, logit in enumerate(self.logits(picked))
        ]
        return torch.stack(losses).mean()

    def nll(self, target: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Per-token negative log-likelihood float [N,S] of `target` (for perplexity)."""
        digits = self.digits(target)
        total = torch.zeros(target.shape, device=cond.device)
        for i, logit in enumerate(self.logits(cond)):
            total = total + F.cross_entropy(
                logit.flatten(0, -2), digits[..., i].flatten(), reduction="none"
            ).view(target.shape)
        return total

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        top_k: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes int64 [N,S] drawn from softmax(logits / temperature) (argmax at temperature 0,
        restricted to the `top_k` most likely per digit), and their probabilities float [N,S]."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        tokens = torch.zeros(cond.shape[:-1], dtype=torch.long, device=cond.device)
        confidence = torch.ones(cond.shape[:-1], device=cond.device)
        for logit, place in zip(self.logits(cond), self.radix.tolist(), strict=True):
            logit = logit.float()
            if top_k is not None and top_k < logit.shape[-1]:
                kth = logit.topk(top_k, dim=-1).values[..., -1:]
                logit = logit.masked_fill(logit < kth, float("-inf"))
            if temperature == 0:
                digit = logit.argmax(-1)
                probs = logit.softmax(-1)
            else:
                probs = (logit / temperature).softmax(-1)
                digit = categorical(probs, generator)
            tokens = tokens + digit * place
            confidence = confidence * probs.gather(-1, digit[..., None])[..., 0]
        return tokens, confidence
