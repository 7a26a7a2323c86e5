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
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

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


# ----------------------------------------------------------------------------- the run folder


@dataclass
class RunFolder:
    """A trainer's run folder (run_multitask.py): log.jsonl, last/ (the whole training state, for
    --resume) and best/ (the kept weights), and what every checkpoint carries. Trainers without one
    (run_classifier, run_distill, run_gan, run_mlm) pass none and keep the best weights in memory."""
    path: Path
    options: dict  # the run's options, saved with every checkpoint (check_resumable compares them)
    save_every: int = 500  # optimizer steps between saves of last/
    state: dict = field(default_factory=dict)  # the checkpoint being resumed; {} on a fresh start
    extra_state: Callable[[], dict] = dict  # the trainer's part of a checkpoint (data stream positions)
    generators: dict = field(default_factory=dict)  # torch generators saved with the RNG states
    save_best: Callable[[Path, dict], None] | None = None  # (best/, info) -> writes model.safetensors there
    log: IO[str] | None = None  # log.jsonl, open for appending (rank 0; open_log)


def save_last(folder: RunFolder, model, player, world, progress: dict, ema=None, scaler=None) -> None:
    """last/: the whole training state, on rank 0, with every rank's RNG states. player: the
    optimizer and LR schedule saved (engine/loop.py's Player); ema, scaler: --ema's weights, fp16's scale."""
    from training.engine import distributed
    rngs = distributed.all_gather_object(rng_state(folder.generators), world)
    if not world.is_main:
        return
    opt_tensors, opt_meta = optimizer_state(player.opt)
    tensors = {"model": model.state_dict(), "optimizer": opt_tensors}
    extra = {}
    if ema is not None:
        tensors["ema"], extra = ema.state_dict(), {"ema_updates": ema.updates}
    if scaler is not None:  # fp16: the loss scale and its growth counter (plain numbers)
        extra["scaler"] = scaler.state_dict()
    save(folder.path / "last", tensors, dict(
        progress, **folder.extra_state(), **extra, lr_schedule=player.sched.state_dict(), optimizer=opt_meta,
        rng=rngs, options=folder.options, world_size=world.world_size))


def load_last(last: Path, model, player, generators: dict, world, options: dict,
              may_change: set[str], restore: Callable[[dict], None] = lambda state: None,
              defaults: dict | None = None, ema=None, scaler=None) -> dict:
    """Restore model, optimizer, schedule, RNGs, the EMA weights, the fp16 loss scale and (restore(state))
    the trainer's part from last/ (made by save_last); returns its state. defaults: the options' defaults,
    for options newer than the checkpoint (check_resumable). A checkpoint without a scale (written
    without --amp fp16, which may change on --resume) leaves the scaler at its start."""
    state, tensors = load(last)
    check_resumable(state, options, world.world_size, last, may_change, defaults)
    try:
        model.load_state_dict(tensors["model"])
        load_optimizer_state(player.opt, tensors["optimizer"], state["optimizer"])
        player.sched.load_state_dict(state["lr_schedule"])
        set_rng_state(state["rng"][world.rank], generators)
        if ema is not None:
            ema.load_state_dict(tensors["ema"], state["ema_updates"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        restore(state)
    except (KeyError, IndexError, RuntimeError, ValueError) as e:
        raise TrainingStateError(f"{last}: the checkpoint does not fit this run ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0]}); start again with --overwrite") from None
    return state


def open_log(folder: RunFolder, overwrite: bool, resume: bool) -> IO[str]:
    """log.jsonl for appending (rank 0), also kept in folder.log: emptied on --overwrite, cut back to the
    checkpoint on --resume."""
    out_dir, state = folder.path, folder.state
    if overwrite and not state:
        for old in (out_dir / "last", out_dir / "best", out_dir / "log.jsonl"):
            shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path, keep = out_dir / "log.jsonl", state.get("log_bytes", 0)
    if resume and path.is_file() and path.stat().st_size > keep:
        os.truncate(path, keep)  # rows after the checkpoint are written again
    folder.log = open(path, "a", encoding="utf-8")
    return folder.log
