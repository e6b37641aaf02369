"""`hma report RUN`: one HTML page to judge a pretrained world model, with its assets beside it.

    RUN (run dir or checkpoint) ──▶ WorldModel ──per dataset: real clips──▶ rollouts (true actions)
        ├─ real | generated side by side: GIF, MP4 (PyAV), PNG strip
        ├─ metric table: PSNR, SSIM, ΔPSNR (hma.model.metrics), perplexity (vq)
        └─ training curves from the run's TensorBoard event files (hma.generate.curves)

    B clips per dataset, T0 prompt frames, H generated frames, n = T0 + H kept frames

Real clips come from the token store the checkpoint recorded for each dataset (val-split
episodes first), or from raw episode sources given per dataset (`--source name=URL`, encoded
with the checkpoint's tokenizer). "Real" frames are the tokenizer's reconstructions of the real
tokens, what the model at best reproduces (as in training validation); the prompt frames are real
in both columns, and the generated ones follow the real actions (forward dynamics). Metrics score
the H generated frames against the real ones; ΔPSNR compares true actions with random ones
(hma.model.metrics.controllability); perplexity is the teacher-forced perplexity of masked tokens
under the validation masks, over the first `window` frames.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field

from hma import storage
from hma.checkpoint import RUN_CHECKPOINT
from hma.config import StrictModel
from hma.episodes import chunk_actions, keep_frames
from hma.errors import HmaError
from hma.frames import video_grid
from hma.generate.curves import group_curves, line_plot, read_scalars
from hma.generate.world_model import DEFAULT_STEPS, WorldModel
from hma.model.masking import sample_masks
from hma.model.metrics import (
    controllability,
    model_rollout_fn,
    perplexity_from_nll,
    video_psnr,
    video_ssim,
)

PAGE = "index.html"
MIN_VIDEO_SIDE = 128  # small model frames are upscaled (nearest) to at least this in GIF/MP4
MIN_STRIP_SIDE = 64  # ... and to at least this in the PNG strip
MAX_SCAN = 50  # episodes of a raw source read while looking for the preferred split
GAP = 4  # pixels between real and generated columns and between clips


class ReportConfig(StrictModel):
    clips: int = Field(2, ge=1, description="real clips (episodes) per dataset")
    prompt_frames: int = Field(1, ge=1, description="T0 real frames before the rollout")
    horizon: int = Field(16, ge=1, description="H generated kept frames (may exceed the window)")
    steps: int = Field(DEFAULT_STEPS, ge=1, description="MaskGIT/MAR passes per frame")
    temperature: float = Field(0.0, ge=0, description="0: greedy (maskgit), as validation does")
    trials: int = Field(3, ge=1, description="random-action rollouts for ΔPSNR")
    split: str = Field("val", description="episodes of this split first (then the other)")
    seed: int = 0


@dataclass
class Clips:
    episode_ids: list[str]
    tokens: torch.Tensor  # [B,n,gh,gw] | [B,n,C,gh,gw]
    actions_raw: np.ndarray  # float32 [B,n,s,A]


@dataclass
class DatasetReport:
    name: str
    source: str
    clips: list[str] = field(default_factory=list)
    frames: int = 0  # n kept frames per clip
    psnr: float | None = None
    ssim: float | None = None
    delta_psnr: float | None = None
    perplexity: float | None = None
    gif: str | None = None
    mp4: str | None = None
    png: str | None = None
    skipped: str | None = None


# ---------------------------------------------------------------------------------------------
# Real clips


def run_dir_of(checkpoint: str) -> str:
    """The run directory of a checkpoint written by `hma pretrain` (its parent), else itself."""
    name = checkpoint.rstrip("/").rsplit("/", 1)[-1]
    return (
        checkpoint.rstrip("/").rsplit("/", 1)[0] if RUN_CHECKPOINT.fullmatch(name) else checkpoint
    )


def clips_from_store(wm: WorldModel, name: str, cfg: ReportConfig) -> Clips:
    from hma.pipeline.store.reader import TokenStore

    store = TokenStore.open(wm.record(name)["store"])
    view = store.dataset(name)
    need = cfg.prompt_frames + 1
    order = [i for i in range(len(view)) if view.split[i] == cfg.split and view.length[i] >= need]
    order += [i for i in range(len(view)) if view.split[i] != cfg.split and view.length[i] >= need]
    chosen = order[: cfg.clips]
    if not chosen:
        raise HmaError(f"{store.url}: no {name!r} episode of >= {need} kept frames")
    n = min(cfg.prompt_frames + cfg.horizon, *(int(view.length[i]) for i in chosen))
    read = [store.read_frames(name, i, 0, n) for i in chosen]
    tokens = torch.from_numpy(np.stack([t for t, _ in read]))
    return Clips([view.episode_ids[i] for i in chosen], tokens, np.stack([a for _, a in read]))


def clips_from_source(wm: WorldModel, name: str, url: str, cfg: ReportConfig) -> Clips:
    from hma.formats import iter_episodes

    s, need = wm.stride(name), cfg.prompt_frames + 1
    picked: list[Any] = []
    for scanned, ep in enumerate(iter_episodes(url, dataset=name)):
        if len(ep) // s >= need:
            picked.append(ep)
        if sum(e.split == cfg.split for e in picked) >= cfg.clips or scanned >= MAX_SCAN:
            break
    picked.sort(key=lambda e: e.split != cfg.split)  # the chosen split first
    picked = picked[: cfg.clips]
    if not picked:
        raise HmaError(f"{url}: no {name!r} episode of >= {need * s} steps")
    n = min(cfg.prompt_frames + cfg.horizon, *(len(e) // s for e in picked))
    tokens, actions = [], []
    for ep in picked:
        tokens.append(wm.encode(ep.frames[keep_frames(len(ep), s)[:n]]).cpu())  # frames 0, s, ...
        actions.append(chunk_actions(ep.actions, s)[:n])  # [n,s,A]
    return Clips([e.episode_id for e in picked], torch.stack(tokens), np.stack(actions))


# ---------------------------------------------------------------------------------------------
# Scoring


@torch.no_grad()
def score(
    wm: WorldModel, name: str, clips: Clips, cfg: ReportConfig
) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics, real frames [B,n,h,w,3], generated frames [B,n,h,w,3])."""
    t0 = cfg.prompt_frames
    tokens = clips.tokens.to(wm.device)
    b, n = tokens.shape[:2]
    horizon = n - t0
    rollout = wm.rollout_tokens(
        name,
        tokens[:, :t0],
        horizon,
        clips.actions_raw[:, t0 - 1 : n - 1],
        cfg.steps,
        cfg.temperature,
        cfg.seed,
    )
    real = wm.decode(tokens.flatten(0, 1)).reshape(rollout.frames.shape)  # [B,n,h,w,3]
    generated = rollout.frames
    metrics: dict[str, float | None] = {
        "psnr": video_psnr(torch.from_numpy(real[:, t0:]), torch.from_numpy(generated[:, t0:])),
        "ssim": video_ssim(torch.from_numpy(real[:, t0:]), torch.from_numpy(generated[:, t0:])),
    }
    actions = wm.normalised_chunks(name, clips.actions_raw)  # [B,n,A_max]
    mask = torch.zeros(actions.shape[-1], dtype=torch.bool, device=wm.device)
    mask[: wm.model.embodiments.widths[name]] = True
    fn = model_rollout_fn(wm.model, [name] * b, steps=cfg.steps, temperature=cfg.temperature)
    metrics["delta_psnr"] = controllability(
        fn,
        wm.tokenizer,
        tokens[:, :t0],
        actions[:, t0 - 1 : n - 1],
        torch.from_numpy(real[:, t0:]),  # decoded above
        trials=cfg.trials,
        seed=cfg.seed,
        action_mask=mask,
    ).delta_psnr
    metrics["perplexity"] = _perplexity(wm, name, tokens, actions, cfg.seed)
    return metrics, real, generated


def _perplexity(
    wm: WorldModel, name: str, tokens: torch.Tensor, actions: torch.Tensor, seed: int
) -> float | None:
    model = wm.model
    head = model.video_head
    t = min(tokens.shape[1], model.config.window)
    if model.config.token_kind != "vq" or not hasattr(head, "nll") or t < 2:
        return None
    tokens, actions = tokens[:, :t], actions[:, :t]
    flat = model.flatten_tokens(tokens)  # [B,t,S]
    b, _, s = flat.shape
    gen = torch.Generator(device=wm.device).manual_seed(seed)
    masks = sample_masks("forward", b, t, s, model.config.masking, wm.device, generator=gen)
    if not masks.video.any():
        return None
    out = model(tokens, actions, [name] * b, video_mask=masks.video, action_mask=masks.action)
    nll = head.nll(flat.flatten(0, 1), out.video.flatten(0, 1))  # [B*t,S]
    return perplexity_from_nll(nll[masks.video.flatten(0, 1)])


# ---------------------------------------------------------------------------------------------
# Assets


def side_by_side(real: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """uint8 [B,n,h,w,3] twice -> video [n,H,W,3]: per clip a row, real left, generated right,
    upscaled so small model frames stay visible."""
    b, n, h, w, _ = real.shape
    k = max(1, -(-MIN_VIDEO_SIDE // h))  # ceil: nearest-neighbour upscale factor
    hh, ww = h * k, w * k
    video = np.full((n, b * hh + (b - 1) * GAP, 2 * ww + GAP, 3), 255, np.uint8)
    for row in range(b):
        y = row * (hh + GAP)
        for col, src in enumerate((real, generated)):
            x = col * (ww + GAP)
            video[:, y : y + hh, x : x + ww] = src[row].repeat(k, axis=1).repeat(k, axis=2)
    return video


def write_gif(video: np.ndarray, url: str, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in video]
    buf = io.BytesIO()
    duration = max(20, round(1000 / fps))  # ms per frame
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
    )
    with storage.open_file(url, "wb") as f:
        f.write(buf.getvalue())


def write_assets(
    rep: DatasetReport, real: np.ndarray, generated: np.ndarray, out: str, fps: float
) -> None:
    from hma.formats.mp4 import write_mp4

    video = side_by_side(real, generated)
    rep.gif, rep.mp4, rep.png = f"{rep.name}.gif", f"{rep.name}.mp4", f"{rep.name}.png"
    write_gif(video, storage.join(out, rep.gif), fps)
    write_mp4(video, storage.join(out, rep.mp4), fps)
    k = max(1, -(-MIN_STRIP_SIDE // real.shape[2]))  # ceil: nearest-neighbour upscale factor
    real, generated = (v.repeat(k, axis=2).repeat(k, axis=3) for v in (real, generated))
    # per episode a row of real frames over a row of generated ones
    strip = video_grid([video[i] for i in range(len(real)) for video in (real, generated)])
    storage.write_png(strip, storage.join(out, rep.png))


def write_curves(logdir: str, out: str) -> list[tuple[str, str]]:
    """(title, PNG file name) per plotted group of the run's scalars."""
    written = []
    for i, (title, series) in enumerate(sorted(group_curves(read_scalars(logdir)).items())):
        name = f"curve_{i:02d}.png"
        storage.write_png(line_plot(title, series), storage.join(out, name))
        written.append((title, name))
    return written


# ---------------------------------------------------------------------------------------------
# The report


def build_report(
    run: str,
    out: str | None = None,
    config: ReportConfig | None = None,
    sources: dict[str, str] | None = None,
    device: str = "cpu",
) -> str:
    """Write the report of `run` to `out` (default: <run dir>/report); returns the page's URL."""
    cfg = config or ReportConfig()
    sources = sources or {}
    wm = WorldModel.load(run, device=device)
    unknown = sorted(set(sources) - set(wm.datasets))
    if unknown:
        raise HmaError(
            f"--source names datasets the checkpoint lacks: {unknown} (has {wm.datasets})"
        )
    run_dir = run_dir_of(wm.url)
    out = out or storage.join(run_dir, "report")
    storage.makedirs(out)
    reports = []
    for name in wm.datasets:
        source = sources.get(name) or wm.record(name)["store"]
        rep = DatasetReport(name, source)
        try:
            clips = (
                clips_from_source(wm, name, sources[name], cfg)
                if name in sources
                else clips_from_store(wm, name, cfg)
            )
            metrics, real, generated = score(wm, name, clips, cfg)
        except (HmaError, OSError, KeyError) as e:  # one unreadable source must not sink the page
            rep.skipped = f"{type(e).__name__}: {e}"
            reports.append(rep)
            continue
        rep.clips, rep.frames = clips.episode_ids, int(clips.tokens.shape[1])
        rep.psnr, rep.ssim = metrics["psnr"], metrics["ssim"]
        rep.delta_psnr, rep.perplexity = metrics["delta_psnr"], metrics["perplexity"]
        spec = wm.record(name).get("registry") or {}
        fps = float(spec.get("hz", 10.0)) / wm.stride(name)  # kept frames per second
        write_assets(rep, real, generated, out, fps)
        reports.append(rep)
    logdir = (wm.meta.get("config") or {}).get("tensorboard_dir") or storage.join(
        run_dir, "tensorboard"
    )
    curves = write_curves(logdir, out)
    page = storage.join(out, PAGE)
    with storage.open_file(page, "w") as f:
        f.write(render(wm, cfg, reports, curves, logdir))
    with storage.open_file(storage.join(out, "report.json"), "w") as f:
        json.dump(
            {
                "checkpoint": wm.url,
                "config": cfg.model_dump(),
                "datasets": [asdict(r) for r in reports],
            },
            f,
            indent=2,
        )
    return page


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(
    wm: WorldModel,
    cfg: ReportConfig,
    reports: list[DatasetReport],
    curves: list[tuple[str, str]],
    logdir: str,
) -> str:
    mc = wm.model.config
    params = sum(p.numel() for p in wm.model.parameters())
    esc = html.escape
    facts = [
        ("checkpoint", wm.url),
        ("step", wm.meta.get("step", "?")),
        ("trained", f"{float(wm.meta.get('seconds', 0)):.0f} s"),
        (
            "model",
            f"d {mc.d_model}, {mc.layers} layers, {mc.heads} heads, grid {mc.grid}, "
            f"window {mc.window}, {mc.head} head, {mc.conditioning}, {params / 1e6:.2f}M params",
        ),
        ("fingerprint", wm.fingerprint[:16]),
        (
            "tokenizer",
            f"{mc.token_kind}, fingerprint {wm.tokenizer_fingerprint[:16]}, "
            f"frames {wm.frame_size[0]}x{wm.frame_size[1]}",
        ),
        (
            "rollouts",
            f"{cfg.prompt_frames} prompt frame(s), up to {cfg.horizon} generated, "
            f"{cfg.steps} passes per frame, temperature {cfg.temperature}",
        ),
    ]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts)
    vocab = f" (uniform: {mc.vocab_size})" if mc.token_kind == "vq" else ""
    table = "".join(
        f"<tr><td>{esc(r.name)}</td><td>{len(r.clips)}</td><td>{r.frames}</td>"
        f"<td>{_fmt(r.psnr, '.2f')}</td><td>{_fmt(r.ssim, '.3f')}</td>"
        f"<td>{_fmt(r.delta_psnr, '.2f')}</td><td>{_fmt(r.perplexity, '.1f')}</td>"
        f"<td>{esc(r.skipped or '')}</td></tr>"
        for r in reports
    )
    sections = []
    for r in reports:
        if r.skipped:
            continue
        sections.append(
            f"<h3>{esc(r.name)}</h3><p>clips {esc(', '.join(r.clips))} from {esc(r.source)}; "
            f"left real (tokenizer reconstruction), right generated from the real actions</p>"
            f"<img class='video' src='{r.gif}'> <a href='{r.mp4}'>MP4</a>"
            f"<p>strip: per clip real frames over generated ones</p><img class='strip' src='{r.png}'>"
        )
    plots = "".join(f"<img class='curve' src='{name}' title='{esc(t)}'>" for t, name in curves)
    if not curves:
        plots = f"<p>no scalars found in {esc(logdir)}</p>"
    return (
        "<!doctype html><meta charset='utf-8'><title>HMA report</title>"
        "<style>body{font-family:sans-serif;max-width:1400px}td,th{padding:4px 8px;"
        "border-bottom:1px solid #ddd;text-align:left}img.strip{max-width:100%}"
        "img.curve{margin:4px;border:1px solid #eee}</style>"
        f"<h1>HMA world model report</h1><table>{rows}</table>"
        f"<h2>Metrics</h2><p>Generated frames scored against real ones; ΔPSNR = PSNR with the true "
        f"actions minus PSNR with random actions ({cfg.trials} trials); perplexity{vocab} of masked "
        "tokens, teacher-forced.</p><table><tr><th>dataset</th><th>clips</th><th>frames</th>"
        "<th>PSNR dB</th><th>SSIM</th><th>ΔPSNR dB</th><th>perplexity</th><th>note</th></tr>"
        f"{table}</table><h2>Real vs generated</h2>{''.join(sections)}"
        f"<h2>Training curves</h2><p>from {esc(logdir)}</p>{plots}"
    )
