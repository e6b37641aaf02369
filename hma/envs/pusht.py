"""gym-pusht behind the `Env` interface, with a scripted pushing expert.

gym-pusht ships no expert, so `PushTExpert` plans pushes on the T itself. Its physics make that
tractable: the space's damping is 0 (each body loses all its velocity every 10 ms substep) and
the shapes have no friction, so the T moves only while the pusher presses on it, and a press at
body point r along the inward face normal n moves the centre of gravity along n and turns the
body by (r x n) / I per unit of travel. The expert scores every contact point on the T's outline
by how much one push there would shrink the pose error, walks around the T to the best one
(shortest path around the T inflated by the pusher's radius) and pushes until that contact stops
helping or the pusher slips off.

Coordinates are gym-pusht's: pixels 0-512, the action is the absolute target of the pusher's PD
controller, and the goal pose is fixed at (256, 256, pi/4).
"""

from __future__ import annotations

import heapq
import os
from typing import Any

import numpy as np

from hma.envs.base import ActionSpace, Env, Obs, Policy

ENV_ID = "gym_pusht/PushT-v0"
SUCCESS_COVERAGE = 0.95  # gym-pusht's own success threshold
AGENT_RADIUS = 15.0  # the pusher disc, fixed in gym-pusht
WORKSPACE = (20.0, 492.0)  # waypoints stay inside the walls (at 5 and 506) with room for the disc


class PushTEnv(Env):
    dataset = "pusht"
    hz = 10.0
    max_steps = 300  # gym-pusht registers the same time limit
    action_space = ActionSpace(low=np.zeros(2, np.float32), high=np.full(2, 512.0, np.float32))

    def __init__(self, size: int = 64):
        super().__init__(size)
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import gym_pusht  # noqa: F401 - registers gym_pusht/PushT-v0
        import gymnasium as gym

        # The env renders its 512 px canvas and resizes it to the observation size itself.
        self._env = gym.make(
            ENV_ID,
            obs_type="pixels_agent_pos",
            render_mode="rgb_array",
            observation_width=size,
            observation_height=size,
            disable_env_checker=True,
        )
        self._sim = self._env.unwrapped
        self._obs: Obs = {}
        self._steps = 0
        self._seed = 0
        self._coverage = 0.0

    def reset(self, seed: int) -> Obs:
        self._seed = int(seed)
        self._steps = 0
        raw, _ = self._env.reset(seed=self._seed)
        self._coverage = float(self._sim._get_coverage())
        self._obs = self._convert(raw)
        return self._obs

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, dict[str, Any]]:
        action = self.action_space.clip(np.asarray(action, np.float32))
        raw, reward, terminated, truncated, info = self._env.step(action.astype(np.float64))
        self._steps += 1
        self._coverage = float(info["coverage"])
        success = bool(info["is_success"])
        self._obs = self._convert(raw)
        done = success or terminated or truncated or self._steps >= self.max_steps
        return self._obs, float(reward), done, {"success": success, "coverage": self._coverage}

    def render(self) -> np.ndarray:
        return self._obs["image"]

    def expert(self, noise: float = 0.0) -> Policy:
        return PushTExpert(self, noise, seed=self._seed)

    def episode_meta(self) -> dict[str, Any]:
        return {"env_id": ENV_ID, "goal_pose": [float(v) for v in self._sim.goal_pose]}

    def extras(self) -> dict[str, np.ndarray]:
        """The T's pose (x, y, angle) and its coverage of the goal, beside each frame."""
        block = self._sim.block
        pose = [block.position.x, block.position.y, block.angle]
        return {
            "block_pose": np.asarray(pose, np.float32),
            "coverage": np.float32(self._coverage),
        }

    def close(self) -> None:
        self._env.close()

    def _convert(self, raw: dict[str, np.ndarray]) -> Obs:
        return {
            "image": np.ascontiguousarray(raw["pixels"], dtype=np.uint8),
            "state": np.asarray(raw["agent_pos"], np.float32),
        }


# ---------------------------------------------------------------------------------------------
# Expert


def _rot(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


class PushTExpert:
    """Greedy contact-selection pusher for gym-pusht (see the module docstring).

    The disc is steered as a velocity source: gym-pusht's PD gains (kp=100, kv=20) make it
    settle at velocity v when the target leads it by (kv/kp) v, so the target is the disc's
    position plus that lead.
    """

    contact_spacing = 4.0  # px between candidate contacts along an edge
    corner_margin = 3.0  # skip contacts this close to a convex corner (the disc slides off)
    standoff = 6.0  # gap between disc and face when lining up for a push
    lead = 0.2  # kv / kp of gym-pusht's PD controller: target lead per unit velocity (s)
    settle = 0.15  # s: time constant of closing in on a point (no overshoot at 0.15)
    travel_speed = 400.0  # px/s while walking around the T
    push_speed = 150.0  # px/s while pushing
    slip_tolerance = 6.0  # px: the disc has left its contact if it is this far off
    switch_ratio = 2.0  # change contact mid-push only for a contact this much better
    approach_patience = 30  # steps to reach a contact before giving up on it for a while
    ban_steps = 40
    ban_radius = 20.0  # px along the outline around a contact given up on
    max_replans = 4  # contacts tried per step when the way to one is blocked

    def __init__(self, env: PushTEnv, noise: float = 0.0, seed: int = 0):
        self._env = env
        self._sim = env._sim
        self._noise = float(noise)
        self._rng = np.random.default_rng([seed, 0x9E37])
        block = self._sim.block
        self._cog = np.asarray(block.center_of_gravity, float)
        self._inertia = float(block.moment / block.mass)
        goal = np.asarray(self._sim.goal_pose, float)
        # pymunk places a body's local point v at position + R(angle) v, and the goal is drawn
        # as the T's outline at the goal pose, so the goal's centre of gravity sits at
        # goal + R(goal angle) cog. Poses below are centres of gravity, which the T turns about.
        self._goal_angle = float(goal[2])
        self._goal_pos = goal[:2] + _rot(goal[2]) @ self._cog
        self._outline = _outline(self._sim.block)  # [V,2] body frame, counter-clockwise
        self._points, self._normals = self._candidate_contacts()  # [C,2] each, body frame
        self._contact: int | None = None  # index into the candidates
        self._pushing = False  # lined up and pressing (else walking to the contact)
        self._t = 0  # calls so far
        self._since = 0  # call at which the current contact was chosen
        self._banned_until = np.zeros(len(self._points), int)  # per contact, a call count

    def _candidate_contacts(self) -> tuple[np.ndarray, np.ndarray]:
        """Contact points and outward normals along the outline, clear of corners."""
        pts = self._outline
        count = len(pts)
        concave = [
            _cross(pts[i] - pts[i - 1], pts[(i + 1) % count] - pts[i]) < 0 for i in range(count)
        ]
        points, normals = [], []
        for i in range(count):
            a, b = pts[i], pts[(i + 1) % count]
            length = float(np.linalg.norm(b - a))
            direction = (b - a) / length
            # a disc in a concave corner would touch both faces: stay a radius away from it
            start = AGENT_RADIUS + 1.0 if concave[i] else self.corner_margin
            end = length - (AGENT_RADIUS + 1.0 if concave[(i + 1) % count] else self.corner_margin)
            if end < start:
                continue
            for t in np.linspace(start, end, int((end - start) // self.contact_spacing) + 1):
                points.append(a + direction * t)
                normals.append([direction[1], -direction[0]])  # outward for a CCW outline
        return np.array(points), np.array(normals)

    # -- planning ----------------------------------------------------------------------------

    def _pose(self) -> tuple[np.ndarray, float]:
        """The T's centre of gravity (world) and angle."""
        block = self._sim.block
        angle = float(block.angle)
        cog = np.array([block.position.x, block.position.y]) + _rot(angle) @ self._cog
        return cog, angle

    def _to_world(self, pos: np.ndarray, angle: float, local: np.ndarray) -> np.ndarray:
        """Body-frame points [...,2] to world, for the T with centre of gravity at `pos`."""
        return pos + (local - self._cog) @ _rot(angle).T

    def _plans(self, pos, angle, err_pos, err_ang) -> tuple[np.ndarray, np.ndarray]:
        """Per contact: (travel, gain), how far to push there and how much squared pose error
        that push removes, in the linearised model of the module docstring."""
        rot = _rot(angle)
        inward = -self._normals @ rot.T  # [C,2] push directions, world
        arm = (self._points - self._cog) @ rot.T  # [C,2] lever arms, world
        turn = (arm[:, 0] * inward[:, 1] - arm[:, 1] * inward[:, 0]) / self._inertia  # rad/px
        rho2 = self._inertia  # weigh angle error by the radius of gyration squared
        denom = 1.0 + rho2 * turn * turn
        travel = np.maximum((inward @ err_pos + rho2 * err_ang * turn) / denom, 0.0)
        gain = travel * travel * denom
        # the disc must be able to line up: actions stop at 0 and 512 (walls hold only the T)
        ready = self._to_world(
            pos, angle, self._points + self._normals * (AGENT_RADIUS + self.standoff)
        )
        usable = np.all((ready >= WORKSPACE[0]) & (ready <= WORKSPACE[1]), axis=1)
        usable &= self._banned_until < self._t
        return travel, np.where(usable, gain, 0.0)

    def __call__(self, obs: Obs) -> np.ndarray:
        self._t += 1
        agent = np.array([self._sim.agent.position.x, self._sim.agent.position.y])
        pos, angle = self._pose()
        err_pos = self._goal_pos - pos
        err_ang = _wrap(self._goal_angle - angle)
        travel, gain = self._plans(pos, angle, err_pos, err_ang)

        if self._contact is not None:
            i = self._contact
            slipped = self._pushing and self._off_line(agent, pos, angle) > self.slip_tolerance
            stuck = not self._pushing and self._t - self._since > self.approach_patience
            if stuck:  # the T sits where the disc cannot get round it: try other contacts
                self._ban(i)
            if travel[i] < 0.5 or slipped or stuck or gain.max() > self.switch_ratio * gain[i]:
                self._contact = None
        for _ in range(self.max_replans):
            if self._contact is None:
                self._contact = int(np.argmax(gain))
                self._pushing, self._since = False, self._t
            world_point = self._to_world(pos, angle, self._points[self._contact])
            world_normal = _rot(angle) @ self._normals[self._contact]
            if self._pushing:
                break
            ready = world_point + world_normal * (AGENT_RADIUS + self.standoff)
            if np.linalg.norm(ready - agent) < 2.0:
                self._pushing = True
                break
            waypoint = self._route(agent, ready, pos, angle)
            if waypoint is not None:
                return self._finish(self._steer(agent, waypoint, self.travel_speed))
            self._ban(self._contact)  # no way round the T to this contact
            gain[self._banned_until >= self._t] = 0.0
            self._contact = None
        else:
            return self._finish(agent)  # nowhere to go this step: hold still

        touching = world_point + world_normal * AGENT_RADIUS
        depth = min(float(travel[self._contact]), self.push_speed / self._env.hz)
        return self._finish(self._steer(agent, touching - world_normal * depth, self.push_speed))

    def _ban(self, index: int) -> None:
        """Skip contact `index` and its neighbours on the same side for a while."""
        near = np.linalg.norm(self._points - self._points[index], axis=1) <= self.ban_radius
        same_side = self._normals @ self._normals[index] > 0.5
        self._banned_until[near & same_side] = self._t + self.ban_steps

    def _off_line(self, agent: np.ndarray, pos: np.ndarray, angle: float) -> float:
        """Distance of the disc from the line it should push along (the contact's normal)."""
        world_point = self._to_world(pos, angle, self._points[self._contact])
        world_normal = _rot(angle) @ self._normals[self._contact]
        return abs(_cross(world_normal, agent - world_point))

    def _steer(self, agent: np.ndarray, target: np.ndarray, speed: float) -> np.ndarray:
        """A PD target that drives the disc toward `target` at up to `speed` px/s."""
        velocity = (target - agent) / self.settle
        norm = float(np.linalg.norm(velocity))
        if norm > speed:
            velocity *= speed / norm
        return agent + velocity * self.lead

    def _finish(self, action: np.ndarray) -> np.ndarray:
        return PushTEnv.action_space.perturb(action, self._noise, self._rng)

    def _route(self, start, goal, pos, angle) -> np.ndarray | None:
        """Next waypoint on the shortest path from `start` to `goal` around the T inflated by
        the disc's radius (a visibility graph over the inflated outline's corners); None when
        the T, against a wall, blocks every way."""
        from shapely.geometry import LineString, Point, Polygon

        body = Polygon(self._to_world(pos, angle, self._outline))
        blocked = body.buffer(AGENT_RADIUS + 1.0, join_style="mitre")
        if blocked.contains(Point(*start)):
            # touching the T: back straight out, away from its nearest edge
            edge = body.exterior
            nearest = np.asarray(edge.interpolate(edge.project(Point(*start))).coords[0])
            away = start - nearest
            return start + away / max(float(np.linalg.norm(away)), 1e-6) * (
                AGENT_RADIUS + self.standoff
            )
        corners = np.asarray(body.buffer(AGENT_RADIUS + 4.0, join_style="mitre").exterior.coords)
        nodes = [np.asarray(start, float), np.asarray(goal, float)]
        nodes += [c for c in corners[:-1] if np.all((c >= WORKSPACE[0]) & (c <= WORKSPACE[1]))]

        def free(a: np.ndarray, b: np.ndarray) -> bool:
            return not LineString([tuple(a), tuple(b)]).intersects(blocked)

        if free(nodes[0], nodes[1]):
            return nodes[1]
        # Dijkstra from start (node 0) to goal (node 1)
        dist, prev, done = {0: 0.0}, {}, set()
        queue = [(0.0, 0)]
        while queue:
            d, i = heapq.heappop(queue)
            if i in done:
                continue
            done.add(i)
            if i == 1:
                break
            for j in range(len(nodes)):
                if j in done or not free(nodes[i], nodes[j]):
                    continue
                nd = d + float(np.linalg.norm(nodes[j] - nodes[i]))
                if nd < dist.get(j, np.inf):
                    dist[j], prev[j] = nd, i
                    heapq.heappush(queue, (nd, j))
        if 1 not in prev:
            return None
        node = 1
        while prev[node] != 0:
            node = prev[node]
        return nodes[node]


def _outline(block) -> np.ndarray:
    """The outline of a pymunk body's polygons (their union), counter-clockwise, body frame."""
    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    union = unary_union([Polygon([tuple(v) for v in s.get_vertices()]) for s in block.shapes])
    coords = np.asarray(union.simplify(1e-6).exterior.coords)[:-1]
    return coords if _signed_area(coords) > 0 else coords[::-1]


def _signed_area(coords: np.ndarray) -> float:
    x, y = coords[:, 0], coords[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def make(size: int = 64) -> PushTEnv:
    return PushTEnv(size)
