"""How fast is minbert? Side by side with transformers' BertModel, in one process.

    python bench/run_benchmark.py                          # CPU sections, 2 threads (several minutes)
    python bench/run_benchmark.py --json bench.json        # also write the JSON record
    python bench/run_benchmark.py --sections train --profile 15   # + where the time goes (torch.profiler)
    python bench/run_benchmark.py --sections gpu --compile # GPU mode (needs CUDA)
    python bench/run_benchmark.py --sections sst-epoch     # the timed SST epoch, graded vs fused AdamW
    python bench/run_benchmark.py --sections memory        # peak memory of a training step per batch size

Sections (--sections):
  train  one encoder training step (forward + backward + AdamW step) on the checkpoint (default
         the embedded all-MiniLM-L6-v2): minbert manual / sdpa / sdpa-unpad (padded tokens skipped
         in the token-wise layers) vs transformers eager / sdpa
  infer  the same five models in eval mode under no_grad (sentence encoding)
  epoch  one training epoch of each task: real tokens vs tokens computed (exact), and wall time
         (sampled, extrapolated) with our length-bucketed batches, the course's plain random
         batches padded to the batch maximum, and padding to a fixed --max-length (128); the
         bucket and random batches also with minbert's unpadding (bucket+unpad, random+unpad)
  gpu    bert-base shape, bf16 autocast + TF32 + fused AdamW (+ --compile): seq/s, MFU, memory
  sst-epoch  (not in the default sections: minutes) one SST training epoch of
         training/run_multitask.py as a whole process, once per --epoch-adamw value: wall time,
         model GFLOP/s, fraction of the peak, maximum resident memory
  memory (not in the default sections: minutes) the peak memory of one training step per batch
         size (--memory-batch-sizes), at the trainer's max length, for --model and bert-base
         (random weights), with the trainer's sdpa + unpad; and from it the batch that fits a 16 GB
         and a 24 GB CUDA card, and the --accumulate that keeps the recipe's batch. CPU: the
         resident memory the step adds (VmHWM) and the bytes autograd saves for backward;
         --memory-device cuda: torch.cuda.max_memory_allocated. The card figures from a CPU run are
         estimates (benchmark.card_estimate gives the formula)

Efficiency (CPU sections): the matrix peak is measured in this run, at its start and its end, as
the rate of one 1024x384 . 384x1536 torch.mm at --threads (bf16 where the CPU has native bf16,
else fp32; the fp32 rate too), and the peak is the higher of the two. GFLOP/s columns count model
FLOPs on real tokens only, 6 N tokens + 12 L sum(T^2) C per training step (N: the encoder layers'
parameters), a third of it per inference; MFU = GFLOP/s / peak. Memory (Linux): the resident
memory a contender's warm-up adds at its peak (VmHWM - VmRSS before), and the high-water mark.

Fairness: the contenders share the weights (checked: their outputs agree), the batch, the thread
count and the optimizer (torch.optim.AdamW, fused); repetitions run in A B C D D C B A ... order
so that drift (other processes, clocks) hits all of them alike; we report median and min-max.
Without transformers installed only minbert is measured, and the output says so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from minbert import BertConfig, Tokenizer
from bench import benchmark, efficiency
from training.multitask.options import FULL
from bench.benchmark import (check_same_outputs, contenders, cpu_batches, epoch_section, gpu_bench, load_model,
                                model_section)

PAIRS, GOALS = benchmark.PAIRS, benchmark.GOALS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="train,infer,epoch,gpu", help="comma list of train, infer, epoch, gpu")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="checkpoint name or dir, or 'tiny' "
                   "(2 layers, random weights, the real vocabulary: smoke tests)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads, the same for every contender")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shapes", default="sst-bucket,sst-random,128", help="train/infer batches: sst-bucket "
                   "(the median-length batch of a bucketed SST epoch), sst-random (the same for plain "
                   "random batches), or an int T (random ids, T tokens each, no padding)")
    p.add_argument("--cpu-amp", choices=["none", "bf16"], default="none", help="train/infer/epoch: run every "
                   "contender under CPU bf16 autocast (fast on CPUs with AVX512-BF16 or AMX)")
    p.add_argument("--reps", type=int, default=10, help="timed repetitions per contender")
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions per contender first")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="train/infer: also print the N ops with the most self CPU time, per contender")
    p.add_argument("--data-dir", default=None, help="CS224N files (default $MINBERT_DATA_DIR, ../shared/data)")
    p.add_argument("--tasks", default="sst,quora,sts", help="tasks of the epoch section")
    p.add_argument("--max-length", type=int, default=128, help="truncation, and the fixed padding length")
    p.add_argument("--pair-mode", choices=["cross", "bi"], default="cross", help="epoch: quora/sts pairs "
                   "as one [CLS] a [SEP] b [SEP] sequence (cross, the training default) or two sequences")
    p.add_argument("--epoch-batches", type=int, default=8,
                   help="epoch: batches timed per scheme; the epoch's wall time is extrapolated from them")
    p.add_argument("--gpu-batch-size", type=int, default=128)
    p.add_argument("--gpu-seq-len", type=int, default=128)
    p.add_argument("--gpu-steps", type=int, default=10, help="training steps per timed GPU repetition")
    p.add_argument("--compile", action="store_true", help="gpu: torch.compile every contender")
    p.add_argument("--peak-tflops", type=float, default=None, help="gpu: the device's bf16 peak, for MFU")
    p.add_argument("--peak-reps", type=int, default=200, help="timed calls of the peak's matrix product")
    p.add_argument("--epoch-adamw", default="graded,fused", help="sst-epoch: the trainer's --adamw values, one "
                   "process each, in this order (graded: the course's per-parameter loop; fused: minbert.AdamW's fused path)")
    p.add_argument("--epoch-args", default="", help="sst-epoch: more trainer options, one string, e.g. "
                   "--epoch-args=\"--limit-train 2000 --amp none\" (the = lets it start with --)")
    p.add_argument("--epoch-repeats", type=int, default=1,
                   help="sst-epoch: run every process this many times, the order reversed every other time")
    p.add_argument("--memory-models", default=None, help="memory: comma list of checkpoints, 'tiny' or "
                   "'bert-base' (random weights, no download); default: --model and bert-base")
    p.add_argument("--memory-batch-sizes", default="1,8,16,32", help="memory: the batch sizes measured")
    p.add_argument("--memory-seq-len", type=int, default=FULL["max_length"],
                   help="memory: tokens per sequence, all real (default: the trainer's --max-length)")
    p.add_argument("--memory-amp", default="bf16,none", help="memory: comma list of bf16, fp16, none")
    p.add_argument("--memory-device", default="cpu", help="memory: cpu (measured resident memory) or cuda")
    p.add_argument("--memory-cards-gib", default="15,22.5", help="memory: usable GiB of the cards to estimate "
                   "for (15: a 16 GB T4/V100; 22.5: a 24 GB A10, the smallest of the 24 GB cards)")
    p.add_argument("--json", default=None, help="write the full record to this path")
    args = p.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    if set(args.sections) - {"train", "infer", "epoch", "gpu", "sst-epoch", "memory"}:
        p.error(f"--sections {','.join(args.sections)}: choose from train, infer, epoch, gpu, sst-epoch, memory")
    args.memory_models = (args.memory_models.split(",") if args.memory_models else [args.model, "bert-base"])
    try:
        args.memory_batch_sizes = [int(b) for b in args.memory_batch_sizes.split(",")]
        args.memory_cards_gib = [float(g) for g in args.memory_cards_gib.split(",")]
    except ValueError as e:
        p.error(f"--memory-batch-sizes / --memory-cards-gib: comma lists of numbers ({e})")
    args.memory_amp = args.memory_amp.split(",")
    if set(args.memory_amp) - {"bf16", "fp16", "none"} or min(args.memory_batch_sizes) < 1:
        p.error(f"--memory-amp {','.join(args.memory_amp)}: choose from bf16, fp16, none; batch sizes >= 1")
    args.epoch_adamw = [a for a in args.epoch_adamw.split(",") if a]
    if not args.epoch_adamw or set(args.epoch_adamw) - {"graded", "fused"}:
        p.error(f"--epoch-adamw {','.join(args.epoch_adamw)}: a comma list of graded, fused")
    try:
        extra = {a.split("=")[0] for a in shlex.split(args.epoch_args)}
    except ValueError as e:  # e.g. an unclosed quote
        p.error(f"--epoch-args {args.epoch_args!r}: {e}")
    if {"--device", "--adamw", "--out-dir", "--predictions-dir"} & extra:
        p.error(f"--epoch-args {args.epoch_args!r}: the benchmark sets --device cpu, --adamw (use --epoch-adamw), "
                "--out-dir and --predictions-dir itself; leave them out")
    for name in ("threads", "batch_size", "reps", "epoch_batches", "gpu_batch_size", "gpu_seq_len", "gpu_steps",
                 "peak_reps", "epoch_repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


# ----------------------------------------------------------------------------- report

def mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def print_peak(peak: dict) -> None:
    print(f"\n== matrix peak (torch.mm 1024x384 . 384x1536, median of {peak['start']['fp32']['reps']} calls) ==")
    for when in ("start", "end"):
        print(f"{when:5s}  " + "  ".join(f"{d} {r['gflops']:7.1f} GFLOP/s" for d, r in peak[when].items()))
    print(f"peak used for MFU: {peak['dtype']} {peak['gflops']:.1f} GFLOP/s (the higher of start and end); "
          f"fp32 {peak['fp32_gflops']:.1f}")


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n== {title} ==\n(GFLOP/s: model FLOPs on real tokens; MFU: of the peak; +MB: resident memory the "
          f"warm-up added; peak MB: resident high-water mark)\n{'shape':11s} {'B':>3s} {'T':>4s} {'pad':>4s}  "
          f"{'contender':19s} {'seq/s':>8s} {'median ms':>10s} {'min-max ms':>15s} {'cpu ms':>8s} {'GFLOP/s':>8s} "
          f"{'MFU':>6s} {'+MB':>6s} {'peak MB':>7s}  vs transformers")
    for row in rows:
        for n, s in row["results"].items():
            ratio = row["ratios"].get(f"{n}/{PAIRS.get(n)}")
            print(f"{row['shape']:11s} {row['B']:3d} {row['T']:4d} {row['padding']:4.0%}  {n:19s} "
                  f"{s['seq_per_s']:8.1f} {s['median_s'] * 1e3:10.1f} {s['min_s'] * 1e3:7.1f}-{s['max_s'] * 1e3:<7.1f} "
                  f"{s['cpu_median_s'] * 1e3:8.1f} {s['gflops']:8.1f} {s['mfu']:6.1%} {mb(s['mem_added_mb']):>6s} "
                  f"{mb(s['rss_peak_mb']):>7s}  " + (f"{ratio:.3f}x {PAIRS[n].split('-')[1]}" if ratio else ""))


def print_sst_epoch(ep: dict, peak: dict) -> None:
    w = ep["work"]
    print(f"\n== sst-epoch: one SST training epoch of run_multitask.py, whole processes ==\n({ep['note']})\n"
          f"{w['examples']} examples, {w['real_tokens']} real tokens, sum T^2 {w['sum_T2']}, N {w['nonembedding_params']:,}"
          f", L {w['layers']}, C {w['hidden']}: {w['model_flops'] / 1e9:.2f} GFLOP"
          f" (6 N tokens + 12 L sum(T^2) C); peak {peak['dtype']} {peak['gflops']:.1f}, fp32 {peak['fp32_gflops']:.1f} "
          f"GFLOP/s; --epoch-args {ep['epoch_args']!r}\n"
          f"{'adamw':7s} {'repeat':>6s} {'wall s':>8s} {'GFLOP/s':>8s} {'of peak':>8s} {'of fp32':>8s} {'max RSS MB':>10s}")
    for r in ep["runs"]:
        print(f"{r['adamw']:7s} {r['repeat'] + 1:6d} {r['wall_s']:8.1f} {r['gflops']:8.2f} {r['mfu']:8.1%} "
              f"{r['mfu_fp32']:8.1%} {r['max_rss_mb']:10.0f}")


def print_epoch(ep: dict) -> None:
    print(f"\n== one training epoch, batch {ep['batch_size']}: {ep['wall_time_note']} ==\n"
          f"(computed = the padded (B, T) grid; linear = tokens through the Linear layers)\n"
          f"{'task':6s} {'pairs':13s} {'scheme':12s} {'batches':>7s} {'real tok':>10s} {'computed':>10s} "
          f"{'comp/real':>9s} {'linear/real':>11s} {'epoch s (est)':>13s}")
    for task, t in ep["tasks"].items():
        for scheme, r in t["schemes"].items():
            print(f"{task:6s} {t['pairs']:13s} {scheme:12s} {r['batches']:7d} {r['real_tokens']:10d} "
                  f"{r['computed_tokens']:10d} {r['computed_over_real']:9.3f} {r['linear_over_real']:11.3f} "
                  f"{r['epoch_s_est']:13.1f}")


def print_gpu(g: dict) -> None:
    print(f"\n== GPU training step, bert-base shape, bf16 autocast + TF32 + fused AdamW"
          f"{' + compile' if g['compile'] else ''}: {g['device']}, B={g['B']}, T={g['T']}, "
          f"peak {g['peak_tflops']} TFLOP/s ==")
    for n, s in g["results"].items():
        mfu = f"{s['mfu']:.1%}" if s["mfu"] is not None else "n/a (pass --peak-tflops)"
        print(f"{n:19s} {s['seq_per_s']:9.1f} seq/s  {s['tflops']:6.1f} TFLOP/s  MFU {mfu}  "
              f"peak mem {s['peak_mem_gib']:.2f} GiB")
    for k, v in g["ratios"].items():
        print(f"{k}: {v:.3f}x")


def print_memory(m: dict) -> None:
    print(f"\n== memory of one training step (forward + backward + AdamW), {m['device']}, T={m['T']} (no padding), "
          f"sdpa + unpad ==\n(state: 16 bytes/parameter, fp32 weights + grads + AdamW moments; saved: bytes autograd "
          f"keeps for backward; step +MB: resident memory the step adds at its peak; cuda MB: max_memory_allocated)\n"
          f"{'model':18s} {'amp':4s} {'B':>3s} {'params':>11s} {'state MB':>9s} {'saved MB':>9s} {'step +MB':>9s} "
          f"{'peak RSS':>9s} {'cuda MB':>8s}")
    for r in m["results"]:
        for row in r["rows"]:
            print(f"{r['model'][:18]:18s} {r['amp']:4s} {row['B']:3d} {row['params']:11,d} {row['state_mb']:9.0f} "
                  f"{row['saved_mb']:9.0f} {mb(row['step_added_mb']):>9s} {mb(row['rss_peak_mb']):>9s} "
                  f"{mb(row['cuda_peak_mb']):>8s}")
    est = "measured peaks" if m["device"].startswith("cuda") else "ESTIMATES from these CPU measurements"
    print(f"\nbatch that fits a CUDA card ({est}): peak(B) = 12 P + a + b B + {m['cuda_reserve_gib']} GiB reserve "
          f"(12 P: weights + AdamW moments; a + b B: least-squares fit of the step's memory over B)")
    for r in m["results"]:
        for c in r["cards"]:
            keep = (f"--batch-size {c['micro_batch']} --accumulate {c['accumulate']}" if c["accumulate"]
                    else "does not fit")
            print(f"{r['model'][:18]:18s} {r['amp']:4s} {c['card_gib']:5.1f} GiB: a {c['a_mb']:7.0f} MB, "
                  f"b {c['b_mb_per_seq']:6.1f} MB/seq, 12P {c['fixed_mb']:6.0f} MB -> batch {c['batch_fits']}; "
                  f"recipe batch {m['recipe_batch']}: {keep}")


def check_targets(rec: dict) -> list[dict]:
    """The goals of the performance issue, checked against this run's numbers."""
    out = [{"what": f"{sec} {row['shape']} {k}", "value": v, "goal": f">= {GOALS[k]}", "met": v >= GOALS[k]}
           for sec in ("train", "infer") for row in rec.get(sec, []) for k, v in row["ratios"].items()]
    for task, t in rec.get("epoch", {}).get("tasks", {}).items():
        v = t["schemes"]["bucket"]["computed_over_real"]
        out.append({"what": f"epoch {task} bucket computed/real tokens", "value": v, "goal": "<= 1.05", "met": v <= 1.05})
    for n, s in rec.get("gpu", {}).get("results", {}).items():
        if n == "minbert-sdpa" and s["mfu"] is not None:
            out.append({"what": "gpu minbert-sdpa MFU", "value": s["mfu"], "goal": ">= 0.45", "met": s["mfu"] >= 0.45})
    for k, v in rec.get("gpu", {}).get("ratios", {}).items():
        out.append({"what": f"gpu {k}", "value": v, "goal": ">= 1.2", "met": v >= 1.2})
    if rec.get("peak", {}).get("amx"):  # issue 15's goal on a CPU with AMX; without, it is relative to a baseline
        for r in rec.get("sst-epoch", {}).get("runs", []):
            out.append({"what": f"sst-epoch --adamw {r['adamw']} fraction of the peak", "value": r["mfu"],
                        "goal": ">= 0.25", "met": r["mfu"] >= 0.25})
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    notes = [] if benchmark.transformers else ["transformers is not installed: minbert alone, no ratios"]
    rec = {"meta": {"argv": sys.argv[1:] if argv is None else list(argv), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "torch": torch.__version__, "transformers": getattr(benchmark.transformers, "__version__", None),
                    "python": platform.python_version(), "platform": platform.platform(),
                    "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "model": args.model,
                    "batch_size": args.batch_size, "reps": args.reps, "warmup": args.warmup,
                    "cpu_amp": args.cpu_amp,
                    "optimizer": "torch.optim.AdamW(fused=True), the same for every contender",
                    "loss": "mean of last_hidden_state squared", "notes": notes}}
    print(f"minbert benchmark: torch {torch.__version__}, transformers {rec['meta']['transformers']}, "
          f"{args.threads} threads, model {args.model}, batch {args.batch_size}, CPU autocast {args.cpu_amp}, "
          f"median of {args.reps} interleaved reps after {args.warmup} warm-up")
    cpu_rates = {"train", "infer", "sst-epoch"} & set(args.sections)
    if cpu_rates:  # the peak at the start; again at the end, as load on the machine can only lower it
        print("measuring the matrix peak ...")
        start_peak = efficiency.matmul_peaks(args.peak_reps)
    if {"train", "infer", "epoch"} & set(args.sections):  # the GPU section needs no checkpoint nor tokenizer
        tok = Tokenizer.from_pretrained()
        models = contenders(load_model(args.model, "manual"))
        batches = cpu_batches(args, tok, models["minbert-manual"].config.vocab_size, notes)
        if batches and benchmark.transformers is not None:
            rec["meta"]["max_abs_diff_vs_minbert_manual"] = check_same_outputs(models, next(iter(batches.values())))
        for sec in ("train", "infer"):
            if sec in args.sections:
                print(f"{sec} section ...")
                rec[sec] = model_section(sec, models, batches, args)
        if "epoch" in args.sections:
            rec["epoch"] = epoch_section(args, tok, models["minbert-sdpa"], notes)
            print_epoch(rec["epoch"])
    if "sst-epoch" in args.sections:
        rec["sst-epoch"] = efficiency.sst_epoch_section(args)
    if cpu_rates:
        rec["peak"] = efficiency.combine_peaks(start_peak, efficiency.matmul_peaks(args.peak_reps))
        rec["peak"]["amx"] = torch.cpu._is_amx_tile_supported()
        efficiency.add_rates(rec, rec["peak"])
        print_peak(rec["peak"])
        for sec, title in (("train", "training step: forward + backward + AdamW (CPU)"),
                           ("infer", "inference: eval + no_grad (CPU)")):
            if sec in rec:
                print_rows(title, rec[sec])
        if "sst-epoch" in rec:
            print_sst_epoch(rec["sst-epoch"], rec["peak"])
    if "memory" in args.sections:
        rec["memory"] = benchmark.memory_section(args.memory_models, args.memory_batch_sizes, args.memory_seq_len,
                                                 args.memory_amp, torch.device(args.memory_device),
                                                 args.memory_cards_gib, FULL["batch_size"])
        print_memory(rec["memory"])
    rec["meta"]["process_peak_rss_mb"] = efficiency.process_peak_mb()
    if "gpu" in args.sections:
        if torch.cuda.is_available():
            rec["gpu"] = gpu_bench(BertConfig(), torch.device("cuda"), args.gpu_batch_size, args.gpu_seq_len,
                                   args.reps, args.gpu_steps, args.compile, args.peak_tflops, args.warmup)
            print_gpu(rec["gpu"])
        else:
            rec["gpu"] = {"skipped": "no CUDA device"}
            print("\n== GPU: skipped, no CUDA device ==")
    rec["targets"] = check_targets(rec)
    print("\n== targets ==" if rec["targets"] else "")
    for t in rec["targets"]:
        print(f"{'met ' if t['met'] else 'MISS'}  {t['what']}: {t['value']:.3f} (goal {t['goal']})")
    for n in notes:
        print(f"note: {n}")
    if args.json:
        Path(args.json).write_text(json.dumps(rec, indent=1))
        print(f"wrote {args.json}")
    return rec


if __name__ == "__main__":
    main()
