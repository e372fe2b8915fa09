"""Reading open_clip's safetensors checkpoints one tensor at a time, without torch.

Read by hand rather than through ``safetensors.safe_open``, which maps the whole file: while
the mapping is open, every page read through it counts as this process's memory (350 MB of
ViT-B-32 image weights on top of whatever is built from them).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Checkpoint", "read_header"]

# The format caps its JSON header at 100 MB.
_MAX_HEADER_BYTES = 100_000_000
# safetensors dtype names (https://github.com/huggingface/safetensors#format) that hold
# weights xsearch reads, and their numpy storage type (bf16 is read as its raw 16 bits).
_FLOAT_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def read_header(file: io.BufferedReader) -> dict[str, Any]:
    """Name -> {dtype, shape, data_offsets (from the start of the file)} of a safetensors file."""
    raw = file.read(8)
    (size,) = struct.unpack("<Q", raw) if len(raw) == 8 else (-1,)
    if not 0 < size <= _MAX_HEADER_BYTES:
        raise OSError(f"{file.name} is not a safetensors file")
    header: dict[str, Any] = json.loads(file.read(size))
    header.pop("__metadata__", None)
    for entry in header.values():
        entry["data_offsets"] = [8 + size + int(x) for x in entry["data_offsets"]]
    return header


def read_bytes(file: io.BufferedReader, entry: dict[str, Any]) -> bytearray:
    """The raw bytes of one tensor of a header from :func:`read_header`."""
    start, end = entry["data_offsets"]
    buffer = bytearray(end - start)
    if end > start:
        file.seek(start)
        if file.readinto(buffer) != len(buffer):
            raise OSError(f"{file.name} ends before its weights do: the file is truncated")
    return buffer


class Checkpoint:
    """An open safetensors checkpoint whose float tensors are read as float32 arrays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("rb")
        try:
            self.header = read_header(self._file)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(n) for n in self.header[name]["shape"])

    def floats(self, names: Iterable[str]) -> bool:
        """Whether every named tensor is there and is a float tensor :meth:`read` knows."""
        return all(
            name in self.header and self.header[name]["dtype"] in _FLOAT_DTYPES for name in names
        )

    def read(self, name: str) -> npt.NDArray[np.float32]:
        """One tensor as float32 (bf16 widened bit for bit, fp16 converted exactly)."""
        entry = self.header[name]
        raw = np.frombuffer(read_bytes(self._file, entry), dtype=_FLOAT_DTYPES[entry["dtype"]])
        if entry["dtype"] == "BF16":
            out = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            out = raw.astype(np.float32, copy=False)
        return out.reshape(self.shape(name))
