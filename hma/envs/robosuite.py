"""robosuite Lift and PickPlaceCan (Panda, OSC_POSE delta controller, 20 Hz) with a scripted pick /
pick-and-place expert.

    action   float32 [7]  (dx, dy, dz, dax, day, daz, grip) in [-1, 1]; OSC scales the position part to
             ±5 cm and the rotation part to ±0.5 rad per step; grip -1 opens, +1 closes
    state    float32 [9]  eef pos (3), eef quat xyzw (4), gripper finger qpos (2)
    meta     env_args, model_file (robomimic's demo attr) and state_keys (the obs keys of state)
    extras   "sim_state" float64 [N]  env.sim.get_state().flatten() (robomimic's `states`)
             "object"    float32 [K]  robosuite's low-dim object observation (robomimic's `object`)

Observations are taken and frames rendered after `sim.forward()`, so restoring `sim_state[t]`
(robomimic's `reset_to`) gives back exactly the low-dim obs and frame t.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from hma.envs.base import ActionSpace, Env, Obs, Policy

CAMERA = "agentview"
CONTROL_FREQ = 20
# OSC_POSE maps an action of ±1 to these offsets (robosuite's default_panda.json)
POS_SCALE = 0.05  # metres per step
ROT_SCALE = 0.5  # radians per step
GRIP_OPEN, GRIP_CLOSED = -1.0, 1.0
# Episode.state, in order: robosuite observation names and widths (robomimic's low-dim obs keys)
STATE_KEYS = (("robot0_eef_pos", 3), ("robot0_eef_quat", 4), ("robot0_gripper_qpos", 2))


class RobosuiteEnv(Env):
    """One robosuite task; subclasses name it and script its expert's stages."""

    env_name: str  # robosuite environment class
    hz = float(CONTROL_FREQ)
    action_space = ActionSpace(low=-np.ones(7, np.float32), high=np.ones(7, np.float32))
    success_hold = 5  # steps the task must stay solved before the episode ends

    def __init__(self, size: int = 64):
        super().__init__(size)
        # before mujoco is first imported: offscreen GL without a display (Mesa llvmpipe on CPU)
        os.environ.setdefault("MUJOCO_GL", "egl")
        import robosuite
        from robosuite.controllers import load_composite_controller_config

        self._version = robosuite.__version__
        # robosuite 1.5 composite format, as its own demo-collection script records it
        controller = load_composite_controller_config(robot="Panda")
        self._kwargs: dict[str, Any] = dict(
            robots=["Panda"],
            controller_configs=controller,
            has_renderer=False,
            has_offscreen_renderer=True,
            ignore_done=True,
            use_object_obs=True,
            use_camera_obs=False,  # we render ourselves, after sim.forward()
            camera_names=[CAMERA],
            camera_heights=size,
            camera_widths=size,
            camera_depths=False,
            control_freq=CONTROL_FREQ,
            reward_shaping=False,
            hard_reset=False,  # reset 0.06 s instead of 1.2 s (NOTES.md)
        )
        self._env = None
        self._env = robosuite.make(self.env_name, **self._kwargs)
        self._ctx = None
        self._raw: dict[str, np.ndarray] = {}
        self._seed = 0
        self._steps = 0
        self._solved_for = 0
        self._model_xml: str | None = None
        self._home_quat = np.array([0.0, 0.0, 0.0, 1.0])  # eef orientation the expert holds

    @property
    def sim(self):
        """robosuite's MjSim (`get_state`, `set_state_from_flattened`, `forward`), as robomimic
        uses it to replay recorded states."""
        return self._env.sim

    # -- Env interface -------------------------------------------------------------------------

    def reset(self, seed: int) -> Obs:
        self._seed = int(seed)
        # Object placement and robot init noise draw from env.rng, which the placement sampler
        # shares by reference: reseed that generator in place rather than replacing it.
        self._env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._env.reset()
        self._raw = self._observe()
        self._prepare_renderer()
        self._steps = 0
        self._solved_for = 0
        self._home_quat = self._raw["robot0_eef_quat"].copy()
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, dict[str, Any]]:
        action = self.action_space.clip(np.asarray(action, np.float32))
        _, reward, _, _ = self._env.step(action.astype(np.float64))
        self._raw = self._observe()
        self._steps += 1
        success = bool(self._env._check_success())
        self._solved_for = self._solved_for + 1 if success else 0
        done = self._solved_for >= self.success_hold or self._steps >= self.max_steps
        return self._obs(), float(reward), done, {"success": success}

    def render(self) -> np.ndarray:
        sim = self._env.sim
        sim.forward()  # derived positions match qpos (mj_step leaves them one substep behind)
        self._ctx.gl_ctx.make_current()  # another env in this process may own the current context
        frame = sim.render(camera_name=CAMERA, width=self.size, height=self.size)
        # OpenGL rows run bottom-up: flip upright, and copy out of the render buffer
        return np.ascontiguousarray(frame[::-1])

    def extras(self) -> dict[str, np.ndarray]:
        return {
            "sim_state": self._env.sim.get_state().flatten(),
            "object": self._raw["object-state"].astype(np.float32),
        }

    def episode_meta(self) -> dict[str, Any]:
        if self._model_xml is None:  # hard_reset=False: the model never changes between episodes
            self._model_xml = self._env.sim.model.get_xml()
        return {
            "env_args": self.env_args(),
            "model_file": self._model_xml,
            # Episode.state splits into robomimic's own low-dim obs keys (robosuite's obs names)
            "state_keys": [[key, width] for key, width in STATE_KEYS],
        }

    def env_args(self) -> dict[str, Any]:
        """robomimic's `data.attrs["env_args"]`: how to rebuild this env with image observations."""
        kwargs = dict(self._kwargs, use_camera_obs=True)
        return {
            "env_name": self.env_name,
            "type": 1,  # robomimic EnvType.ROBOSUITE_TYPE
            "env_version": self._version,
            "env_kwargs": kwargs,
        }

    def close(self) -> None:
        if self._env is None:
            return
        if self._ctx is not None:
            # Free the GL objects while our own context is current: freed later (at garbage
            # collection) they would delete same-numbered objects of whichever context is current.
            self._ctx.gl_ctx.make_current()
            self._ctx.con.free()
            self._ctx = None
        self._env.close()
        self._env = None

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown: EGL may already be gone
            self.close()

    # -- internals -----------------------------------------------------------------------------

    def _prepare_renderer(self) -> None:
        import mujoco

        ctx = self._env.sim._render_context_offscreen
        if ctx is not self._ctx:
            # Rendering is 85-90% of step time; shadows and reflections are most of it.
            ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            self._ctx = ctx

    def _observe(self) -> dict[str, np.ndarray]:
        """robosuite's observations recomputed after `sim.forward()`. Those `env.step` returns
        come from before the last substep's forward pass (positions one 2 ms substep stale, up to
        ~0.6 mm), whereas robomimic's `reset_to(states[t])` forwards first: recomputed, the stored
        obs, the frame and `sim_state` all describe the same instant."""
        self._env.sim.forward()
        return self._env._get_observations(force_update=True)

    def _obs(self) -> Obs:
        raw = self._raw
        state = np.concatenate([raw[key] for key, _ in STATE_KEYS])
        return {"image": self.render(), "state": state.astype(np.float32)}

    def _eef(self) -> np.ndarray:
        return self._raw["robot0_eef_pos"]

    def _object_pos(self) -> np.ndarray:
        raise NotImplementedError

    def _stages(self) -> list[_Stage]:
        raise NotImplementedError

    def _grasp(self) -> tuple[list[_Stage], Callable[[], np.ndarray]]:
        """The stages every pick shares (above the object, descend, close) and the grasp point,
        fixed where the gripper closed, for the stages that carry the object on."""
        hold: dict[str, np.ndarray] = {}

        def grasp_point() -> np.ndarray:
            hold.setdefault("pos", self._eef().copy())
            return hold["pos"]

        stages = [
            _Stage(lambda: self._object_pos() + [0, 0, 0.08], GRIP_OPEN, tol=0.015),
            _Stage(lambda: self._object_pos() + [0, 0, 0.0], GRIP_OPEN, tol=0.008),
            _Stage(grasp_point, GRIP_CLOSED, steps=10),
        ]
        return stages, grasp_point

    def expert(self, noise: float = 0.0) -> Policy:
        return _StagedExpert(self, self._stages(), noise, np.random.default_rng(self._seed))


class _Stage:
    """Servo the end effector to `target()` with the gripper at `grip`; the stage ends once within
    `tol` metres of the target, or after `steps` steps when `tol` is None."""

    def __init__(
        self,
        target: Callable[[], np.ndarray],
        grip: float,
        tol: float | None = None,
        steps: int = 0,
        timeout: int = 60,
    ):
        self.target, self.grip, self.tol, self.steps = target, grip, tol, steps
        self.timeout = timeout  # steps before the stage gives up waiting and moves on


class _StagedExpert:
    """Proportional servo through the stages. A held object makes the arm sag short of its target
    (OSC compensates only the arm's own gravity), so a stage also ends once the arm has settled
    near its target, and the servo gain is above 1 to shrink that offset."""

    gain = 2.0
    settle_steps = 4  # a stage has settled when the eef moved < settle_dist over this many steps
    settle_dist = 0.002

    def __init__(self, env: RobosuiteEnv, stages: list[_Stage], noise: float, rng):
        self.env, self.stages, self.noise, self.rng = env, stages, noise, rng
        self.index, self.count = 0, 0
        self.trail: list[np.ndarray] = []

    def __call__(self, obs: Obs) -> np.ndarray:
        env = self.env
        stage = self.stages[self.index]
        eef = env._eef().copy()
        error = stage.target() - eef
        self.count += 1
        self.trail = [*self.trail[-self.settle_steps + 1 :], eef]
        if self.index < len(self.stages) - 1 and self._stage_over(stage, error):
            self.index, self.count, self.trail = self.index + 1, 0, []
        action = np.zeros(7, np.float32)
        action[:3] = self.gain * error / POS_SCALE
        action[3:6] = _rotation_error(env._home_quat, env._raw["robot0_eef_quat"]) / ROT_SCALE
        action[6] = stage.grip
        return env.action_space.perturb(action, self.noise, self.rng)

    def _stage_over(self, stage: _Stage, error: np.ndarray) -> bool:
        if stage.tol is None:
            return self.count >= stage.steps
        distance = float(np.linalg.norm(error))
        settled = (
            len(self.trail) == self.settle_steps
            and float(np.linalg.norm(self.trail[-1] - self.trail[0])) < self.settle_dist
        )
        return (
            distance < stage.tol
            or (settled and distance < 3 * stage.tol)
            or (self.count >= stage.timeout)
        )


def _rotation_error(target_xyzw: np.ndarray, current_xyzw: np.ndarray) -> np.ndarray:
    """Axis-angle vector (world frame) that rotates `current` onto `target`."""
    from scipy.spatial.transform import Rotation

    delta = Rotation.from_quat(target_xyzw) * Rotation.from_quat(current_xyzw).inv()
    return delta.as_rotvec()


class LiftEnv(RobosuiteEnv):
    dataset = "robosuite_lift"
    env_name = "Lift"
    max_steps = 150

    def _object_pos(self) -> np.ndarray:
        return self._raw["cube_pos"]

    def _stages(self) -> list[_Stage]:
        start = self._object_pos().copy()
        pick, grasp_point = self._grasp()
        return [
            *pick,
            _Stage(lambda: np.r_[grasp_point()[:2], start[2] + 0.2], GRIP_CLOSED),
        ]


class CanEnv(RobosuiteEnv):
    dataset = "robosuite_can"
    env_name = "PickPlaceCan"
    max_steps = 300

    def _object_pos(self) -> np.ndarray:
        return self._raw["Can_pos"]

    def _stages(self) -> list[_Stage]:
        env = self._env
        # The can's compartment centre lies at the edge of the Panda's reach; aim a third of the
        # way toward the bin's middle (still 6 cm clear of the dividers).
        goal = env.target_bin_placements[env.object_id].copy()
        goal[:2] += 0.35 * (env.bin2_pos[:2] - goal[:2])
        carry_z = env.bin2_pos[2] + 0.25
        pick, grasp_point = self._grasp()
        return [
            *pick,
            _Stage(lambda: np.r_[grasp_point()[:2], carry_z], GRIP_CLOSED, tol=0.03),
            _Stage(lambda: np.r_[goal[:2], carry_z], GRIP_CLOSED, tol=0.02, timeout=120),
            _Stage(lambda: np.r_[goal[:2], env.bin2_pos[2] + 0.15], GRIP_CLOSED, tol=0.02),
            _Stage(lambda: np.r_[goal[:2], env.bin2_pos[2] + 0.15], GRIP_OPEN, steps=8),
            _Stage(lambda: np.r_[goal[:2], carry_z], GRIP_OPEN),
        ]


def make_lift(size: int = 64) -> LiftEnv:
    return LiftEnv(size)


def make_can(size: int = 64) -> CanEnv:
    return CanEnv(size)
