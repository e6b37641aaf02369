"""Baselines HMA is measured against (never imported by the HMA model itself).

dit.py   an IRASim-like video diffusion transformer: a 16-frame clip denoised jointly
"""

from hma.model.baselines.dit import DiT, DiTConfig, matching_config, parameter_count

__all__ = ["DiT", "DiTConfig", "matching_config", "parameter_count"]
