"""Video files shared by the video formats: encode frames to mp4, concatenate mp4s, decode frames.

Writing uses PyAV (its wheels carry libx264 and libsvtav1). Reading uses decord where it can (fast,
H.264 and friends) and falls back to PyAV, which also decodes AV1: decord 0.6.0 cannot open AV1,
LeRobot v3's default codec (NOTES.md). Sources may be local paths or fsspec URLs (s3://...).

    T frames, H x W pixels; frames are uint8 [T, H, W, 3] RGB throughout.

Frame i of a stream is presented at i / fps. A packed file (several episodes one after another, as
LeRobot v3 stores them) is addressed by timestamps: `read_frames_at` picks, for each requested time,
the nearest decoded frame and refuses one further away than a fraction of a frame interval, so an
episode boundary can never slip by one frame.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from hma import storage
from hma.errors import FormatError

# Short codec names users pass, and the PyAV encoders tried for each (first available wins).
ENCODERS = {
    "h264": ("libx264",),
    "av1": ("libsvtav1", "libaom-av1"),
}
# Remote files up to this size are fetched whole and handed to decord; larger ones are decoded by
# PyAV through a seekable fsspec file, which reads only the byte ranges it needs.
REMOTE_WHOLE_FILE_MAX_BYTES = 64 * 1024 * 1024
# A decoded frame matches a requested time when it is within this fraction of a frame interval.
TIMESTAMP_TOLERANCE_FRAMES = 0.25


@dataclass(frozen=True)
class VideoEncoding:
    """How frames are encoded. H.264 by default: decord reads it, and so does every player.

    codec   "h264", "av1" or a PyAV encoder name (e.g. "libx264", "libsvtav1")
    crf     constant rate factor (lower = better quality, larger files)
    gop     keyframe interval in frames (small = cheaper random access, larger files)
    preset  encoder speed preset; None = the encoder's default
    """

    codec: str = "h264"
    crf: int = 18
    gop: int = 12
    pix_fmt: str = "yuv420p"
    preset: str | None = None

    def encoder(self) -> str:
        import av

        candidates = ENCODERS.get(self.codec, (self.codec,))
        for name in candidates:
            if name in av.codecs_available:
                try:
                    av.codec.Codec(name, "w")
                except Exception:  # noqa: BLE001 - a decoder-only name: try the next one
                    continue
                return name
        raise FormatError(
            f"video codec {self.codec!r}: no encoder available in this PyAV build "
            f"(tried {', '.join(candidates)})"
        )

    def options(self, encoder: str) -> dict[str, str]:
        opts = {"crf": str(self.crf)}
        if encoder == "libx264":
            opts["preset"] = self.preset or "veryfast"
        elif encoder == "libsvtav1":
            opts["preset"] = self.preset or "10"
        elif self.preset:
            opts["preset"] = self.preset
        return opts


DEFAULT_ENCODING = VideoEncoding()


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    fps: float
    pix_fmt: str
    num_frames: int


def as_rate(fps: float) -> Fraction:
    """`fps` as an exact frame rate (29.97 -> 30000/1001)."""
    if fps <= 0:
        raise FormatError(f"frame rate must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even width and height: replicate the last row/column where odd."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


# ---------------------------------------------------------------------------------------------
# Writing


def encode_frames(
    frames: Iterable[np.ndarray] | np.ndarray,
    path: str,
    fps: float,
    encoding: VideoEncoding = DEFAULT_ENCODING,
) -> int:
    """Encode RGB frames to the local mp4 file `path`; returns the number of frames written.

    Odd sizes are padded to even (see `pad_to_even`); pass the true size to the readers to crop.
    """
    import av

    encoder = encoding.encoder()
    if encoder == "libsvtav1":
        # SVT-AV1 prints a banner per stream at its default log level; keep errors.
        os.environ.setdefault("SVT_LOG", "1")
    rate = as_rate(fps)
    count = 0
    with av.open(path, "w", format="mp4") as container:
        stream = None
        for frame in frames:
            frame = np.ascontiguousarray(pad_to_even(np.asarray(frame, np.uint8)))
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise FormatError(f"{path}: frames must be [H,W,3] uint8, got {list(frame.shape)}")
            if stream is None:
                stream = container.add_stream(encoder, rate=rate, options=encoding.options(encoder))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = encoding.pix_fmt
                stream.codec_context.gop_size = encoding.gop
                stream.codec_context.time_base = 1 / rate
            elif (frame.shape[1], frame.shape[0]) != (stream.width, stream.height):
                raise FormatError(
                    f"{path}: frame {count} is {frame.shape[1]}x{frame.shape[0]}, "
                    f"earlier frames {stream.width}x{stream.height}"
                )
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = count
            container.mux(stream.encode(video_frame))
            count += 1
        if stream is None:
            raise FormatError(f"{path}: no frames to encode")
        container.mux(stream.encode(None))
    return count


def write_mp4(
    frames: Iterable[np.ndarray] | np.ndarray,
    url: str,
    fps: float,
    encoding: VideoEncoding = DEFAULT_ENCODING,
) -> int:
    """Encode frames to an mp4 at a local path or fsspec URL; returns the number of frames."""
    with storage.local_copy_for_writing(url, suffix=".mp4") as path:
        return encode_frames(frames, path, fps, encoding)


class Mp4Concat:
    """Append encoded mp4 files (same codec settings and size) to one local mp4 by stream copy.

    This is how LeRobot v3 packs episodes: each episode is encoded on its own (so it starts with a
    keyframe and its size is known), then its packets are copied after the previous ones with their
    timestamps shifted, so the episode's frame i lands at `from_timestamp + i / fps`.
    """

    def __init__(self, path: str, fps: float):
        self.path = path
        self.rate = as_rate(fps)
        self.num_frames = 0
        self.size_bytes = 0
        self._container: Any = None
        self._stream: Any = None

    def append(self, episode_path: str, num_frames: int) -> tuple[float, float]:
        """Copy `episode_path` (num_frames long) to the end; returns its (from, to) timestamps."""
        import av

        with av.open(episode_path) as src:
            in_stream = src.streams.video[0]
            if self._container is None:
                self._container = av.open(self.path, "w", format="mp4")
                self._stream = self._container.add_stream_from_template(in_stream, opaque=True)
            # The shift is in the source's time base; exact for the time bases mp4 muxers choose.
            shift = round(Fraction(self.num_frames) / self.rate / in_stream.time_base)
            for packet in src.demux(in_stream):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.pts += shift
                packet.dts += shift
                packet.stream = self._stream
                self.size_bytes += packet.size
                self._container.mux(packet)
        start = float(Fraction(self.num_frames) / self.rate)
        self.num_frames += num_frames
        return start, float(Fraction(self.num_frames) / self.rate)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


# ---------------------------------------------------------------------------------------------
# Reading


def probe(url: str) -> VideoInfo:
    """Codec, size, frame rate and frame count of the first video stream (headers only)."""
    with _open_pyav(url) as container:
        stream = _video_stream(container, url)
        rate = stream.average_rate or stream.base_rate or 0
        return VideoInfo(
            codec=stream.codec_context.codec.canonical_name,  # "av1", not the decoder name
            width=stream.width,
            height=stream.height,
            fps=float(rate),
            pix_fmt=stream.pix_fmt or "",
            num_frames=int(stream.frames),
        )


def read_frames(
    url: str, start: int = 0, stop: int | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Frames [start, stop) of the video at `url` (presentation order), uint8 [N,H,W,3].

    `size` = (H, W) crops frames padded to even size by `encode_frames` back to their true size.
    """
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"bad frame range [{start}, {stop})")

    def with_decord(reader: Any) -> np.ndarray:
        end = len(reader) if stop is None else min(stop, len(reader))
        return _decord_batch(reader, list(range(start, end)))

    def with_pyav(source: Any) -> np.ndarray:
        return _pyav_range(source, url, start, stop)

    return _crop(_decode(url, with_decord, with_pyav), size, url)


def read_frames_at(
    url: str,
    timestamps: Sequence[float],
    fps: float,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """For each time (seconds), the frame presented then, uint8 [len(timestamps),H,W,3].

    A requested time with no frame within `TIMESTAMP_TOLERANCE_FRAMES / fps` is a FormatError:
    the file is shorter than its index claims, or the index is wrong.
    """
    targets = np.asarray(timestamps, np.float64)
    if targets.size == 0:
        raise ValueError("no timestamps requested")
    tolerance = TIMESTAMP_TOLERANCE_FRAMES / fps

    def with_decord(reader: Any) -> np.ndarray:
        times = reader.get_frame_timestamp(list(range(len(reader))))[:, 0]
        indices = _nearest(times, targets, tolerance, url)
        return _decord_batch(reader, indices.tolist())

    def with_pyav(source: Any) -> np.ndarray:
        return _pyav_at(source, url, targets, tolerance)

    return _crop(_decode(url, with_decord, with_pyav), size, url)


@lru_cache(maxsize=2)
def _remote_bytes(url: str, nbytes: int) -> bytes:
    """A small remote video, fetched whole once per process: a packed LeRobot mp4 holds many
    episodes, each loaded by its own call. Keyed by size too, so a replaced object is refetched."""
    with storage.open_file(url) as f:
        return f.read()


def _decode(url: str, with_decord: Any, with_pyav: Any) -> np.ndarray:
    """Run `with_decord` on a decord reader, else `with_pyav` on a PyAV source; errors name `url`."""
    import decord

    local = not storage.is_remote(url)
    path = storage.local_path(url) if local else None
    try:
        if local and not os.path.exists(path):
            raise FormatError(f"{url}: video file not found")
        if not local:
            fs, fs_path = storage.filesystem(url)
            try:
                nbytes = fs.size(fs_path)
            except FileNotFoundError:
                raise FormatError(f"{url}: video file not found") from None
            if nbytes > REMOTE_WHOLE_FILE_MAX_BYTES:  # range reads through fsspec, PyAV only
                with storage.open_file(url) as f:
                    return with_pyav(f)
            data = _remote_bytes(url, nbytes)
        try:
            reader = decord.VideoReader(path if local else io.BytesIO(data), ctx=decord.cpu(0))
        except Exception:  # noqa: BLE001 - decord can't open AV1 etc.: PyAV decides
            reader = None
        if reader is not None:
            try:
                return with_decord(reader)
            except FormatError:
                raise
            except Exception:  # noqa: BLE001 - decord 0.6.0 fails on some frame widths
                pass
            finally:
                del reader
        return with_pyav(path if local else io.BytesIO(data))
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is a damaged/unsupported file
        raise FormatError(f"{url}: cannot decode video ({type(e).__name__}: {e})") from e


def _decord_batch(reader: Any, indices: list[int]) -> np.ndarray:
    if not indices:
        h, w = reader[0].shape[:2] if len(reader) else (0, 0)
        return np.zeros((0, h, w, 3), np.uint8)
    return reader.get_batch(indices).asnumpy()


def _nearest(times: np.ndarray, targets: np.ndarray, tolerance: float, url: str) -> np.ndarray:
    """Index into sorted `times` of the entry nearest each target; FormatError beyond tolerance."""
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    right = np.clip(np.searchsorted(sorted_times, targets), 1, len(sorted_times) - 1)
    left = right - 1
    if len(sorted_times) == 1:
        left = right = np.zeros_like(right)
    pick = np.where(
        np.abs(sorted_times[left] - targets) <= np.abs(sorted_times[right] - targets), left, right
    )
    error = np.abs(sorted_times[pick] - targets)
    if (error > tolerance).any():
        i = int(np.argmax(error > tolerance))
        raise FormatError(
            f"{url}: no frame at t={targets[i]:.4f}s (nearest {sorted_times[pick[i]]:.4f}s; "
            f"video has {len(times)} frames up to {sorted_times[-1]:.4f}s)"
        )
    return order[pick]


def _open_pyav(source: Any) -> Any:
    import av

    if isinstance(source, str):
        if storage.is_remote(source):
            # fsspec files are seekable: PyAV reads the header and the byte ranges it decodes.
            return _OwnedContainer(storage.open_file(source).open())
        return av.open(storage.local_path(source))
    return av.open(source)


class _OwnedContainer:
    """A PyAV container over a file object that closes both."""

    def __init__(self, fileobj: Any):
        import av

        self._file = fileobj
        self._container = av.open(fileobj)

    def __enter__(self) -> Any:
        return self._container

    def __exit__(self, *exc: Any) -> None:
        self._container.close()
        self._file.close()


def _video_stream(container: Any, url: str) -> Any:
    if not container.streams.video:
        raise FormatError(f"{url}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _frame_rate(stream: Any, url: str) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise FormatError(f"{url}: video stream has no frame rate")
    return Fraction(rate)


def _pyav_range(source: Any, url: str, start: int, stop: int | None) -> np.ndarray:
    out: list[np.ndarray] = []
    with _open_pyav(source) as container:
        stream = _video_stream(container, url)
        rate = _frame_rate(stream, url)
        origin = float((stream.start_time or 0) * stream.time_base)
        if start > 0:
            container.seek(
                int((origin + start / rate) / stream.time_base), stream=stream, backward=True
            )
        for frame in container.decode(stream):
            index = round((frame.time - origin) * rate) if start > 0 else len(out) + start
            if stop is not None and index >= stop:
                break
            if index >= start:
                out.append(frame.to_ndarray(format="rgb24"))
    if not out:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(out)


def _pyav_at(source: Any, url: str, targets: np.ndarray, tolerance: float) -> np.ndarray:
    first, last = float(targets.min()), float(targets.max())
    times: list[float] = []
    frames: list[np.ndarray] = []
    with _open_pyav(source) as container:
        stream = _video_stream(container, url)
        container.seek(max(0, int((first - tolerance) / stream.time_base)), stream=stream)
        for frame in container.decode(stream):
            t = float(frame.time)
            if t < first - tolerance:
                continue
            if t > last + tolerance:
                break
            times.append(t)
            frames.append(frame.to_ndarray(format="rgb24"))
    if not frames:
        raise FormatError(f"{url}: no frames between t={first:.4f}s and t={last:.4f}s")
    indices = _nearest(np.asarray(times), targets, tolerance, url)
    return np.stack([frames[i] for i in indices])


def _crop(frames: np.ndarray, size: tuple[int, int] | None, url: str) -> np.ndarray:
    if size is None:
        return frames
    h, w = size
    if frames.ndim == 4 and (frames.shape[1] < h or frames.shape[2] < w):
        raise FormatError(
            f"{url}: decoded frames are {frames.shape[1]}x{frames.shape[2]}, expected {h}x{w}"
        )
    return np.ascontiguousarray(frames[:, :h, :w])
