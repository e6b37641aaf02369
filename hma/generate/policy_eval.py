"""`hma evaluate-policy`: trained policies run closed-loop in the ground-truth simulator and in the
learned one, side by side; do their success rates rank them alike? (paper Table 5)

    policy ──ground-truth env (hma.envs), seeds seed..seed+N-1──▶ true success per episode
      │                    └─ the first frame of each episode ─┐
      └──────────────── learned Simulator ◀────────────────────┘
           the policy sees the decoded frames, its chunks drive the next frames, for the env's
           whole time limit (the KV cache slides past the training window); the success
           classifier judges the generated frames ──▶ learned success per episode

Both simulators start episode k from the same first frame (the env's reset for seed + k), so
per-episode outcomes pair up (the bootstrap resamples them as pairs). The policy acts in the
learned simulator exactly as in the env: it decides a chunk of raw actions from the current
frame, area-resized to its input size, and the chunk plays out (the simulator generates one
frame per chunk of `stride` raw actions); it never sees simulator state. A policy that reads
proprioception gets the world model's predicted state (from the env's first state), and is
refused by a world model trained without state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hma.envs.base import Env
from hma.envs.rollout import rollout
from hma.episodes import judged_frames
from hma.errors import HmaError
from hma.generate.ranking import Ranking, rank_agreement
from hma.generate.simulator import Simulator
from hma.policy.agent import Agent
from hma.policy.evaluate import SuccessRate

SCATTER = "policy_eval.png"


class PolicyEvalError(HmaError, ValueError):
    """A policy evaluation that cannot run as asked."""


@dataclass
class LearnedEpisodes:
    success: np.ndarray  # bool [B]
    probs: list[np.ndarray]  # per episode: the classifier's probability of every generated frame
    frames: list[np.ndarray] | None = None  # per episode: its generated frames uint8 [F,H,W,3]


def closed_loop(
    sim: Simulator,
    agent: Agent,
    first_frames: np.ndarray,
    seed: int = 0,
    first_states: np.ndarray | None = None,
    keep_frames: bool = False,
) -> LearnedEpisodes:
    """Run `agent` in `sim` from B first frames uint8 [B,H,W,3] (and raw first states [B,P]),
    batched, until every episode is done (success held, or the simulator's max_steps). Only
    `sim` is stepped: no env is touched. `keep_frames`: also return what each episode showed."""
    if agent.chunk != sim.stride:
        raise PolicyEvalError(
            f"policy {agent.name} decides every {agent.chunk} raw steps; the learned simulator "
            f"generates a frame every {sim.stride} (its dataset's stride): retrain the policy "
            f"with chunk {sim.stride}"
        )
    if sim.config.max_steps is None:
        raise PolicyEvalError("the learned simulator needs max_steps (the env's time limit)")
    prompt_state = None if first_states is None else first_states[:, None]
    obs = sim.reset(first_frames[:, None], seed=seed, prompt_state=prompt_state)  # 1 frame each
    probs: list[list[float]] = [[] for _ in range(len(first_frames))]
    shown: list[list[np.ndarray]] = [[] for _ in range(len(first_frames))]
    done = np.zeros(len(first_frames), bool)
    success = np.zeros(len(first_frames), bool)
    for _ in range(math.ceil(sim.config.max_steps / sim.stride)):
        state = obs.get("state") if agent.config.use_state else None
        obs, _, now_done, info = sim.step(agent.act(obs["image"], state))  # chunk [B,s,A]
        for row in np.flatnonzero(~done):
            probs[row].append(float(info["success_prob"][row]))
            if keep_frames:
                shown[row].append(obs["image"][row])
        success |= info["success"] & ~done
        done |= now_done
        if done.all():
            break
    frames = [np.stack(f) for f in shown] if keep_frames else None
    return LearnedEpisodes(success, [np.asarray(p, np.float32) for p in probs], frames)


@dataclass
class PolicyScore:
    policy: str
    true: SuccessRate
    learned: SuccessRate
    classifier_on_real: SuccessRate  # the classifier's verdicts on the real episodes' frames

    @property
    def classifier_accuracy(self) -> float:
        """Share of real episodes the classifier judges as the env did."""
        agree = [
            a == b
            for a, b in zip(self.true.outcomes, self.classifier_on_real.outcomes, strict=True)
        ]
        return float(np.mean(agree)) if agree else 0.0


@dataclass
class Evaluation:
    env: str
    checkpoint: str
    success_model: str
    episodes: int
    scores: list[PolicyScore] = field(default_factory=list)
    ranking: Ranking | None = None  # None with fewer than 2 policies

    def lines(self) -> list[str]:
        out = [
            f"{self.env}: learned simulator {self.checkpoint}; success classifier "
            f"{self.success_model}; {self.episodes} episodes per policy and simulator",
            f"{'policy':<44}{'ground truth':>16}{'learned sim':>16}{'classifier acc.':>17}",
        ]
        for s in self.scores:
            out.append(
                f"{s.policy[-44:]:<44}{s.true.rate:>9.0%} ± {s.true.se:>3.0%}"
                f"{s.learned.rate:>9.0%} ± {s.learned.se:>3.0%}{s.classifier_accuracy:>17.0%}"
            )
        if self.ranking is not None:
            out += self.ranking.lines()
        return out

    def to_dict(self) -> dict:
        return {
            "env": self.env,
            "checkpoint": self.checkpoint,
            "success_model": self.success_model,
            "episodes": self.episodes,
            "policies": [
                {
                    "policy": s.policy,
                    "true": s.true.to_dict(),
                    "learned": s.learned.to_dict(),
                    "classifier_accuracy": s.classifier_accuracy,
                }
                for s in self.scores
            ],
            "ranking": self.ranking.to_dict() if self.ranking else None,
        }

    def scatter(self, path: str) -> str:
        """Ground-truth vs learned success, one point per policy with ± standard errors."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=120)
        ax.plot([0, 1], [0, 1], color="0.75", lw=1, ls="--", label="learned = true")
        for i, s in enumerate(self.scores):
            ax.errorbar(
                s.true.rate,
                s.learned.rate,
                xerr=s.true.se,
                yerr=s.learned.se,
                fmt="o",
                capsize=3,
                label=f"step {s.policy.rsplit('@', 1)[-1]}" if "@" in s.policy else f"policy {i}",
            )
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("success in the ground-truth simulator")
        ax.set_ylabel("success in the learned simulator")
        title = self.env
        if self.ranking is not None:
            title += f": r {self.ranking.pearson.value:.2f}, ρ {self.ranking.spearman.value:.2f}"
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        from hma import storage

        with storage.open_file(path, "wb") as f:
            fig.savefig(f, format="png")
        plt.close(fig)
        return path


def evaluate(
    env: Env,
    agents: list[Agent],
    sim: Simulator,
    episodes: int,
    seed: int = 0,
    batch: int = 8,
    log: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score each policy on `episodes` seeds in `env` and, from the same first frames, in `sim`
    (which needs a success classifier and max_steps: both simulators use that time limit)."""
    if sim.success is None:
        raise PolicyEvalError("the learned simulator needs a success classifier to score policies")
    if episodes < 1 or batch < 1:
        raise PolicyEvalError("episodes and batch must be >= 1")
    if sim.config.max_steps is None:
        raise PolicyEvalError("the learned simulator needs max_steps (the env's time limit)")
    size = tuple(sim.world_model.frame_size)
    for agent in agents:
        agent.check_env(env)
        agent.check(sim.dataset, sim.action_dim, size, "the learned simulator", sim.state_dim)
    clf = sim.success
    result = Evaluation(env.dataset, sim.world_model.url, "", episodes)
    for agent in agents:
        true, on_real, firsts, states = SuccessRate(agent.name), SuccessRate(agent.name), [], []
        for i in range(episodes):
            ep = rollout(env, seed + i, max_steps=sim.config.max_steps, make_policy=agent.stepper)
            true.outcomes.append(bool(ep.success))
            firsts.append(ep.frames[0])
            states.append(None if ep.state is None else ep.state[0])
            kept = judged_frames(ep.frames, sim.stride)
            on_real.outcomes.append(bool(len(kept)) and clf.episode_success(clf.predict(kept)))
        learned = SuccessRate(agent.name)
        for first in range(0, episodes, batch):
            frames, given = np.stack(firsts[first : first + batch]), states[first : first + batch]
            first_states = None if any(s is None for s in given) else np.stack(given)
            run = closed_loop(sim, agent, frames, seed + first, first_states)
            learned.outcomes += run.success.tolist()
        score = PolicyScore(agent.name, true, learned, on_real)
        result.scores.append(score)
        if log:
            log(result.lines()[2 + len(result.scores) - 1])
    if len(agents) >= 2:
        result.ranking = rank_agreement(
            [s.true.outcomes for s in result.scores], [s.learned.outcomes for s in result.scores]
        )
    return result
