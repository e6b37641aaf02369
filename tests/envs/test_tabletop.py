"""The Language-Table-like board: declared spaces, determinism, the expert, and Episodes."""

from __future__ import annotations

import numpy as np
import pytest

from hma.envs import make_env
from hma.envs.rollout import rollout
from hma.envs.tabletop import LOCATIONS, SHAPES, TOLERANCE, TabletopEnv, shape_parts
from hma.episodes import load_registry, validate_episode

SIZE = 64


@pytest.fixture(scope="module")
def env() -> TabletopEnv:
    return make_env("tabletop", SIZE)


def test_declared_shapes_dtypes_and_rates_match_the_registry(env):
    spec = load_registry().get("tabletop")
    obs = env.reset(0)
    assert obs["image"].shape == (SIZE, SIZE, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (4,) and obs["state"].dtype == np.float32
    assert env.action_space.dim == spec.action_dim == 2
    assert env.hz == spec.hz == 10
    np.testing.assert_array_equal(env.render(), obs["image"])
    extras = env.extras()
    assert set(extras) == {"effector_translation", "effector_target_translation"}
    for value in extras.values():
        assert value.shape == (2,) and value.dtype == np.float32
    # state = effector translation + its target, as Language Table records them
    np.testing.assert_array_equal(
        obs["state"],
        np.concatenate([extras["effector_translation"], extras["effector_target_translation"]]),
    )
    assert TabletopEnv(128).reset(0)["image"].shape == (128, 128, 3)


def test_scene_and_task_are_sampled_from_the_seed(env):
    counts, families = set(), set()
    for seed in range(12):
        env.reset(seed)
        counts.add(len(env.blocks))
        families.add(env.task.family)
        names = [f"{c} {s}" for c, s in env.blocks]
        assert len(set(names)) == len(names)  # every instruction names one block
        assert names[env.task.block] in env.instruction()
        assert env.task.target in env.instruction()
        assert env.goal_distance() > TOLERANCE[env.task.family]  # no episode starts solved
    assert families == {"location", "block"}
    assert min(counts) >= 4 and max(counts) <= 8 and len(counts) > 1


def test_rollout_is_deterministic_given_the_seed(env):
    first, second = rollout(env, 5), rollout(make_env("tabletop", SIZE), 5)
    np.testing.assert_array_equal(first.frames, second.frames)
    np.testing.assert_array_equal(first.actions, second.actions)
    assert first.instruction == second.instruction
    other = rollout(env, 6)
    assert other.instruction != first.instruction or not np.array_equal(
        other.frames[0], first.frames[0]
    )


def test_expert_succeeds_on_at_least_80_percent_of_seeds(env):
    results = [rollout(env, seed).success for seed in range(100, 130)]
    assert np.mean(results) >= 0.8, results


def test_success_means_the_block_reached_its_goal(env):
    episode = rollout(env, 11)
    assert episode.success
    assert env.goal_distance() < TOLERANCE[env.task.family]
    # an idle effector never solves the task
    env.reset(11)
    for _ in range(30):
        _, _, done, info = env.step(np.zeros(2, np.float32))
        assert not info["success"] and not done


def test_actions_are_bounded_by_0_1(env):
    episode = rollout(env, 3, noise=0.5)
    assert np.all(np.abs(episode.actions) <= 0.1)
    env.reset(3)
    before = env.extras()["effector_target_translation"]
    env.step(np.array([5.0, 5.0], np.float32))  # the env clips what it is given
    after = env.extras()["effector_target_translation"]
    np.testing.assert_allclose(after - before, [0.1, 0.1], atol=1e-6)
    for _ in range(20):  # and keeps the target on the board
        env.step(np.array([0.0, -0.1], np.float32))
    assert env.extras()["effector_target_translation"][1] == pytest.approx(0.03)


def test_effector_follows_its_target(env):
    env.reset(0)
    start = env.effector_translation()
    for _ in range(3):
        env.step(np.array([0.05, 0.05], np.float32))
    env.step(np.zeros(2, np.float32))  # let it settle
    np.testing.assert_allclose(env.effector_translation(), start + 0.15, atol=1e-3)


def test_rollout_is_a_valid_episode_with_language_table_extras(env):
    episode = rollout(env, 2, split="val")
    spec = validate_episode(episode, load_registry())
    assert spec.action_dim == 2 and episode.hz == 10
    assert episode.instruction and episode.success
    steps = len(episode)
    assert episode.extras["effector_translation"].shape == (steps, 2)
    assert episode.extras["effector_target_translation"].shape == (steps, 2)
    assert episode.extras["reward"].shape == (steps,)
    # the target moves by exactly the (clipped) action, within the workspace
    targets = episode.extras["effector_target_translation"]
    np.testing.assert_allclose(targets[1:] - targets[:-1], episode.actions[:-1], atol=1e-6)
    assert episode.meta["task"] in {"location", "block"} and episode.meta["seed"] == 2


def test_block_shapes_fit_their_radius():
    for shape in SHAPES:
        parts = shape_parts(shape, radius=1.0)
        points = np.concatenate(parts)
        assert np.linalg.norm(points, axis=1).max() == pytest.approx(1.0)
    assert len(shape_parts("star")) > 1 and len(shape_parts("moon")) > 1  # concave: unions
    assert all(0 < x < 1 and 0 < y < 1 for x, y in LOCATIONS.values())
