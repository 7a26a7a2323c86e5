"""Tensors between the checker and the runner: the safetensors format, read with size caps.

The checker never unpickles anything a runner wrote: a file is an 8-byte header length, a JSON
header (dtype, shape and byte range of each tensor, plus string metadata) and the raw bytes. Every
field a runner controls is validated before a byte is interpreted. This module imports only torch
and the standard library, so the checker can use it without importing any student code.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
MAX_BYTES = 64 * 2**20        # a runner's whole answer; every graded output is far smaller
MAX_HEADER = 2**20


class WireError(ValueError):
    """A file that is not a well-formed, size-capped safetensors file."""


def dumps(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    header: dict = {"__metadata__": dict(metadata or {})}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in NAMES:
            raise WireError(f"{name}: dtype {t.dtype} cannot be sent")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def loads(raw: bytes, max_bytes: int = MAX_BYTES) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata); WireError on anything malformed or over the caps."""
    if len(raw) > max_bytes:
        raise WireError(f"{len(raw)} bytes, more than the {max_bytes} allowed")
    if len(raw) < 8:
        raise WireError("shorter than a safetensors header")
    n = struct.unpack("<Q", raw[:8])[0]
    if n > min(MAX_HEADER, len(raw) - 8):
        raise WireError(f"header length {n} is out of range")
    try:
        header = json.loads(raw[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise WireError("__metadata__ must map strings to strings")
    body, tensors = raw[8 + n:], {}
    for name, info in header.items():
        try:
            dtype, shape = DTYPES[info["dtype"]], [int(s) for s in info["shape"]]
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise WireError(f"{name}: malformed entry {str(info)[:80]}") from None
        if any(s < 0 for s in shape) or not 0 <= start <= end <= len(body):
            raise WireError(f"{name}: shape or byte range out of bounds")
        size = torch.empty((), dtype=dtype).element_size()
        if math.prod(shape) * size != end - start:
            raise WireError(f"{name}: {end - start} bytes do not hold a {info['dtype']} tensor of shape {shape}")
        buf = bytearray(body[start:end])
        flat = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape).clone()
    return tensors, meta


def save(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    Path(path).write_bytes(dumps(tensors, metadata))


def load(path: str | Path, max_bytes: int = MAX_BYTES) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Reads at most max_bytes + 1 bytes, so a huge file costs nothing before it is refused."""
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    return loads(raw, max_bytes)
