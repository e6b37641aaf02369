"""What the learned simulator showed a policy: real and learned-simulator frames side by side.

    python -m experiments.policy_eval_frames --root DIR --step N [--episodes 6] [--out PNG]

For a finished `experiments.policy_eval` run at DIR: the BC checkpoint at step N runs closed-loop
in the ground-truth env and in the learned simulator from the same first frames (the
evaluation's seeds), and the PNG stacks, per episode, the real kept frames (odd rows) over the
learned simulator's (even rows), black after an episode ends. Each episode's line gives both
outcomes and the success classifier's probability per learned frame, so a reader can see where
the two simulators part and why the classifier decided as it did.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from experiments.policy_eval import ENV, EVALUATE_SEED
from experiments.results import RESULTS

COLUMNS = 16  # kept frames shown per row
DEFAULT_OUT = RESULTS.parent / "img" / "policy_eval_frames.png"


def first_frames(frames: np.ndarray) -> np.ndarray:
    """The first COLUMNS frames [F,H,W,3], padded with black after an episode's end."""
    pad = max(0, COLUMNS - len(frames))
    return np.concatenate([frames[:COLUMNS], np.zeros((pad, *frames.shape[1:]), np.uint8)])


def main(argv: list[str] | None = None) -> int:
    from hma import storage
    from hma.envs import make_env
    from hma.envs.rollout import rollout
    from hma.episodes import judged_frames
    from hma.frames import resize, video_grid
    from hma.generate.policy_eval import closed_loop
    from hma.generate.simulator import Simulator, SimulatorConfig
    from hma.generate.success import SuccessClassifier
    from hma.generate.world_model import WorldModel
    from hma.policy.agent import Agent

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="a finished experiments.policy_eval run")
    parser.add_argument("--step", type=int, required=True, help="the BC checkpoint's step")
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the PNG to write")
    args = parser.parse_args(argv)
    root = Path(args.root)
    checkpoint = json.loads((root / "world_model.json").read_text())["checkpoint"]
    classifier = SuccessClassifier.load(str(root / "success"))
    agent = Agent.load(f"{root / 'policy'}@{args.step}")
    world_model = WorldModel.load(checkpoint)
    size = world_model.frame_size[0]
    env = make_env(ENV, size)
    try:
        sim = Simulator(world_model, ENV, classifier, SimulatorConfig(max_steps=env.max_steps))
        real = [
            rollout(env, EVALUATE_SEED + i, make_policy=agent.stepper) for i in range(args.episodes)
        ]
    finally:
        env.close()
    firsts = np.stack([ep.frames[0] for ep in real])
    learned = closed_loop(sim, agent, firsts, EVALUATE_SEED, keep_frames=True)
    videos = []
    for i, ep in enumerate(real):
        kept = resize(judged_frames(ep.frames, sim.stride), (size, size))
        print(
            f"episode {i}: real {'success' if ep.success else 'failure'} ({len(kept)} frames), "
            f"learned {'success' if learned.success[i] else 'failure'} "
            f"({len(learned.frames[i])} frames); classifier on learned frames "
            + " ".join(f"{p:.2f}" for p in learned.probs[i])
        )
        videos += [first_frames(kept), first_frames(learned.frames[i])]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    storage.write_png(video_grid(videos), str(out))
    print(
        f"classifier rule: p > {classifier.config.threshold:.2f} for {classifier.config.hold} "
        f"frame(s); image: {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
