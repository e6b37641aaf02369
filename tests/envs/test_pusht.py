"""gym-pusht behind the Env interface, and its scripted pushing expert."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from hma.envs import make_env  # noqa: E402
from hma.envs.pusht import SUCCESS_COVERAGE, PushTEnv  # noqa: E402
from hma.envs.rollout import rollout  # noqa: E402
from hma.episodes import load_registry, validate_episode  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def env() -> PushTEnv:
    env = make_env("pusht", SIZE)
    yield env
    env.close()


def test_declared_shapes_dtypes_and_rates_match_the_registry(env):
    spec = load_registry().get("pusht")
    obs = env.reset(0)
    assert obs["image"].shape == (SIZE, SIZE, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (2,) and obs["state"].dtype == np.float32
    assert env.action_space.dim == spec.action_dim == 2
    assert env.hz == spec.hz == 10
    np.testing.assert_array_equal(env.render(), obs["image"])
    big = PushTEnv(128)
    assert big.reset(0)["image"].shape == (128, 128, 3)
    big.close()


def test_rollout_is_deterministic_given_the_seed(env):
    first = rollout(env, 4, max_steps=25)
    second = rollout(make_env("pusht", SIZE), 4, max_steps=25)
    np.testing.assert_array_equal(first.frames, second.frames)
    np.testing.assert_array_equal(first.actions, second.actions)
    np.testing.assert_array_equal(first.state, second.state)
    assert not np.array_equal(rollout(env, 5, max_steps=1).frames, first.frames[:1])


def test_expert_pushes_the_t_into_the_goal(env):
    # measured: 200 of 200 seeds; a handful keeps this file fast
    results = [rollout(env, seed).success for seed in range(3)]
    assert sum(results) >= 2, results


@pytest.mark.slow
def test_expert_success_rate_over_20_seeds(env):
    results = [rollout(env, seed).success for seed in range(100, 120)]
    assert np.mean(results) >= 0.9, results


def test_success_is_gym_pushts_coverage_threshold(env):
    obs = env.reset(2)
    policy = env.expert()
    coverage = []
    for _ in range(env.max_steps):
        obs, reward, done, info = env.step(policy(obs))
        coverage.append(info["coverage"])
        if done:
            break
    assert info["success"] and info["coverage"] > SUCCESS_COVERAGE
    assert max(coverage[:-1]) <= SUCCESS_COVERAGE  # the episode ends at the first success
    # a pusher parked in a corner never solves it
    env.reset(2)
    for _ in range(20):
        _, _, done, info = env.step(np.array([20.0, 20.0], np.float32))
        assert not info["success"] and not done


def test_actions_stay_in_the_pixel_range(env):
    episode = rollout(env, 1, noise=0.2, max_steps=30)
    assert np.all(episode.actions >= 0) and np.all(episode.actions <= 512)
    env.reset(1)
    env.step(np.array([-100.0, 900.0], np.float32))  # clipped, not rejected
    for _ in range(10):
        obs, *_ = env.step(np.array([-100.0, 900.0], np.float32))
    np.testing.assert_allclose(obs["state"], [0.0, 512.0], atol=2.0)


def test_rollout_is_a_valid_episode(env):
    episode = rollout(env, 3, split="val", max_steps=40)
    spec = validate_episode(episode, load_registry())
    assert spec.action_dim == 2 and episode.hz == 10 and episode.split == "val"
    steps = len(episode)
    assert episode.extras["block_pose"].shape == (steps, 3)
    assert episode.extras["coverage"].shape == (steps,)
    assert episode.meta["env_id"] == "gym_pusht/PushT-v0"
    np.testing.assert_allclose(episode.meta["goal_pose"], [256, 256, np.pi / 4])
