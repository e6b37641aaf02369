"""`hma evaluate-policy`: score policies in the ground-truth simulator and in the learned one,
side by side, and correlate the two (paper Table 5: Pearson 0.95 over 4 policies).

    policy ──ground-truth env (hma.envs), seeds seed..seed+N-1──▶ episodes, true success
        └──same first frame + the same actions──▶ learned Simulator ──success classifier──▶ success

Policies by name: `expert` (the env's scripted expert), `expert:<noise>` (the expert with Gaussian
action noise as ActionSpace.perturb defines it, e.g. expert:0.3) and `random` (uniform over the
action space); the default set (expert, expert:0.3, expert:0.6, random) spans true success rates
from ~1 to ~0 on the robosuite and pusht envs.

Protocol (action replay). Our scripted experts read the simulator's internal state (object
poses), which a learned simulator does not have, so they cannot act closed-loop on generated
frames. Each episode is therefore played in the ground-truth env first; the learned simulator then
starts from that episode's first `prompt_frames` kept frames and is driven by the same actions,
chunk by chunk, and the classifier judges the frames it generates. The learned score is the
simulator's verdict on an action sequence it only sees as actions: the ground-truth outcome never
reaches it. Episode i of every policy uses seed + i, so policies are compared on the same starts.
A policy that reads only images (`Simulator.step` takes any actions) can be run closed-loop in the
simulator directly; the four named policies here cannot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from hma.envs.base import Env, Obs
from hma.episodes import Episode, video_steps
from hma.errors import HmaError
from hma.generate.simulator import Simulator

DEFAULT_POLICIES = ("expert", "expert:0.3", "expert:0.6", "random")
SUCCESS_DIR = "success"  # a classifier saved beside a checkpoint is found without --success-model


class PolicyEvalError(HmaError, ValueError):
    """A bad policy name, or inputs that do not fit together."""


@dataclass(frozen=True)
class PolicySpec:
    name: str
    kind: str  # "expert" | "random"
    noise: float = 0.0

    @classmethod
    def parse(cls, name: str) -> PolicySpec:
        if name == "random":
            return cls(name, "random")
        if name == "expert":
            return cls(name, "expert")
        if name.startswith("expert:"):
            try:
                noise = float(name.split(":", 1)[1])
            except ValueError:
                noise = -1.0
            if noise >= 0 and math.isfinite(noise):
                return cls(name, "expert", noise)
        raise PolicyEvalError(
            f"unknown policy {name!r}: use expert, expert:<noise> (e.g. expert:0.3) or random"
        )

    def make(self, env: Env, seed: int) -> Callable[[Obs], np.ndarray]:
        """The policy for the episode `env` was just reset to."""
        if self.kind == "expert":
            return env.expert(self.noise)
        rng = np.random.default_rng([seed, 1])
        space = env.action_space
        return lambda obs: rng.uniform(space.low, space.high).astype(np.float32)


def play(env: Env, policy: PolicySpec, seed: int, max_steps: int | None = None) -> Episode:
    """One ground-truth episode of `policy` from `env.reset(seed)` (frame t: the observation
    action t was taken in), ending when the env says done."""
    obs = env.reset(seed)
    act = policy.make(env, seed)
    frames, actions, success = [], [], False
    for _ in range(max_steps or env.max_steps):
        frames.append(np.array(obs["image"], dtype=np.uint8, copy=True))  # render buffers alias
        action = env.action_space.clip(act(obs))
        obs, _, done, info = env.step(action)
        actions.append(action)
        success = bool(info["success"])
        if done:
            break
    return Episode(
        dataset=env.dataset,
        episode_id=f"{env.dataset}-{policy.name}-seed{seed}",
        frames=np.stack(frames),
        actions=np.stack(actions),
        hz=env.hz,
        success=success,
        meta={"seed": seed, "policy": policy.name},
    )


def pearson(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> float:
    """Pearson correlation of two equally long score lists; NaN when either is constant."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two score lists of the same length >= 2, got {a.shape}, {b.shape}")
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((da**2).sum() * (db**2).sum()))
    return float((da * db).sum() / denom) if denom > 0 else math.nan


def replay(
    sim: Simulator, episodes: list[Episode], prompt_frames: int = 1, seed: int = 0
) -> list[np.ndarray]:
    """Drive `sim` with each episode's actions from its first frames (one batch); returns per
    episode the success probability of every generated frame. Rows whose actions run out early
    hold their last action (their later frames are not returned); a last partial chunk is
    completed the same way."""
    s = sim.stride
    start = (prompt_frames - 1) * s  # raw step of the last prompt frame
    chunks = [max(1, math.ceil((len(ep.actions) - start) / s)) for ep in episodes]
    sim.reset(episodes, prompt_frames=prompt_frames, seed=seed)
    probs: list[list[float]] = [[] for _ in episodes]
    for k in range(max(chunks)):
        chunk = np.stack([_chunk(ep.actions, start + k * s, s) for ep in episodes])  # [B,s,A]
        info = sim.step(chunk)[3]
        for row, p in enumerate(info["success_prob"]):
            if k < chunks[row]:
                probs[row].append(float(p))
    return [np.asarray(p, np.float32) for p in probs]


def _chunk(actions: np.ndarray, first: int, stride: int) -> np.ndarray:
    """Raw actions [first, first+stride) of one episode, holding its last action past the end."""
    index = np.minimum(np.arange(first, first + stride), len(actions) - 1)
    return actions[index]


@dataclass
class PolicyScore:
    policy: str
    episodes: int
    true_success: float  # ground-truth env
    learned_success: float  # learned simulator + classifier
    classifier_on_real: float  # the classifier on the real episodes' kept frames (its accuracy)
    per_episode: list[dict[str, object]] = field(default_factory=list)


@dataclass
class EvalSummary:
    env: str
    checkpoint: str
    success_model: str
    scores: list[PolicyScore]
    pearson: float | None  # ground truth vs learned over the policies (None: one policy)

    def lines(self) -> list[str]:
        out = [
            f"{self.env}: learned simulator {self.checkpoint}, success classifier "
            f"{self.success_model}",
            f"{'policy':<14}{'episodes':>9}{'ground truth':>14}{'learned sim':>13}"
            f"{'classifier on real':>20}",
        ]
        for s in self.scores:
            out.append(
                f"{s.policy:<14}{s.episodes:>9}{s.true_success:>14.0%}{s.learned_success:>13.0%}"
                f"{s.classifier_on_real:>20.0%}"
            )
        if self.pearson is not None:
            value = (
                "undefined (a column is constant)"
                if math.isnan(self.pearson)
                else (f"{self.pearson:.3f}")
            )
            out.append(
                f"Pearson r, ground truth vs learned simulator over {len(self.scores)} "
                f"policies: {value}"
            )
        return out

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def evaluate(
    env: Env,
    policies: list[PolicySpec],
    sim: Simulator,
    episodes: int,
    seed: int = 0,
    prompt_frames: int = 1,
    batch: int = 8,
    max_steps: int | None = None,
    log: Callable[[str], None] | None = None,
) -> EvalSummary:
    """Score each policy on `episodes` seeds in `env` and in `sim` (which needs a classifier)."""
    if sim.success is None:
        raise PolicyEvalError("the learned simulator needs a success classifier to score policies")
    if sim.dataset != env.dataset:
        raise PolicyEvalError(f"the simulator runs {sim.dataset!r}, the env is {env.dataset!r}")
    if episodes < 1 or batch < 1:
        raise PolicyEvalError("episodes and batch must be >= 1")
    clf = sim.success
    scores = []
    for policy in policies:
        real = [play(env, policy, seed + i, max_steps) for i in range(episodes)]
        learned: list[np.ndarray] = []
        for first in range(0, episodes, batch):
            group = real[first : first + batch]
            learned += replay(sim, group, prompt_frames, seed=seed + first)
        rows = []
        for ep, probs in zip(real, learned, strict=True):
            kept = ep.frames[video_steps(len(ep), sim.stride)[prompt_frames:]]
            on_real = clf.episode_success(clf.predict(kept)) if len(kept) else False
            rows.append(
                {
                    "episode": ep.episode_id,
                    "steps": len(ep),
                    "true": bool(ep.success),
                    "learned": clf.episode_success(probs),
                    "classifier_on_real": bool(on_real),
                    "max_prob": float(probs.max()) if len(probs) else 0.0,
                }
            )
        score = PolicyScore(
            policy=policy.name,
            episodes=episodes,
            true_success=float(np.mean([r["true"] for r in rows])),
            learned_success=float(np.mean([r["learned"] for r in rows])),
            classifier_on_real=float(np.mean([r["classifier_on_real"] for r in rows])),
            per_episode=rows,
        )
        scores.append(score)
        if log:
            log(
                f"{policy.name}: ground truth {score.true_success:.0%}, learned "
                f"{score.learned_success:.0%}"
            )
    r = None
    if len(scores) > 1:
        r = pearson([s.true_success for s in scores], [s.learned_success for s in scores])
    return EvalSummary(env.dataset, sim.world_model.url, "", scores, r)
