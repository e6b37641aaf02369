"""Acceptance check: does robomimic 0.3.0 itself accept an HDF5 file that hma wrote?

Run it with a Python that has robomimic installed (it never imports hma):

    python3.11 -m venv /tmp/scratch-robomimic
    /tmp/scratch-robomimic/bin/pip install /opt/wheels/torch-2.13.0+cpu-*.whl 'torchvision==0.28.*' \
        robomimic==0.3.0 six robosuite==1.5.2 mujoco==3.3.0 h5py   # torch and torchvision together
    /tmp/scratch-robomimic/bin/python experiments/robomimic_check.py lift.hdf5 --train-steps 2

It calls robomimic's own readers the way `robomimic/scripts/train.py` does: env metadata, shape
metadata, a SequenceDataset per split (`mask/train`, `mask/valid`) through `load_data_for_training`,
a DataLoader batch, and optionally a few BC training steps on that batch. Everything printed comes
from robomimic's return values.
"""

from __future__ import annotations

import argparse
import json
import sys

import h5py
from robomimic_shims import patch_torchvision_ops, stub_mujoco_py


def obs_keys_of(path: str, image_key: str | None) -> tuple[str, list[str]]:
    """The image key (data attr hma_image_key, else the first *_image key) and low-dim keys."""
    with h5py.File(path, "r") as f:
        demo = sorted(f["data"], key=lambda k: int(k.split("_")[1]))[0]
        keys = sorted(f[f"data/{demo}/obs"])
        stored = f["data"].attrs.get("hma_image_key")
    image_key = image_key or stored or next(k for k in keys if k.endswith("_image"))
    low_dim = [k for k in keys if not k.endswith("_image")]
    return str(image_key), low_dim


def describe_batch(title: str, batch: dict) -> None:
    for part in ("obs", "next_obs"):
        for key, value in batch.get(part, {}).items():
            print(f"{title} [{part!r}][{key!r}]: {tuple(value.shape)} {value.dtype}")
    for key in ("actions", "rewards", "dones", "states"):
        if key in batch:
            print(f"{title} [{key!r}]: {tuple(batch[key].shape)} {batch[key].dtype}")


def _round(log: dict) -> dict:
    return {k: round(float(v), 4) for k, v in log.items() if k in ("Loss", "Policy_Grad_Norms")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hdf5")
    parser.add_argument("--image-key", default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-length", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=0, help="BC steps on one batch")
    args = parser.parse_args()

    stub_mujoco_py()
    patch_torchvision_ops()
    import numpy as np
    import robomimic
    import robomimic.utils.file_utils as FileUtils
    import robomimic.utils.obs_utils as ObsUtils
    import robomimic.utils.torch_utils as TorchUtils
    import robomimic.utils.train_utils as TrainUtils
    import torch
    from robomimic.algo import algo_factory
    from robomimic.config import config_factory
    from robomimic.utils.dataset import SequenceDataset
    from torch.utils.data import DataLoader

    print(f"robomimic {robomimic.__version__}, torch {torch.__version__}, h5py {h5py.__version__}")
    image_key, low_dim = obs_keys_of(args.hdf5, args.image_key)
    print(f"obs keys: rgb={[image_key]} low_dim={low_dim}")

    config = config_factory("bc")
    with config.values_unlocked():
        config.train.data = args.hdf5
        config.train.output_dir = "/tmp/robomimic-check-out"
        config.train.batch_size = args.batch_size
        config.train.seq_length = args.seq_length
        config.train.num_data_workers = 0
        config.train.hdf5_cache_mode = "low_dim"
        config.train.hdf5_filter_key = "train"
        config.train.hdf5_validation_filter_key = "valid"
        config.experiment.validate = True
        config.observation.modalities.obs.rgb = [image_key]
        config.observation.modalities.obs.low_dim = low_dim
    ObsUtils.initialize_obs_utils_with_config(config)

    env_meta = FileUtils.get_env_metadata_from_dataset(dataset_path=args.hdf5)
    print("get_env_metadata_from_dataset ->", json.dumps(env_meta, sort_keys=True))
    shape_meta = FileUtils.get_shape_metadata_from_dataset(
        dataset_path=args.hdf5, all_obs_keys=[image_key, *low_dim], verbose=True
    )
    print("get_shape_metadata_from_dataset ->", shape_meta)

    train_set, valid_set = TrainUtils.load_data_for_training(
        config, obs_keys=shape_meta["all_obs_keys"]
    )
    print("train split:", train_set)
    print("valid split:", valid_set)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)
    batch = next(iter(loader))
    describe_batch("BC train batch", batch)
    image = batch["obs"][image_key]
    print(f"{image_key}: min {float(image.min())}, max {float(image.max())} (uint8 pixels)")

    # robomimic's own defaults, direct: next_obs on, no cache, every dataset key incl. states
    direct = SequenceDataset(
        hdf5_path=args.hdf5,
        obs_keys=shape_meta["all_obs_keys"],
        dataset_keys=("actions", "rewards", "dones", "states"),
        seq_length=10,
        filter_by_attribute="valid",
    )
    print("SequenceDataset(valid, seq_length=10, next_obs, no cache):", direct)
    describe_batch("direct batch", next(iter(DataLoader(direct, batch_size=args.batch_size))))

    # the frames robomimic returns are the file's frames: compare one demo's first step
    first = train_set.demos[0]
    with h5py.File(args.hdf5, "r") as f:
        stored = f[f"data/{first}/obs/{image_key}"][0]
    got = train_set[train_set._demo_id_to_start_indices[first]]["obs"][image_key][0]
    print(f"{first} step 0 frame identical to file: {np.array_equal(got, stored)}")

    if args.train_steps:
        model = algo_factory(
            algo_name=config.algo_name,
            config=config,
            obs_key_shapes=shape_meta["all_shapes"],
            ac_dim=shape_meta["ac_dim"],
            device=TorchUtils.get_torch_device(try_to_use_cuda=False),
        )
        # robomimic's own epoch loop (process, postprocess, train_on_batch), then validation
        log = TrainUtils.run_epoch(model, loader, epoch=1, num_steps=args.train_steps)
        print(f"run_epoch train ({args.train_steps} steps) ->", _round(log))
        valid_loader = DataLoader(valid_set, batch_size=args.batch_size, drop_last=True)
        with torch.no_grad():
            log = TrainUtils.run_epoch(model, valid_loader, epoch=1, validate=True, num_steps=1)
        print("run_epoch valid (1 step) ->", _round(log))
    print("robomimic accepted the file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
