"""TFRecord framing and tf.train.Example encoding, checked against bytes TensorFlow itself wrote."""

from __future__ import annotations

import io

import numpy as np
import pytest

from hma.errors import FormatError
from hma.formats import tfrecord

# tf.io.TFRecordWriter (TensorFlow 2.21.0) writing the records b"hello" and b"".
TF_RECORDS = bytes.fromhex(
    "0500000000000000eab2043e68656c6c6fbb1f1c19000000000000000029039807d8ea82a2"
)
# tf.train.Example(b=[b"ab", b""], f=[1.5, -2.0], i=[-1, 300]).SerializeToString(deterministic=True)
TF_EXAMPLE = bytes.fromhex(
    "0a390a0d0a016212080a060a0261620a000a110a0166120c120a0a080000c03f000000c00a150a016912101a0e"
    "0a0cffffffffffffffffff01ac02"
)


def test_framing_matches_tensorflow_bytes():
    buf = io.BytesIO()
    assert tfrecord.write_record(buf, b"hello") == 12 + 5 + 4
    tfrecord.write_record(buf, b"")
    assert buf.getvalue() == TF_RECORDS
    assert list(tfrecord.iter_records(io.BytesIO(TF_RECORDS), "x.tfrecord")) == [b"hello", b""]


def test_framing_round_trip_and_header_scan(tmp_path):
    rng = np.random.default_rng(0)
    payloads = [rng.bytes(n) for n in (0, 1, 100, 70_000, 3)]
    path = tmp_path / "data.tfrecord"
    with open(path, "wb") as f:
        for p in payloads:
            tfrecord.write_record(f, p)
    with open(path, "rb") as f:
        assert list(tfrecord.iter_records(f, str(path))) == payloads
        offsets = tfrecord.scan_offsets(f, str(path))
        assert [length for _, length in offsets] == [len(p) for p in payloads]
        # Random access by offset, in any order.
        for i in (3, 0, 4):
            assert tfrecord.read_record(f, str(path), i, offsets[i][0]) == payloads[i]
        assert tfrecord.read_record(f, str(path), 5, path.stat().st_size) is None


@pytest.mark.parametrize(
    ("flip", "problem"),
    [(12 + 5 + 4 + 12 + 50, "data checksum"), (12 + 5 + 4 + 2, "length checksum")],
)
def test_corrupt_record_names_file_and_record(tmp_path, flip, problem):
    path = tmp_path / "bad.tfrecord"
    with open(path, "wb") as f:
        tfrecord.write_record(f, b"hello")
        tfrecord.write_record(f, bytes(range(100)))
    data = bytearray(path.read_bytes())
    data[flip] ^= 0x40
    path.write_bytes(bytes(data))
    with open(path, "rb") as f, pytest.raises(FormatError) as err:
        list(tfrecord.iter_records(f, str(path)))
    assert str(path) in str(err.value)
    assert "record 1" in str(err.value)
    assert problem in str(err.value)


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "short.tfrecord"
    buf = io.BytesIO()
    tfrecord.write_record(buf, b"x" * 40)
    path.write_bytes(buf.getvalue()[:-10])
    with open(path, "rb") as f, pytest.raises(FormatError, match="record 0.*truncated"):
        tfrecord.scan_offsets(f, str(path))


def test_example_matches_tensorflow_bytes():
    ours = tfrecord.encode_example(
        {"b": [b"ab", b""], "f": np.array([1.5, -2.0]), "i": np.array([-1, 300])}
    )
    assert ours == TF_EXAMPLE
    parsed = tfrecord.decode_example(TF_EXAMPLE)
    assert parsed["b"] == [b"ab", b""]
    np.testing.assert_array_equal(parsed["f"], np.array([1.5, -2.0], np.float32))
    assert parsed["f"].dtype == np.float32
    np.testing.assert_array_equal(parsed["i"], [-1, 300])
    assert parsed["i"].dtype == np.int64


def test_example_round_trip_of_every_list_kind():
    rng = np.random.default_rng(1)
    floats = rng.normal(size=(20, 7)).astype(np.float32)
    ints = rng.integers(-(2**63), 2**63 - 1, size=1000, dtype=np.int64)
    features = {
        "steps/observation/rgb": [rng.bytes(300), b"", rng.bytes(5)],
        "steps/action": floats,
        "steps/observation/instruction": ints,
        "steps/is_first": np.array([True, False, False]),
        "uint8": np.arange(256, dtype=np.uint8),
        "empty_floats": np.zeros(0, np.float32),
        "empty_bytes": [],
        "ünïcode key": np.array([7]),
    }
    parsed = tfrecord.decode_example(tfrecord.encode_example(features))
    assert parsed.keys() == features.keys()
    assert parsed["steps/observation/rgb"] == features["steps/observation/rgb"]
    np.testing.assert_array_equal(parsed["steps/action"], floats.ravel())  # exact float32
    np.testing.assert_array_equal(parsed["steps/observation/instruction"], ints)
    np.testing.assert_array_equal(parsed["steps/is_first"], [1, 0, 0])
    np.testing.assert_array_equal(parsed["uint8"], np.arange(256))
    assert parsed["empty_floats"].size == 0
    assert parsed["empty_bytes"] == []
    np.testing.assert_array_equal(parsed["ünïcode key"], [7])


def test_vectorised_varints_match_protobuf_encoding():
    rng = np.random.default_rng(2)
    edges = [0, 1, 127, 128, 16383, 16384, 2**35, 2**63 - 1, -1, -(2**63)]
    values = np.concatenate([np.array(edges, np.int64), rng.integers(-(2**40), 2**40, 500)])
    expected = b"".join(tfrecord._varint(int(v)) for v in values)
    assert tfrecord.encode_varints(values) == expected
    np.testing.assert_array_equal(tfrecord.decode_varints(expected), values)


def test_malformed_example_raises_value_error():
    with pytest.raises(ValueError):
        tfrecord.decode_example(TF_EXAMPLE[:-3])
