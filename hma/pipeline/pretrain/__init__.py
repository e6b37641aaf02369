"""Pretraining (and fine-tuning) of HMA on token stores with Ray Train.

config.py      PretrainConfig: the run, its data mix, model overrides, optimiser, validation
mixing.py      mixed-dataset batches: weights, a resumable sampling stream, prefetch
driver.py      `hma pretrain`: plan on the driver, then a TorchTrainer (hma.training)
loop.py        the Ray Train worker: restore, step, validate, checkpoint
step.py        one optimizer step of the world model (DDP / FSDP2, accumulation, bf16)
checkpoint.py  exactly resumable training checkpoints (the model part: hma.model.checkpoint)
validation.py  held-out loss, perplexity, action gain, PSNR / ΔPSNR rollouts, PNGs
"""
