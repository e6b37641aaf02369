"""Run a policy (by default the env's scripted expert) for one episode; record it as an Episode."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from hma.envs.base import Env, Policy
from hma.episodes import Episode


def rollout(
    env: Env,
    seed: int,
    noise: float = 0.0,
    split: str = "train",
    episode_id: str | None = None,
    max_steps: int | None = None,
    make_policy: Callable[[Env], Policy] | None = None,
) -> Episode:
    """One episode from `env.reset(seed)` of the expert with `noise`, or of the policy that
    `make_policy(env)` builds after the reset. Frame t is the observation action t was taken in;
    the episode ends when the env says done (success or time limit)."""
    obs = env.reset(seed)
    policy = make_policy(env) if make_policy else env.expert(noise)
    frames, states, actions, rewards = [], [], [], []
    extras: dict[str, list[np.ndarray]] = defaultdict(list)
    success = False
    for _ in range(max_steps or env.max_steps):
        # copy: some simulators hand out views of a render buffer the next step overwrites
        frames.append(np.array(obs["image"], dtype=np.uint8, copy=True))
        states.append(np.asarray(obs["state"], dtype=np.float32))
        for key, value in env.extras().items():
            extras[key].append(np.asarray(value))
        action = env.action_space.clip(policy(obs))
        obs, reward, done, info = env.step(action)
        actions.append(action)
        rewards.append(np.float32(reward))
        success = bool(info["success"])
        if done:
            break
    return Episode(
        dataset=env.dataset,
        episode_id=episode_id or f"{env.dataset}-seed{seed}",
        split=split,
        frames=np.stack(frames),
        actions=np.stack(actions),
        state=np.stack(states),
        hz=env.hz,
        instruction=env.instruction(),
        success=success,
        extras={"reward": np.asarray(rewards, np.float32)}
        | {k: np.stack(v) for k, v in extras.items()},
        meta={"seed": seed, "noise": noise, **env.episode_meta()},
    )
