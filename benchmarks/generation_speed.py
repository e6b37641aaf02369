"""Generation speed: HMA (MaskGIT and MAR-diffusion heads) against a same-size DiT video diffusion.

    python -m benchmarks.generation_speed                    # `small`, B = 1 and 8, minutes
    python -m benchmarks.generation_speed --preset tiny      # smoke run, seconds
    python -m benchmarks.generation_speed --preset base --device cuda --batch 1 8 32
    python -m benchmarks.generation_speed --threads 1        # on a shared, busy CPU machine

The paper's Table 1 (RTX 4080): HMA-Base MaskGIT 22.7 FPS, IRASim-XL 0.28 FPS (0.58 amortised
over its 15-frame clip), i.e. masked autoregression is >= 15x faster at equal size because it
never runs the whole transformer once per denoising step. Here all three models share a token
problem: 64 px frames through an untrained /8 tokenizer (FSQ codes for MaskGIT, KL latents for
the diffusion models), an 8x8 grid. Each generates B rollouts together (`--batch`), each a
16-frame video (1 prompt frame + 15 new; exactly one DiT clip), and frames/s counts the B x 15
new frames, decoded to pixels (decode timed). Every FPS is printed beside its step counts, each
method at its published default: HMA 2 MaskGIT passes per frame (the finished frame is
committed to the KV cache in the next frame's first pass: no extra pass), the MAR head 100
diffusion steps per pass, the DiT 50 denoising steps of the whole transformer over the whole
clip (IRASim's PNDM step count; DDIM-style deterministic steps here).

Three protocols for the DiT; HMA's cost per frame is the same in all three.
- Per frame (the paper's headline, IRASim "non-amortised"): every new frame is its own 50-step
  denoising, of a 2-frame clip (the last frame given, the new one predicted), as a simulator
  stepped one action at a time needs. The paper's >= 15x is this ratio: HMA-XL 4.38 FPS over
  IRASim-XL 0.28 FPS. Its cost is ~2x the amortised one (100 vs 53 frame-passes per frame),
  as the paper's 0.58 / 0.28 = 2.1 says.
- Amortised: one 50-step denoising of a 16-frame clip yields 15 frames, the cost divided by
  15 (the paper's 0.58 FPS; same-size ratio there 4.38 / 0.58 = 7.6x).
- Whole clip per frame: the same stepped simulator with the trained 16-frame clip, denoised
  in full for each new frame (the new action leads into frame 1, which is kept; the other
  slots take zero actions): the upper end.
Weights are untrained: speed does not depend on them. The script prints figures and ratios;
it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hma.model import HMA, model_config
from hma.model.baselines import DiT, DiTConfig, matching_config
from hma.model.heads.diffusion import DiffusionHead, DiffusionHeadConfig
from hma.tokenize.base import Tokenizer
from hma.tokenize.checkpoint import build_tokenizer
from hma.tokenize.presets import fsq, kl

FRAME_PX = 64
PROMPT_FRAMES = 1
CLIP_FRAMES = 16  # IRASim's clip: 1 given + 15 predicted
LONG_HORIZON = 160  # 10x the training window, as in the paper's long rollouts
DATASET = "bench"
ACTION_WIDTH = 7  # one 7-DoF arm chunk (stride 1)
TOLERANCE = 0.10  # the models' parameter counts agree within this fraction
HEAD_WIDTH_STEP = 16
DIT = "DiT (IRASim-like)"  # the rows of the table
PER_FRAME = "DiT per frame"
WHOLE_CLIP = "DiT whole clip"


@dataclass(frozen=True)
class Preset:
    d_model: int
    layers: int
    heads: int
    head_depth: int = 3  # MAR diffusion head depth (MAR's base); its width matches the size


PRESETS = {
    "tiny": Preset(d_model=64, layers=4, heads=4),
    "small": Preset(d_model=128, layers=8, heads=4),
    "base": Preset(d_model=256, layers=32, heads=8),  # the paper's HMA-Base trunk
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def head_width(maskgit: HMA, soft: Tokenizer, head: dict) -> int:
    """The MAR head width (a multiple of 16) that brings HMA-MAR closest to HMA-MaskGIT's size:
    the MaskGIT model spends K x D on its code embedding and K x D on its output layer, which
    the soft model spends on its diffusion head instead."""
    d, c = maskgit.config.d_model, soft.latent_channels
    without_head = count(maskgit) - count(maskgit.video_head) - count(maskgit.token_embed)
    target = count(maskgit) - without_head - (c * d + d)  # what is left for the head
    best, width = None, HEAD_WIDTH_STEP
    while True:
        size = count(DiffusionHead(DiffusionHeadConfig(width=width, **head), d, c))
        if best is None or abs(size - target) < best[0]:
            best = (abs(size - target), width)
        if size > target:
            return best[1]
        width += HEAD_WIDTH_STEP


def build(preset: Preset, vq: Tokenizer, soft: Tokenizer, args) -> dict[str, torch.nn.Module]:
    grid = vq.token_grid(FRAME_PX, FRAME_PX)
    trunk = {
        "d_model": preset.d_model,
        "layers": preset.layers,
        "heads": preset.heads,
        "grid": grid,
        "window": CLIP_FRAMES,
        "datasets": {DATASET: ACTION_WIDTH},
    }
    maskgit = HMA(model_config("base", **trunk, vocab_size=vq.vocab_size))
    diffusion_config = {"depth": preset.head_depth, "sample_steps": args.diffusion_steps}
    diffusion = HMA(
        model_config(
            "base",
            **trunk,
            token_kind="soft",
            head="diffusion",
            latent_channels=soft.latent_channels,
            diffusion={**diffusion_config, "width": head_width(maskgit, soft, diffusion_config)},
        )
    )
    base = DiTConfig(
        latent_channels=soft.latent_channels,
        grid=grid,
        clip_frames=CLIP_FRAMES,
        action_width=ACTION_WIDTH,
        d_model=preset.d_model,
        layers=preset.layers,
        heads=preset.heads,
        sample_steps=args.dit_steps,
    )
    dit = DiT(matching_config(count(maskgit), base, TOLERANCE))
    models = {"HMA-MaskGIT": maskgit, "HMA-MAR": diffusion, DIT: dit}
    return {name: m.to(args.device).eval() for name, m in models.items()}


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds of wall clock
    cpu: float  # seconds of this process's CPU time: unaffected by other load on a shared machine

    def rate(self, frames: int) -> tuple[float, float]:
        return frames / self.wall, frames / self.cpu


def timed(fn: Callable[[], object], device: torch.device) -> Timing:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


@dataclass
class Bench:
    """Everything one measurement needs: the models, tokenizers, prompts and settings."""

    args: argparse.Namespace
    device: torch.device
    models: dict[str, torch.nn.Module]
    vq: Tokenizer
    soft: Tokenizer
    prompt_vq: torch.Tensor  # [1,T0,h,w]
    prompt_soft: torch.Tensor  # [1,T0,C,h,w]
    gen: torch.Generator

    def actions(self, batch: int, horizon: int) -> torch.Tensor:
        return torch.randn(batch, horizon, ACTION_WIDTH, generator=self.gen, device=self.device)

    def hma(self, name: str, batch: int, horizon: int, decode: bool = True) -> None:
        """B rollouts of `horizon` new frames, together; decoded to pixels."""
        vq = name == "HMA-MaskGIT"
        prompt = self.prompt_vq if vq else self.prompt_soft
        prompt = prompt.expand(batch, *prompt.shape[1:])  # [B,T0,...]: B rollouts, one prompt
        out = self.models[name].rollout(
            prompt,
            self.actions(batch, horizon),
            horizon=horizon,
            steps=self.args.maskgit_steps,
            generator=self.gen,
        )
        if decode:
            (self.vq if vq else self.soft).decode(out.tokens[:, PROMPT_FRAMES:].flatten(0, 1))

    def dit(self, batch: int, horizon: int) -> None:
        """Paper's protocol: clips of 15 frames, each one 50-step denoising of the clip."""
        prompt = self.prompt_soft.expand(batch, *self.prompt_soft.shape[1:])  # [B,T0,C,h,w]
        out = self.models[DIT].rollout(prompt, self.actions(batch, horizon), self.gen)
        self.soft.decode(out[:, PROMPT_FRAMES:].flatten(0, 1))  # [B*H,C,h,w]

    def dit_per_frame(self, batch: int, frames: int, clip: int) -> None:
        """Stepped protocol: one new action per step; each new frame is the second frame of
        its own denoised `clip`-frame clip (the newest action leads into it; the other slots
        take zero actions)."""
        dit = self.models[DIT]
        last = self.prompt_soft[:, -1].expand(batch, -1, -1, -1)  # [B,C,h,w]
        for _ in range(frames):
            chunk = torch.zeros(batch, clip - 1, ACTION_WIDTH, device=self.device)
            chunk[:, 0] = self.actions(batch, 1)[:, 0]  # only the newest action is known
            last = dit.sample(last, chunk, generator=self.gen)[:, 1]  # [B,C,h,w]
            self.soft.decode(last)


def measure(bench: Bench, batch: int) -> None:
    """Print one table (frames/s of all B rollouts' frames) and the speed ratios for B."""
    args, device, models = bench.args, bench.device, bench.models
    new = CLIP_FRAMES - PROMPT_FRAMES
    reference = count(models["HMA-MaskGIT"])
    runs: dict[str, tuple[Callable[[], object], int, str]] = {
        "HMA-MaskGIT": (
            lambda: bench.hma("HMA-MaskGIT", batch, new),
            new,
            f"{args.maskgit_steps} MaskGIT passes/frame (cache commit folded in)",
        ),
        "HMA-MAR": (
            lambda: bench.hma("HMA-MAR", batch, new),
            new,
            f"{args.maskgit_steps} passes/frame x {args.diffusion_steps} head DDIM steps",
        ),
        PER_FRAME: (
            lambda: bench.dit_per_frame(batch, new, clip=2),
            new,
            f"{args.dit_steps} full-transformer steps over a 2-frame clip per frame",
        ),
        DIT: (
            lambda: bench.dit(batch, new),
            new,
            f"{args.dit_steps} full-transformer steps per {new}-frame clip, amortised",
        ),
        WHOLE_CLIP: (
            lambda: bench.dit_per_frame(batch, args.whole_clip_frames, clip=CLIP_FRAMES),
            args.whole_clip_frames,
            f"{args.dit_steps} full-transformer steps over the {CLIP_FRAMES}-frame clip per frame",
        ),
    }
    fps: dict[str, tuple[float, float]] = {}
    print(f"\nB = {batch} rollouts together (frames/s counts all {batch} rollouts' frames)")
    header = f"{'model':<20}{'params':>12}{'vs MaskGIT':>12}{'frames/s':>10}{'frames/CPU-s':>14}"
    print(f"{header}  steps")
    for name, (run, frames, steps) in runs.items():
        fps[name] = timed(run, device).rate(batch * frames)
        n = count(models[DIT if name in (PER_FRAME, WHOLE_CLIP) else name])
        ratio = n / reference
        flag = "" if abs(ratio - 1) <= TOLERANCE else "  (outside +-10%)"
        wall, cpu = fps[name]
        print(f"{name:<20}{n:>12,}{ratio:>11.2f}x{wall:>10.2f}{cpu:>14.2f}  {steps}{flag}")
    protocols = {
        "per frame (the paper's headline: >= 15x, 4.38 / 0.28 FPS)": PER_FRAME,
        "amortised over a 15-frame clip (paper: 4.38 / 0.58 = 7.6x)": DIT,
        "whole 16-frame clip per frame": WHOLE_CLIP,
    }
    for label, dit in protocols.items():
        print(f"speed vs DiT, {label}:")
        for name in ("HMA-MaskGIT", "HMA-MAR"):
            wall, cpu = (fps[name][i] / fps[dit][i] for i in (0, 1))
            print(f"  {name} / DiT: {wall:.1f}x wall clock, {cpu:.1f}x CPU time")

    per_frame = {}
    for horizon in (CLIP_FRAMES, args.long):
        timing = timed(lambda h=horizon: bench.hma("HMA-MaskGIT", batch, h, decode=False), device)
        per_frame[horizon] = (timing.wall / horizon, timing.cpu / horizon)
    short, long = per_frame[CLIP_FRAMES], per_frame[args.long]
    print(
        f"HMA-MaskGIT per-frame cost (B = {batch}, model only, KV cache, window {CLIP_FRAMES}): "
        f"{short[0] * 1e3:.1f} ms ({short[1] * 1e3:.1f} CPU-ms) at horizon {CLIP_FRAMES}, "
        f"{long[0] * 1e3:.1f} ms ({long[1] * 1e3:.1f} CPU-ms) at {args.long}; "
        f"ratio {long[0] / short[0]:.2f} wall, {long[1] / short[1]:.2f} CPU (target <= 1.2)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1, 8], help="rollouts generated together"
    )
    parser.add_argument("--maskgit-steps", type=int, default=2, help="passes per frame")
    parser.add_argument("--diffusion-steps", type=int, default=100, help="MAR head DDIM steps")
    parser.add_argument("--dit-steps", type=int, default=50, help="DiT denoising steps")
    parser.add_argument(
        "--whole-clip-frames", type=int, default=1, help="frames timed, whole-clip DiT"
    )
    parser.add_argument("--long", type=int, default=LONG_HORIZON, help="long-horizon frames")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.batch) < 1 or args.whole_clip_frames < 1:
        parser.error("--batch and --whole-clip-frames must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    preset = PRESETS[args.preset]
    vq = build_tokenizer(fsq("tiny"), device=device)
    soft = build_tokenizer(kl("tiny"), device=device)
    models = build(preset, vq, soft, args)
    print(
        f"preset {args.preset} on {device} ({torch.get_num_threads()} threads): "
        f"{FRAME_PX} px frames -> {vq.token_grid(FRAME_PX, FRAME_PX)} tokens; "
        f"{PROMPT_FRAMES} prompt + {CLIP_FRAMES - PROMPT_FRAMES} new frames per rollout, "
        "decode included"
    )
    frames = torch.randint(0, 256, (PROMPT_FRAMES, FRAME_PX, FRAME_PX, 3), dtype=torch.uint8)
    bench = Bench(
        args=args,
        device=device,
        models=models,
        vq=vq,
        soft=soft,
        prompt_vq=vq.encode(frames).long()[None],  # [1,T0,h,w]
        prompt_soft=soft.encode(frames)[None],  # [1,T0,C,h,w]
        gen=torch.Generator(device=device).manual_seed(args.seed),
    )
    with torch.inference_mode():
        # warm-up at B = 1: first-call allocations and kernel selection
        bench.hma("HMA-MaskGIT", 1, 2)
        bench.hma("HMA-MAR", 1, 2)
        bench.dit(1, 2)
        for batch in args.batch:
            measure(bench, batch)
        print(
            "(paper, RTX 4080, same size: HMA-XL MaskGIT 4.38 FPS vs IRASim-XL 0.28 FPS per "
            "frame = 15.6x, 0.58 amortised = 7.6x; target here >= 30x per frame)"
        )

    with torch.device("meta"):
        base = HMA(model_config("base", datasets={DATASET: ACTION_WIDTH}))
    print(f"HMA `base` preset, one dataset: {count(base) / 1e6:.1f}M parameters (paper: ~44M)")


if __name__ == "__main__":
    main()
