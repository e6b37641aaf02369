"""TFRecord framing and the `tf.train.Example` protobuf, by hand: no TensorFlow, no generated code.

TFRecord file = records back to back, each

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | payload | uint32 masked_crc32c(payload)

`tf.train.Example` (tensorflow/core/example/{example,feature}.proto) on the wire:

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }        map entry = { string key = 1; Feature value = 2; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

Feature values in Python: `list[bytes]` (bytes_list), float32 ndarray (float_list), int64 ndarray
(int64_list). Encoding also takes any float / integer / bool array (bools become 0/1 int64s, as TF does).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import IO

import crc32c
import numpy as np

from hma.errors import FormatError

FeatureValue = list[bytes] | np.ndarray

_HEADER = struct.Struct("<QI")  # length, masked crc of length
_FOOTER = struct.Struct("<I")  # masked crc of payload
HEADER_SIZE = _HEADER.size  # 12
FOOTER_SIZE = _FOOTER.size  # 4

# protobuf wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

# ---------------------------------------------------------------------------------------------
# Framing


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C (rotate right by 15, add a constant), so CRCs of CRCs stay strong."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_record(f: IO[bytes], payload: bytes) -> int:
    """Append one record; returns the bytes written."""
    length = struct.pack("<Q", len(payload))
    f.write(length)
    f.write(_FOOTER.pack(masked_crc(length)))
    f.write(payload)
    f.write(_FOOTER.pack(masked_crc(payload)))
    return HEADER_SIZE + len(payload) + FOOTER_SIZE


def _read_header(f: IO[bytes], url: str, index: int, offset: int) -> int | None:
    """The payload length of the record at the current position; None at a clean end of file."""
    header = f.read(HEADER_SIZE)
    if not header:
        return None
    if len(header) < HEADER_SIZE:
        raise FormatError(f"{url}: record {index} at byte {offset}: truncated header")
    length, crc = _HEADER.unpack(header)
    if masked_crc(header[:8]) != crc:
        raise FormatError(f"{url}: record {index} at byte {offset}: length checksum mismatch")
    return length


def read_record(f: IO[bytes], url: str, index: int = 0, offset: int | None = None) -> bytes | None:
    """Read and verify the record at `offset` (default: the current position); None at end of file.

    `url` and `index` only label errors: a damaged record raises FormatError naming both.
    """
    if offset is not None:
        f.seek(offset)
    else:
        offset = f.tell()
    length = _read_header(f, url, index, offset)
    if length is None:
        return None
    payload = f.read(length)
    footer = f.read(FOOTER_SIZE)
    if len(payload) < length or len(footer) < FOOTER_SIZE:
        raise FormatError(f"{url}: record {index} at byte {offset}: truncated payload")
    if masked_crc(payload) != _FOOTER.unpack(footer)[0]:
        raise FormatError(f"{url}: record {index} at byte {offset}: data checksum mismatch")
    return payload


def iter_records(f: IO[bytes], url: str) -> Iterator[bytes]:
    """Every record of an open file, verified."""
    index = 0
    while (payload := read_record(f, url, index)) is not None:
        yield payload
        index += 1


def scan_offsets(f: IO[bytes], url: str) -> list[tuple[int, int]]:
    """(offset, payload length) of every record, reading only the 12-byte headers.

    Payloads are skipped with a seek, so on object stores this is one small range read per record.
    The length checksum is verified; payload checksums are verified when a record is read.
    """
    f.seek(0, 2)
    size = f.tell()
    out: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        f.seek(offset)
        length = _read_header(f, url, len(out), offset)
        if length is None:
            break
        end = offset + HEADER_SIZE + length + FOOTER_SIZE
        if end > size:
            raise FormatError(f"{url}: record {len(out)} at byte {offset}: truncated payload")
        out.append((offset, length))
        offset = end
    return out


# ---------------------------------------------------------------------------------------------
# Protobuf wire format: varints, vectorised with numpy for long packed lists


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64 -> two's complement, 10 bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def encode_varints(values: np.ndarray) -> bytes:
    """Packed varint encoding of int64 values (negative ones take 10 bytes, as protobuf does)."""
    v = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64).ravel()
    if v.size == 0:
        return b""
    nbytes = np.ones(v.shape, np.int64)
    for k in range(1, 10):
        nbytes += v >= np.uint64(1 << (7 * k))
    groups = np.empty((v.size, 10), np.uint8)
    for k in range(10):
        more = (nbytes > k + 1).astype(np.uint8) << 7
        groups[:, k] = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8) | more
    return groups[np.arange(10)[None, :] < nbytes[:, None]].tobytes()


def decode_varints(data: bytes | memoryview) -> np.ndarray:
    """Inverse of `encode_varints`: int64 values of a packed varint run."""
    b = np.frombuffer(data, np.uint8)
    if b.size == 0:
        return np.zeros(0, np.int64)
    if b[-1] >= 0x80:
        raise ValueError("truncated varint")
    last = b < 0x80
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    if (ends - starts).max() >= 10:
        raise ValueError("varint too long")
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    pos = np.arange(b.size) - starts[group]
    parts = (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    return np.add.reduceat(parts, starts).view(np.int64)


def _field(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _field(number, _LEN) + _varint(len(payload)) + payload


def _iter_fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of every field in one message."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
            yield number, wire, value
        elif wire == _LEN:
            size, pos = _read_varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError(f"field {number} runs past the end of its message")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire == _I64:
            yield number, wire, buf[pos : pos + 8]
            pos += 8
        elif wire == _I32:
            yield number, wire, buf[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire} in field {number}")


# ---------------------------------------------------------------------------------------------
# tf.train.Example


def _encode_feature(key: str, value: FeatureValue) -> bytes:
    if isinstance(value, list | tuple):
        if not all(isinstance(v, bytes | bytearray) for v in value):
            raise TypeError(f"feature {key!r}: a list value must hold bytes only")
        body = b"".join(_len_field(1, bytes(v)) for v in value)
        return _len_field(1, body)  # Feature.bytes_list
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        packed = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        return _len_field(2, _len_field(1, packed) if packed else b"")  # Feature.float_list
    if arr.dtype.kind in "iub":
        if arr.dtype == np.uint64:
            arr = arr.view(np.int64)  # as TFDS does: uint64 does not fit int64 otherwise
        packed = encode_varints(arr.astype(np.int64))
        return _len_field(3, _len_field(1, packed) if packed else b"")  # Feature.int64_list
    raise TypeError(f"feature {key!r}: unsupported dtype {arr.dtype}")


def encode_example(features: dict[str, FeatureValue]) -> bytes:
    """Serialise a `tf.train.Example` from key -> list[bytes] | numeric array."""
    entries = []
    for key, value in features.items():
        entry = _len_field(1, key.encode()) + _len_field(2, _encode_feature(key, value))
        entries.append(_len_field(1, entry))  # Features.feature map entry
    return _len_field(1, b"".join(entries))  # Example.features


def _decode_list(kind: int, buf: memoryview) -> FeatureValue:
    if kind == 1:
        return [bytes(v) for n, w, v in _iter_fields(buf) if n == 1 and w == _LEN]
    chunks: list[np.ndarray] = []
    for n, w, v in _iter_fields(buf):
        if n != 1:
            continue
        if kind == 2:  # floats: packed (LEN) or one per field (I32)
            chunks.append(np.frombuffer(v, "<f4").astype(np.float32))
        elif w == _LEN:  # int64s: packed varints ...
            chunks.append(decode_varints(v))
        else:  # ... or one varint per field
            chunks.append(np.array([v], np.uint64).view(np.int64))
    dtype = np.float32 if kind == 2 else np.int64
    return np.concatenate(chunks).astype(dtype) if chunks else np.zeros(0, dtype)


def decode_example(payload: bytes) -> dict[str, FeatureValue]:
    """Parse a serialised `tf.train.Example` into key -> list[bytes] | float32 / int64 array.

    Raises ValueError on a malformed message (callers add the file and record to the message).
    """
    out: dict[str, FeatureValue] = {}
    for n, w, features in _iter_fields(memoryview(payload)):
        if n != 1 or w != _LEN:
            continue
        for n2, w2, entry in _iter_fields(features):
            if n2 != 1 or w2 != _LEN:
                continue
            key, value = "", None
            for n3, w3, v in _iter_fields(entry):
                if n3 == 1 and w3 == _LEN:
                    key = bytes(v).decode()
                elif n3 == 2 and w3 == _LEN:
                    value = v
            decoded: FeatureValue = []
            for kind, w4, body in _iter_fields(value if value is not None else memoryview(b"")):
                if kind in (1, 2, 3) and w4 == _LEN:
                    decoded = _decode_list(kind, body)
            out[key] = decoded
    return out
