"""The visuomotor policy network: image (+ state) -> a chunk of normalised actions.

    B batch, R image size, S state dim, K chunk, A action dim, D encoder features, H hidden

    frames float [B,3,R,R] in [0,1] ─ConvEncoder─▶ [B,D] ─┐
    state  float [B,S] (normalised, optional) ─Linear─▶ [B,H] ─┴─ concat ─MLP─▶ [B,K*A] ─▶ [B,K,A]

A deterministic MLP head on an action chunk, as in ACT-style chunking without the transformer:
the policy decides every K raw steps and the chunk executes open-loop, which matches how the
learned simulator advances (one generated frame per chunk of `stride` raw actions).
"""

from __future__ import annotations

import torch
from torch import nn

from hma.policy.config import PolicyConfig
from hma.vision import ConvEncoder


class PolicyNet(nn.Module):
    def __init__(self, config: PolicyConfig, action_dim: int, chunk: int, state_dim: int = 0):
        super().__init__()
        self.config, self.action_dim, self.chunk, self.state_dim = (
            config,
            action_dim,
            chunk,
            state_dim,
        )
        self.encoder = ConvEncoder(config.widths, config.image_size)
        width = self.encoder.out_dim
        self.state = None
        if config.use_state:
            self.state = nn.Sequential(nn.Linear(state_dim, config.hidden), nn.ReLU())
            width += config.hidden
        layers: list[nn.Module] = []
        for _ in range(config.layers):
            layers += [nn.Linear(width, config.hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = config.hidden
        layers.append(nn.Linear(width, chunk * action_dim))
        self.head = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """images [B,3,R,R] in [0,1], state [B,S] normalised -> normalised chunk [B,K,A]."""
        h = self.encoder(images)  # [B,D]
        if self.state is not None:
            if state is None:
                raise ValueError("this policy reads proprioception; no state was given")
            h = torch.cat([h, self.state(state)], dim=-1)  # [B,D+H]
        return self.head(h).view(-1, self.chunk, self.action_dim)  # [B,K,A]
