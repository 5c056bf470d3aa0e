"""headrace's GGUF reader gives what gguf's own GGUFReader gives, and refuses broken files."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from headrace.model.gguf_reader import read_gguf

Q = gguf.GGMLQuantizationType


def _write(path: Path, *, alignment: int | None = None) -> Path:
    """A file of every metadata value type and of tensors of several types."""
    writer = gguf.GGUFWriter(path, "llama")
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -100)
    writer.add_uint16("t.u16", 60000)
    writer.add_int16("t.i16", -30000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_uint64("t.u64", 2**63)
    writer.add_int64("t.i64", -(2**62))
    writer.add_float32("t.f32", 0.25)
    writer.add_float64("t.f64", 1e-300)
    writer.add_bool("t.bool", True)
    writer.add_string("t.string", "héllo ✓")
    writer.add_array("t.ints", [1, -2, 3])
    writer.add_array("t.floats", [0.5, 1.5])
    writer.add_array("t.strings", ["a", "", "ünï"])
    writer.add_array("t.bools", [True, False])
    writer.add_array("t.empty", [])
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((4, 64)).astype(np.float32)
    writer.add_tensor("f32", matrix)
    writer.add_tensor("f16", matrix.astype(np.float16))
    writer.add_tensor("vector", rng.standard_normal(7).astype(np.float32))
    writer.add_tensor("i32", np.arange(6, dtype=np.int32).reshape(2, 3))
    for kind in (Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.BF16):
        writer.add_tensor(kind.name, gguf.quants.quantize(matrix, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("alignment", [None, 64])
def test_it_reads_what_gguf_reads(tmp_path: Path, alignment: int | None) -> None:
    path = _write(tmp_path / "all.gguf", alignment=alignment)
    theirs = gguf.GGUFReader(path)
    ours = read_gguf(path)
    expected = {
        key: field.contents() for key, field in theirs.fields.items() if not key.startswith("GGUF.")
    }
    assert ours.metadata == expected
    assert ours.metadata["t.strings"] == ["a", "", "ünï"]
    assert ours.field("t.f32") == 0.25
    assert [tensor.name for tensor in ours.tensors] == [tensor.name for tensor in theirs.tensors]
    for mine, reference in zip(ours.tensors, theirs.tensors, strict=True):
        assert mine.tensor_type == reference.tensor_type, mine.name
        assert mine.shape == tuple(reference.shape.tolist()), mine.name
        assert mine.data.dtype == reference.data.dtype, mine.name
        assert mine.data.shape == reference.data.shape, mine.name
        assert np.array_equal(mine.data, reference.data), mine.name


def test_a_missing_key_is_named(tmp_path: Path) -> None:
    contents = read_gguf(_write(tmp_path / "all.gguf"))
    assert contents.field("t.absent", 3) == 3
    with pytest.raises(ValueError, match=r"lacks the metadata key 't\.absent'"):
        contents.field("t.absent")


def _bad(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is not a GGUF file"),
        (b"PK\x03\x04" + bytes(60), "no GGUF magic"),
        (b"GGUF" + struct.pack("<I", 1) + bytes(16), "GGUF version 1"),
        (b"GGUF" + struct.pack(">I", 3) + bytes(16), "big-endian"),
        (b"GGUF" + struct.pack("<IQ", 3, 0), "is not a GGUF file headrace reads"),
        # One key whose name says it is longer than the file.
        (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1000), "past the end of the file"),
        # One key of a value type that does not exist.
        (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1) + b"k" + struct.pack("<I", 99), "reads"),
    ],
)
def test_a_broken_file_is_refused(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_gguf(_bad(tmp_path / "bad.gguf", data))


def test_a_file_cut_short_is_refused(tmp_path: Path) -> None:
    whole = _write(tmp_path / "all.gguf").read_bytes()
    for size in (20, len(whole) // 50, len(whole) - 1):  # in the metadata, the table, the data
        with pytest.raises(ValueError, match="is not a GGUF file headrace reads"):
            read_gguf(_bad(tmp_path / "cut.gguf", whole[:size]))
