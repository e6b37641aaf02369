"""HMA: the action-video dynamics model (trunk, embodiment stems/heads, video heads, sampling)."""

from hma.model.batch import Batch
from hma.model.config import ModelConfig, model_config
from hma.model.hma import HMA, Output
from hma.model.masking import MODES
from hma.model.sampling import RolloutResult, rollout

__all__ = [
    "HMA",
    "MODES",
    "Batch",
    "ModelConfig",
    "Output",
    "RolloutResult",
    "model_config",
    "rollout",
]
