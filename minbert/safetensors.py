"""safetensors, read and written by our own code instead of a dependency.

The format (https://github.com/huggingface/safetensors) is deliberately dumb:

    [8 bytes]  N, the header length, unsigned little-endian
    [N bytes]  UTF-8 JSON object:
                 {"<name>": {"dtype": "F32", "shape": [384, 384], "data_offsets": [begin, end]},
                  ...,
                  "__metadata__": {"format": "pt"}}        <- optional, str -> str only
    [rest]     the byte buffer: every tensor's raw little-endian bytes, row-major;
               data_offsets count from the start of this buffer, not of the file

Why parse it ourselves? A checkpoint is untrusted input. `torch.load` unpickles, and unpickling can
run arbitrary code; safetensors is pure data (JSON + raw bytes), so loading it can at worst fail.
That guarantee only holds if the parser is strict, so this one checks everything the spec implies
and turns every malformed file into a `ValueError` naming the file and the problem: a wrong or
truncated header, unknown dtypes, negative dims, byte counts that disagree with the shape, and
tensors that overlap, leave gaps, or stop short of / run past the buffer. Like the reference
implementation we require the tensors to tile the buffer exactly (no gaps, no trailing bytes), so
there is exactly one valid reading of every accepted file.
"""
from __future__ import annotations

import errno
import json
import math
import os
import secrets
import shutil
import sys

import torch

# Same names as the reference implementation; itemsize comes from torch.dtype.itemsize.
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8,
    "BOOL": torch.bool, "C64": torch.complex64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_NAMES = {dt: name for name, dt in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000   # the reference refuses larger headers too: a DoS guard, not a real limit
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


class DiskFullError(OSError):
    """A file could not be written because its disk (or the user's quota) is full. The message names
    the path, the space the file needs and what is free, and the fix; nothing partial is left behind."""

    def __init__(self, path: str | os.PathLike, needed: int, code: int = errno.ENOSPC):
        self.path, self.needed = os.fspath(path), needed
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            self.free: int | None = shutil.disk_usage(folder).free
        except OSError:
            self.free = None
        why = "the disk quota is exceeded" if code == errno.EDQUOT else "no space left on the disk"
        free = f"{_mb(self.free)} free there" if self.free is not None else "its free space is unknown"
        super().__init__(code, f"{self.path}: {why}: writing it needs {_mb(needed)}, {free}. Nothing was "
                               f"written (the partial file was removed; a file that was already there is unchanged). "
                               f"Free at least {_mb(max(needed - (self.free or 0), 1))} on the disk of {folder}, "
                               f"or write to a folder on a disk with more space")

    def __str__(self) -> str:  # OSError's own str would prefix "[Errno 28] "
        return self.strerror

    def __reduce__(self):  # pickle (multiprocessing) with this constructor's arguments, not OSError's
        return DiskFullError, (self.path, self.needed, self.errno)

    @staticmethod
    def is_full(e: BaseException) -> bool:
        return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 / 10 else f"{n} bytes"


def _short(x: object) -> str:
    r = repr(x)   # hostile headers can hold megabyte-long names and shapes; keep messages readable
    return r if len(r) <= 80 else r[:77] + "..."


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)   # JSON true/false must not pass as 1/0


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    # json.loads silently keeps the last duplicate; two different readings of one file is exactly
    # the ambiguity a strict parser must refuse.
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {_short(k)}")
        out[k] = v
    return out


def _byteswap(t: torch.Tensor) -> torch.Tensor:
    """Reverse the bytes of every element: safetensors is little-endian regardless of the host."""
    if sys.byteorder == "little" or t.element_size() == 1 or t.numel() == 0:
        return t
    b = t.contiguous().reshape(-1).view(torch.uint8).view(-1, t.element_size())  # (numel, itemsize)
    return b.flip(-1).contiguous().view(t.dtype).view(t.shape)


# ----------------------------------------------------------------------------- reading

def _parse_header(raw: bytes, buffer_len: int, where: str) -> tuple[dict, dict]:
    """Validate the JSON header against a buffer of `buffer_len` bytes. Returns (entries, metadata)."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{where}: header is not valid UTF-8 JSON ({e}); the file is corrupt "
                         f"or not a safetensors file") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where}: header must be a JSON object, got {type(header).__name__}")

    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{where}: __metadata__ must be an object mapping strings to strings")

    entries: dict[str, dict] = {}
    for name, e in header.items():
        if not isinstance(e, dict):
            raise ValueError(f"{where}: tensor {_short(name)}: entry must be an object, got {_short(e)}")
        if set(e) != _ENTRY_KEYS:
            raise ValueError(f"{where}: tensor {_short(name)}: entry must have exactly the keys "
                             f"{sorted(_ENTRY_KEYS)}, got {sorted(e)}")
        dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ValueError(f"{where}: tensor {_short(name)}: unknown dtype {_short(dtype)}; "
                             f"supported: {', '.join(DTYPES)}")
        if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
            raise ValueError(f"{where}: tensor {_short(name)}: shape must be a list of ints, got {_short(shape)}")
        if any(d < 0 for d in shape):
            raise ValueError(f"{where}: tensor {_short(name)}: negative dimension in shape {_short(shape)}")
        if math.prod(max(d, 1) for d in shape) >= 2**63:
            # Only reachable with a zero dim (else the byte count check fails), but torch would still
            # overflow computing strides: an empty tensor must have representable dims too.
            raise ValueError(f"{where}: tensor {_short(name)}: shape {_short(shape)} overflows int64")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise ValueError(f"{where}: tensor {_short(name)}: data_offsets must be [begin, end] ints, "
                             f"got {_short(offsets)}")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise ValueError(f"{where}: tensor {_short(name)}: data_offsets {_short(offsets)} must satisfy "
                             f"0 <= begin <= end")
        if end > buffer_len:
            raise ValueError(f"{where}: tensor {_short(name)}: data_offsets {_short(offsets)} run past the end of "
                             f"the {buffer_len}-byte data buffer (truncated file?)")
        # Python ints cannot overflow, so an absurd shape simply fails this equality.
        expected = math.prod(shape) * DTYPES[dtype].itemsize
        if end - begin != expected:
            raise ValueError(f"{where}: tensor {_short(name)}: {end - begin} bytes for a {dtype} tensor of "
                             f"shape {_short(shape)}, which needs {_short(expected)}")
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}

    # The tensors must tile [0, buffer_len) exactly. Sorting by (begin, end) puts empty tensors
    # before a non-empty one starting at the same offset, so they are accepted as in the reference.
    pos, prev = 0, None
    for name in sorted(entries, key=lambda n: tuple(entries[n]["data_offsets"])):
        begin, end = entries[name]["data_offsets"]
        if begin < pos:
            raise ValueError(f"{where}: tensor {_short(name)} (bytes {_short(begin)}..{_short(end)}) overlaps tensor "
                             f"{_short(prev)}, which ends at {pos}")
        if begin > pos:
            raise ValueError(f"{where}: gap of {begin - pos} unused bytes before tensor {_short(name)} "
                             f"at offset {pos}; tensors must be packed back to back")
        pos, prev = end, name
    if pos != buffer_len:
        raise ValueError(f"{where}: {buffer_len - pos} trailing bytes after the last tensor "
                         f"(data buffer is {buffer_len} bytes, tensors cover {pos})")
    return entries, metadata


def _open_header(f, where: str) -> tuple[dict, dict, int]:
    """Read and validate the header of an open binary file. Returns (entries, metadata, data_start)."""
    size = os.fstat(f.fileno()).st_size
    if size < 8:
        raise ValueError(f"{where}: file is {size} bytes, too short for the 8-byte header length; "
                         f"truncated or not a safetensors file")
    n = int.from_bytes(_read_exact(f, 8, where), "little")
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"{where}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit; "
                         f"the file is corrupt or not a safetensors file")
    if 8 + n > size:
        raise ValueError(f"{where}: header length {n} is larger than the rest of the file "
                         f"({size - 8} bytes); truncated or not a safetensors file")
    entries, metadata = _parse_header(_read_exact(f, n, where), size - 8 - n, where)
    return entries, metadata, 8 + n


def _read_exact(f, n: int, where: str) -> bytearray:
    buf, got = bytearray(n), 0
    with memoryview(buf) as view:
        while got < n:   # a raw read may return short; only 0 means end of file
            k = f.readinto(view[got:])
            if not k:
                raise ValueError(f"{where}: unexpected end of file after {got} of {n} bytes "
                                 f"(was the file truncated while being read?)")
            got += k
    return buf


def read_header(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str]]:
    """Validated header without reading tensor data: ({name: {"dtype", "shape", "data_offsets"}},
    metadata). Cheap even for large files; use it to list names/shapes before loading."""
    where = os.fspath(path)
    with open(where, "rb") as f:
        entries, metadata, _ = _open_header(f, where)
    return entries, metadata


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load every tensor of a .safetensors file onto the CPU, in header order.

    The data is read in one front-to-back pass, each tensor straight into its own bytearray, so
    every returned tensor owns (and is aligned in) its memory and the file is closed on return.
    Raises ValueError naming the file for anything malformed (see the module docstring).
    """
    where = os.fspath(path)
    with open(where, "rb", buffering=0) as f:
        entries, _, start = _open_header(f, where)
        # Validation guarantees the entries tile the buffer, so reading them in offset order reads
        # the file sequentially with no seeks and no bytes skipped.
        bufs: dict[str, bytearray] = {}
        f.seek(start)
        for name in sorted(entries, key=lambda n: tuple(entries[n]["data_offsets"])):
            begin, end = entries[name]["data_offsets"]
            bufs[name] = _read_exact(f, end - begin, where)

    out: dict[str, torch.Tensor] = {}
    for name, e in entries.items():
        dtype, shape, buf = DTYPES[e["dtype"]], e["shape"], bufs[name]
        if dtype == torch.bool and buf.translate(None, b"\x00\x01"):
            # torch would hand back "bools" that are neither True nor False; refuse instead.
            raise ValueError(f"{where}: tensor {_short(name)}: BOOL data contains bytes other than 0 and 1")
        if len(buf) == 0:   # torch.frombuffer rejects empty buffers
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            out[name] = _byteswap(torch.frombuffer(buf, dtype=dtype).view(shape))
    return out


# ----------------------------------------------------------------------------- writing

def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (any device, any strides) to `path` as safetensors, atomically.

    Deterministic: the same tensors and metadata always give the same bytes. Tensors are ordered by
    itemsize (largest first) then name, as the reference does, so every tensor starts at an offset
    that is a multiple of its itemsize; the header is space-padded to a multiple of 8 so the buffer
    itself starts 8-aligned. The file appears under `path` only once completely written and fsynced.
    """
    where = os.fspath(path)
    if not isinstance(tensors, dict):
        raise ValueError(f"{where}: tensors must be a dict name -> torch.Tensor, got {type(tensors).__name__}")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise ValueError(f"{where}: metadata must be a dict of str -> str (convert numbers with str())")
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"{where}: tensor name {_short(name)} is not allowed (must be a str other "
                             f"than '__metadata__')")
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{where}: {_short(name)} is a {type(t).__name__}, not a torch.Tensor")
        if t.layout != torch.strided:
            raise ValueError(f"{where}: tensor {_short(name)} has layout {t.layout}; call .to_dense() first")
        if t.dtype not in _NAMES:
            raise ValueError(f"{where}: tensor {_short(name)} has dtype {t.dtype}, which safetensors "
                             f"cannot store; supported: {', '.join(map(str, _NAMES))}")

    order = sorted(tensors, key=lambda n: (-tensors[n].element_size(), n))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    datas, pos = [], 0
    for name in order:
        t = _byteswap(tensors[name].detach().to("cpu").contiguous())
        data = t.reshape(-1).view(torch.uint8).numpy()   # flatten first: 0-dim tensors cannot .view()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [pos, pos + data.nbytes]}
        datas.append(data)
        pos += data.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    needed = 8 + len(raw) + pos

    # Atomic write: a crash leaves either the old file or the new one, never half of one.
    # os.open honours the umask (tempfile would force 0600) and O_EXCL refuses to clobber anything.
    # A full disk (Colab, shared drives) fails a write, the flush or the fsync with ENOSPC: the
    # temporary file goes, `path` keeps its old content, and the error says how much space is needed.
    d, base = os.path.split(os.path.abspath(where))
    tmp = os.path.join(d, f".{base}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:  # no inode left: nothing was created
        if DiskFullError.is_full(e):
            raise DiskFullError(where, needed, e.errno) from None
        raise
    try:
        with open(fd, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for data in datas:
                f.write(memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, where)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if DiskFullError.is_full(e):
            raise DiskFullError(where, needed, e.errno) from None
        raise
    if hasattr(os, "O_DIRECTORY"):   # make the rename itself durable (POSIX only)
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
