"""Acceptance check: does a robomimic BC policy trained on hma-generated Lift demos succeed?

Run it with a Python that has robomimic 0.3.0, robosuite 1.5.2 and mujoco 3.3.0 (never imports hma):

    hma sim generate --env robosuite_lift --episodes 50 --out lift50.hdf5      # project venv
    /tmp/scratch-robomimic/bin/python experiments/robomimic_bc.py lift50.hdf5  # scratch venv

Training is robomimic's own: `config_factory("bc")` with low-dim observations (robot0_eef_pos,
robot0_eef_quat, robot0_gripper_qpos, object) and `robomimic.scripts.train.train(config, device)`,
which loads the `mask/train` / `mask/valid` splits, trains, validates and, at the last epoch, rolls
the policy out in the robosuite env it builds from the file's `env_args`
(`EnvUtils.create_env_from_metadata`). The rollout statistics printed at the end are the values
robomimic's `TrainUtils.rollout_with_stats` returned.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from robomimic_shims import stub_mujoco_py

LOW_DIM = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hdf5")
    parser.add_argument("--steps", type=int, default=4000, help="gradient steps in all")
    parser.add_argument("--epochs", type=int, default=8, help="steps are split over epochs")
    parser.add_argument("--rollouts", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=200, help="max env steps per rollout")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="/tmp/robomimic-bc-out")
    args = parser.parse_args()

    os.environ.setdefault("MUJOCO_GL", "egl")
    stub_mujoco_py()
    import mujoco
    import robomimic
    import robomimic.scripts.train as train_script
    import robomimic.utils.torch_utils as TorchUtils
    import robomimic.utils.train_utils as TrainUtils
    import robosuite
    import torch
    from robomimic.config import config_factory

    print(
        f"robomimic {robomimic.__version__}, robosuite {robosuite.__version__}, "
        f"mujoco {mujoco.__version__}, torch {torch.__version__}"
    )

    config = config_factory("bc")
    with config.values_unlocked():
        config.experiment.name = f"hma_lift_bc_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
        config.experiment.validate = True
        config.experiment.logging.terminal_output_to_txt = False
        config.experiment.logging.log_tb = False
        config.experiment.save.enabled = False
        config.experiment.render_video = False
        config.experiment.epoch_every_n_steps = args.steps // args.epochs
        config.experiment.validation_epoch_every_n_steps = 10
        config.experiment.rollout.enabled = True
        config.experiment.rollout.n = args.rollouts
        config.experiment.rollout.horizon = args.horizon
        config.experiment.rollout.rate = args.epochs  # roll out once, after the last epoch
        config.experiment.rollout.warmstart = 0
        config.experiment.rollout.terminate_on_success = True
        config.train.data = args.hdf5
        config.train.output_dir = args.out
        config.train.num_data_workers = 0
        config.train.hdf5_cache_mode = "low_dim"
        config.train.hdf5_filter_key = "train"
        config.train.hdf5_validation_filter_key = "valid"
        config.train.batch_size = args.batch_size
        config.train.num_epochs = args.epochs
        config.train.seed = args.seed
        config.observation.modalities.obs.low_dim = LOW_DIM
        config.observation.modalities.obs.rgb = []
    config.lock()

    # keep what robomimic's rollout helper returns (train() only prints it)
    results: list[dict] = []
    rollout_with_stats = TrainUtils.rollout_with_stats

    def recorded(*a, **kw):
        logs, videos = rollout_with_stats(*a, **kw)
        results.append(logs)
        return logs, videos

    TrainUtils.rollout_with_stats = recorded
    device = TorchUtils.get_torch_device(try_to_use_cuda=torch.cuda.is_available())
    t0 = time.time()
    train_script.train(config, device=device)
    elapsed = time.time() - t0

    if not results:
        print("no rollouts ran")
        return 1
    for env_name, logs in results[-1].items():
        n = args.rollouts
        rate = float(logs["Success_Rate"])
        print(
            f"\nRESULT {env_name}: BC ({args.steps} steps, batch {args.batch_size}) on "
            f"{args.hdf5}: success {round(rate * n)}/{n} rollouts ({rate:.0%}), "
            f"mean horizon {float(logs['Horizon']):.1f} steps, rollout time "
            f"{float(logs['time']):.1f}s per episode; total {elapsed:.0f}s on {device}"
        )
        print(json.dumps({k: float(v) for k, v in logs.items()}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
