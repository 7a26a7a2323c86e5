"""Further masked-LM pre-training of the checkpoint on the tasks' own training sentences.

    python training/run_mlm.py --minutes 10 --out runs/mlm-ckpt        # 10 minutes of MLM, then save
    python training/run_mlm.py --steps 2000 --out runs/mlm-ckpt        # or a number of steps
    python training/run_multitask.py --model runs/mlm-ckpt             # fine-tune from it as usual
    python training/run_mlm.py --help

Reads the TRAINING files of SST, Quora and STS only (never dev or test: their text would leak into
the encoder), takes every distinct sentence (both sides of each pair), and trains the encoder with
BERT's masked-LM objective (training/methods/mlm.py: 15% of the tokens chosen; of those 80% [MASK], 10% a
random token, 10% unchanged; cross-entropy on the chosen ones) through the one training loop.
all-MiniLM-L6-v2 has no MLM head: the head's transform starts fresh, its decoder is the word
embeddings (tied). The --out folder is a plain checkpoint (config.json, model.safetensors with the
encoder only, the tokenizer files) that --model of every trainer loads, plus mlm.json: the options,
steps, minutes and the loss curve.

--minutes alone: the learning rate warms up, then stays constant (the number of steps is not known
in advance); with --steps N it decays linearly to 0 at step N. With both, whichever comes first ends
training (the schedule still follows --steps).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR

from data.batching import clamp_max_length, encode_examples
from data.datasets import DATASETS, DataError, all_files, find_data_dir, load_task
from minbert import AdamW, BertModel, CheckpointNotFound, Tokenizer
from training.engine import checkpointing
from training.multitask import splits
from training.engine.loop import Guard, Loop, Phase, Player, Precision, Report, fit, stop_on_sigterm
from training.methods.mlm import MaskedLM, mask_tokens, mlm_loss
from training.multitask.recipe import AMP_DTYPES, load_checkpoint
from training.engine.optim import param_groups, warmup_linear
from training.multitask.options import add_shared, amp_problems, auto_amp, device_problems
from training.engine.streams import TaskStream

SOURCES = ("sst", "quora", "sts")  # the multitask model's data sets; their training split only


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and model")
    add_shared(g, "--data-dir", "--model", "--max-length", "--skip-bad-rows", "--limit-train", max_length=128)
    g.add_argument("--out", type=Path, default=Path("runs/mlm-ckpt"),
                   help="the checkpoint folder to write (must be new or empty unless --overwrite)")
    g.add_argument("--overwrite", action="store_true", help="write into an --out folder that holds files")
    g = p.add_argument_group("how long (at least one)")
    g.add_argument("--minutes", type=float, help="train for this many minutes (a time budget), then save")
    g.add_argument("--steps", type=int, help="train this many steps (the LR decays to 0 at the last one)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=5e-5, help="peak learning rate of the encoder (and the tied decoder)")
    g.add_argument("--head-lr", type=float, default=1e-3,
                   help="peak learning rate of the head's fresh transform and bias (they start from random)")
    g.add_argument("--mask-rate", type=float, default=0.15, help="fraction of the tokens chosen for prediction")
    g.add_argument("--batch-size", type=int, default=32, help="sentences per step (per micro-batch with --accumulate)")
    add_shared(g, "--accumulate")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decoupled weight decay (not on LN/bias)")
    g.add_argument("--warmup-steps", type=int,
                   help="steps of linear LR warm-up from 0 (default: 100, or a tenth of --steps if that is fewer)")
    add_shared(g, "--clip", "--adamw")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=11711, help="initialisation of the head, batch order and the masks")
    add_shared(g, "--device", "--threads", "--attn", "--unpad")
    add_shared(g, "--amp", amp="auto")
    g.add_argument("--log-every", type=int, default=25, help="steps between points of the loss curve in mlm.json")
    args = p.parse_args(argv)
    if args.minutes is None and args.steps is None:
        p.error("say how long to train: --minutes M (e.g. 10) or --steps N (or both: whichever comes first)")
    problems = [f"{flag} {value}: must be {want}" for flag, value, ok, want in [
        ("--minutes", args.minutes, args.minutes is None or args.minutes > 0, "more than 0"),
        ("--steps", args.steps, args.steps is None or args.steps >= 1, "at least 1"),
        ("--lr", args.lr, args.lr > 0, "more than 0"),
        ("--head-lr", args.head_lr, args.head_lr > 0, "more than 0"),
        ("--mask-rate", args.mask_rate, 0 < args.mask_rate < 1, "between 0 and 1"),
        ("--batch-size", args.batch_size, args.batch_size >= 1, "at least 1"),
        ("--warmup-steps", args.warmup_steps, args.warmup_steps is None or args.warmup_steps >= 0, "0 or more"),
        ("--log-every", args.log_every, args.log_every >= 1, "at least 1"),
        ("--accumulate", args.accumulate, args.accumulate >= 1, "at least 1 (1: no accumulation)"),
    ] if not ok] + device_problems(args.device)
    if args.warmup_steps is None:
        args.warmup_steps = min(100, args.steps // 10) if args.steps else 100
    elif args.steps is not None and args.warmup_steps > args.steps:
        problems.append(f"--warmup-steps {args.warmup_steps} is more than --steps {args.steps}")
    if not device_problems(args.device):
        args.amp = auto_amp(args.device) if args.amp == "auto" else args.amp
        problems += amp_problems(args.amp, args.device)
    if problems:
        p.error("; ".join(problems))
    return args


def training_sentences(args, tok: Tokenizer) -> list[dict]:
    """Every distinct sentence of the training files of SOURCES, encoded ([CLS] s [SEP]). Quora's
    questions come back in many pairs: each is kept once."""
    root = find_data_dir(args.data_dir, required=[f for f in all_files(SOURCES) if "-train" in f])
    seen: dict[str, None] = {}  # insertion-ordered set: the same corpus order on every run
    for name in SOURCES:
        examples, skipped = load_task(name, "train", root, skip_bad=args.skip_bad_rows)
        if skipped:
            print(f"  {name}-train: skipped {skipped} bad rows")
        for ex in examples:
            for column in DATASETS[name].text_columns:
                seen.setdefault(ex[column].strip())
    sentences = splits.sample([s for s in seen if s], args.limit_train)
    if not sentences:
        raise DataError(f"{root}: the training files hold no sentences; nothing to pre-train on")
    # encode_examples reads a single-sentence task's "sentence" column; "sst" is just that layout
    return encode_examples(tok, [{"id": str(i), "sentence": s} for i, s in enumerate(sentences)], "sst",
                           max_length=args.max_length)


def write_checkpoint(encoder: BertModel, tok: Tokenizer, out: Path, record: dict) -> None:
    """The folder every trainer's --model reads: the encoder (Hugging Face names), tokenizer, mlm.json."""
    encoder.save_pretrained(out)
    tok.save_pretrained(out)
    checkpointing.atomic_write(out / "mlm.json", json.dumps(record, indent=2, default=str))


def main(argv=None) -> dict:
    args = parse_args(argv)
    stop_on_sigterm()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())) and not args.overwrite:
        raise SystemExit(f"error: --out {args.out} already holds files; pass --overwrite, or choose a new folder")
    try:
        print(f"loading {args.model} and the training sentences of {', '.join(SOURCES)} ...")
        tok, encoder = load_checkpoint(args)
        args.max_length = clamp_max_length(args.max_length, tok)
        corpus = training_sentences(args, tok)
    except (OSError, ValueError) as e:  # DataError, CheckpointError, a missing folder, ...
        msg = f"error: {e}"
        if isinstance(e, CheckpointNotFound):
            msg += "; --model takes a checkpoint folder (config.json and the weights), all-MiniLM-L6-v2, or a hub name"
        raise SystemExit(msg) from None
    mask_id = tok.backend.token_to_id("[MASK]")
    if mask_id is None:
        raise SystemExit(f"error: {args.model}: the vocabulary has no [MASK] token, which masked-LM training needs")
    model = MaskedLM(encoder).to(args.device)
    model.encoder.pooler.requires_grad_(False)  # MLM never reads the pooler: leave it as the checkpoint has it
    opt = AdamW(param_groups(model.encoder, {"mlm": model.head}, lr=args.lr, weight_decay=args.weight_decay,
                             head_lr=args.head_lr), lr=args.lr, fused=args.adamw == "fused")
    n_batches = math.ceil(len(corpus) / (args.batch_size * args.accumulate))  # optimizer steps per pass
    if args.steps:
        sched = warmup_linear(opt, args.warmup_steps, args.steps)
        passes = math.ceil(args.steps / n_batches)
    else:  # the time budget ends it; a cap of passes that no budget of minutes reaches
        sched = LambdaLR(opt, lambda s: min(1.0, s / args.warmup_steps) if args.warmup_steps else 1.0)
        passes = 1000
    total = args.steps or passes * n_batches
    # one phase per pass over the corpus; the last one may be cut short by --steps
    phases = [Phase("mlm", {"mlm": n_batches}, min(n_batches, total - k * n_batches), seed=args.seed + k)
              for k in range(passes)]
    stream = TaskStream(corpus, args.batch_size, tok.pad_id, args.seed)
    masks = torch.Generator().manual_seed(args.seed)  # the masks' own stream: independent of dropout
    special = [tok.cls_id, tok.sep_id, tok.pad_id]
    amp = ((lambda: torch.autocast(torch.device(args.device).type, dtype=AMP_DTYPES[args.amp])) if args.amp in AMP_DTYPES
           else contextlib.nullcontext)

    def losses(_) -> dict:
        inputs = next(stream)[0]["inputs"]
        ids, labels = mask_tokens(inputs["input_ids"], inputs["attention_mask"], special, mask_id,
                                  encoder.config.vocab_size, masks, args.mask_rate)
        with amp():
            loss = mlm_loss(model, ids.to(args.device), inputs["attention_mask"].to(args.device),
                            inputs["token_type_ids"].to(args.device), labels.to(args.device))
        return {"mlm": loss}

    curve, window = [], []

    def on_step(step: int, values: dict) -> None:  # the mean loss of every log_every steps
        window.append(values["mlm"])
        if step % args.log_every == 0:
            curve.append({"step": step, "loss": sum(window) / len(window)})
            window.clear()

    print(f"{len(corpus):,} distinct training sentences, {n_batches} batches of {args.batch_size} per pass; "
          + (f"{args.steps} steps" if args.steps else "") + (" or " if args.steps and args.minutes else "")
          + (f"{args.minutes:g} minutes" if args.minutes else ""))
    loop = Loop(model, [Player(opt, sched, [p for p in model.parameters() if p.requires_grad])], phases, losses,
                on_step=on_step, clip=args.clip,
                guard=Guard("skip" if args.amp in AMP_DTYPES else "stop", max_skips=20, time_budget=args.minutes),
                report=Report(log_every=args.log_every), precision=Precision.of(args.amp, args.device, args.accumulate))
    try:
        result = fit(loop)
    except KeyboardInterrupt:
        raise SystemExit("\ninterrupted: nothing was saved (the --out folder is written at the end)") from None
    if window:
        curve.append({"step": result["step"], "loss": sum(window) / len(window)})
    record = {"script": "run_mlm", "options": vars(args), "sentences": len(corpus), "steps": result["step"],
              "minutes": round(result["minutes"], 2), "loss_first": curve[0]["loss"] if curve else None,
              "loss_last": curve[-1]["loss"] if curve else None, "curve": curve}
    write_checkpoint(model.encoder, tok, args.out, record)
    print(f"{result['step']} steps in {result['minutes']:.1f} min; MLM loss {record['loss_first']:.3f} (first "
          f"{min(args.log_every, result['step'])} steps) -> {record['loss_last']:.3f} (last); checkpoint in "
          f"{args.out}/ (fine-tune it: python training/run_multitask.py --model {args.out})")
    return record


if __name__ == "__main__":
    main()
