"""Closed-loop throughput: a policy acting in the learned simulator (batched) against the same
policy in the ground-truth simulator, on this machine, in one run.

    python -m benchmarks.closed_loop [--env metaworld_reach] [--checkpoint CKPT] [--batch 1 8 32]

Both sides run the same loop: the policy decides a chunk of `stride` raw actions from the current
frame, the simulator advances (the env by `stride` physics steps and renders; the learned
simulator generates one frame: 2 MaskGIT passes, decode, success classifier). The figure is raw
control steps per second (decisions x stride), the learned simulator batched over B episodes;
the ratio is learned / ground truth. Without --checkpoint an untrained world model is built
(the experiment's size: tiny preset, d 96, 6 layers, window 6): speed does not depend on weights.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from hma.envs import make_env
from hma.generate.simulator import Simulator, SimulatorConfig
from hma.generate.success import SuccessClassifier, SuccessConfig, SuccessNet
from hma.generate.world_model import WorldModel
from hma.policy.agent import Agent
from hma.stats import ActionStats
from tests.helpers.checkpoints import save_untrained
from tests.helpers.policies import save_untrained_policy

MODEL = {"window": 6, "d_model": 96, "layers": 6, "heads": 4, "stem_hidden": 96}


def ground_truth(env_name: str, agent: Agent, frame: int, decisions: int) -> float:
    """Raw steps per second of `agent` in the env (one episode after another)."""
    env = make_env(env_name, frame)
    stepper, steps = None, 0
    try:
        obs = env.reset(0)
        stepper = agent.stepper(env)
        start = time.perf_counter()
        while steps < decisions * agent.chunk:
            obs, _, done, _ = env.step(stepper(obs))
            steps += 1
            if done:
                obs = env.reset(steps)
                stepper = agent.stepper(env)
        return steps / (time.perf_counter() - start)
    finally:
        env.close()


def learned(sim: Simulator, agent: Agent, first: np.ndarray, batch: int, decisions: int) -> float:
    """Raw steps per second of `agent` in `sim`, B episodes stepped together."""
    obs = sim.reset(np.repeat(first[None, None], batch, axis=0), seed=0)
    sim.step(agent.act(obs["image"]))  # warm-up
    start = time.perf_counter()
    for _ in range(decisions):
        obs, *_ = sim.step(agent.act(obs["image"]))
    return batch * decisions * sim.stride / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="metaworld_reach")
    parser.add_argument("--checkpoint", help="a trained world model (default: untrained)")
    parser.add_argument("--frame", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--decisions", type=int, default=30, help="policy decisions per figure")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="hma-closed-loop-")
    env = make_env(args.env, args.frame)
    first = env.reset(0)["image"]
    low, high = env.action_space.low, env.action_space.high
    env.close()
    checkpoint = args.checkpoint
    if checkpoint is None:
        actions = np.random.default_rng(0).uniform(low, high, (512, len(low))).astype(np.float32)
        torch.manual_seed(0)
        checkpoint = save_untrained(
            os.path.join(tmp, "wm"), {args.env: ActionStats.of(actions)}, args.frame, **MODEL
        )
    wm = WorldModel.load(checkpoint)
    agent = Agent.load(
        save_untrained_policy(os.path.join(tmp, "policy"), args.env, args.frame, preset="small")
    )
    net = SuccessNet(SuccessConfig().widths, args.frame)
    classifier = SuccessClassifier(net, SuccessConfig(image_size=args.frame), args.env)
    sim = Simulator(wm, args.env, classifier, SimulatorConfig(max_steps=10**6))
    gt = ground_truth(args.env, agent, args.frame, args.decisions)
    params = sum(p.numel() for p in wm.model.parameters())
    print(
        f"{args.env} at {args.frame} px, stride {sim.stride}; world model {params / 1e6:.2f}M "
        f"parameters, 2 MaskGIT passes per frame; {args.threads} torch threads; load "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"{'simulator':<28}{'raw steps/s':>12}{'decisions/s':>13}{'vs ground truth':>17}")
    print(f"{'ground truth (1 episode)':<28}{gt:>12.1f}{gt / sim.stride:>13.1f}{1.0:>16.2f}x")
    for batch in args.batch:
        rate = learned(sim, agent, first, batch, args.decisions)
        name = f"learned, batch {batch}"
        print(f"{name:<28}{rate:>12.1f}{rate / sim.stride:>13.1f}{rate / gt:>16.2f}x")


if __name__ == "__main__":
    main()
