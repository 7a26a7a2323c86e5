"""The benchmark's efficiency figures (issue 15): the CPU's matrix peak measured in the same run,
model FLOPs, the resident memory a contender adds, and the timed SST epoch as whole trainer
processes. bench/run_benchmark.py prints them; docs/PERFORMANCE.md, "The efficiency columns",
explains them."""
from __future__ import annotations

import ctypes
import gc
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

from data.batching import clamp_max_length
from minbert import BertModel
from training.multitask import options
from training.multitask.recipe import load_checkpoint
from training.multitask.splits import load_split

PEAK_SHAPE = (1024, 384, 1536)  # (M, K, N): the model's FFN product, 1024 tokens x 384 -> 1536
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- model FLOPs

def model_flops(model: BertModel, lengths: Sequence[int], train: bool = True) -> float:
    """Model FLOPs of the encoder over sequences of these real lengths (padding excluded):
    6 N sum(T) + 12 L sum(T^2) C for a training step (PaLM, appendix B), a third of it for a forward.
    N = parameters of the encoder layers (embeddings are lookups, the pooler sees one token); the
    second term is Q K^T and att V, 2 products x 2 FLOPs per multiply-add x 3 (forward + backward)."""
    c = model.config
    n = sum(p.numel() for p in model.layers.parameters())
    flops = 6 * n * sum(lengths) + 12 * c.num_hidden_layers * sum(t * t for t in lengths) * c.hidden_size
    return flops if train else flops / 3


def real_lengths(batch: dict[str, torch.Tensor]) -> list[int]:
    """Real tokens of each sequence of a collated batch: the attention mask's row sums."""
    return batch["attention_mask"].sum(dim=1).tolist()


# ----------------------------------------------------------------------------- the matrix peak

def matmul_rate(dtype: torch.dtype, reps: int, warmup: int = 10) -> dict:
    """GFLOP/s of one (1024, 384) . (384, 1536) torch.mm at the current torch thread count: the
    median of `reps` timed calls after `warmup` untimed ones (oneDNN picks and caches its kernel)."""
    M, K, N = PEAK_SHAPE
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(M, K, generator=g).to(dtype), torch.randn(K, N, generator=g).to(dtype)
    for _ in range(warmup):
        torch.mm(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"dtype": str(dtype).removeprefix("torch."), "median_s": med, "min_s": min(times), "reps": reps,
            "flops": 2 * M * K * N, "gflops": 2 * M * K * N / med / 1e9}


def matmul_peaks(reps: int) -> dict:
    """The fp32 rate, and the bf16 rate where the CPU multiplies bf16 natively (elsewhere bf16 is
    emulated and slower than fp32, so it is no peak)."""
    out = {"fp32": matmul_rate(torch.float32, reps)}
    if options.cpu_has_bf16():
        out["bf16"] = matmul_rate(torch.bfloat16, reps)
    return out


def combine_peaks(start: dict, end: dict) -> dict:
    """The peak of the run: the higher of the start and end measurements (load on a shared machine
    only ever slows a measurement down), in bf16 where native, else fp32."""
    dtype = "bf16" if "bf16" in start else "fp32"
    return {"dtype": dtype, "gflops": max(start[dtype]["gflops"], end[dtype]["gflops"]),
            "fp32_gflops": max(start["fp32"]["gflops"], end["fp32"]["gflops"]), "start": start, "end": end,
            "note": f"peak = max(start, end) of the {dtype} rate of torch.mm {PEAK_SHAPE[0]}x{PEAK_SHAPE[1]} . "
                    f"{PEAK_SHAPE[1]}x{PEAK_SHAPE[2]} at the benchmark's threads"}


def rates(flops: float, seconds: float, peak: dict) -> dict:
    """Achieved model GFLOP/s, and its fraction of the peak (MFU) and of the fp32 peak."""
    gflops = flops / seconds / 1e9
    return {"gflops": gflops, "mfu": gflops / peak["gflops"], "mfu_fp32": gflops / peak["fp32_gflops"]}


# ----------------------------------------------------------------------------- resident memory (Linux)

_seen_peak_mb = 0.0  # the highest VmHWM read before a reset: the process's peak across resets


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def memory_mark() -> float | None:
    """Start measuring: free what can be freed, reset the high-water mark VmHWM to the current
    resident set (writing 5 to /proc/self/clear_refs, Linux >= 4.0) and return that resident set
    (MB). None where /proc is not available."""
    global _seen_peak_mb
    if _status_mb("VmHWM") is None:
        return None
    gc.collect()
    try:  # glibc keeps freed memory mapped; give it back so that the baseline is what is live
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    _seen_peak_mb = max(_seen_peak_mb, _status_mb("VmHWM"))
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_mb("VmRSS")


def memory_since(mark: float | None) -> dict:
    """What the work since memory_mark() added at its peak (VmHWM - VmRSS at the mark) and the
    resident high-water mark itself, in MB; None (and a note) without /proc."""
    hwm = _status_mb("VmHWM")
    if mark is None or hwm is None:
        return {"mem_added_mb": None, "rss_peak_mb": None, "mem_note": "no /proc/self (not Linux): not measured"}
    return {"mem_added_mb": max(0.0, hwm - mark), "rss_peak_mb": hwm}


def process_peak_mb() -> float | None:
    """The process's peak resident set so far, across the resets of memory_mark()."""
    hwm = _status_mb("VmHWM")
    return None if hwm is None else max(_seen_peak_mb, hwm)


# ----------------------------------------------------------------------------- the timed SST epoch

def epoch_argv(args, adamw: str, tmp: str) -> list[str]:
    """The trainer's command line of one timed epoch: issue 15's, plus --epoch-args."""
    argv = ["--tasks", "sst", "--epochs", "1", "--limit-eval", "16", "--threads", str(args.threads),
            "--device", "cpu", *shlex.split(args.epoch_args), "--adamw", adamw,
            "--out-dir", str(Path(tmp) / "run"), "--predictions-dir", str(Path(tmp) / "predictions"), "--overwrite"]
    return argv + (["--data-dir", str(args.data_dir)] if args.data_dir else [])


def epoch_work(argv: list[str]) -> dict:
    """Model FLOPs of one SST training epoch as the trainer with this command line reads it: its
    checkpoint, tokenizer, max length and training limits (training/multitask/splits.py), real tokens only."""
    a = options.parse_args(argv)
    tok, encoder = load_checkpoint(a)
    a.max_length = clamp_max_length(a.max_length, tok, log=lambda _: None)
    lengths = [len(e["input_ids"]) for e in load_split(a, tok, "sst", "train")]
    c = encoder.config
    return {"model": a.model, "max_length": a.max_length, "examples": len(lengths), "real_tokens": sum(lengths),
            "sum_T2": sum(t * t for t in lengths), "nonembedding_params": sum(p.numel() for p in encoder.layers.parameters()),
            "layers": c.num_hidden_layers, "hidden": c.hidden_size, "model_flops": model_flops(encoder, lengths)}


def run_child(argv: list[str], log: Path) -> dict:
    """Run the trainer as a child process; its wall time and maximum resident set (os.wait4's rusage)."""
    cmd = [sys.executable, str(REPO / "training" / "run_multitask.py"), *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(log, "w") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen never learns it
    if p.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"sst-epoch: the trainer failed (exit {p.returncode}): {shlex.join(cmd)}\n{tail}")
    return {"wall_s": wall, "max_rss_mb": usage.ru_maxrss / 1024, "command": shlex.join(cmd)}  # ru_maxrss: kB


def sst_epoch_section(args, say=print) -> dict:
    """The timed epochs: once per --epoch-adamw value, one after the other in the order given,
    --epoch-repeats times with the order reversed every other repeat (drift hits both alike)."""
    names = args.epoch_adamw
    work = epoch_work(epoch_argv(args, names[0], "unused"))
    runs = []
    for r in range(args.epoch_repeats):
        for adamw in (names if r % 2 == 0 else names[::-1]):
            say(f"sst-epoch: repeat {r + 1}/{args.epoch_repeats}, --adamw {adamw} (a whole trainer process) ...")
            tmp = tempfile.mkdtemp(prefix="minbert-sst-epoch-")
            try:
                runs.append({"adamw": adamw, "repeat": r,
                             **run_child(epoch_argv(args, adamw, tmp), Path(tmp) / "trainer.log")})
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return {"work": work, "runs": runs, "epoch_args": args.epoch_args,
            "note": "wall time of the whole process (start, loading, one SST epoch, evaluation and predictions on "
                    "16 examples per split); model FLOPs of the training epoch only"}


def add_rates(rec: dict, peak: dict) -> None:
    """Fill in GFLOP/s and MFU wherever the record has model FLOPs and a time, once the peak is known."""
    for sec in ("train", "infer"):
        for row in rec.get(sec, []):
            for s in row["results"].values():
                s.update(rates(row["model_flops"], s["median_s"], peak))
    if "sst-epoch" in rec:
        for run in rec["sst-epoch"]["runs"]:
            run.update(rates(rec["sst-epoch"]["work"]["model_flops"], run["wall_s"], peak))
