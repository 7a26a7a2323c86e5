"""Crash-safe training checkpoints: everything needed to continue a run exactly where it stopped.

out_dir/last/ holds model-<step>-<tag>.safetensors, optimizer-<step>-<tag>.safetensors and
state.json, the commit record, written last and atomically: a crash at any instant leaves the old
state.json with its files or the new one with its files (docs/RELIABILITY.md, section 3). No
pickle anywhere: a tampered checkpoint can fail to load but cannot run code.
"""
from __future__ import annotations

import base64
import json
import os
import random
import secrets
from pathlib import Path

import numpy as np
import torch

from minbert.safetensors import DiskFullError, load_safetensors, save_safetensors

FORMAT = 1
STATE = "state.json"
AGAIN = "Start again without --resume (add --overwrite)"  # the fix for a checkpoint that cannot be resumed


class TrainingStateError(ValueError):
    """A training checkpoint is missing, incomplete, corrupt, or does not fit this run."""


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Replace `path` by `data` all at once: readers (and a crash) see the old file or the new one.
    The one way every file of a run is written (checkpoint state, best/, predictions, records)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if DiskFullError.is_full(e):
            raise DiskFullError(path, len(data), e.errno) from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # makes the rename itself durable (POSIX)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def exists(directory: str | os.PathLike) -> bool:
    return (Path(directory) / STATE).is_file()


def saved_files(d: Path) -> dict | None:
    """The tensor files the checkpoint in `d` names now, or None."""
    try:
        return json.loads((d / STATE).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return None


def saved_step(directory: str | os.PathLike) -> int | None:
    """The step of the committed checkpoint in `directory`, None if there is none (or it is unreadable)."""
    try:
        return int(json.loads((Path(directory) / STATE).read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(directory: str | os.PathLike, tensors: dict[str, dict[str, torch.Tensor]], state: dict) -> None:
    """Write tensor groups (e.g. {"model": ..., "optimizer": ...}) and the JSON-able `state` as one checkpoint."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tag = f"{int(state.get('step', 0)):08d}-{secrets.token_hex(4)}"
    files, sizes = {}, {}
    try:
        for group, group_tensors in tensors.items():
            files[group] = f"{group}-{tag}.safetensors"
            save_safetensors({k: v.detach().cpu() for k, v in group_tensors.items()}, d / files[group])
            sizes[group] = (d / files[group]).stat().st_size
        atomic_write(d / STATE, json.dumps({"format": FORMAT, "files": files, "sizes": sizes, **state}))
    except BaseException:  # a full disk, Ctrl-C: this save's files go, unless its state.json already names them
        if saved_files(d) != files:
            for name in files.values():
                (d / name).unlink(missing_ok=True)
        raise
    for f in [*d.glob("*.safetensors"), *d.glob(".*.tmp")]:  # the previous checkpoint, leftovers of a crashed save
        if f.name not in files.values():
            f.unlink(missing_ok=True)


def load(directory: str | os.PathLike) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """(state, tensor groups) of the checkpoint in `directory`; TrainingStateError if unusable."""
    d = Path(directory)
    path = d / STATE
    if not path.is_file():
        raise TrainingStateError(f"{d}: no training checkpoint ({STATE} is missing)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise TrainingStateError(f"{path}: unreadable ({e}); the checkpoint is corrupt. {AGAIN}, or restore the "
                                 "directory from a backup") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("files"), dict):
        raise TrainingStateError(f"{path}: not a checkpoint of this trainer (expected format {FORMAT} with a "
                                 "'files' entry); start again without --resume (add --overwrite)")
    tensors = {}
    for group, name in state["files"].items():
        f = d / str(name)
        if not f.is_file():
            raise TrainingStateError(f"{f}: missing, but {path} needs it; the checkpoint is incomplete. {AGAIN}")
        expected = state.get("sizes", {}).get(group)
        if expected is not None and f.stat().st_size != expected:
            raise TrainingStateError(f"{f}: {f.stat().st_size} bytes, but {expected} were written; the file was "
                                     f"truncated or changed after saving. {AGAIN}")
        try:
            tensors[group] = load_safetensors(f)
        except ValueError as e:
            raise TrainingStateError(f"{e}. {AGAIN}") from None
    return state, tensors


def check_out_dir(out_dir: str | os.PathLike, predictions_dir: str | os.PathLike, resume: bool,
                  overwrite: bool) -> None:
    """Refuse to clobber: an earlier run's checkpoint is continued (--resume) or replaced (--overwrite)."""
    for flag, d in (("--out-dir", out_dir), ("--predictions-dir", predictions_dir)):
        if Path(d).exists() and not Path(d).is_dir():
            raise NotADirectoryError(f"{flag} {d} is a file; pass a directory (it is created if missing)")
    last = Path(out_dir) / "last"
    if exists(last) and not (resume or overwrite):
        raise TrainingStateError(f"{out_dir} already holds a run with a checkpoint in {last}. Pass --resume to "
                                 "continue it, --overwrite to start again and replace it, or another --out-dir")


def check_resumable(state: dict, options: dict, world_size: int, last: Path, may_change: set[str],
                    defaults: dict | None = None) -> None:
    """A run continues only with the options it was started with (those in may_change aside). An option
    the checkpoint does not record (added to the trainer after it was written) counts as its default."""
    now = json.loads(json.dumps(options))  # tuples -> lists, as in the file
    saved = {**{k: v for k, v in json.loads(json.dumps(defaults or {})).items() if k in now}, **state.get("options", {})}
    diff = [f"--{k.strip('_').replace('_', '-')} {saved.get(k)!r} (now {now.get(k)!r})"
            for k in sorted(set(saved) | set(now)) if k not in may_change and saved.get(k) != now.get(k)]
    if diff:
        raise TrainingStateError(f"{last}: cannot resume with different options: the checkpoint was written with "
                                 + "; ".join(diff) + ". Resume with the original options, or start again with "
                                 "--overwrite (or another --out-dir)")
    if state.get("world_size") != world_size:
        raise TrainingStateError(f"{last}: the checkpoint was written by {state.get('world_size')} process(es), this "
                                 f"run has {world_size}; resume with the same number (torchrun --nproc-per-node)")


# ----------------------------------------------------------------------------- optimizer


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """opt.state_dict() split into safetensors-able tensors {"<param>.<key>": T} and JSON (the rest)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for i, s in sd["state"].items():
        scalars[str(i)] = {}
        for key, value in s.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{i}.{key}"] = value
            else:
                scalars[str(i)][key] = value
    return tensors, {"state": scalars, "param_groups": sd["param_groups"]}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state = {int(i): dict(s) for i, s in meta["state"].items()}
    for name, t in tensors.items():
        i, key = name.split(".", 1)
        state.setdefault(int(i), {})[key] = t
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------------- random number generators


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Every RNG a training step may draw from (torch CPU, CUDA or Apple MPS, numpy, python, extra torch
    generators such as PCGrad's) as JSON."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": _b64(torch.get_rng_state()),
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
             "python": [version, list(internal), gauss_next],
             "generators": {k: _b64(g.get_state()) for k, g in (generators or {}).items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this process's device only: get_rng_state_all() would open a context on every visible GPU
        state["cuda"] = _b64(torch.cuda.get_rng_state())
    if torch.backends.mps.is_available():  # dropout on --device mps draws from the MPS generator
        state["mps"] = _b64(torch.mps.get_rng_state())
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(_unb64(state["torch"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    for k, g in (generators or {}).items():
        g.set_state(_unb64(state["generators"][k]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_unb64(state["cuda"]))
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(_unb64(state["mps"]))
