"""Policy evaluation: policy names, ground-truth episodes, action replay in the learned simulator,
the correlation, and `hma evaluate-policy` end to end on the tabletop env."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from hma.cli.generate import configure_evaluate_policy, evaluate_policy_command
from hma.envs import make_env
from hma.generate.policy_eval import (
    PolicyEvalError,
    PolicySpec,
    evaluate,
    pearson,
    play,
    replay,
)
from hma.generate.simulator import Simulator
from hma.generate.success import SuccessClassifier, SuccessConfig, SuccessNet

ENV = "tabletop"  # fast (pymunk), in the tiny checkpoint, stride 1
MAX_STEPS = 24


@pytest.fixture(scope="module")
def env():
    e = make_env(ENV, 64)
    yield e
    e.close()


def constant_classifier(logit: float, dataset: str = ENV) -> SuccessClassifier:
    net = SuccessNet((4,), 64)
    torch.nn.init.zeros_(net.logit.weight)
    torch.nn.init.constant_(net.logit.bias, logit)
    return SuccessClassifier(net, SuccessConfig(widths=(4,), hold=1), dataset)


def test_pearson_on_known_numbers():
    # paper Table 5: ground truth vs HMA simulator over 4 policies, reported as 0.95
    assert pearson([0.38, 0.52, 0.70, 1.00], [0.43, 0.56, 0.66, 0.73]) == pytest.approx(
        0.9525, abs=1e-4
    )
    assert pearson([0, 1, 2], [5, 7, 9]) == pytest.approx(1.0)
    assert pearson([0, 1, 2], [1, 0, -1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([0.5, 0.5], [0.1, 0.9]))
    with pytest.raises(ValueError):
        pearson([1.0], [1.0])
    with pytest.raises(ValueError):
        pearson([1, 2, 3], [1, 2])


def test_policy_names():
    assert PolicySpec.parse("expert") == PolicySpec("expert", "expert", 0.0)
    assert PolicySpec.parse("expert:0.3").noise == 0.3
    assert PolicySpec.parse("random").kind == "random"
    for bad in ("expert:-1", "expert:x", "greedy", "expert:nan"):
        with pytest.raises(PolicyEvalError, match="unknown policy"):
            PolicySpec.parse(bad)


def test_ground_truth_episodes_are_reproducible_and_policies_differ(env):
    expert = PolicySpec.parse("expert")
    a, b = play(env, expert, seed=3), play(env, expert, seed=3)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.success and len(a) < env.max_steps  # the expert solves it and the episode ends
    rand = play(env, PolicySpec.parse("random"), seed=3, max_steps=MAX_STEPS)
    assert len(rand) == MAX_STEPS and not rand.success
    assert np.all(np.abs(rand.actions) <= 0.1 + 1e-6)  # within the action space
    np.testing.assert_array_equal(rand.frames[0], a.frames[0])  # same seed, same start


def test_replay_scores_every_generated_frame_of_each_row(env, world_model):
    episodes = [play(env, PolicySpec.parse("random"), s, max_steps=n) for s, n in [(0, 5), (1, 9)]]
    sim = Simulator(world_model, ENV, constant_classifier(10.0))
    probs = replay(sim, episodes)
    assert [len(p) for p in probs] == [5, 9]  # stride 1: one frame per action
    assert sim.frames == 1 + 9  # the batch ran in lockstep to the longest row
    assert all((p > 0.99).all() for p in probs)
    with_prompt = replay(sim, episodes, prompt_frames=3)
    assert [len(p) for p in with_prompt] == [3, 7]  # two kept frames were prompt


def test_evaluate_side_by_side(env, world_model):
    policies = [PolicySpec.parse("expert"), PolicySpec.parse("random")]
    truth = [[play(env, p, s, MAX_STEPS).success for s in range(2)] for p in policies]
    sim = Simulator(world_model, ENV, constant_classifier(10.0))
    summary = evaluate(env, policies, sim, episodes=2, max_steps=MAX_STEPS, batch=1)
    assert [s.policy for s in summary.scores] == ["expert", "random"]
    assert [s.true_success for s in summary.scores] == [np.mean(t) for t in truth]
    assert all(s.learned_success == 1.0 for s in summary.scores)  # the classifier says yes
    assert math.isnan(summary.pearson)  # a constant column has no correlation
    text = "\n".join(summary.lines())
    assert "ground truth" in text and "undefined" in text
    never = Simulator(world_model, ENV, constant_classifier(-10.0))
    one = evaluate(env, policies[:1], never, episodes=1, max_steps=MAX_STEPS)
    assert one.scores[0].learned_success == 0.0 and one.pearson is None
    with pytest.raises(PolicyEvalError, match="classifier"):
        evaluate(env, policies, Simulator(world_model, ENV), episodes=1)


def test_cli_end_to_end(tmp_path, tiny_checkpoint, capsys):
    parser = argparse.ArgumentParser()
    configure_evaluate_policy(parser)
    base = ["--env", ENV, "--learned", tiny_checkpoint, "--episodes", "2", "--max-steps", "12"]
    with pytest.raises(PolicyEvalError, match="train-success"):
        evaluate_policy_command(parser.parse_args(base))
    clf = str(tmp_path / "clf")
    constant_classifier(-10.0).save(clf)
    out = str(tmp_path / "scores.json")
    args = parser.parse_args(
        [*base, "--policy", "expert", "--policy", "random", "--success-model", clf, "--json", out]
    )
    assert evaluate_policy_command(args) == 0
    printed = capsys.readouterr().out
    assert "Pearson r" in printed and "random" in printed
    with open(out) as f:
        record = json.load(f)
    assert [s["policy"] for s in record["scores"]] == ["expert", "random"]
    assert record["success_model"] == clf
    assert len(record["scores"][0]["per_episode"]) == 2
