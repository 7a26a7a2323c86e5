"""The benchmark's measurements: minbert side by side with transformers' BertModel, in one process;
CPU sections first, then the GPU mode (bert-base shape, bf16 autocast + TF32 + fused AdamW, + compile).
The command, its sections and its fairness rules: bench/run_benchmark.py."""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable

import torch

from data.batching import (BucketBatchSampler, RandomBatchSampler, collate, encode_examples,
                           example_lengths, padding_stats)
from data.datasets import load_task
from minbert import BertConfig, BertModel, Tokenizer
from minbert.checkpoint import minbert_to_hf
from bench import efficiency

try:
    import transformers
except ImportError:  # optional: the benchmark then reports minbert alone
    transformers = None

PAIRS = {"minbert-manual": "transformers-eager", "minbert-sdpa": "transformers-sdpa",
         "minbert-sdpa-unpad": "transformers-sdpa"}
GOALS = {"minbert-manual/transformers-eager": 1.0, "minbert-sdpa/transformers-sdpa": 1.10,
         "minbert-sdpa-unpad/transformers-sdpa": 1.10}
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


# ----------------------------------------------------------------------------- models and batches

def load_model(name: str, impl: str) -> BertModel:
    if name == "tiny":
        torch.manual_seed(0)
        return BertModel(BertConfig(**TINY), attn_implementation=impl)
    return BertModel.from_pretrained(name, attn_implementation=impl)


def hf_copy(model: BertModel, attn_implementation: str) -> torch.nn.Module:
    """A transformers BertModel holding exactly `model`'s weights."""
    hf = transformers.BertModel(transformers.BertConfig(**model.config.to_dict(),
                                                        attn_implementation=attn_implementation))
    missing, unexpected = hf.load_state_dict(minbert_to_hf(model.state_dict(), model.config), strict=False)
    if unexpected or any("position_ids" not in k for k in missing):
        raise RuntimeError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")
    return hf


def variant(base: BertModel, **changes) -> BertModel:
    """A copy of base with other runtime switches (attention path, unpadding), same weights."""
    m = BertModel(base.config, **(dict(attn_implementation=base.attn_implementation, unpad=base.unpad) | changes))
    m.load_state_dict(base.state_dict())
    return m


def contenders(base: BertModel) -> dict[str, torch.nn.Module]:
    """minbert manual / sdpa / sdpa-unpad and transformers eager / sdpa, all with base's weights."""
    models = {"minbert-manual": base, "minbert-sdpa": variant(base, attn_implementation="sdpa"),
              "minbert-sdpa-unpad": variant(base, attn_implementation="sdpa", unpad=True)}
    if transformers is not None:
        models.update({"transformers-eager": hf_copy(base, "eager"), "transformers-sdpa": hf_copy(base, "sdpa")})
    return models


def synthetic_batch(B: int, T: int, vocab_size: int, device="cpu") -> dict[str, torch.Tensor]:
    """Random ids, every sequence T long (no padding): a fixed compute shape."""
    ids = torch.randint(min(1000, vocab_size - 1), vocab_size, (B, T), generator=torch.Generator().manual_seed(T))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    return {k: v.to(device) for k, v in batch.items()}


def pad_to(inputs: dict[str, torch.Tensor], T: int) -> dict[str, torch.Tensor]:
    """Right-pad a collated (B, t) batch to (B, T) with zeros (pad id, mask 0, segment 0)."""
    return {k: torch.nn.functional.pad(v, (0, T - v.shape[1])) for k, v in inputs.items()}


_ENCODED: dict[tuple, list[dict]] = {}


def encoded_task(args, tok: Tokenizer, task: str) -> list[dict]:
    key = (task, str(args.data_dir), args.max_length, args.pair_mode)
    if key not in _ENCODED:
        examples, _ = load_task(task, "train", args.data_dir, skip_bad=True)
        cross = args.pair_mode == "cross" and task != "sst"
        _ENCODED[key] = encode_examples(tok, examples, task, max_length=args.max_length, cross_encoder=cross)
    return _ENCODED[key]


def cpu_batches(args, tok: Tokenizer, vocab_size: int, notes: list[str]) -> dict[str, dict]:
    out = {}
    for shape in args.shapes.split(","):
        if shape.isdigit():
            out[f"T{shape}"] = synthetic_batch(args.batch_size, int(shape), vocab_size)
            continue
        if shape not in ("sst-bucket", "sst-random"):
            raise SystemExit(f"--shapes: unknown shape {shape!r}; use sst-bucket, sst-random or an int")
        try:
            enc = encoded_task(args, tok, "sst")
        except FileNotFoundError as e:
            notes.append(f"shape {shape} skipped: no SST data ({str(e).splitlines()[0]})")
            continue
        sampler = (BucketBatchSampler(example_lengths(enc), args.batch_size, seed=0) if shape == "sst-bucket"
                   else RandomBatchSampler(len(enc), args.batch_size, seed=0))
        # the batch of median padded length: what a typical step of that epoch computes
        by_len = sorted(sampler, key=lambda b: max(len(enc[i]["input_ids"]) for i in b))
        out[shape] = collate([enc[i] for i in by_len[len(by_len) // 2]], tok.pad_id)["inputs"]
    return out


# ----------------------------------------------------------------------------- timing

def interleaved(fns: dict[str, Callable[[], None]], reps: int, warmup: int,
                sync: Callable[[], None] = lambda: None) -> dict[str, list[tuple[float, float]]]:
    """(wall, process CPU) seconds per call of each fn; calls alternate A B C D, D C B A, ... to
    cancel drift. CPU time (all threads) moves less than wall time when other processes compete."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times = {n: [] for n in names}
    for r in range(reps):
        for n in (names if r % 2 == 0 else names[::-1]):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fns[n]()
            sync()
            times[n].append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def summary(times: list[tuple[float, float]], n_seq: int) -> dict:
    wall = [w for w, _ in times]
    med = statistics.median(wall)
    return {"median_s": med, "min_s": min(wall), "max_s": max(wall), "reps": len(wall), "seq_per_s": n_seq / med,
            "cpu_median_s": statistics.median(c for _, c in times)}


def train_step(model, opt, batches: list[dict], autocast=contextlib.nullcontext) -> Callable[[], None]:
    """forward (of each batch: the input, or one side of a pair) + backward + optimizer step."""
    def step():
        with autocast():
            loss = sum(model(**b)["last_hidden_state"].float().square().mean() for b in batches)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def infer_step(model, batch: dict, autocast=contextlib.nullcontext) -> Callable[[], None]:
    def step():
        with torch.no_grad(), autocast():
            return model(**batch)["last_hidden_state"]
    return step


def cpu_autocast(args):
    """The context every CPU contender runs under: nothing, or bf16 autocast (--cpu-amp bf16)."""
    if args.cpu_amp == "bf16":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def profile_table(fn: Callable[[], None], n: int) -> str:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=n)


# ----------------------------------------------------------------------------- sections

def model_section(mode: str, models: dict, batches: dict, args) -> list[dict]:
    """train or infer: every contender on every batch shape."""
    rows = []
    for shape, batch in batches.items():
        fns, memory = {}, {}
        for name, m in models.items():
            m.train(mode == "train")
            fns[name] = (train_step(m, torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True), [batch],
                                    cpu_autocast(args))
                         if mode == "train" else infer_step(m, batch, cpu_autocast(args)))
            # each contender warms up alone, so that the resident memory its first steps add (grads,
            # optimizer state, activations) is its own
            mark = efficiency.memory_mark()
            for _ in range(args.warmup):
                fns[name]()
            memory[name] = efficiency.memory_since(mark)
        times = interleaved(fns, args.reps, 0)
        B, T = batch["input_ids"].shape
        res = {n: summary(t, B) | memory[n] for n, t in times.items()}
        # every contender computes the same model: its FLOPs on the real tokens (efficiency.add_rates: MFU)
        flops = efficiency.model_flops(models["minbert-manual"], efficiency.real_lengths(batch), mode == "train")
        rows.append({"shape": shape, "B": B, "T": T, "padding": 1 - int(batch["attention_mask"].sum()) / (B * T),
                     "model_flops": flops, "results": res,
                     "ratios": {f"{a}/{b}": res[a]["seq_per_s"] / res[b]["seq_per_s"]
                                for a, b in PAIRS.items() if a in res and b in res}})
        if args.profile and shape == next(iter(batches)):
            for name, fn in fns.items():
                print(f"\n-- {mode} {shape}: {name}, top {args.profile} ops by self CPU time --")
                print(profile_table(fn, args.profile))
        for m in models.values():  # free grads before the next shape (the optimizers go with fns)
            m.zero_grad(set_to_none=True)
    return rows


def check_same_outputs(models: dict, batch: dict) -> dict[str, float]:
    """Max |difference| of last_hidden_state on real tokens vs minbert-manual: same weights, same math."""
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        outs = {n: m.eval()(**batch)["last_hidden_state"][real] for n, m in models.items()}
    return {n: (o - outs["minbert-manual"]).abs().max().item() for n, o in outs.items()}


def epoch_section(args, tok: Tokenizer, model: BertModel, notes: list[str]) -> dict:
    """Per padding scheme: tokens (exact, the whole epoch) and wall time (sampled, extrapolated).
    computed_tokens = sum of B x T over the batches: the (B, T) grid every layer computes, and with
    unpadding still the grid of the attention products; linear_tokens = what the token-wise layers
    (the Linear layers, ~80% of a step) compute: the grid, or only the real tokens when unpadded."""
    B, T_fix = args.batch_size, args.max_length
    models = {False: model.train(), True: variant(model, unpad=True).train()}
    opts = {u: torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True) for u, m in models.items()}
    out = {}
    for task in args.tasks.split(","):
        try:
            enc = encoded_task(args, tok, task)
        except FileNotFoundError as e:
            notes.append(f"epoch {task} skipped: {str(e).splitlines()[0]}")
            continue
        sides = [""] if "input_ids" in enc[0] else ["_1", "_2"]  # a bi-encoder pads each side apart
        lengths = {s: [len(e["input_ids" + s]) for e in enc] for s in sides}
        random_batches = list(RandomBatchSampler(len(enc), B, seed=0))
        bucket_batches = list(BucketBatchSampler(example_lengths(enc), B, seed=0))
        schemes = {"bucket": bucket_batches, "random": random_batches, "fixed": random_batches,
                   "bucket+unpad": bucket_batches, "random+unpad": random_batches}
        rows = {}
        for scheme, batches in schemes.items():
            stats = [padding_stats(lengths[s], batches) for s in sides]
            real = sum(st["real"] for st in stats)
            computed = len(enc) * T_fix * len(sides) if scheme == "fixed" else sum(st["computed"] for st in stats)
            linear = real if scheme.endswith("+unpad") else computed
            rows[scheme] = {"batches": len(batches), "real_tokens": real, "computed_tokens": computed,
                            "computed_over_real": computed / real, "linear_tokens": linear,
                            "linear_over_real": linear / real}

        def inputs(scheme: str, i: int) -> list[dict]:
            c = collate([enc[j] for j in schemes[scheme][i]], tok.pad_id)
            parts = [c["inputs"]] if "inputs" in c else [c["inputs1"], c["inputs2"]]
            return [pad_to(p, T_fix) for p in parts] if scheme == "fixed" else parts

        def stepper(scheme: str, parts: list[dict]) -> Callable[[], None]:
            unpad = scheme.endswith("+unpad")
            return train_step(models[unpad], opts[unpad], parts, cpu_autocast(args))

        for scheme in schemes:  # one untimed step each: first-call allocations
            stepper(scheme, inputs(scheme, 0))()
        spent, tokens = dict.fromkeys(schemes, 0.0), dict.fromkeys(schemes, 0)
        n = min(args.epoch_batches, len(random_batches))
        for i in range(n):  # batch i of each scheme's (shuffled) epoch, schemes interleaved
            for scheme in (list(schemes) if i % 2 == 0 else list(schemes)[::-1]):
                parts = inputs(scheme, i)
                step = stepper(scheme, parts)
                t0 = time.perf_counter()
                step()
                spent[scheme] += time.perf_counter() - t0
                tokens[scheme] += sum(p["input_ids"].numel() for p in parts)
        for scheme, row in rows.items():  # seconds per computed token of the sample x the epoch's
            row.update(timed_batches=n, epoch_s_est=spent[scheme] / tokens[scheme] * row["computed_tokens"])
        kind = "bi-encoder" if len(sides) == 2 else "cross-encoder" if task != "sst" else "single"
        out[task] = {"examples": len(enc), "pairs": kind, "schemes": rows}
    return {"model": "minbert-sdpa (+unpad: with unpad=True), train mode", "batch_size": B, "fixed_length": T_fix, "tasks": out,
            "wall_time_note": f"wall time measured on the first {args.epoch_batches} batches of each scheme's "
                              "epoch and scaled by computed tokens (extrapolated, not a full epoch)"}


# ----------------------------------------------------------------------------- GPU mode

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' datasheets; the first match wins.
PEAK_BF16_TFLOPS = [("H100 PCIe", 756), ("H100 NVL", 835), ("GH200", 989), ("H200", 989),
                    ("H100", 989), ("A100", 312), ("L40S", 362), ("L4", 121)]


def peak_tflops(device_name: str, override: float | None) -> float | None:
    return override or next((v for k, v in PEAK_BF16_TFLOPS if k in device_name), None)


def train_flops_per_seq(model: BertModel, T: int) -> float:
    """Training FLOPs of one sequence of T real tokens: 6 N T + 12 L T^2 C (efficiency.model_flops)."""
    return efficiency.model_flops(model, [T])


def device_sync(device: torch.device):
    """A function that waits for the device's queued work: timings must not stop before the kernels do."""
    if device.type == "cuda":
        return torch.cuda.synchronize
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def allocated(device: torch.device) -> int:
    """Bytes the device's allocator holds now (0 on the CPU, which has no device allocator)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    if device.type == "mps":
        return torch.mps.current_allocated_memory()
    return 0


def gpu_bench(cfg: BertConfig, device: torch.device, batch_size: int, seq_len: int, reps: int,
              steps: int, compile_: bool = False, peak: float | None = None, warmup: int = 2) -> dict:
    """Training steps in bf16 autocast with TF32 matmuls and fused AdamW, random weights."""
    cuda = device.type == "cuda"
    sync = device_sync(device)
    torch.manual_seed(0)
    base = BertModel(cfg, attn_implementation="sdpa")
    models = {"minbert-sdpa": base}
    if transformers is not None:
        models["transformers-sdpa"] = hf_copy(base, "sdpa")
    batch = synthetic_batch(batch_size, seq_len, cfg.vocab_size, device)
    old_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    fns, memory = {}, {}
    try:
        for name, m in models.items():
            before = allocated(device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            m.to(device).train()
            step = train_step(torch.compile(m) if compile_ else m, torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True),
                              [batch], lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            for _ in range(warmup):  # compiles, allocates the optimizer state
                step()
            sync()
            # weights + grads + AdamW state + peak activations of this contender alone (CUDA keeps the peak;
            # MPS only what is held after the warm-up steps, a lower bound)
            memory[name] = ((torch.cuda.max_memory_allocated() if cuda else allocated(device)) - before) / 2**30 \
                if device.type in ("cuda", "mps") else None
            fns[name] = lambda step=step: [step() for _ in range(steps)]
        times = interleaved(fns, reps, 0, sync)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32
    name = torch.cuda.get_device_name(device) if cuda else ("Apple MPS" if device.type == "mps" else str(device))
    peak, flops = peak_tflops(name, peak), train_flops_per_seq(base, seq_len)
    res = {}
    for n, t in times.items():
        s = res[n] = summary(t, batch_size * steps)
        s.update(tflops=s["seq_per_s"] * flops / 1e12, peak_mem_gib=memory[n])
        s["mfu"] = s["tflops"] / peak if peak else None
    ratios = ({"minbert-sdpa/transformers-sdpa": res["minbert-sdpa"]["seq_per_s"] / res["transformers-sdpa"]["seq_per_s"]}
              if "transformers-sdpa" in res else {})
    return {"device": name, "B": batch_size, "T": seq_len, "steps_per_rep": steps, "compile": compile_,
            "peak_tflops": peak, "flops_per_seq": flops, "results": res, "ratios": ratios}


# ----------------------------------------------------------------------------- memory per batch size

STATE_BYTES = 16   # per parameter in training: the fp32 weight, its gradient and AdamW's two moments
# What a CUDA card holds beyond the tensors: the CUDA context, cuBLAS/cuDNN workspaces and the caching
# allocator's fragmentation. An assumption for the estimates (not measured here): about 1.5 GiB.
CUDA_RESERVE_GIB = 1.5


def memory_model(name: str) -> BertModel:
    """The trainer's runtime switches (sdpa, unpad) on a checkpoint, 'tiny', or 'bert-base' (random weights)."""
    if name == "bert-base":
        torch.manual_seed(0)
        base = BertModel(BertConfig())  # BertConfig's defaults are bert-base's shape
    else:
        base = load_model(name, "sdpa")
    return variant(base, attn_implementation="sdpa", unpad=True)


@contextlib.contextmanager
def saved_for_backward(model: torch.nn.Module, out: dict):
    """Count the bytes autograd keeps for the backward pass (each storage once: views share it);
    the model's own parameters are not counted (they are resident anyway)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    out["bytes"] = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in seen and s.data_ptr() not in params:
            seen.add(s.data_ptr())
            out["bytes"] += s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def step_memory(model: BertModel, B: int, T: int, device: torch.device, amp: str) -> dict:
    """Memory of one training step at batch B of T-token sequences (no padding: the worst case
    of --max-length T), after one warm-up step that allocates the optimizer state."""
    cuda = device.type == "cuda"
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    batch = synthetic_batch(B, T, model.config.vocab_size, device)
    train_step(model, opt, [batch], autocast)()
    saved: dict = {}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    mark = efficiency.memory_mark()
    with saved_for_backward(model, saved):
        train_step(model, opt, [batch], autocast)()
    rss = efficiency.memory_since(mark)
    params = sum(p.numel() for p in model.parameters())
    row = {"B": B, "T": T, "amp": amp, "device": str(device), "params": params,
           "state_mb": params * STATE_BYTES / 2**20, "saved_mb": saved["bytes"] / 2**20,
           "step_added_mb": None if cuda else rss["mem_added_mb"], "rss_peak_mb": rss["rss_peak_mb"],
           "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}
    model.zero_grad(set_to_none=True)
    return row


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def card_estimate(rows: list[dict], card_gib: float, recipe_batch: int) -> dict:
    """The batch that fits a CUDA card of card_gib, estimated from CPU rows of one model and amp:
        peak(B) = 12 P (fp32 weights + AdamW moments, resident between steps)
                  + a + b B (what one step adds, fitted to the measured rows: gradients, activations, temporaries)
                  + CUDA_RESERVE_GIB
    and the --accumulate N that keeps the recipe's batch: the smallest N dividing it with batch/N <= the fit."""
    key = "cuda_peak_mb" if rows[0]["cuda_peak_mb"] is not None else "step_added_mb"
    a, b = linear_fit([r["B"] for r in rows], [r[key] for r in rows])
    fixed = 0.0 if key == "cuda_peak_mb" else (STATE_BYTES - 4) * rows[0]["params"] / 2**20
    free = card_gib * 1024 - CUDA_RESERVE_GIB * 1024 - fixed - a
    fit = max(0, int(free // b)) if b > 0 else None
    n = next((n for n in range(1, recipe_batch + 1) if recipe_batch % n == 0 and fit and recipe_batch // n <= fit), None)
    return {"card_gib": card_gib, "a_mb": a, "b_mb_per_seq": b, "fixed_mb": fixed, "from": key,
            "batch_fits": fit, "accumulate": n, "micro_batch": recipe_batch // n if n else None}


def memory_section(models: list[str], batch_sizes: list[int], T: int, amps: list[str], device: torch.device,
                   cards_gib: list[float], recipe_batch: int) -> dict:
    """Peak memory of one training step per model, amp and batch size, and the batch each card holds."""
    out = []
    for name in models:
        model = memory_model(name)
        for amp in amps:
            rows = []
            for B in batch_sizes:
                print(f"memory: {name} {amp} B={B} T={T} ...", flush=True)
                rows.append(step_memory(model, B, T, device, amp))
            est = [card_estimate(rows, g, recipe_batch) for g in cards_gib] if len(rows) > 1 else []
            out.append({"model": name, "amp": amp, "rows": rows, "cards": est})
        del model
    return {"device": str(device), "T": T, "recipe_batch": recipe_batch, "cuda_reserve_gib": CUDA_RESERVE_GIB,
            "results": out}
