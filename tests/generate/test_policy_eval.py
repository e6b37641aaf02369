"""Closed-loop policy evaluation: ranking statistics, the learned simulator driven by a policy
from its own frames (batched, seeded, never touching the env), refusals, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hma.cli import main
from hma.envs import make_env
from hma.generate.policy_eval import PolicyEvalError, closed_loop, evaluate
from hma.generate.ranking import mmrv, pearson, rank_agreement, spearman
from hma.generate.simulator import Simulator, SimulatorConfig
from hma.policy.agent import Agent, PolicyMismatchError
from tests.helpers.generate import FRAME, constant_classifier
from tests.helpers.policies import save_untrained_policy

ENV = "tabletop"  # fast (pymunk), in the tiny checkpoint, stride 1
MAX_STEPS = 12


class CountingEnv:
    """The env, counting the calls that advance it."""

    def __init__(self, env):
        self.env, self.steps, self.resets = env, 0, 0

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, seed):
        self.resets += 1
        return self.env.reset(seed)

    def step(self, action):
        self.steps += 1
        return self.env.step(action)


@pytest.fixture(scope="module")
def env():
    e = make_env(ENV, FRAME)
    e.max_steps = MAX_STEPS  # short episodes (an instance attribute: the class keeps its limit)
    yield e
    e.close()


@pytest.fixture(scope="module")
def agents(tmp_path_factory) -> list[Agent]:
    root = tmp_path_factory.mktemp("policies")
    return [
        Agent.load(save_untrained_policy(str(root / f"p{i}"), ENV, FRAME, step=i, seed=i))
        for i in range(2)
    ]


def _sim(world_model, logit: float) -> Simulator:
    config = SimulatorConfig(max_steps=MAX_STEPS)
    return Simulator(world_model, ENV, constant_classifier(ENV, logit), config)


def test_ranking_statistics_on_known_numbers():
    # paper Table 5: ground truth vs HMA simulator over 4 policies, reported as Pearson 0.95
    r, s = np.array([0.38, 0.52, 0.70, 1.00]), np.array([0.43, 0.56, 0.66, 0.73])
    assert pearson(r, s) == pytest.approx(0.9525, abs=1e-4)
    assert spearman(r, s) == pytest.approx(1.0) and mmrv(r, s) == 0.0
    # swapping the learned scores of policies 1 and 2 violates one pair: |0.52 - 0.70| for each
    s_swapped = np.array([0.43, 0.66, 0.56, 0.73])
    assert mmrv(r, s_swapped) == pytest.approx((0 + 0.18 + 0.18 + 0) / 4)
    assert spearman(r, s_swapped) == pytest.approx(0.8)
    true = [[True] * 3 + [False] * 7, [True] * 6 + [False] * 4, [True] * 9 + [False]]
    ranking = rank_agreement(true, true)
    assert ranking.pearson.value == pytest.approx(1.0) and ranking.mmrv.value == 0.0
    assert ranking.mean_abs_difference.value == 0.0
    assert ranking.pearson.low <= ranking.pearson.value <= ranking.pearson.high


def test_closed_loop_is_batched_seeded_and_ends_at_the_time_limit(world_model, agents, env):
    firsts = np.stack([env.reset(seed)["image"] for seed in range(3)])
    sim = _sim(world_model, logit=-10.0)  # never succeeds: every episode runs to the limit
    a = closed_loop(sim, agents[0], firsts, seed=5)
    assert a.success.shape == (3,) and not a.success.any()
    assert [len(p) for p in a.probs] == [MAX_STEPS] * 3  # one generated frame per raw step
    b = closed_loop(sim, agents[0], firsts, seed=5, keep_frames=True)
    tokens_b = sim.tokens()
    assert a.frames is None and [f.shape for f in b.frames] == [(MAX_STEPS, FRAME, FRAME, 3)] * 3
    assert (
        b.frames[0].dtype == np.uint8
        and len(np.unique(b.frames[0].reshape(MAX_STEPS, -1), axis=0)) > 1
    )
    closed_loop(sim, agents[0], firsts, seed=6)
    assert not torch.equal(tokens_b, sim.tokens())  # another seed, other samples
    closed_loop(sim, agents[0], firsts, seed=5)
    assert torch.equal(tokens_b, sim.tokens())  # the same seed, the same episodes
    for p, q in zip(a.probs, b.probs, strict=True):
        np.testing.assert_array_equal(p, q)
    succeed = closed_loop(_sim(world_model, logit=10.0), agents[0], firsts, seed=5)
    assert succeed.success.all() and all(len(p) == 1 for p in succeed.probs)


def test_evaluation_never_steps_the_env_for_the_learned_simulator(world_model, agents, env):
    counting = CountingEnv(env)
    result = evaluate(counting, agents, _sim(world_model, logit=10.0), episodes=3, batch=2)
    real_steps = 3 * len(agents) * MAX_STEPS  # untrained policies never solve the board
    assert counting.steps == real_steps and counting.resets == 3 * len(agents)
    assert [s.learned.rate for s in result.scores] == [1.0, 1.0]
    assert [s.true.rate for s in result.scores] == [0.0, 0.0]
    assert result.ranking is not None and "Pearson r" in "\n".join(result.lines())


def test_policies_that_do_not_fit_the_learned_simulator_are_refused(world_model, tmp_path, env):
    sim = _sim(world_model, 0.0)
    firsts = np.stack([env.reset(0)["image"]])
    wide = Agent.load(save_untrained_policy(str(tmp_path / "w"), ENV, FRAME, chunk=2))
    with pytest.raises(PolicyEvalError, match="decides every 2 raw steps.*every 1"):
        closed_loop(sim, wide, firsts)
    big = Agent.load(save_untrained_policy(str(tmp_path / "b"), ENV, 64))
    with pytest.raises(PolicyMismatchError, match="64x64 frames"):
        evaluate(env, [big], sim, episodes=1)
    proprio = Agent.load(save_untrained_policy(str(tmp_path / "s"), ENV, FRAME, state_dim=2))
    with pytest.raises(PolicyMismatchError, match="reads 2 proprioception values.*provides none"):
        evaluate(env, [proprio], sim, episodes=1)


def test_the_cli_writes_the_table_the_json_and_the_scatter_plot(
    tiny_checkpoint, agents, tmp_path, capsys
):
    clf = str(tmp_path / "clf")
    constant_classifier(ENV, 3.0).save(clf)
    out = tmp_path / "eval"
    argv = ["evaluate-policy", "--env", ENV, "--learned", tiny_checkpoint, "--episodes", "2"]
    argv += ["--success-model", clf, "--size", str(FRAME), "--out", str(out)]
    for agent in agents:
        argv += ["--policy", agent.name]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Pearson r" in printed and "MMRV" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert [p["policy"] for p in scores["policies"]] == [a.name for a in agents]
    assert (out / "policy_eval.png").read_bytes()[:4] == b"\x89PNG"
