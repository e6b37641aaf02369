"""A Language-Table-like board: coloured blocks pushed by a round effector, with templated
instructions and a scripted pushing expert.

Physics is pymunk seen from above: the board is the unit square (x right, y up), blocks are
rigid bodies held by Coulomb friction against the board (a pivot and a gear joint to the static
body that may only exert a bounded force, pymunk's usual top-down friction), and the effector is
a kinematic disc that chases its target translation. An action moves that target by a delta of
at most 0.1 per axis, at 10 Hz, as Language Table's does. Frames are drawn with PIL.

Tasks, one per episode, in two families:
    location  "push the red star to the top left corner"   block centre within 0.07 of the spot
    block     "put the blue cube next to the green moon"   block centres closer than 0.15
The reward is minus the block's distance to its goal, plus 1 on success.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from hma.envs.base import ActionSpace, Env, Obs, Policy

COLORS = {
    "red": (214, 48, 49),
    "blue": (38, 92, 212),
    "green": (46, 160, 67),
    "yellow": (240, 196, 25),
    "purple": (142, 68, 173),
}
SHAPES = ("cube", "star", "moon", "pentagon", "triangle")
LOCATIONS = {
    "top left corner": (0.15, 0.85),
    "top right corner": (0.85, 0.85),
    "bottom left corner": (0.15, 0.15),
    "bottom right corner": (0.85, 0.15),
    "center": (0.5, 0.5),
    "top center": (0.5, 0.85),
    "bottom center": (0.5, 0.15),
    "center left": (0.15, 0.5),
    "center right": (0.85, 0.5),
}
TEMPLATES = {
    "location": (
        "push the {block} to the {target}",
        "move the {block} to the {target}",
        "slide the {block} to the {target}",
    ),
    "block": (
        "put the {block} next to the {target}",
        "push the {block} next to the {target}",
        "move the {block} close to the {target}",
    ),
}
BLOCK_RADIUS = 0.055  # every block shape fits in a disc of this radius (board is 1 x 1)
# success: block centre within this distance of the spot / of the other block's centre
TOLERANCE = {"location": 0.07, "block": 2 * BLOCK_RADIUS + 0.04}
NEXT_TO = 2 * BLOCK_RADIUS + 0.01  # centre distance the expert aims for beside the other block
EFFECTOR_RADIUS = 0.025
BOARD_COLOR = (222, 214, 196)
WALL_COLOR = (120, 110, 96)
EFFECTOR_COLOR = (70, 70, 76)
WALL_THICKNESS = 0.012


@dataclass(frozen=True)
class PhysicsConfig:
    substeps: int = 10  # physics steps per control step
    block_mass: float = 1.0
    ground_force: float = 5.0  # Coulomb friction force of the board on a block
    ground_torque: float = 0.08
    contact_friction: float = 0.4  # between blocks, and between block and effector
    effector_speed: float = 1.0  # board units per second (0.1 per control step)
    effector_lag: float = 0.05  # s: time constant of the effector chasing its target
    workspace: tuple[float, float] = (0.03, 0.97)  # effector target bounds, both axes


def shape_parts(shape: str, radius: float = BLOCK_RADIUS) -> list[np.ndarray]:
    """Convex polygons [K,2] making up a block of `shape`, centred on its area centroid and
    scaled so its farthest point lies `radius` away. Star and moon are concave, so they are unions of parts."""
    if shape == "cube":
        h = 0.71
        parts = [np.array([[-h, -h], [h, -h], [h, h], [-h, h]])]
    elif shape == "pentagon":
        parts = [_regular(5, 0.9)]
    elif shape == "triangle":
        parts = [_regular(3, 1.0)]
    elif shape == "star":
        outer, inner = _regular(5, 1.0), _regular(5, 0.45, offset=np.pi / 5)
        # the inner pentagon plus one triangle per point (inner vertices i-1, i around tip i)
        parts = [inner] + [np.array([inner[i - 1], outer[i], inner[i]]) for i in range(5)]
    elif shape == "moon":
        parts = _crescent(outer=1.0, inner=0.78, shift=0.6, pieces=6)
    else:
        raise ValueError(f"unknown block shape {shape!r} (known: {', '.join(SHAPES)})")
    areas = np.array([_area(p) for p in parts])
    centroid = sum(a * _centroid(p) for a, p in zip(areas, parts, strict=True)) / areas.sum()
    reach = max(float(np.linalg.norm(p - centroid, axis=1).max()) for p in parts)
    return [(p - centroid) * (radius / reach) for p in parts]


def _regular(n: int, radius: float, offset: float = 0.0) -> np.ndarray:
    angles = np.pi / 2 + offset + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _crescent(outer: float, inner: float, shift: float, pieces: int) -> list[np.ndarray]:
    """A crescent (disc of radius `outer` minus a disc of radius `inner` shifted right by
    `shift`) cut into `pieces` convex quads between the two arcs."""
    # the circles cross at x0, +-y0
    x0 = (outer**2 - inner**2 + shift**2) / (2 * shift)
    y0 = np.sqrt(outer**2 - x0**2)
    a = np.arctan2(y0, x0)  # on the outer circle
    b = np.arctan2(y0, x0 - shift)  # on the inner circle
    ta = np.linspace(a, 2 * np.pi - a, pieces + 1)
    tb = np.linspace(b, 2 * np.pi - b, pieces + 1)
    arc_out = outer * np.stack([np.cos(ta), np.sin(ta)], axis=1)
    arc_in = np.stack([shift + inner * np.cos(tb), inner * np.sin(tb)], axis=1)
    return [np.array([arc_out[i], arc_out[i + 1], arc_in[i + 1], arc_in[i]]) for i in range(pieces)]


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)))


def _centroid(poly: np.ndarray) -> np.ndarray:
    x, y = poly[:, 0], poly[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = 0.5 * cross.sum()
    return np.array(
        [((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()]
    ) / (6 * area)


@dataclass
class Task:
    family: str  # "location" | "block"
    block: int  # index of the block to move
    target: str  # location name, or the other block's name
    anchor: int | None  # the other block (block family)
    instruction: str


class TabletopEnv(Env):
    dataset = "tabletop"
    hz = 10.0
    max_steps = 150
    action_space = ActionSpace(low=np.full(2, -0.1, np.float32), high=np.full(2, 0.1, np.float32))
    min_blocks, max_blocks = 4, 8

    def __init__(self, size: int = 64, physics: PhysicsConfig | None = None):
        super().__init__(size)
        self.physics = physics or PhysicsConfig()
        self._seed = 0
        self._steps = 0

    # -- episode setup -------------------------------------------------------------------------

    def reset(self, seed: int) -> Obs:
        import pymunk

        self._seed = int(seed)
        self._steps = 0
        rng = np.random.default_rng([self._seed, 0x7AB1E])
        cfg = self.physics
        self._space = space = pymunk.Space()
        space.iterations = 20
        for a, b in [((0, 0), (1, 0)), ((1, 0), (1, 1)), ((1, 1), (0, 1)), ((0, 1), (0, 0))]:
            wall = pymunk.Segment(space.static_body, a, b, WALL_THICKNESS)
            wall.friction = cfg.contact_friction
            space.add(wall)

        start = np.array([0.5 + rng.uniform(-0.15, 0.15), 0.08])
        self._effector = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self._effector.position = tuple(start)
        disc = pymunk.Circle(self._effector, EFFECTOR_RADIUS)
        disc.friction = cfg.contact_friction
        space.add(self._effector, disc)
        self._target = start.copy()

        count = int(rng.integers(self.min_blocks, self.max_blocks + 1))
        kinds = rng.choice(len(COLORS) * len(SHAPES), size=count, replace=False)
        self.blocks: list[tuple[str, str]] = [
            (list(COLORS)[k // len(SHAPES)], SHAPES[k % len(SHAPES)]) for k in kinds
        ]
        self._bodies = []
        self._parts = []
        for (_, shape), position in zip(self.blocks, self._place(rng, count, start), strict=True):
            body, parts = self._add_block(shape, position, rng.uniform(-np.pi, np.pi))
            self._bodies.append(body)
            self._parts.append(parts)
        self.task = self._sample_task(rng)
        return self._observe()

    def _place(self, rng: np.random.Generator, count: int, effector: np.ndarray) -> np.ndarray:
        """Block centres in [0.15, 0.85]^2, clear of each other and of the effector."""
        points: list[np.ndarray] = []
        while len(points) < count:
            p = rng.uniform(0.15, 0.85, size=2)
            if np.linalg.norm(p - effector) > 0.15 and all(
                np.linalg.norm(p - q) > 2.6 * BLOCK_RADIUS for q in points
            ):
                points.append(p)
        return np.array(points)

    def _add_block(self, shape: str, position: np.ndarray, angle: float):
        import pymunk

        cfg = self.physics
        parts = shape_parts(shape)
        areas = np.array([_area(p) for p in parts])
        masses = cfg.block_mass * areas / areas.sum()
        moment = sum(
            pymunk.moment_for_poly(m, [tuple(v) for v in p])
            for m, p in zip(masses, parts, strict=True)
        )
        body = pymunk.Body(cfg.block_mass, moment)
        body.position = tuple(position)
        body.angle = float(angle)
        self._space.add(body)
        for p in parts:
            poly = pymunk.Poly(body, [tuple(v) for v in p])
            poly.friction = cfg.contact_friction
            self._space.add(poly)
        # top-down friction: joints to the board that can only exert a bounded force
        for joint in (
            pymunk.PivotJoint(self._space.static_body, body, (0, 0), (0, 0)),
            pymunk.GearJoint(self._space.static_body, body, 0.0, 1.0),
        ):
            joint.max_bias = 0.0
            joint.max_force = (
                cfg.ground_force if isinstance(joint, pymunk.PivotJoint) else cfg.ground_torque
            )
            self._space.add(joint)
        return body, parts

    def _sample_task(self, rng: np.random.Generator) -> Task:
        """A task whose goal starts at least 0.3 away, so no episode starts solved."""
        names = [f"{color} {shape}" for color, shape in self.blocks]
        positions = self._block_positions()
        family = "location" if rng.random() < 0.5 else "block"
        template = TEMPLATES[family][int(rng.integers(len(TEMPLATES[family])))]
        for attempt in range(1000):
            block = int(rng.integers(len(self.blocks)))
            if family == "location":
                target = list(LOCATIONS)[int(rng.integers(len(LOCATIONS)))]
                anchor, goal = None, np.asarray(LOCATIONS[target])
            else:
                anchor = int(rng.integers(len(self.blocks)))
                target, goal = names[anchor], positions[anchor]
            if anchor != block and np.linalg.norm(positions[block] - goal) > 0.3:
                text = template.format(block=names[block], target=target)
                return Task(family, block, target, anchor, text)
            if family == "block" and attempt > 100:  # blocks bunched together: pick a spot instead
                family, template = "location", TEMPLATES["location"][0]
        raise AssertionError("no task found")  # a spot 0.3 away always exists

    # -- stepping ------------------------------------------------------------------------------

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, dict[str, Any]]:
        cfg = self.physics
        delta = self.action_space.clip(np.asarray(action, np.float32)).astype(np.float64)
        self._target = np.clip(self._target + delta, *cfg.workspace)
        dt = 1.0 / (self.hz * cfg.substeps)
        for _ in range(cfg.substeps):
            gap = self._target - np.asarray(self._effector.position)
            velocity = gap / cfg.effector_lag
            speed = float(np.linalg.norm(velocity))
            if speed > cfg.effector_speed:
                velocity *= cfg.effector_speed / speed
            self._effector.velocity = tuple(velocity)
            self._space.step(dt)
        self._steps += 1
        distance = self.goal_distance()
        success = distance < TOLERANCE[self.task.family]
        reward = -distance + (1.0 if success else 0.0)
        done = success or self._steps >= self.max_steps
        return self._observe(), float(reward), done, {"success": success, "distance": distance}

    def goal(self) -> np.ndarray:
        """Where the expert takes the block now (the block family's goal follows the other
        block: the point beside it on the moving block's side)."""
        task = self.task
        if task.family == "location":
            return np.asarray(LOCATIONS[task.target], float)
        block, anchor = self._block_positions()[[task.block, task.anchor]]
        away = block - anchor
        return anchor + away / max(float(np.linalg.norm(away)), 1e-9) * NEXT_TO

    def goal_distance(self) -> float:
        task = self.task
        positions = self._block_positions()
        if task.family == "location":
            return float(np.linalg.norm(positions[task.block] - LOCATIONS[task.target]))
        return float(np.linalg.norm(positions[task.block] - positions[task.anchor]))

    def _block_positions(self) -> np.ndarray:
        return np.array([[b.position.x, b.position.y] for b in self._bodies])

    def effector_translation(self) -> np.ndarray:
        return np.array([self._effector.position.x, self._effector.position.y])

    def _observe(self) -> Obs:
        state = np.concatenate([self.effector_translation(), self._target]).astype(np.float32)
        return {"image": self.render(), "state": state}

    # -- interface extras ----------------------------------------------------------------------

    def instruction(self) -> str:
        return self.task.instruction

    def extras(self) -> dict[str, np.ndarray]:
        """Language Table's per-step observation fields (names from its RLDS schema)."""
        return {
            "effector_translation": self.effector_translation().astype(np.float32),
            "effector_target_translation": self._target.astype(np.float32),
        }

    def episode_meta(self) -> dict[str, Any]:
        task = self.task
        return {
            "task": task.family,
            "block": " ".join(self.blocks[task.block]),
            "target": task.target,
            "blocks": [" ".join(b) for b in self.blocks],
            "board": [0.0, 1.0],
        }

    def expert(self, noise: float = 0.0) -> Policy:
        return TabletopExpert(self, noise, seed=self._seed)

    # -- drawing -------------------------------------------------------------------------------

    def render(self) -> np.ndarray:
        supersample = 2  # draw at twice the size and box-filter down: cheap anti-aliasing
        scale = self.size * supersample
        image = Image.new("RGB", (scale, scale), WALL_COLOR)
        draw = ImageDraw.Draw(image)
        inset = WALL_THICKNESS * scale
        draw.rectangle([inset, inset, scale - inset, scale - inset], fill=BOARD_COLOR)

        def to_pixels(points: np.ndarray) -> list[tuple[float, float]]:
            return [(x * scale, (1.0 - y) * scale) for x, y in points]

        for (color, _), body, parts in zip(self.blocks, self._bodies, self._parts, strict=True):
            c, s = np.cos(body.angle), np.sin(body.angle)
            rot = np.array([[c, -s], [s, c]])
            origin = np.array([body.position.x, body.position.y])
            for part in parts:
                draw.polygon(to_pixels(part @ rot.T + origin), fill=COLORS[color])
        (x, y), r = to_pixels(self.effector_translation()[None])[0], EFFECTOR_RADIUS * scale
        draw.ellipse([x - r, y - r, x + r, y + r], fill=EFFECTOR_COLOR)
        image = image.resize((self.size, self.size), Image.Resampling.BOX)
        return np.asarray(image, dtype=np.uint8)


class TabletopExpert:
    """Push the task's block along the straight line to its goal: walk round the block (on a
    circle clear of it) to the point behind it, push through its centre, steer back onto the
    line as it drifts, and walk round again when it slips away."""

    behind = BLOCK_RADIUS + EFFECTOR_RADIUS + 0.012  # where pushes start, from the block centre
    clearance = BLOCK_RADIUS + EFFECTOR_RADIUS + 0.03  # radius of the walk round the block
    walk_step = 0.07  # per control step, below the 0.1 action bound
    push_step = 0.04
    lateral_gain = 0.6  # share of the sideways offset from the push line corrected per step
    max_slip = np.deg2rad(30)  # off-line angle at which a push is abandoned

    def __init__(self, env: TabletopEnv, noise: float = 0.0, seed: int = 0):
        self._env = env
        self._noise = float(noise)
        self._rng = np.random.default_rng([seed, 0xE4])
        self._pushing = False

    def __call__(self, obs: Obs) -> np.ndarray:
        env = self._env
        effector, target = obs["state"][:2].astype(float), obs["state"][2:4].astype(float)
        block = env._block_positions()[env.task.block]
        to_goal = env.goal() - block
        distance = float(np.linalg.norm(to_goal))
        line = to_goal / max(distance, 1e-9)  # push direction
        rel = effector - block
        along = float(-rel @ line)  # how far behind the block the effector is
        sideways = rel + along * line  # offset from the push line
        angle = np.arctan2(np.linalg.norm(sideways), max(along, 1e-9))

        if self._pushing and (along <= 0 or angle > self.max_slip or along > self.behind + 0.05):
            self._pushing = False
        if (
            not self._pushing
            and along > 0
            and np.linalg.norm(sideways) < 0.01
            and along < self.behind + 0.01
        ):
            self._pushing = True

        if self._pushing:
            step = min(self.push_step, distance)
            waypoint = effector + line * step - sideways * self.lateral_gain
        else:
            waypoint = self._walk_round(effector, block, block - line * self.behind)
        action = waypoint - target
        norm = float(np.linalg.norm(action))
        if norm > self.walk_step:
            action *= self.walk_step / norm
        return TabletopEnv.action_space.perturb(action, self._noise, self._rng)

    def _walk_round(self, effector: np.ndarray, block: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Next point on the way to `start` that keeps the effector off the block."""
        rel, goal_rel = effector - block, start - block
        radius = float(np.linalg.norm(rel))
        if _segment_clear(rel, goal_rel, self.behind - 0.005):
            return start
        if radius < self.clearance - 0.01:  # too close to walk round: step straight out first
            return block + rel / max(radius, 1e-9) * self.clearance
        here, there = np.arctan2(rel[1], rel[0]), np.arctan2(goal_rel[1], goal_rel[0])
        turn = (there - here + np.pi) % (2 * np.pi) - np.pi
        here += np.sign(turn) * min(abs(turn), self.walk_step / self.clearance)
        return block + self.clearance * np.array([np.cos(here), np.sin(here)])


def _segment_clear(a: np.ndarray, b: np.ndarray, radius: float) -> bool:
    """Whether the segment a-b keeps `radius` from the origin."""
    ab = b - a
    t = np.clip(-(a @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(a + t * ab)) >= radius


def make(size: int = 64) -> TabletopEnv:
    return TabletopEnv(size)
