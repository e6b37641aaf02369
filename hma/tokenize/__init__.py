"""Image tokenizers: frames <-> discrete codes (FSQ, Cosmos DI) or soft latents (KL, Cosmos CI).

base.py        the Tokenizer interface (encode/decode, kind, grid, fingerprint)
backbone.py    conv encoder/decoder shared by FSQ and KL
quantizers.py  FSQ and the diagonal Gaussian bottleneck
fsq.py, kl.py  the trainable tokenizers and their configs; presets.py names them
cosmos.py      adapter for the published Cosmos TorchScript tokenizers
checkpoint.py  tokenizer checkpoints (on hma.checkpoint: safetensors + JSON, never pickle)
trainer.py     one training step; train.py runs it on Ray Train (hma.training)
data.py        frames from Episode sources as a Ray Data stream
metrics.py     PSNR and SSIM; evaluate.py scores held-out episodes and draws grids
"""

from hma.tokenize.base import Tokenizer
from hma.tokenize.checkpoint import (
    CheckpointError,
    build_tokenizer,
    load_tokenizer,
    save_tokenizer,
)

__all__ = ["CheckpointError", "Tokenizer", "build_tokenizer", "load_tokenizer", "save_tokenizer"]
