"""PolicyConfig: a visuomotor policy's architecture; presets by name.

R image size, C conv widths, H hidden width, K chunk (raw steps per decision), A action dim
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from hma.config import StrictModel, check_preset


class PolicyConfig(StrictModel):
    image_size: int = Field(64, ge=16, description="frames are area-resized to R x R")
    widths: tuple[int, ...] = Field(
        (32, 64, 128, 128), min_length=1, description="conv widths (3x3, stride 2)"
    )
    hidden: int = Field(256, ge=8, description="width of the head's hidden layers")
    layers: int = Field(2, ge=1, description="hidden layers of the head")
    use_state: bool = Field(
        False,
        description="also read proprioception (the dataset's state); a learned simulator that "
        "predicts no state can then not run the policy",
    )
    chunk: int | None = Field(
        None, ge=1, description="raw actions per decision (default: the dataset's stride)"
    )
    shift: int = Field(4, ge=0, description="random-shift augmentation in pixels at R")
    dropout: float = Field(0.1, ge=0, lt=1)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"widths": (8, 16), "hidden": 32, "layers": 1, "image_size": 32},
    "small": {},
    "base": {"widths": (32, 64, 128, 256), "hidden": 512, "layers": 3, "image_size": 96},
}


def policy_config(preset: str = "small", **overrides: Any) -> PolicyConfig:
    check_preset("policy", preset, PRESETS)
    return PolicyConfig(**{**PRESETS[preset], **overrides})
