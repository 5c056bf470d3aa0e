"""A GGUF file's metadata and tensor table, read in one pass over a memory map.

gguf's GGUFReader builds a numpy view for every part of every field: two seconds for a
49,152-token vocabulary, paid before the first weight is read. This reads the same layout
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md, versions 2 and 3, little-endian)
with struct, and gives each tensor's data as the same numpy view of the map GGUFReader gives.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import quant_shape_to_byte_shape

__all__ = ["GGUFContents", "GGUFTensor", "read_gguf"]

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32

# GGUF value types with a fixed size: their struct format.
_SCALARS = {
    0: "B",  # uint8
    1: "b",  # int8
    2: "H",  # uint16
    3: "h",  # int16
    4: "I",  # uint32
    5: "i",  # int32
    6: "f",  # float32
    7: "?",  # bool
    10: "Q",  # uint64
    11: "q",  # int64
    12: "d",  # float64
}
_STRING, _ARRAY = 8, 9

# Tensor types held as numbers of their own (others are blocks of bytes).
_NUMPY_TYPES = {
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.F64: np.float64,
    GGMLQuantizationType.I8: np.int8,
    GGMLQuantizationType.I16: np.int16,
    GGMLQuantizationType.I32: np.int32,
    GGMLQuantizationType.I64: np.int64,
}


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    tensor_type: GGMLQuantizationType
    # GGUF's order, innermost first: a matrix is (columns, rows).
    shape: tuple[int, ...]
    # The bytes in the map: numbers in torch's order for the types in _NUMPY_TYPES, else
    # uint8 rows of whole blocks (as gguf.GGUFReader gives them).
    data: np.ndarray


@dataclass(frozen=True)
class GGUFContents:
    # Every metadata key: numbers, bools and strings as Python values, arrays as lists.
    metadata: dict[str, Any]
    tensors: tuple[GGUFTensor, ...]

    def field(self, key: str, default: Any = None) -> Any:
        """A metadata value; ValueError naming the key if it is missing and has no default."""
        if key in self.metadata:
            return self.metadata[key]
        if default is None:
            raise ValueError(f"GGUF file lacks the metadata key {key!r}")
        return default


def read_gguf(path: Path) -> GGUFContents:
    """The file's metadata and tensors (about 70 ms for a 49,152-token vocabulary). ValueError
    if it is not a GGUF file this reads, or is cut short."""
    with path.open("rb") as file:
        try:
            buffer = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as error:  # an empty file
            raise ValueError(f"{path} is not a GGUF file: {error}") from None
    try:
        return _Parser(buffer).contents()
    except (struct.error, ValueError, IndexError, KeyError) as error:  # UnicodeDecodeError too
        raise ValueError(f"{path} is not a GGUF file headrace reads: {error}") from None


class _Parser:
    def __init__(self, buffer: mmap.mmap) -> None:
        self.buffer = buffer
        self.offset = 0

    def contents(self) -> GGUFContents:
        if self.buffer[:4] != _MAGIC:
            raise ValueError("no GGUF magic")
        self.offset = 4
        version = self._unpack("I")
        if version not in _VERSIONS:
            raise ValueError(f"GGUF version {version} (or big-endian); headrace reads 2 and 3")
        tensor_count, key_count = self._unpack("Q"), self._unpack("Q")
        metadata = {}
        for _ in range(key_count):
            key = self._string()
            metadata[key] = self._value(self._unpack("I"))
        table = [self._tensor_entry() for _ in range(tensor_count)]
        alignment = int(metadata.get("general.alignment", _DEFAULT_ALIGNMENT))
        start = -(-self.offset // alignment) * alignment
        array = np.frombuffer(self.buffer, dtype=np.uint8)
        tensors = tuple(_tensor(array, start, *entry) for entry in table)
        if len({tensor.name for tensor in tensors}) != len(tensors):
            raise ValueError("a tensor name appears twice")
        return GGUFContents(metadata, tensors)

    def _unpack(self, code: str) -> Any:
        (value,) = struct.unpack_from("<" + code, self.buffer, self.offset)
        self.offset += struct.calcsize(code)
        return value

    def _string(self) -> str:
        length = self._unpack("Q")
        end = self.offset + length
        if end > len(self.buffer):
            raise IndexError("a string runs past the end of the file")
        text = self.buffer[self.offset : end].decode("utf-8")
        self.offset = end
        return text

    def _value(self, value_type: int) -> Any:
        if value_type == _STRING:
            return self._string()
        if value_type == _ARRAY:
            item_type, count = self._unpack("I"), self._unpack("Q")
            if item_type in _SCALARS and item_type != 7:  # numbers: in one read
                dtype = np.dtype("<" + _SCALARS[item_type])
                items = np.frombuffer(self.buffer, dtype, count, self.offset).tolist()
                self.offset += dtype.itemsize * count
                return items
            return [self._value(item_type) for _ in range(count)]
        return self._unpack(_SCALARS[value_type])

    def _tensor_entry(self) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int]:
        name = self._string()
        dims = tuple(self._unpack("Q") for _ in range(self._unpack("I")))
        return name, dims, GGMLQuantizationType(self._unpack("I")), self._unpack("Q")


def _tensor(
    array: np.ndarray,
    start: int,
    name: str,
    shape: tuple[int, ...],
    tensor_type: GGMLQuantizationType,
    offset: int,
) -> GGUFTensor:
    elements = int(np.prod(shape))
    block_size, type_size = GGML_QUANT_SIZES[tensor_type]
    size = elements * type_size // block_size
    begin = start + offset
    if begin + size > len(array):
        raise IndexError(f"tensor {name} runs past the end of the file")
    data = array[begin : begin + size]
    torch_order = tuple(reversed(shape))
    if tensor_type in _NUMPY_TYPES:
        data = data.view(_NUMPY_TYPES[tensor_type]).reshape(torch_order)
    else:
        data = data.reshape(quant_shape_to_byte_shape(torch_order, tensor_type))
    return GGUFTensor(name, tensor_type, shape, data)
