"""Minimal safetensors reader/writer on numpy + ml_dtypes (bfloat16 and float8 included).

The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}}, then raw bytes. Reading memory-maps the file, so a tensor costs host memory only
when it is touched; the `safetensors` package's numpy backend cannot return bf16 or fp8 arrays.
"""

import json
import os
import struct

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsFile:
  """Lazy view of one .safetensors file: `keys()`, `shape(k)`, `get(k) -> np.ndarray` (read-only)."""

  def __init__(self, path: str):
    self.path = path
    with open(path, "rb") as f:
      prefix = f.read(8)
      if len(prefix) != 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
      (n,) = struct.unpack("<Q", prefix)
      if n > os.path.getsize(path) - 8:
        raise ValueError(f"{path}: header length {n} exceeds the file size")
      header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    self._header = header
    self._data_start = 8 + n
    self._mmap = None

  def keys(self) -> list[str]:
    return list(self._header)

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self._header[key]["shape"])

  def get(self, key: str) -> np.ndarray:
    info = self._header[key]
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{self.path}: tensor {key} has unsupported dtype {info['dtype']}")
    if self._mmap is None:
      self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
    start, end = info["data_offsets"]
    raw = self._mmap[self._data_start + start:self._data_start + end]
    return raw.view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def save_file(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
  """Writes {name: array} to `path` in safetensors format (keys sorted, 8-byte aligned header)."""
  header, offset = {}, 0
  arrays = {}
  for key in sorted(tensors):
    a = np.ascontiguousarray(tensors[key])
    if a.dtype not in _NAMES:
      raise ValueError(f"tensor {key}: dtype {a.dtype} cannot be written to safetensors")
    header[key] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
    arrays[key] = a
  if metadata:
    header["__metadata__"] = metadata
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for key in sorted(arrays):
      f.write(arrays[key].tobytes())
