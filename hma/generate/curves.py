"""Training curves: scalars from TensorBoard event files, drawn as PNG line plots with PIL.

Event files (tensorboardX writes them during training, hma.training.progress) are TFRecord
files of `Event` protobufs; they are read with the project's TFRecord framing
(hma.formats.tfrecord) and tensorboardX's own `Event` message, so neither TensorFlow nor
tensorboard nor matplotlib is needed. A run that resumed writes a second event file that repeats
steps: the later file wins. A file still being written may end in a partial record, which is
ignored.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

from hma import storage
from hma.errors import FormatError

EVENT_FILE = re.compile(r"events\.out\.tfevents\..*")
PLOT_SIZE = (420, 220)  # width, height in pixels
MARGIN = (56, 12, 28, 30)  # left, right, top, bottom
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
]
LOG_SCALE_RATIO = 100.0  # plot on a log axis when a positive series spans more than this factor

Series = list[tuple[int, float]]  # (step, value), sorted by step


def event_files(logdir: str) -> list[str]:
    """Every event file under `logdir` (recursively), in name order (= creation time)."""
    if not storage.isdir(logdir):
        return []
    fs, path = storage.filesystem(logdir)
    found = [p for p in fs.find(path) if EVENT_FILE.fullmatch(p.rsplit("/", 1)[-1])]
    prefix = logdir.split("://", 1)[0] + "://" if "://" in logdir else ""
    return sorted(prefix + p if prefix and not p.startswith(prefix) else p for p in found)


def read_scalars(logdir: str) -> dict[str, Series]:
    """tag -> [(step, value)] of every scalar summary in the run's event files."""
    from tensorboardX.proto.event_pb2 import Event

    from hma.formats.tfrecord import iter_records

    values: dict[str, dict[int, float]] = defaultdict(dict)
    for url in event_files(logdir):
        with storage.open_file(url, "rb") as f:
            try:
                for payload in iter_records(f, url):
                    event = Event.FromString(payload)
                    for v in event.summary.value:
                        value = _scalar(v)
                        if value is not None:
                            values[v.tag][int(event.step)] = value
            except FormatError as e:
                if "truncated" not in str(e):
                    raise
    return {tag: sorted(points.items()) for tag, points in sorted(values.items())}


def _scalar(value) -> float | None:
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor") and value.tensor.float_val:  # new-style scalar summaries
        return float(value.tensor.float_val[0])
    return None


def group_curves(scalars: dict[str, Series]) -> dict[str, dict[str, Series]]:
    """Plot title -> {series label: points}: training losses together, every val metric with one
    series per dataset, every other tag alone."""
    groups: dict[str, dict[str, Series]] = defaultdict(dict)
    for tag, points in scalars.items():
        parts = tag.split("/")
        if len(parts) == 3 and parts[0] == "val":  # val/<dataset>/<metric>
            groups[f"val {parts[2]}"][parts[1]] = points
        elif len(parts) == 2 and parts[0] == "train" and parts[1].endswith("loss"):
            groups["train losses"][parts[1]] = points
        else:
            groups[tag.replace("/", " ")][parts[-1]] = points
    return dict(groups)


def line_plot(
    title: str, series: dict[str, Series], size: tuple[int, int] = PLOT_SIZE
) -> np.ndarray:
    """uint8 [H,W,3]: the series against step, with axis ranges and a legend."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = MARGIN
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    points = [(x, y) for pts in series.values() for x, y in pts if math.isfinite(y)]
    draw.text((left, 6), title, fill="black")
    if not points:
        draw.text((left, height // 2), "no finite values", fill="gray")
        return np.asarray(image)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    log = min(ys) > 0 and max(ys) / min(ys) > LOG_SCALE_RATIO
    scale = (lambda v: math.log10(v)) if log else (lambda v: v)
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = scale(min(ys)), scale(max(ys))
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    box = (left, top, width - right, height - bottom)
    draw.rectangle(box, outline=(160, 160, 160))

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = box[0] + (x - x0) / (x1 - x0) * (box[2] - box[0])
        py = box[3] - (scale(y) - y0) / (y1 - y0) * (box[3] - box[1])
        return px, py

    for i, (label, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        line = [to_px(x, y) for x, y in pts if math.isfinite(y)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        elif line:
            px, py = line[0]
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
        if len(series) > 1:
            draw.text((box[2] - 110, box[1] + 4 + 12 * i), label[:18], fill=colour)

    def fmt(v: float) -> str:
        return f"{10**v:.3g}" if log else f"{v:.4g}"

    draw.text((4, box[1]), fmt(y1), fill="black")
    draw.text((4, box[3] - 10), fmt(y0), fill="black")
    draw.text((box[0], box[3] + 4), f"step {x0}", fill="black")
    draw.text((box[2] - 60, box[3] + 4), f"{x1}", fill="black")
    if log:
        draw.text((4, (box[1] + box[3]) // 2), "log", fill="gray")
    return np.asarray(image)
