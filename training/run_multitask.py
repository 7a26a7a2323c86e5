"""Fine-tune one BERT on three tasks at once: SST-5 sentiment, Quora paraphrase, STS similarity.

    python training/run_multitask.py                  # full default, embedded all-MiniLM-L6-v2, CPU
    python training/run_multitask.py --preset quick   # a few minutes, for a smoke run
    python training/run_multitask.py --resume         # continue a stopped run from runs/multitask/last
    torchrun --nproc-per-node 4 training/run_multitask.py --device cuda   # 4 GPUs (see docs/RELIABILITY.md)
    python training/run_multitask.py --help

Reads the CS224N files (--data-dir or $MINBERT_DATA_DIR, default ../shared/data), evaluates on dev
after every epoch, keeps the best checkpoint by the dev overall score, and writes the course's
prediction files predictions/{sst,para,sts}-{dev,test}-output.csv from that best checkpoint.
Every --save-every steps the whole training state goes to out_dir/last/ (crash-safe, see
training/checkpointing.py); --resume continues from it and ends with the same weights as a run
that was never interrupted. Bad input (data, checkpoint, options) stops the run before anything
is written, with one message naming the input and the fix.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data.batching import BucketBatchSampler, collate, encode_examples, example_lengths, to_device  # noqa: E402
from data.datasets import DataError, all_files, find_data_dir, load_task, task_file  # noqa: E402
from heads.multitask import MultitaskBert  # noqa: E402
from minbert import AdamW, BertModel, CheckpointError, CheckpointNotFound, Tokenizer  # noqa: E402
from minbert.safetensors import load_safetensors, save_safetensors  # noqa: E402
from training import checkpointing, distributed, freezing, options, tasks  # noqa: E402
from training.checkpointing import TrainingStateError  # noqa: E402
from training.optim import param_groups, warmup_linear  # noqa: E402
from training.pcgrad import pcgrad_backward  # noqa: E402
from training.sampling import TaskScheduler  # noqa: E402
from training.streams import TaskStream  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    """The options (training/options.py), checked: a bad one exits with a message naming it."""
    return options.parse_args(argv, description=__doc__)


def load_split(args, tok, task: str, split: str) -> list[dict]:
    examples, skipped = load_task(task, split, args.data_dir, skip_bad=args.skip_bad_rows)
    if skipped:
        print(f"  {task}-{split}: skipped {skipped} bad rows")
    limit = args.limit_train if split == "train" else args.limit_eval
    if split == "train" and args.train_fraction < 1.0:
        limit = min(limit or len(examples), max(1, round(len(examples) * args.train_fraction)))
    if limit and limit < len(examples):
        # A seeded random subset: the files are sorted (SST by label), so the first N would be skewed.
        keep = np.sort(np.random.default_rng(0).permutation(len(examples))[:limit])
        examples = [examples[i] for i in keep]
    if split == "train" and args.augment_symmetric and task != "sst":
        examples = examples + [dict(e, sentence1=e["sentence2"], sentence2=e["sentence1"]) for e in examples]
    cross = task != "sst" and (args.pair_mode if task == "quora" else args.sts_mode) == "cross"
    return encode_examples(tok, examples, task, max_length=args.max_length, cross_encoder=cross)


def batches(encoded: list[dict], batch_size: int, pad_id: int, shuffle: bool, seed: int, epoch: int = 0):
    sampler = BucketBatchSampler(example_lengths(encoded), batch_size, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return (collate([encoded[i] for i in idx], pad_id) for idx in sampler)  # padded lazily, batch by batch


def evaluate(model, data, args, pad_id, autocast, split="dev") -> tuple[dict, dict]:
    scores, outputs = {}, {}
    for task in args.tasks:
        ids, preds, labels = tasks.predict(model, task, batches(data[task][split], 128, pad_id, False, 0),
                                           args.device, autocast)
        outputs[task] = (ids, preds)
        if labels is not None:
            scores[task] = tasks.metric(task, preds, labels)
    if len(scores) == len(tasks.TASK_NAMES):
        scores["overall"] = tasks.overall(scores)
    return scores, outputs


# ---------------------------------------------------------------------------- reading every input


def load_checkpoint(args) -> tuple[Tokenizer, BertModel]:
    try:
        encoder = BertModel.from_pretrained(args.model, attn_implementation=args.attn, unpad=args.unpad)
    except ValueError as e:  # config errors (e.g. model_type 'roberta') do not say which checkpoint
        raise e if str(args.model) in str(e) else CheckpointError(f"{args.model}/config.json: {e}") from None
    try:
        tok = Tokenizer.from_pretrained(args.model)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; copy the vocab.txt (or tokenizer.json) of the checkpoint this model came "
                                "from into that folder") from None
    except Exception as e:  # tokenizers (Rust) raises plain Exceptions, json errors do not name the file
        raise CheckpointError(f"{args.model}: cannot read the tokenizer ({type(e).__name__}: {e}); restore the "
                              "checkpoint's tokenizer.json / tokenizer_config.json, or delete tokenizer.json to fall "
                              "back to vocab.txt") from None
    if tok.vocab_size > encoder.config.vocab_size:
        raise CheckpointError(
            f"{args.model}: the tokenizer has {tok.vocab_size} tokens but the model's embedding table has only "
            f"{encoder.config.vocab_size} rows, so token ids {encoder.config.vocab_size} and up would index past "
            "it. Use the tokenizer files (vocab.txt, tokenizer.json) that belong to this checkpoint")
    return tok, encoder


def prepare(args, world) -> argparse.Namespace:
    """Read and check every input (options, data, checkpoint, resume state) and build the run.
    Nothing is written here, so a bad input leaves no half-made output behind."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpointing.check_out_dir(args.out_dir, args.predictions_dir, args.resume, args.overwrite)
    root = find_data_dir(args.data_dir, required=all_files(args.tasks))  # fail early, listing every missing file
    say = print if world.is_main else (lambda *a, **k: None)
    say(f"loading {args.model} and the data ({', '.join(args.tasks)}) ...")
    tok, encoder = load_checkpoint(args)
    model = MultitaskBert(encoder, sentiment_pooling=args.sentiment_pooling, pair_mode=args.pair_mode,
                          sts_mode=args.sts_mode, dropout=args.dropout).to(args.device)
    data = {t: {s: load_split(args, tok, t, s) for s in ("train", "dev", "test")} for t in args.tasks}
    for t in args.tasks:
        for s in ("train", "dev"):
            if not data[t][s]:
                raise DataError(f"{root / task_file(t, s)}: no {s} examples left (empty file, --skip-bad-rows dropped "
                                f"every row, or --limit-{'train' if s == 'train' else 'eval'} 0); {t} needs some")

    # ---- freezing, optimizer, schedules ----
    if args.freeze == "encoder":
        freezing.freeze_encoder(model.encoder)
    elif args.freeze == "embeddings":
        freezing.freeze_embeddings(model.encoder)
    elif args.freeze.startswith("lower:"):
        freezing.freeze_lower_layers(model.encoder, int(args.freeze.split(":")[1]))
    for t in filter(None, args.freeze_head.split(",")):
        freezing.freeze_module(model.heads[t])
    heads = {t: model.heads[t] for t in args.tasks}
    opt = AdamW(param_groups(model.encoder, heads, lr=args.lr, layer_decay=args.layer_decay,
                             weight_decay=args.weight_decay), lr=args.lr)
    bs = {t: args.task_batch_size.get(t, args.batch_size) for t in args.tasks}
    # With R processes a step trains on one global batch of R * batch_size examples (streams.py).
    n_batches = {t: math.ceil(len(data[t]["train"]) / (bs[t] * world.world_size)) for t in args.tasks}
    # PCGrad steps see one batch of every task: fewer steps for the same number of examples.
    steps_per_epoch = sum(n_batches.values()) // (len(args.tasks) if args.pcgrad else 1)
    phases = [("multitask", args.tasks, steps_per_epoch, args.schedule)] * args.epochs
    phases += [(f"extra-{t}", [t], n_batches[t], "round_robin") for t, e in args.extra_epochs.items() for _ in range(e)]
    total_steps = sum(p[2] for p in phases)
    if total_steps == 0:
        raise ValueError("nothing to train: --epochs 0 and no --extra-epochs; train for at least one epoch")
    sched = warmup_linear(opt, int(args.warmup * total_steps), total_steps)
    streams = {t: TaskStream(data[t]["train"], bs[t], tok.pad_id, args.seed, world.rank, world.world_size)
               for t in args.tasks}
    pcgrad_gen = torch.Generator().manual_seed(args.seed)
    if world.rank:  # dropout: the same heads on every rank (seeded alike above), different masks
        torch.manual_seed(args.seed + world.rank)
    run = argparse.Namespace(tok=tok, model=model, data=data, opt=opt, sched=sched, streams=streams, phases=phases,
                             n_batches=n_batches, total_steps=total_steps, pcgrad_gen=pcgrad_gen, state=None, say=say)

    last = Path(args.out_dir) / "last"
    if args.resume and checkpointing.exists(last):
        state, tensors = checkpointing.load(last)
        checkpointing.check_resumable(state, vars(args), world.world_size, last, options.RUNTIME_OPTIONS)
        try:
            model.load_state_dict(tensors["model"])
            checkpointing.load_optimizer_state(opt, tensors["optimizer"], state["optimizer"])
            sched.load_state_dict(state["lr_schedule"])
            for t in args.tasks:
                streams[t].load_state_dict(state["streams"][t])
            checkpointing.set_rng_state(state["rng"][world.rank], {"pcgrad": pcgrad_gen})
        except (KeyError, IndexError, RuntimeError, ValueError) as e:
            raise TrainingStateError(f"{last}: the checkpoint does not fit this run ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0]}); start again with --overwrite") from None
        run.state = state
        say(f"resuming from {last} at step {state['step']}")
    elif args.resume:
        say(f"--resume: no checkpoint in {last} yet, starting from the beginning")
    steps = distributed.all_gather_object(run.state and run.state["step"], world)
    if len(set(steps)) > 1:
        raise TrainingStateError(f"the processes found different checkpoints in {last} (steps {steps}); with "
                                 "several machines --out-dir must be one shared directory")
    return run


def input_error(e: Exception) -> str:
    """The one paragraph a user sees for a bad input, with the fix in this script's terms."""
    msg = str(e).replace("(pass skip_bad=True to drop such rows)",
                         "(fix the row, or pass --skip-bad-rows to drop such rows)")
    if isinstance(e, CheckpointNotFound):
        msg += "; --model takes a checkpoint folder (config.json and the weights), all-MiniLM-L6-v2, or a hub name"
    return f"error: {msg}"


# ---------------------------------------------------------------------------- training


def forward_loss(net, task: str, batch: dict, weight: float, args, autocast) -> torch.Tensor:
    """Weighted loss of one task batch. net: the model or its DDP wrapper (which must see forward())."""
    b = to_device(batch, args.device)
    inputs = [b["inputs"]] if "inputs" in b else [b["inputs1"], b["inputs2"]]
    with autocast() if autocast else contextlib.nullcontext():
        out = net(task, *inputs)
    return tasks.loss_from_output(task, out, b["labels"]) * (args.loss_weights.get(task, 1.0) * weight)


def main(argv=None) -> dict:
    args = parse_args(argv)
    world, args.device = distributed.init(args.device)
    try:
        try:
            run = prepare(args, world)
        except (OSError, ValueError) as e:  # DataError, CheckpointError, TrainingStateError, safetensors, ...
            raise SystemExit(input_error(e)) from None
        return train_and_predict(run, args, world)
    except KeyboardInterrupt:  # Ctrl-C: checkpoints are written atomically, so the last one is whole
        saved = checkpointing.saved_step(Path(args.out_dir) / "last")
        print("\ninterrupted; to continue, run the same command with --resume"
              + (f" (it starts from step {saved})" if saved is not None else ""), file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        distributed.cleanup(world)


def train_and_predict(run, args, world) -> dict:
    model, opt, sched, streams, say = run.model, run.opt, run.sched, run.streams, run.say
    state = run.state or {}
    out_dir, last = Path(args.out_dir), Path(args.out_dir) / "last"
    # ---- from here on files are written (rank 0 only) ----
    log = None
    if world.is_main:
        if args.overwrite and not state:
            for old in (last, out_dir / "best", out_dir / "log.jsonl"):
                shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        log_path, keep = out_dir / "log.jsonl", state.get("log_bytes", 0)
        if args.resume and log_path.is_file() and log_path.stat().st_size > keep:
            os.truncate(log_path, keep)  # rows after the checkpoint are written again below
        log = open(log_path, "a", encoding="utf-8")

    def record(**row):
        if log:
            log.write(json.dumps(row) + "\n")
            log.flush()

    device_type = torch.device(args.device).type
    autocast = (lambda: torch.autocast(device_type, dtype=torch.bfloat16)) if args.amp == "bf16" else None
    on_nonfinite = args.on_nonfinite if args.on_nonfinite != "auto" else ("skip" if args.amp == "bf16" else "stop")
    net = distributed.wrap(model, world, args.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    shared = [p for p in model.encoder.parameters() if p.requires_grad]
    task_params = [[p for p in model.heads[t].parameters() if p.requires_grad] for t in args.tasks]

    step, best, history = state.get("step", 0), state.get("best"), state.get("history", [])
    running, skipped = state.get("running", {}), state.get("skipped", 0)
    t0 = time.time() - state.get("elapsed", 0.0)

    def save_last(phase: int, phase_step: int, order, done: bool = False):
        rngs = distributed.all_gather_object(checkpointing.rng_state({"pcgrad": run.pcgrad_gen}), world)
        if not world.is_main:
            return
        opt_tensors, opt_meta = checkpointing.optimizer_state(opt)
        checkpointing.save(last, {"model": model.state_dict(), "optimizer": opt_tensors}, dict(
            step=step, phase=phase, phase_step=phase_step, done=done, order=order and order.state_dict(),
            streams={t: s.state_dict() for t, s in streams.items()}, lr_schedule=sched.state_dict(),
            optimizer=opt_meta, rng=rngs, running=running, best=best, history=history, skipped=skipped,
            elapsed=time.time() - t0, log_bytes=log.tell(), options=vars(args), world_size=world.world_size))

    def stop_nonfinite(values: dict, norm: float):
        saved = checkpointing.saved_step(last)
        where = f"{last} (step {saved}) is intact" if saved is not None else "no checkpoint was saved yet"
        why = ("--on-nonfinite stop, the default without --amp bf16" if on_nonfinite == "stop" else
               f"{skipped} steps skipped, more than --max-skips {args.max_skips}")
        raise SystemExit(f"error: step {step + 1}: the loss or the gradient is not finite ("
                         + ", ".join(f"{t} loss {v}" for t, v in values.items()) + f", gradient norm {norm}); "
                         f"stopped ({why}). The last good checkpoint {where}. Lower --lr or check the data, then "
                         "continue with --resume, or pass --on-nonfinite skip to skip such steps")

    say(f"{sum(p.numel() for p in trainable):,} trainable parameters; {run.total_steps} steps; "
        f"tasks {run.n_batches} batches per epoch" + (f"; {world.world_size} processes" if world.distributed else ""))
    model.train()
    start_phase = state.get("phase", 0) if not state.get("done") else len(run.phases)
    for epoch in range(start_phase, len(run.phases)):
        phase, phase_tasks, n_steps, mode = run.phases[epoch]
        # The same seed on every rank: all ranks train the same task at every step.
        order = TaskScheduler({t: run.n_batches[t] for t in phase_tasks}, mode=mode, alpha=args.alpha,
                              steps=n_steps, seed=args.seed + epoch)
        first = state.get("phase_step", 0) if epoch == start_phase else 0
        if first and state.get("order"):
            order.load_state_dict(state["order"])
        bar = tqdm(range(first, n_steps), initial=first, total=n_steps, disable=not world.is_main,
                   desc=f"epoch {epoch + 1}/{len(run.phases)} {phase}", dynamic_ncols=True)
        stopped = False
        for k in bar:
            if args.pcgrad and len(phase_tasks) > 1:
                step_tasks = list(phase_tasks)
                losses = [forward_loss(model, t, *next(streams[t]), args, autocast) for t in step_tasks]
                grads_of = distributed.global_task_losses(losses, trainable, world) if world.distributed else losses
                pcgrad_backward(grads_of, shared, task_params, generator=run.pcgrad_gen)
            else:
                step_tasks = [next(order)]
                losses = [forward_loss(net, step_tasks[0], *next(streams[step_tasks[0]]), args, autocast)]
                losses[0].backward()  # DDP averages the gradients over ranks here
            with_grad = [p for p in trainable if p.grad is not None]
            norm = (torch.nn.utils.clip_grad_norm_(with_grad, args.clip) if args.clip
                    else torch.nn.utils.get_total_norm([p.grad for p in with_grad]))
            # One collective for the global loss of each task and every rank's clock, so that all ranks
            # take the same decisions (skip, stop) below.
            late = float(bool(args.time_budget) and time.time() - t0 > args.time_budget * 60)
            *values, late = distributed.all_reduce([x.item() for x in losses] + [late], world, device=args.device)
            values = dict(zip(step_tasks, (v / world.world_size for v in values)))  # sum of weighted means / R
            norm = float(norm)  # equal on every rank: computed from the all-reduced gradients
            if all(map(math.isfinite, values.values())) and math.isfinite(norm):
                for t, v in values.items():
                    running[t] = 0.98 * running.get(t, v) + 0.02 * v
                opt.step()
            else:  # no update; the step still counts (its batches are used, the LR schedule moves on)
                skipped += 1
                record(step=step + 1, skipped="non-finite", total_skipped=skipped, norm=str(norm),
                       **{f"loss_{t}": str(v) for t, v in values.items()})
                if on_nonfinite == "stop" or skipped > args.max_skips:
                    stop_nonfinite(values, norm)
                say(f"step {step + 1}: non-finite loss or gradient, step skipped ({skipped} so far)")
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % args.log_every == 0:
                bar.set_postfix({t: f"{v:.3f}" for t, v in running.items()})
                record(step=step, epoch=epoch + 1, lr=sched.get_last_lr()[-1],
                       **{f"loss_{t}": v for t, v in running.items()})
            if step % args.save_every == 0:
                save_last(epoch, k + 1, order)
            if step == args._kill_at_step:  # tests of --resume: die like a crash, mid-run, without cleanup
                os.kill(os.getpid(), signal.SIGKILL)
            if late > 0:
                say(f"time budget of {args.time_budget} min reached at step {step}")
                stopped = True
                break
        scores, _ = evaluate(model, run.data, args, run.tok.pad_id, autocast)
        elapsed = (time.time() - t0) / 60
        history.append(dict(epoch=epoch + 1, phase=phase, step=step, minutes=round(elapsed, 2), **scores))
        record(eval="dev", **history[-1])
        say("  dev " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()) + f"  ({elapsed:.1f} min)")
        key = scores.get("overall", float(np.mean([scores[t] for t in args.tasks])))
        if best is None or key > best:
            best = key
            if world.is_main:
                (out_dir / "best").mkdir(exist_ok=True)
                save_safetensors({k: v.detach().cpu() for k, v in model.state_dict().items()},
                                 out_dir / "best" / "model.safetensors", metadata={"base_model": str(args.model)})
                checkpointing.atomic_write_text(out_dir / "best" / "options.json", json.dumps(
                    {"options": vars(args), "dev": scores, "epoch": epoch + 1}, indent=2))
        save_last(epoch + 1, 0, None, done=stopped or epoch + 1 == len(run.phases))
        if stopped:
            break

    minutes = (time.time() - t0) / 60
    if not world.is_main:  # rank 0 writes the predictions
        return {"dev": {}, "history": history, "minutes": minutes}
    # ---- predictions from the best checkpoint, dev and test, in the course's format ----
    model.load_state_dict(load_safetensors(out_dir / "best" / "model.safetensors"))
    final = {}
    for split in ("dev", "test"):
        scores, outputs = evaluate(model, run.data, args, run.tok.pad_id, autocast, split)
        if split == "dev":
            final = scores
        for task, (ids, preds) in outputs.items():
            tasks.write_predictions(tasks.prediction_file(args.predictions_dir, task, split), task, ids, preds)
    if args.limit_eval:
        print(f"note: --limit-eval {args.limit_eval}: the prediction files cover only part of each split")
    minutes = (time.time() - t0) / 60
    record(final="dev", minutes=round(minutes, 2), **final)
    print(f"\n{'epoch':>5} {'phase':>12} " + " ".join(f"{k:>8}" for k in [*args.tasks, "overall"]))
    for h in history:
        print(f"{h['epoch']:>5} {h['phase']:>12} "
              + " ".join(f"{h.get(k, float('nan')):8.4f}" for k in [*args.tasks, "overall"]))
    print("best dev: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()) + f"   total {minutes:.1f} min")
    print(f"predictions in {args.predictions_dir}/, checkpoint in {out_dir}/best/, training state in {last}/")
    log.close()
    return {"dev": final, "history": history, "minutes": minutes}


if __name__ == "__main__":
    main()
