"""Acceptance check: does robomimic 0.3.0 load a mixed file from `hma-generate` and train BC on it?

Run it with the scratch Python that has robomimic 0.3.0 (it never imports hma):

    hma sim generate --env robosuite_lift --episodes 12 --out /tmp/gen/lift.hdf5 --size 64
    hma-generate --checkpoint CKPT --dataset /tmp/gen/lift.hdf5 --n 90 --mix 10 \\
        --out /tmp/gen/lift_mixed.hdf5 --actions replay                       # project venv
    /tmp/scratch-robomimic/bin/python experiments/generate_robomimic_check.py /tmp/gen/lift_mixed.hdf5

What it does, all through robomimic's own code: counts real and synthetic demos and their
`mask/train` / `mask/valid` membership from the file (the provenance is our `hma_meta` attr), reads
the env metadata and shapes robomimic derives from the file, then trains a BC policy with
`robomimic.scripts.train.train(config, device)` for --steps gradient steps on the train split,
validating on the valid split (optionally rolling it out in the robosuite env robomimic builds from
`env_args`). Observations: the camera image, through robomimic's small `ShallowConv` trunk
(its default ResNet18 costs ~1 s a step on this CPU), and the low-dim keys every demo has: the
proprioception a state-trained world model predicts (`robot0_eef_pos`, `robot0_eef_quat`,
`robot0_gripper_qpos`) is in synthetic demos too; `object` poses, which no world model predicts,
are in real demos only and so are left out (`--low-dim-only` trains on those keys alone).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import h5py
from robomimic_shims import patch_torchvision_ops, stub_mujoco_py

LOW_DIM = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")


def survey(path: str) -> tuple[str, list[str], bool]:
    """Print demo counts by provenance and split; return (image key, low-dim keys in every demo,
    whether the file has a valid split)."""
    with h5py.File(path, "r") as f:
        data = f["data"]
        masks = {
            k: {x.decode() for x in f[f"mask/{k}"][()]} if f"mask/{k}" in f else set()
            for k in ("train", "valid")
        }
        counts: Counter = Counter()
        common: set[str] | None = None
        synth: dict | None = None
        for demo in data:
            meta = json.loads(data[demo].attrs.get("hma_meta", "{}"))
            kind = "synthetic" if meta.get("synthetic") else "real"
            synth = synth or (meta if meta.get("synthetic") else None)
            split = "valid" if demo in masks["valid"] else "train"
            counts[(kind, split)] += 1
            keys = set(data[demo]["obs"])
            common = keys if common is None else common & keys
        image_key = str(data.attrs.get("hma_image_key", "agentview_image"))
    print(f"demos: {dict(sorted(counts.items()))}, total {sum(counts.values())}")
    if synth:
        keys = ("checkpoint_fingerprint", "tokenizer_fingerprint", "seed", "prompt_episode_id")
        print("provenance of a synthetic demo:", {k: synth[k] for k in keys})
    return image_key, [k for k in LOW_DIM if common and k in common], bool(masks["valid"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hdf5")
    parser.add_argument("--steps", type=int, default=300, help="gradient steps in all")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--rollouts", type=int, default=0, help="episodes in the env after training"
    )
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--out", default="/tmp/robomimic-generate-check")
    parser.add_argument("--low-dim-only", action="store_true", help="no image observation")
    parser.add_argument("--seed", type=int, default=1, help="robomimic's training seed")
    parser.add_argument(
        "--filter-key", default="train", help="the mask/<key> to train on (e.g. synthetic_train)"
    )
    parser.add_argument("--json", help="write the losses and rollout statistics here")
    args = parser.parse_args()

    os.environ.setdefault("MUJOCO_GL", "egl")
    stub_mujoco_py()
    patch_torchvision_ops()
    import robomimic
    import robomimic.scripts.train as train_script
    import robomimic.utils.file_utils as FileUtils
    import robomimic.utils.train_utils as TrainUtils
    import torch
    from robomimic.config import config_factory

    print(f"robomimic {robomimic.__version__}, torch {torch.__version__}")
    image_key, low_dim, has_valid = survey(args.hdf5)
    env_meta = FileUtils.get_env_metadata_from_dataset(dataset_path=args.hdf5)
    print("env:", env_meta["env_name"], "type", env_meta["type"])

    config = config_factory("bc")
    with config.values_unlocked():
        config.experiment.name = f"hma_generate_check_{time.strftime('%Y%m%d_%H%M%S')}"
        config.experiment.validate = has_valid  # robomimic fails on an empty valid split
        config.experiment.logging.terminal_output_to_txt = False
        config.experiment.logging.log_tb = False
        config.experiment.save.enabled = False
        config.experiment.render_video = False
        config.experiment.epoch_every_n_steps = args.steps // args.epochs
        config.experiment.validation_epoch_every_n_steps = 5
        config.experiment.rollout.enabled = args.rollouts > 0
        config.experiment.rollout.n = args.rollouts
        config.experiment.rollout.horizon = args.horizon
        config.experiment.rollout.rate = args.epochs
        config.experiment.rollout.warmstart = 0
        config.train.data = args.hdf5
        config.train.output_dir = args.out
        config.train.num_data_workers = 0
        config.train.hdf5_cache_mode = "low_dim"  # images are read from the file per batch
        config.train.hdf5_filter_key = args.filter_key
        config.train.hdf5_validation_filter_key = "valid" if has_valid else None
        config.train.batch_size = args.batch_size
        config.train.num_epochs = args.epochs
        config.train.seed = args.seed
        config.experiment.rollout.terminate_on_success = True
        config.observation.modalities.obs.low_dim = low_dim
        config.observation.modalities.obs.rgb = [] if args.low_dim_only else [image_key]
        if not args.low_dim_only:  # a small conv trunk: ResNet18 costs ~1 s per step here
            config.observation.encoder.rgb.core_kwargs.backbone_class = "ShallowConv"
            config.observation.encoder.rgb.core_kwargs.backbone_kwargs = {}
            config.observation.encoder.rgb.obs_randomizer_class = None
    config.lock()
    print(f"BC observations: low_dim={low_dim} rgb={list(config.observation.modalities.obs.rgb)}")

    # keep what robomimic's epoch and rollout helpers return (train() only prints them)
    logs: list[tuple[str, dict]] = []
    rollouts: list[dict] = []
    run_epoch, rollout_with_stats = TrainUtils.run_epoch, TrainUtils.rollout_with_stats

    def recorded_epoch(*a, **kw):
        log = run_epoch(*a, **kw)
        logs.append(("valid" if kw.get("validate") else "train", log))
        return log

    def recorded_rollouts(*a, **kw):
        stats, videos = rollout_with_stats(*a, **kw)
        rollouts.append(stats)
        return stats, videos

    TrainUtils.run_epoch = recorded_epoch
    TrainUtils.rollout_with_stats = recorded_rollouts
    start = time.time()
    train_script.train(config, device=torch.device("cpu"))
    seconds = time.time() - start
    for split, log in logs:
        print(f"RESULT {split} epoch: Loss {float(log['Loss']):.4f}")
    result: dict = {
        "hdf5": args.hdf5,
        "steps": args.steps,
        "seed": args.seed,
        "low_dim": low_dim,
        "rgb": list(config.observation.modalities.obs.rgb),
        "losses": [[split, float(log["Loss"])] for split, log in logs],
        "seconds": seconds,
    }
    for env_name, stats in (rollouts[-1] if rollouts else {}).items():
        rate = float(stats["Success_Rate"])
        result["rollouts"] = {"env": env_name, "episodes": args.rollouts, "success_rate": rate}
        print(
            f"RESULT {env_name}: success {round(rate * args.rollouts)}/{args.rollouts} ({rate:.0%})"
        )
    print(f"trained {args.steps} BC steps in {seconds:.0f}s on {args.hdf5}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
