"""PretrainConfig: everything a pretraining (or fine-tuning) run needs; jobs/pretrain*.yaml are examples.

The model section names a preset and overrides; what the data decides (token kind, vocabulary or
latent channels, token grid, the datasets and their action widths) is filled in from the token
stores by `resolve_model_config`, so a config never restates the tokenizer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from hma.config import StorageURL, check_preset
from hma.errors import ConfigError
from hma.model.config import PRESETS, ModelConfig, model_config
from hma.pipeline.pretrain.mixing import MixConfig
from hma.pipeline.pretrain.step import Parallel, StepConfig
from hma.pipeline.pretrain.validation import ValidationConfig
from hma.pipeline.store.layout import TokenizerInfo
from hma.training.optim import OptimConfig
from hma.training.run import RunConfig

# Model fields the token store decides; a config that sets them is refused.
DATA_FIELDS = ("token_kind", "vocab_size", "latent_channels", "grid", "datasets", "states")


class PretrainConfig(RunConfig):
    """A pretraining (or fine-tuning) run: the shared run fields (hma.training.run.RunConfig)
    plus its data mix, model, optimiser, dynamics modes and validation."""

    kind: Literal["pretrain"] = Field(default="pretrain", description="job kind (job specs)")
    data: MixConfig
    model: dict[str, Any] = Field(
        default_factory=lambda: {"preset": "tiny"},
        description="{preset: tiny|base|xl, ...ModelConfig overrides}",
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)
    grad_accum: int = Field(default=1, gt=0, description="micro-batches per optimizer step")
    modes: dict[str, float] = Field(
        default_factory=lambda: {"forward": 1.0},
        description="dynamics mode -> probability per micro-batch",
    )
    bf16: bool = Field(default=True, description="bf16 autocast on CUDA (CPU trains in fp32)")
    parallel: Parallel = Field(default="ddp", description="ddp | fsdp2 (fully_shard per block)")
    max_minutes: float | None = Field(
        default=None,
        gt=0,
        description="stop after this much training-loop time (lr schedule "
        "still follows optim.decay_steps or max_steps)",
    )
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    max_failures: int = Field(default=3, ge=-1, description="worker-group restarts (-1: always)")
    init_from: StorageURL | None = Field(
        default=None, description="fine-tune: a pretraining checkpoint (or run dir) to start from"
    )
    freeze_trunk: bool = Field(default=False, description="fine-tune only stems and heads")
    state: bool = Field(
        default=True,
        description="model proprioceptive state where the stores keep it (False: video and "
        "actions only, as in the paper)",
    )

    @field_validator("model")
    @classmethod
    def _model(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_preset("model", value.get("preset", "tiny"), PRESETS)
        fixed = sorted(set(value) & set(DATA_FIELDS))
        if fixed:
            raise ValueError(f"model keys {fixed} come from the token store; remove them")
        return value

    @field_validator("modes")
    @classmethod
    def _modes(cls, value: dict[str, float]) -> dict[str, float]:
        return StepConfig(modes=value).modes

    @property
    def step_config(self) -> StepConfig:
        return StepConfig(grad_accum=self.grad_accum, modes=self.modes, bf16=self.bf16)

    @property
    def decay_steps(self) -> int:
        return self.optim.decay_steps or self.max_steps


def resolve_model_config(
    config: PretrainConfig, info: TokenizerInfo, widths: dict[str, int], states: dict[str, int]
) -> ModelConfig:
    """The model a fresh run builds: the preset and overrides, plus what the data decides
    (action widths `widths` and, where the run models state, state widths `states`)."""
    overrides = {k: v for k, v in config.model.items() if k != "preset"}
    data: dict[str, Any] = {
        "token_kind": info.kind,
        "grid": tuple(info.grid),
        "datasets": widths,
        "states": states if config.state else {},
    }
    if info.kind == "vq":
        data["vocab_size"] = info.vocab_size
    else:
        data["latent_channels"] = info.latent_channels
        data["head"] = "diffusion"
    try:
        return model_config(config.model.get("preset", "tiny"), **overrides, **data)
    except ValueError as e:
        raise ConfigError(f"model config for run {config.name!r}: {e}") from None
