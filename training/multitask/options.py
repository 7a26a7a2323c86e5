"""The trainers' command-line options (run_multitask.py's, and the shared ones the other run_*.py scripts
add with add_shared), and their checks.

Every option is checked here, before any file is read or written: a bad value exits (status 2) with
argparse's usage line and one message naming the option, what is wrong, and what to pass instead.
"""
from __future__ import annotations

import argparse
import math

import torch

from training.multitask import splits, tasks

# Presets fill in every option the user did not give. "full" is the default.
FULL = dict(epochs=3, lr=1e-4, layer_decay=0.9, batch_size=32, max_length=128, limit_train=None, limit_eval=None,
            time_budget=None, amp="auto", task_layers=0, ema=0.0)
PRESETS = {"full": FULL, "quick": dict(FULL, epochs=1, max_length=64, limit_train=800, limit_eval=300),
           # the best single run measured on dev at full size (docs/RESULTS.md section 4): a task-specific top
           # layer and the EMA of the weights, together +0.0047 over "full" on the seed it was chosen on, but
           # 0.7588 +- 0.0022 on three fresh seeds: +0.0011, within the seed spread
           "best": dict(FULL, task_layers=1, ema=0.999)}

# Options that may change between a run and its --resume; any other difference is refused.
RUNTIME_OPTIONS = {"device", "threads", "time_budget", "log_every", "save_every", "resume", "overwrite", "out_dir",
                   "predictions_dir", "data_dir", "amp", "on_nonfinite", "max_skips", "adamw", "profile"}


def task_values(text: str, cast=float) -> dict[str, float]:
    """"sst=2,quora=1" -> {"sst": 2.0, "quora": 1.0}"""
    out = {}
    for part in filter(None, text.split(",")):
        name, sep, value = part.partition("=")
        if not sep or name not in list(tasks.TASKS):
            raise argparse.ArgumentTypeError(f"expected task=value with task in {list(tasks.TASKS)}, got {part!r}")
        try:
            out[name] = cast(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: {value!r} is not a valid {cast.__name__}") from None
    return out


# Options several commands share (run_multitask, run_classifier, run_gan), each defined once.
SHARED = {
    "--task": dict(choices=sorted(splits.NUM_CLASSES), default="sst", help="sst: 5 classes; cfimdb: 2 classes"),
    "--data-dir": dict(help="folder with the course CSV files (default: $MINBERT_DATA_DIR, then ../shared/data)"),
    "--model": dict(default="all-MiniLM-L6-v2", help="checkpoint: embedded name, local dir or hub name"),
    "--limit-train": dict(type=int, help="use a fixed random sample of at most N training examples (per task)"),
    "--limit-eval": dict(type=int, help="evaluate/predict a fixed random sample of at most N examples per split "
                                        "(partial files!)"),
    "--max-length": dict(type=int, help="truncate sequences to this many tokens"),
    "--skip-bad-rows": dict(action="store_true", help="skip and count malformed data rows instead of stopping"),
    # The fast paths are the defaults where their files are present; the student release leaves them out
    # (minbert.fast_paths_available()), and there the defaults are the teaching path.
    "--attn": dict(choices=["manual", "sdpa"],
                   default="sdpa" if (_FAST := __import__("minbert").fast_paths_available()) else "manual",
                   help="attention implementation (same math): sdpa, PyTorch's fused kernel (minbert/fast.py), or "
                        "manual, the explicit math; default %(default)s (sdpa where the fast paths are present, "
                        "manual in the student release, which has no fast.py)"),
    "--unpad": dict(action=argparse.BooleanOptionalAction, default=_FAST,
                    help="run the token-wise layers on the real tokens only (same values on real tokens, no "
                         "compute on padding; minbert/fast.py); --no-unpad computes the whole padded batch, as "
                         "transformers does. Default: --unpad where the fast paths are present, --no-unpad in the "
                         "student release, which has no fast.py"),
    "--warmup": dict(type=float, default=0.06, help="fraction of steps with linear LR warm-up (then linear decay)"),
    "--clip": dict(type=float, default=1.0, help="gradient norm clipping (0: off)"),
    "--adamw": dict(choices=["graded", "fused"], default="fused" if _FAST else "graded",
                    help="fused: minbert.AdamW through torch's fused kernel with the coefficients rewritten to the "
                         "course's update (minbert/fused_adamw.py; equal to rounding; a 4-5x faster optimizer step, "
                         "docs/results/optimizer-bench.txt); graded: the per-parameter update as students write it. "
                         "Default %(default)s (fused where the fast paths are present, graded in the student "
                         "release, which has no fused_adamw.py)"),
    "--device": dict(default="cuda" if torch.cuda.is_available() else "cpu",
                     help="cpu, cuda, cuda:1 ..., or mps (Apple GPUs; fp32 by default)"),
    "--threads": dict(type=int, default=0, help="CPU threads for torch (0: torch's default)"),
    "--amp": dict(choices=["auto", "none", "bf16", "fp16"],
                  help="mixed precision (weights and optimizer stay fp32). bf16: bf16 autocast, where the device "
                       "multiplies bf16 natively (CUDA from Ampere on, a CPU with AVX512-BF16/AMX: training steps "
                       "2.2-2.4x faster than fp32 on the 2-core AMD EPYC, docs/PERFORMANCE.md). fp16: fp16 autocast "
                       "with dynamic loss scaling (torch.amp.GradScaler), for CUDA GPUs without native bf16 (T4, "
                       "V100); on a CPU it is emulated and several times slower than fp32, for tests only. auto: bf16 "
                       "where it is native, fp16 on other CUDA GPUs, none (fp32) elsewhere, Apple MPS included "
                       "(docs/USAGE.md, section on --amp). run_multitask, run_distill and run_mlm default to auto, "
                       "run_classifier and run_gan to none"),
    "--accumulate": dict(type=int, default=1, metavar="N",
                         help="N micro-batches of --batch-size per optimizer step (gradient accumulation): the "
                              "recipe of batch B on a card that holds only B/N, e.g. --batch-size 8 --accumulate 4 "
                              "for batch 32. Steps, epochs and the LR schedule count optimizer steps; with PCGrad "
                              "each task's gradient is summed over the N micro-batches and projected once; under "
                              "torchrun the gradients are all-reduced once per optimizer step"),
}


def add_shared(group, *flags: str, **defaults) -> None:
    """Add SHARED options by flag; defaults (e.g. max_length=128) replace their defaults."""
    for flag in flags:
        key = flag[2:].replace("-", "_")
        group.add_argument(flag, **{**SHARED[flag], **({"default": defaults[key]} if key in defaults else {})})


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and model")
    add_shared(g, "--data-dir", "--model")
    g.add_argument("--preset", choices=PRESETS, default="full",
                   help="full (default): about 33 min on a 2-core AMD EPYC; best: full + --task-layers 1 "
                        "--ema 0.999, the best single run measured (dev 0.7588 +- 0.0022 on three fresh seeds against "
                        "full's 0.7577, docs/RESULTS.md section 4), a little slower (a "
                        "top layer per task, a second dev pass per epoch); quick: minutes, subsets, a smoke run. "
                        "Options you give override the preset's")
    g.add_argument("--tasks", default="sst,quora,sts",
                   help="comma-separated tasks of training/multitask/tasks.py's table, e.g. sst (single-task runs)")
    g.add_argument("--train-fraction", type=float, default=1.0,
                   help="use this random fraction of each training set (keeps the tasks' proportions)")
    add_shared(g, "--limit-train", "--limit-eval", "--max-length", "--skip-bad-rows")
    g = p.add_argument_group("heads")
    g.add_argument("--pair-mode", choices=["cross", "bi"], default="cross",
                   help="quora: cross-encoder on [CLS] a [SEP] b [SEP], or bi-encoder on [u;v;|u-v|;u*v]")
    g.add_argument("--sts-mode", choices=["cross", "cosine", "regressor"], default="cosine",
                   help="sts: Siamese cosine similarity of mean-pooled vectors (what all-MiniLM-L6-v2 was "
                        "trained for; best in docs/RESULTS.md), cross-encoder, or feature regressor")
    g.add_argument("--sentiment-pooling", choices=["cls", "mean"], default="cls", help="sst head input")
    g.add_argument("--dropout", type=float, default=0.1, help="dropout in the task heads")
    g.add_argument("--task-layers", type=int, metavar="N",
                   help="task-specific top layers: the lower L - N encoder layers are shared, each task runs its "
                        "own copy of the top N, all starting from the pretrained ones (STS keeps the encoder's own, "
                        "which run_export.py writes). Cost: N layers more per other task, for all-MiniLM-L6-v2 "
                        "1,774,464 parameters per layer, so N=1 adds 3.5M and N=2 7.1M to its 22.7M (and their "
                        "AdamW state); a batch still runs L layers. 0 (presets full and quick): one shared encoder; "
                        "preset best: 1")
    add_shared(g, "--attn", "--unpad")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="multitask epochs (an epoch = as many steps as all tasks have batches)")
    g.add_argument("--lr", type=float, help="peak learning rate of the top layer and the heads")
    g.add_argument("--layer-decay", type=float, help="layer-wise LR decay: layer l gets lr * decay^(L-l)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decoupled decay (not on LayerNorm/bias)")
    add_shared(g, "--warmup", "--clip", "--adamw")
    g.add_argument("--batch-size", type=int, help="examples per batch, every task (per process under torchrun; "
                                                  "per micro-batch with --accumulate)")
    add_shared(g, "--accumulate")
    g.add_argument("--task-batch-size", type=lambda s: task_values(s, int), default={}, help="per task, e.g. quora=64")
    g.add_argument("--loss-weights", type=task_values, default={}, help="per task loss weights, e.g. sts=2")
    g.add_argument("--sts-loss", choices=list(tasks.TASKS["sts"].losses), default="mse",
                   help="sts training loss: mse on the 0..5 scores, or cosent (Su 2022: a ranking loss over every "
                        "two pairs of a batch whose gold scores differ, log(1 + sum exp(20 (s_j - s_i))) on the "
                        "head's score / 5; only the order counts, as for Pearson); no extra compute")
    g.add_argument("--quora-mnrl", type=float, default=0.0, metavar="WEIGHT",
                   help="add WEIGHT x a multiple-negatives ranking loss to quora's (Henderson et al. 2017): the "
                        "mean-pooled vector of each duplicate's first question must be nearer (20 x cosine) to its "
                        "second question than to the batch's other duplicates' (batches with fewer than 2 "
                        "duplicates add 0); trains the sentence vectors the cosine sts head uses. Costs an extra "
                        "encoder pass over the duplicates' questions on their own, and their encodings in memory "
                        "(docs/results/quality/mnrl-step-cost.txt). 0: off")
    g.add_argument("--schedule", choices=["proportional", "round_robin", "sequential"], default="proportional",
                   help="which task each step trains: sampled ~ |D|^alpha, cycled, or one task after another")
    g.add_argument("--alpha", type=float, default=0.75, help="exponent of the proportional schedule (BAM!: 0.75)")
    g.add_argument("--pcgrad", action="store_true", help="each step: one batch per task, PCGrad-projected gradients")
    g.add_argument("--extra-epochs", type=lambda s: task_values(s, int), default={},
                   help="single-task epochs after multitask training, e.g. sst=1 (sequential fine-tuning)")
    g.add_argument("--augment-symmetric", action="store_true", help="pair tasks: also train on (b, a) for every (a, b)")
    g.add_argument("--freeze", default="none",
                   help="none | encoder (the course's 'pretrain' option) | embeddings | lower:N")
    g.add_argument("--freeze-head", default="", help="comma-separated task heads to keep fixed")
    g = p.add_argument_group("regularization")
    g.add_argument("--ema", type=float, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999; 0: off, as in presets full and "
                        "quick; preset best: 0.999) with a warm-up, "
                        "min(DECAY, (1+n)/(10+n)) at step n (training/engine/ema.py): dev scores, best/, the prediction "
                        "files and run_predict/run_export use the averaged weights. Costs an fp32 copy of the "
                        "weights, an update per step, and one extra dev pass per epoch: the raw weights' scores, "
                        "logged as raw_sst, raw_quora, raw_sts, raw_overall. Fixed for a run (not changeable on --resume)")
    g.add_argument("--rdrop", type=float, default=0.0, metavar="ALPHA",
                   help="R-Drop (Liang et al. 2021; 0: off, e.g. 1): every training batch goes through the model "
                        "twice with two dropout masks (one forward of the batch stacked on itself), and the loss "
                        "is the mean of the two task losses + ALPHA * the divergence of the two outputs (training/"
                        "tasks.py: sst symmetric KL of the class distributions, quora symmetric KL of the "
                        "Bernoullis, sts squared difference; the paper's alpha is 2 * ALPHA). Needs dropout. "
                        "Costs a doubled batch per step: 1.88x the step time, measured on a loaded 2-core AMD EPYC "
                        "(docs/results/quality/rdrop-step-cost.txt). Fixed for a run (not changeable on --resume)")
    g = p.add_argument_group("run")
    add_shared(g, "--device", "--threads")
    add_shared(g, "--amp")  # no default here: the preset's (auto)
    g.add_argument("--seed", type=int, default=11711, help="same seed, same result on CPU")
    g.add_argument("--time-budget", type=float,
                   help="stop training after this many minutes, then evaluate and predict (default: no limit; "
                        "the progress bar shows the expected time)")
    g.add_argument("--out-dir", default="runs/multitask", help="checkpoints (best/, last/), options, metrics log")
    g.add_argument("--predictions-dir", default="predictions", help="where the six course output files go")
    g.add_argument("--log-every", type=int, default=50, help="steps between loss lines in the metrics log")
    g.add_argument("--profile", type=int, default=0, metavar="N",
                   help="profile N training steps after 20 warm-up steps (torch.profiler): print the time per "
                        "step and the ops that take it (training/engine/profiling.py), then go on")
    g = p.add_argument_group("reliability")
    g.add_argument("--save-every", type=int, default=500,
                   help="steps between training-state checkpoints in out_dir/last")
    g.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="start again in an --out-dir that holds an earlier run")
    g.add_argument("--on-nonfinite", choices=["auto", "skip", "stop"], default="auto",
                   help="a NaN/Inf loss or gradient: skip the step, or stop (auto: skip with --amp bf16 or fp16, "
                        "else stop). With fp16 an overflow of the loss-scaled gradients is the scaler's own skip "
                        "(the scale halves): counted and logged apart, never a failure")
    g.add_argument("--max-skips", type=int, default=20, help="with skipping: stop after this many skipped steps")
    return p


def problems(args) -> list[str]:
    """What is wrong with the (preset-completed) options; empty when all is well."""
    out = []
    bad = [t for t in args.tasks if t not in list(tasks.TASKS)]
    if bad or not args.tasks:
        out.append(f"--tasks: unknown task(s) {bad}; choose from {','.join(list(tasks.TASKS))}")
    if args.batch_size < 1 or any(b < 1 for b in args.task_batch_size.values()):
        out.append("batch sizes must be at least 1 (--batch-size, --task-batch-size)")
    for flag, value, ok, want in [
        ("--epochs", args.epochs, args.epochs >= 0, "0 or more"),
        ("--lr", args.lr, args.lr > 0, "a positive number, e.g. 1e-4"),
        ("--layer-decay", args.layer_decay, args.layer_decay > 0, "in (0, 1], 1 disables it"),
        ("--weight-decay", args.weight_decay, args.weight_decay >= 0, "0 or more"),
        ("--warmup", args.warmup, 0 <= args.warmup <= 1, "a fraction in [0, 1]"),
        ("--clip", args.clip, args.clip >= 0, "0 (off) or a positive norm"),
        ("--dropout", args.dropout, 0 <= args.dropout < 1, "in [0, 1)"),
        ("--task-layers", args.task_layers, args.task_layers >= 0, "0 (off) or a number of top layers"),
        ("--alpha", args.alpha, args.alpha >= 0, "0 or more"),
        ("--max-length", args.max_length, args.max_length >= 4, "at least 4 ([CLS] a [SEP] b [SEP])"),
        ("--limit-train", args.limit_train, args.limit_train is None or args.limit_train >= 1, "at least 1"),
        ("--limit-eval", args.limit_eval, args.limit_eval is None or args.limit_eval >= 1, "at least 1"),
        ("--train-fraction", args.train_fraction, 0.0 < args.train_fraction <= 1.0, "in (0, 1]"),
        ("--threads", args.threads, args.threads >= 0, "0 (torch's default) or more"),
        ("--time-budget", args.time_budget, args.time_budget is None or args.time_budget > 0, "positive minutes"),
        ("--log-every", args.log_every, args.log_every >= 1, "at least 1"),
        ("--profile", args.profile, args.profile >= 0, "0 (off) or a number of steps"),
        ("--save-every", args.save_every, args.save_every >= 1, "at least 1"),
        ("--max-skips", args.max_skips, args.max_skips >= 0, "0 or more"),
        ("--ema", args.ema, 0 <= args.ema < 1, "0 (off) or a decay in (0, 1), e.g. 0.999"),
        ("--rdrop", args.rdrop, args.rdrop >= 0, "0 (off) or a positive weight, e.g. 1"),
        ("--accumulate", args.accumulate, args.accumulate >= 1, "at least 1 (1: no accumulation)"),
    ]:
        if not ok:
            out.append(f"{flag} {value}: must be {want}")
    if not (math.isfinite(args.quora_mnrl) and args.quora_mnrl >= 0):
        out.append(f"--quora-mnrl {args.quora_mnrl}: must be a weight of 0 (off) or more, e.g. 0.5")
    elif args.quora_mnrl and "quora" not in args.tasks:
        out.append("--quora-mnrl is a loss on quora's duplicates: add quora to --tasks, or leave it out")
    if args.sts_loss != "mse" and "sts" not in args.tasks:
        out.append(f"--sts-loss {args.sts_loss} is the loss of sts: add sts to --tasks, or leave it out")
    if any(e < 0 for e in args.extra_epochs.values()):
        out.append("--extra-epochs: epochs must be 0 or more")
    if not (args.freeze in ("none", "encoder", "embeddings") or
            (args.freeze.startswith("lower:") and args.freeze[6:].isdigit())):
        out.append(f"--freeze {args.freeze!r}: expected none, encoder, embeddings or lower:N")
    bad = [t for t in filter(None, args.freeze_head.split(",")) if t not in list(tasks.TASKS)]
    if bad:
        out.append(f"--freeze-head: unknown task(s) {bad}; choose from {','.join(list(tasks.TASKS))}")
    out += device_problems(args.device) or amp_problems(args.amp, args.device)
    no_divergence = [t for t in args.tasks if t in tasks.TASKS and tasks.TASKS[t].divergence is None]
    if args.rdrop and no_divergence:
        out.append(f"--rdrop: task(s) {no_divergence} have no divergence in training/multitask/tasks.py's table; add one "
                   "(Task(divergence=...)) or leave out --rdrop")
    if args.pcgrad and len(args.tasks) < 2:
        out.append("--pcgrad needs at least two tasks")
    if args.resume and args.overwrite:
        out.append("--resume continues the run in --out-dir and --overwrite replaces it: pass one of them")
    return out


def cpu_has_bf16() -> bool:
    """True if this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX tiles). There, oneDNN's
    bf16 GEMMs run several times faster than fp32 ones (docs/PERFORMANCE.md); elsewhere bf16 is emulated."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def auto_amp(device: str) -> str:
    """What --amp auto picks on a (valid) device: bf16 where the device multiplies it natively, fp16 on
    the other CUDA GPUs (T4, V100: their bf16 is emulated, slower than fp16 with loss scaling), and none
    (fp32) elsewhere: a CPU without bf16 units, and Apple MPS, where fp32 is the recipe that was checked
    (--amp fp16 can be asked for there)."""
    d = torch.device(device)
    if d.type == "cuda":
        with torch.cuda.device(d):  # the run's own GPU, not the current one
            return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "bf16" if d.type == "cpu" and cpu_has_bf16() else "none"


def amp_problems(amp: str, device: str) -> list[str]:
    """What is wrong with --amp (after auto is resolved) on a valid --device."""
    kind = torch.device(device).type
    if amp == "bf16" and kind == "cpu" and not cpu_has_bf16():
        return ["--amp bf16 on CPU needs native bf16 matrix units (AVX512-BF16 or AMX), which this CPU lacks: "
                "emulated bf16 is slower than fp32. Leave out --amp, or use --device cuda"]
    if amp in ("bf16", "fp16") and kind not in ("cuda", "cpu", "mps"):
        return [f"--amp {amp} is for cuda, mps or cpu devices, not {device}"]
    return []


def device_problems(device: str) -> list[str]:
    try:
        d = torch.device(device)
    except (RuntimeError, ValueError):
        return [f"--device {device}: not a device name; use cpu, cuda or cuda:N"]
    if d.type == "cuda":
        if not torch.cuda.is_available():
            return [f"--device {device}: CUDA is not available on this machine; use --device cpu"]
        if d.index is not None and d.index >= torch.cuda.device_count():
            return [f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                    f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"]
    elif d.type == "mps":
        if not torch.backends.mps.is_available():
            return [f"--device {device}: MPS is not available on this machine; use --device cpu"]
    elif d.type != "cpu":
        return [f"--device {device}: {d.type} is not supported here; use cpu, cuda or cuda:N"]
    return []


def defaults() -> dict:
    """Every option's value when it is not given, under the default preset: what a checkpoint written before
    an option existed is taken to have used (checkpointing.check_resumable; --task-layers and --ema were
    plain options, 0 when not given, before preset best set them)."""
    given = {a.dest: a.default for a in build_parser()._actions if a.dest != "help"}
    return {k: FULL[k] if v is None and k in FULL else v for k, v in given.items()}  # "full" is the default preset


def parse_args(argv=None, description: str | None = None) -> argparse.Namespace:
    p = build_parser(description)
    args = p.parse_args(argv)
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.amp == "auto" and not device_problems(args.device):
        args.amp = auto_amp(args.device)
    found = problems(args)
    if found:
        p.error("; ".join(found))
    return args
