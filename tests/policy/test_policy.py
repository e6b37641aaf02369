"""Visuomotor policies: the loss falls, checkpoints round-trip and are picked by step, an env
that does not fit is refused, and `hma policy train|eval` run on Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hma import formats
from hma.checkpoint import CheckpointError
from hma.cli import main
from hma.envs import make_env
from hma.envs.procedural import procedural_episodes
from hma.policy.agent import Agent, PolicyMismatchError
from hma.policy.data import chunks_of, collect
from hma.policy.train import Demonstrations, Learner, PolicyTrainConfig
from tests.helpers.policies import save_untrained_policy
from tests.helpers.threads import one_torch_thread

DATASET = "tabletop"  # 2-D actions, stride 1, a fast simulator


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def _demos(count: int = 4, steps: int = 6) -> Demonstrations:
    episodes = procedural_episodes(DATASET, count, steps, 32, seed=0)
    for ep in episodes:
        ep.state = None
    train = collect(episodes, 32, 2, "train", only_success=False)
    val = collect(episodes, 32, 2, "val", only_success=False)
    return Demonstrations(train, val, DATASET, 1, 2)


def test_chunks_repeat_the_last_action_past_the_end():
    actions = np.arange(8, dtype=np.float32).reshape(4, 2)
    chunks = chunks_of(actions, 3)
    assert chunks.shape == (4, 3, 2)
    np.testing.assert_array_equal(chunks[1], actions[1:4])
    np.testing.assert_array_equal(chunks[3], actions[[3, 3, 3]])


def test_the_loss_falls_on_a_few_demonstrations(tmp_path):
    config = PolicyTrainConfig(
        name="t",
        storage_path=str(tmp_path),
        data=[{"url": str(tmp_path)}],
        policy={"preset": "tiny", "image_size": 32, "dropout": 0.0, "shift": 0},
        optim={"lr": 3e-3, "warmup_steps": 5},
        max_steps=150,
        batch_size=16,
    )
    torch.manual_seed(0)
    learner = Learner.build(config, _demos(), torch.device("cpu"))
    first = [learner.train_step(_demos().train, 0, 16)["loss"] for _ in range(5)]
    for _ in range(140):
        last = learner.train_step(_demos().train, 0, 16)["loss"]
    assert last * 3 < np.mean(first), (first, last)


def test_checkpoints_round_trip_and_are_picked_by_step(tmp_path):
    run = tmp_path / "run"
    for step in (100, 200):
        save_untrained_policy(
            str(run / f"checkpoint_{step:06d}"), DATASET, 32, step=step, seed=step
        )
    newest, early = Agent.load(str(run)), Agent.load(f"{run}@100")
    assert (newest.step, early.step) == (200, 100)
    frames = np.random.default_rng(0).integers(0, 255, (3, 48, 48, 3), dtype=np.uint8)
    chunk = early.act(frames)
    assert chunk.shape == (3, 1, 2) and chunk.dtype == np.float32
    assert not np.allclose(chunk, newest.act(frames))  # different weights, different actions
    np.testing.assert_array_equal(chunk, Agent.load(f"{run}@100").act(frames))
    with pytest.raises(CheckpointError, match="no checkpoint at step 150 .*100, 200"):
        Agent.load(f"{run}@150")
    with pytest.raises(CheckpointError, match="not a policy checkpoint"):
        Agent.load(str(tmp_path / "nothing"))


def test_an_env_of_another_action_space_or_frame_size_is_refused(tmp_path):
    agent = Agent.load(save_untrained_policy(str(tmp_path / "p"), DATASET, 32))
    pusht = make_env("pusht", 32)
    try:
        with pytest.raises(
            PolicyMismatchError, match="trained on 'tabletop' .*2-D.*the env runs 'pusht'"
        ):
            agent.check_env(pusht)
    finally:
        pusht.close()
    board = make_env(DATASET, 64)
    with pytest.raises(PolicyMismatchError, match="trained on 32x32 frames; .* renders 64x64"):
        agent.check_env(board)


def test_train_and_eval_through_the_cli(tmp_path, ray_cluster, capsys):
    src = str(tmp_path / "demos")
    episodes = procedural_episodes(DATASET, 6, 8, 64, seed=1)
    formats.write_episodes(episodes, src, "rlds")
    out = str(tmp_path / "runs" / "bc")
    argv = ["policy", "train", "--data", src, "--steps", "20", "--out", out, "--preset", "tiny"]
    assert main([*argv, "--checkpoint-every", "10", "--batch-size", "8", "--quiet"]) == 0
    assert "steps 10, 20" in capsys.readouterr().out
    assert (
        main(["policy", "eval", "--policy", f"{out}@10", "--env", DATASET, "--episodes", "2"]) == 0
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert (
        line.startswith(f"{out}@10: success ") and "(0/2 episodes)" in line or "/2 episodes" in line
    )


def test_action_error_is_the_raw_chunk_mse_over_held_out_episodes(tmp_path):
    from hma.policy.evaluate import action_error

    agent = Agent.load(save_untrained_policy(str(tmp_path / "p"), "tabletop", 32, chunk=3))
    episodes = list(procedural_episodes("tabletop", 2, 7, 32, seed=5))
    result = action_error(agent, episodes)
    expected = [
        float(np.mean((agent.act(ep.frames) - chunks_of(ep.actions, 3)) ** 2)) for ep in episodes
    ]
    assert result.episodes == 2 and result.samples == 14
    assert result.mse == pytest.approx(np.mean(expected), rel=1e-5)
    assert result.se == pytest.approx(np.std(expected, ddof=1) / np.sqrt(2), rel=1e-4)
    assert "held-out action MSE" in result.line()
