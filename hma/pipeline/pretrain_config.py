"""PretrainConfig: everything a pretraining (or fine-tuning) run needs; jobs/pretrain*.yaml are examples.

The model section names a preset and overrides; what the data decides (token kind, vocabulary or
latent channels, token grid, the datasets and their action widths) is filled in from the token
stores by `resolve_model_config`, so a config never restates the tokenizer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from hma.config import StorageURL, StrictModel
from hma.errors import ConfigError
from hma.model.config import PRESETS, ModelConfig, model_config
from hma.pipeline.mixing import MixConfig
from hma.pipeline.pretrain_step import OptimConfig, Parallel, StepConfig
from hma.pipeline.store_layout import TokenizerInfo
from hma.pipeline.validation import ValidationConfig

SECONDS_PER_MINUTE = 60.0
# Model fields the token store decides; a config that sets them is refused.
DATA_FIELDS = ("token_kind", "vocab_size", "latent_channels", "grid", "datasets")


class PretrainConfig(StrictModel):
    kind: Literal["pretrain"] = Field(default="pretrain", description="job kind (job specs)")
    name: str = Field(description="run name: checkpoints live in storage_path/name")
    storage_path: StorageURL = Field(description="local directory or s3:// prefix for the run")
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
    max_steps: int = Field(default=1000, gt=0)
    max_minutes: float | None = Field(
        default=None,
        gt=0,
        description="stop after this much training-loop time (lr schedule "
        "still follows optim.decay_steps or max_steps)",
    )
    log_every: int = Field(default=10, gt=0)
    checkpoint_every: int = Field(default=500, gt=0)
    keep_checkpoints: int = Field(default=2, gt=0)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    num_workers: int = Field(default=1, gt=0)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    use_gpu: bool = False
    torch_threads: int | None = Field(default=None, gt=0)
    max_failures: int = Field(default=3, ge=-1, description="worker-group restarts (-1: always)")
    seed: int = 0
    init_from: StorageURL | None = Field(
        default=None, description="fine-tune: a pretraining checkpoint (or run dir) to start from"
    )
    freeze_trunk: bool = Field(default=False, description="fine-tune only stems and heads")
    tensorboard_dir: StorageURL | None = Field(
        default=None, description="default: storage_path/name/tensorboard (uploaded if remote)"
    )

    @field_validator("model")
    @classmethod
    def _model(cls, value: dict[str, Any]) -> dict[str, Any]:
        preset = value.get("preset", "tiny")
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r} (known: {', '.join(PRESETS)})")
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

    @property
    def max_seconds(self) -> float | None:
        return self.max_minutes * SECONDS_PER_MINUTE if self.max_minutes else None


def resolve_model_config(
    config: PretrainConfig, info: TokenizerInfo, widths: dict[str, int]
) -> ModelConfig:
    """The model a fresh run builds: the preset and overrides, plus what the data decides."""
    overrides = {k: v for k, v in config.model.items() if k != "preset"}
    data: dict[str, Any] = {"token_kind": info.kind, "grid": tuple(info.grid), "datasets": widths}
    if info.kind == "vq":
        data["vocab_size"] = info.vocab_size
    else:
        data["latent_channels"] = info.latent_channels
        data["head"] = "diffusion"
    try:
        return model_config(config.model.get("preset", "tiny"), **overrides, **data)
    except ValueError as e:
        raise ConfigError(f"model config for run {config.name!r}: {e}") from None
