"""ModelConfig: every knob of the HMA model, validated on construction, and the size presets.

    tiny   CPU tests: d 32, 2 layers, a 4x4 token grid, 4-frame window; trains in seconds
    base   the paper's HMA-Base: d 256, 32 layers, 8 heads (~44M parameters with one dataset)
    xl     the paper's HMA-XL: d 768, 32 layers, 12 heads

`model_config("base", vocab_size=4096, datasets={"pusht": 2})` overrides any field of a preset.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hma.config import StrictModel, check_preset
from hma.model.heads.maskgit import MaskGITHeadConfig
from hma.model.masking import MaskingConfig

Conditioning = Literal["concat+modulate", "modulate", "concat", "add", "cross_attention"]
CONDITIONINGS: tuple[str, ...] = ("concat+modulate", "modulate", "concat", "add", "cross_attention")
# Dataset names become nn.ModuleDict keys, which may not contain dots.
DATASET_NAME = re.compile(r"[A-Za-z0-9_\-]+")


class ModelConfig(StrictModel):
    """The HMA model. Shapes: tokens [B,T,h,w] (vq) or [B,T,C,h,w] (soft); actions [B,T,A_max];
    proprioceptive state [B,T,S_max] for the datasets in `states`."""

    token_kind: Literal["vq", "soft"] = "vq"
    vocab_size: int = Field(1000, ge=2, description="codebook size K (vq tokens)")
    latent_channels: int = Field(8, ge=1, description="channels C per soft token")
    grid: tuple[int, int] = Field((16, 16), description="token grid (h, w) of one frame")
    window: int = Field(16, ge=2, description="frames T the model attends over (train clip length)")
    d_model: int = Field(256, ge=8)
    layers: int = Field(32, ge=1)
    heads: int = Field(8, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    rope_base: float = Field(10_000.0, gt=1, description="rotary base of the temporal positions")
    conditioning: Conditioning = "concat+modulate"
    head: Literal["maskgit", "diffusion"] = "maskgit"
    maskgit: MaskGITHeadConfig = MaskGITHeadConfig()
    diffusion: dict[str, Any] = Field(
        default_factory=dict,
        description="DiffusionHeadConfig fields (hma.model.heads.diffusion), checked on build",
    )
    datasets: dict[str, int] = Field(
        default_factory=dict, description="dataset name -> flat action width (stride * action_dim)"
    )
    states: dict[str, int] = Field(
        default_factory=dict,
        description="dataset name -> proprioceptive state width S (datasets without state absent)",
    )
    stem_hidden: int = Field(256, ge=1, description="hidden width of each action and state stem")
    masking: MaskingConfig = MaskingConfig()
    action_loss_weight: float = Field(1.0, ge=0)
    state_loss_weight: float = Field(1.0, ge=0)

    @field_validator("datasets")
    @classmethod
    def _names(cls, value: dict[str, int]) -> dict[str, int]:
        for name, width in value.items():
            if not DATASET_NAME.fullmatch(name):
                raise ValueError(f"dataset name {name!r} must match {DATASET_NAME.pattern}")
            if width < 1:
                raise ValueError(f"dataset {name!r}: action width must be >= 1, got {width}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        for name, width in self.states.items():
            if name not in self.datasets:
                raise ValueError(f"states: dataset {name!r} is not among the datasets")
            if width < 1:
                raise ValueError(f"states: dataset {name!r} has width {width}; omit it instead")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if (self.d_model // self.heads) % 2:
            raise ValueError("d_model / heads must be even (rotary temporal positions)")
        if self.grid[0] < 1 or self.grid[1] < 1:
            raise ValueError(f"grid must be positive, got {self.grid}")
        if self.token_kind == "vq" and self.head != "maskgit":
            raise ValueError("vq tokens need head 'maskgit' (diffusion models soft tokens)")
        if self.token_kind == "soft" and self.head != "diffusion":
            raise ValueError("soft tokens need head 'diffusion' (maskgit predicts vq codes)")
        factors = self.maskgit.factors
        if self.token_kind == "vq" and factors is not None:
            product = 1
            for f in factors:
                product *= f
            if product != self.vocab_size:
                raise ValueError(
                    f"maskgit.factors {factors} multiply to {product}, not {self.vocab_size}"
                )
        if self.head == "diffusion":
            # Lazy: the diffusion head is optional for vq models and their tests.
            from hma.model.heads.diffusion import DiffusionHeadConfig

            DiffusionHeadConfig(**self.diffusion)
        return self

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def action_width(self) -> int:
        """A_max: the widest flattened action chunk of any dataset (0 without datasets)."""
        return max(self.datasets.values(), default=0)

    @property
    def state_width(self) -> int:
        """S_max: the widest state of any dataset (0 when no dataset has state)."""
        return max(self.states.values(), default=0)

    @property
    def action_tokens(self) -> int:
        """Action tokens appended per frame: 1 for the concat variants, else 0."""
        return 1 if self.conditioning in ("concat+modulate", "concat") else 0


def _tiny() -> dict[str, Any]:
    return {
        "vocab_size": 16,
        "latent_channels": 4,
        "grid": (4, 4),
        "window": 4,
        "d_model": 32,
        "layers": 2,
        "heads": 2,
        "stem_hidden": 32,
        "maskgit": {},
        "diffusion": {},
    }


def _base() -> dict[str, Any]:
    return {"d_model": 256, "layers": 32, "heads": 8, "grid": (16, 16), "window": 16}


def _xl() -> dict[str, Any]:
    return {"d_model": 768, "layers": 32, "heads": 12, "grid": (16, 16), "window": 16}


PRESETS: dict[str, Callable[[], dict[str, Any]]] = {"tiny": _tiny, "base": _base, "xl": _xl}


def model_config(preset: str = "base", **overrides: Any) -> ModelConfig:
    """The preset's config with `overrides` applied (nested configs as dicts merge key by key)."""
    check_preset("model", preset, PRESETS)
    data = PRESETS[preset]()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "datasets":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if data.get("head") == "diffusion" or data.get("token_kind") == "soft":
        data.setdefault("head", "diffusion")
        data.setdefault("token_kind", "soft")
    return ModelConfig(**data)
