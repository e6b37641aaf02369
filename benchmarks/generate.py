"""hma-generate throughput: synthetic trajectories per minute and decoded frames per second.

    python -m benchmarks.generate --dataset /tmp/gen/lift.hdf5 --checkpoint CKPT
    python -m benchmarks.generate --dataset /tmp/gen/lift.hdf5          # builds an untrained one
    python -m benchmarks.generate --dataset /tmp/gen/lt_rlds --workers 2 --actions perturb

Two figures, measured in one run on this machine:
  * end to end: `generate()` writing --n synthetic + --mix real episodes (prompt loading,
    batched rollouts, decoding, resizing, sanity checks, staging, the final write), as
    trajectories/min over the whole wall time, Ray start-up and model loading included;
  * model only: decoded frames/s of one WorldModel.rollout of --batch-size rows over a 16-frame
    clip (--prompt-frames given, the rest generated), decode included, after one warm-up call.
Without --checkpoint an untrained checkpoint is built: a tiny FSQ tokenizer (/8) and a model of
--preset size whose action statistics come from the source's train episodes. Speed does not
depend on the weights; an untrained model's proposed actions collapse onto the mean, so use
--actions replay or perturb with it (model mode is refused by the spread check, by design).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from hma.formats import detect_format, get_format
from hma.generate.config import GenerateConfig
from hma.generate.synthesize import generate
from hma.generate.world_model import WorldModel
from hma.stats import ActionStats
from tests.helpers.checkpoints import save_untrained

CLIP_FRAMES = 16  # the project's generation-FPS clip (DESIGN.md, Metrics)


def untrained_checkpoint(url: str, source: str, frame: int, preset: str) -> str:
    """A checkpoint for the source's dataset with real action statistics, untrained weights."""
    fmt = detect_format(source)
    refs = [r for r in get_format(fmt).list_refs(source, None) if r["split"] == "train"]
    stats = None
    for ref in refs:
        part = ActionStats.of(get_format(fmt).load(ref).actions)
        stats = part if stats is None else stats.merge(part)
    return save_untrained(url, {refs[0]["dataset"]: stats}, frame, preset)


def model_fps(checkpoint: str, source: str, batch: int, prompt: int, steps: int) -> float:
    """Decoded frames/s of one batched 16-frame rollout (forward mode, real actions)."""
    wm = WorldModel.load(checkpoint)
    fmt = detect_format(source)
    ref = get_format(fmt).list_refs(source, None)[0]
    ep = get_format(fmt).load(ref)
    stride, dim = wm.stride(ep.dataset), wm.action_dim(ep.dataset)
    frames = np.repeat(ep.frames[None, : prompt * stride : stride], batch, axis=0)
    rng = np.random.default_rng(0)
    st = wm.stats(ep.dataset)
    actions = rng.normal(st.mean, st.std, (batch, CLIP_FRAMES, stride, dim)).astype(np.float32)
    horizon = CLIP_FRAMES - prompt
    wm.rollout(ep.dataset, frames, 2, actions[:, : prompt + 2], steps=steps, seed=0)  # warm-up
    start = time.perf_counter()
    wm.rollout(ep.dataset, frames, horizon, actions, steps=steps, seed=0)
    return batch * horizon / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="SRC: robomimic HDF5 / RLDS / LeRobot")
    parser.add_argument("--checkpoint", help="pretraining checkpoint (default: build untrained)")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--mix", type=int, default=4)
    parser.add_argument("--horizon", type=int, default=None)
    parser.add_argument("--actions", default="replay", choices=("model", "replay", "perturb"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--prompt-frames", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="MaskGIT passes per frame")
    parser.add_argument("--frame", type=int, default=64, help="model frame size (untrained)")
    parser.add_argument("--preset", default="tiny", help="model preset (untrained)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="hma-bench-generate-")
    checkpoint = args.checkpoint or untrained_checkpoint(
        f"{tmp}/ckpt", args.dataset, args.frame, args.preset
    )
    suffix = ".hdf5" if detect_format(args.dataset) == "robomimic" else ""
    config = GenerateConfig(
        checkpoint=checkpoint,
        source=args.dataset,
        out=f"{tmp}/out{suffix}",
        n=args.n,
        mix=args.mix,
        horizon=args.horizon,
        actions=args.actions,
        workers=args.workers,
        batch_size=args.batch_size,
        prompt_frames=args.prompt_frames,
        steps=args.steps,
        torch_threads=args.threads,
    )
    start = time.perf_counter()
    report = generate(config, echo=False)
    wall = time.perf_counter() - start
    print("\n".join(report.lines()))
    fps = model_fps(checkpoint, args.dataset, args.batch_size, args.prompt_frames, args.steps)
    print(
        f"end to end: {report.synthetic - report.resumed} synthetic trajectories in {wall:.1f}s "
        f"= {60 * (report.synthetic - report.resumed) / wall:.1f} trajectories/min "
        f"({args.workers} worker(s), batch {args.batch_size}, {args.steps} MaskGIT passes/frame, "
        f"actions {args.actions}, torch threads {torch.get_num_threads()})"
    )
    print(
        f"model only: {fps:.1f} decoded frames/s (batch {args.batch_size}, {CLIP_FRAMES}-frame "
        f"clip, {args.prompt_frames} prompt frames, {args.steps} MaskGIT passes/frame)"
    )
    print(f"output: {report.out}")


if __name__ == "__main__":
    main()
