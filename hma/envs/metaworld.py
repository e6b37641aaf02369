"""Meta-World v3 tasks (Sawyer, 80 Hz) with Meta-World's own scripted experts.

    action   float32 [4]   (dx, dy, dz, grip) in [-1, 1]; the mocap moves by 1 cm per unit per step
    state    float32 [4]   hand pos (3), gripper opening (1)
    extras   "env_obs" float32 [39]  Meta-World's full observation (hand, objects, previous frame,
             goal), what the bundled expert acts on

Episodes differ by seed: each reset draws the task's object/goal vector from its random reset
space with the episode seed, instead of from MT1's fixed list of 50 tasks.

The goal is drawn bigger and brighter than Meta-World draws it (a 2 cm dark-red sphere is about
one pixel at 64 px, which image tokenizers erase): a policy that sees only frames, and a world
model that renders them, must be able to see where the goal is. Sites are not collision geoms,
so the task's physics and success are unchanged.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import weakref
from importlib.metadata import version
from typing import Any

import numpy as np

from hma.envs.base import ActionSpace, Env, Obs, Policy
from hma.errors import ConfigError

CAMERA = "corner"
GOAL_SITE = "goal"
GOAL_RGBA = (0.1, 0.9, 0.1, 1.0)  # bright green: no robot or table part has that colour
GOAL_RADIUS = 0.04  # metres (success is the hand within 0.05 of the goal); Meta-World: 0.02
TASKS = {
    "metaworld_reach": "reach-v3",
    "metaworld_push": "push-v3",
    "metaworld_pick_place": "pick-place-v3",
}

# Envs still open at interpreter exit are closed before EGL shuts down (atexit runs last-registered
# first, and mujoco registers eglTerminate when its first GL context is made); left to garbage
# collection after that, gymnasium's viewers print EGL errors.
_OPEN: weakref.WeakSet[MetaWorldEnv] = weakref.WeakSet()


def _close_open_envs() -> None:
    for env in list(_OPEN):
        env.close()


class MetaWorldEnv(Env):
    hz = 80.0  # 1 / env.dt: frame_skip 5 x 2.5 ms
    max_steps = 300  # the experts solve these tasks in < 200 steps; Meta-World allows 500
    success_hold = 8  # steps the task must stay solved before the episode ends (0.1 s)
    action_space = ActionSpace(low=-np.ones(4, np.float32), high=np.ones(4, np.float32))

    def __init__(self, dataset: str, size: int = 64):
        super().__init__(size)
        if dataset not in TASKS:
            raise ConfigError(f"unknown Meta-World dataset {dataset!r} (known: {sorted(TASKS)})")
        self.dataset = dataset
        self.task = TASKS[dataset]
        # before mujoco is first imported: offscreen GL without a display (Mesa llvmpipe on CPU)
        os.environ.setdefault("MUJOCO_GL", "egl")
        import gymnasium as gym
        import metaworld  # noqa: F401 - registers the Meta-World/* ids
        from metaworld.policies import ENV_POLICY_MAP

        self._policy_cls = ENV_POLICY_MAP[self.task]
        self._env = self._viewer = None
        # direct class construction leaves the task unset; MT1 sets one on the first reset
        self._env = gym.make(
            "Meta-World/MT1",
            env_name=self.task,
            seed=0,
            render_mode="rgb_array",
            width=size,
            height=size,
            camera_name=CAMERA,
            disable_env_checker=True,
        )
        self._sim = self._env.unwrapped
        if abs(1.0 / self._sim.dt - self.hz) > 1e-6:
            raise ConfigError(
                f"{self.task}: control rate {1 / self._sim.dt} Hz, expected {self.hz}"
            )
        self._sim.model.vis.quality.shadowsize = 0  # before the render context exists
        self._show_goal()
        self._env.reset()
        self._env.get_wrapper_attr("toggle_sample_tasks_on_reset")(False)
        self._env.render()  # creates the viewer, whose scene flags we can then set
        import mujoco

        self._viewer = self._sim.mujoco_renderer._get_viewer("rgb_array")
        self._viewer.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._viewer.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        if not _OPEN:
            atexit.unregister(_close_open_envs)
            atexit.register(_close_open_envs)
        _OPEN.add(self)
        self._raw = np.zeros(39)
        self._seed = 0
        self._steps = 0
        self._solved_for = 0

    def reset(self, seed: int) -> Obs:
        self._seed = int(seed)
        # draw this episode's object/goal vector from the env's generator, seeded per episode
        self._sim._freeze_rand_vec = False
        self._sim.seeded_rand_vec = True
        self._sim.seed(self._seed)
        self._raw, _ = self._env.reset()
        self._steps = 0
        self._solved_for = 0
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, dict[str, Any]]:
        action = self.action_space.clip(np.asarray(action, np.float32))
        self._raw, reward, _, _, info = self._env.step(action)
        self._steps += 1
        success = bool(info["success"])
        self._solved_for = self._solved_for + 1 if success else 0
        done = self._solved_for >= self.success_hold or self._steps >= self.max_steps
        return self._obs(), float(reward), done, {"success": success}

    def render(self) -> np.ndarray:
        # gymnasium makes its GL context current only at creation; other envs may have taken over
        self._viewer.make_context_current()
        # the corner camera comes out upside down; flip, and copy out of the render buffer
        return np.ascontiguousarray(self._env.render()[::-1])

    def expert(self, noise: float = 0.0) -> Policy:
        policy = self._policy_cls()
        rng = np.random.default_rng(self._seed)

        def act(obs: Obs) -> np.ndarray:
            action = np.asarray(policy.get_action(self._raw), np.float32)
            return self.action_space.perturb(action, noise, rng)

        return act

    def extras(self) -> dict[str, np.ndarray]:
        return {"env_obs": self._raw.astype(np.float32)}

    def episode_meta(self) -> dict[str, Any]:
        return {
            "env_name": self.task,
            "benchmark": "Meta-World/MT1",
            "metaworld_version": version("metaworld"),
            "camera": CAMERA,
            "rand_vec": [float(v) for v in self._sim._last_rand_vec],
        }

    def close(self) -> None:
        if self._env is None:
            return
        # Free the GL objects while our own context is current: freed later (at garbage
        # collection) they would delete same-numbered objects of whichever context is current.
        if self._viewer is not None:
            self._viewer.make_context_current()
            self._viewer.con.free()
            self._viewer = None
        self._env.close()
        self._env = None

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown: EGL may already be gone
            self.close()

    def _show_goal(self) -> None:
        import mujoco

        model = self._sim.model
        site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, GOAL_SITE)
        if site >= 0:
            model.site_rgba[site] = GOAL_RGBA
            model.site_size[site][0] = GOAL_RADIUS

    def _obs(self) -> Obs:
        return {"image": self.render(), "state": self._raw[:4].astype(np.float32)}


def make_reach(size: int = 64) -> MetaWorldEnv:
    return MetaWorldEnv("metaworld_reach", size)


def make_push(size: int = 64) -> MetaWorldEnv:
    return MetaWorldEnv("metaworld_push", size)


def make_pick_place(size: int = 64) -> MetaWorldEnv:
    return MetaWorldEnv("metaworld_pick_place", size)
