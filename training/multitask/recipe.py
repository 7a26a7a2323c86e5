"""The multitask recipe, shared by run_multitask.py, run_distill.py and the benchmarks: reading the
checkpoint, building the run (MultitaskRun: the model with a head per task of the table, the
optimizer, the step plan), the loss of a task batch (batch_loss; R-Drop's too), dev scores and the
course's prediction files."""
from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from data.batching import clamp_max_length, to_device
from data.datasets import DataError, all_files, find_data_dir, task_file
from heads.multitask_bert import MultitaskBert
from minbert import AdamW, BertModel, CheckpointError, Tokenizer
from training.engine import freezing
from training.multitask import tasks
from training.engine.distributed import World
from training.engine.ema import EMA
from training.engine.loop import Guard, Phase, Player, Precision, Report
from training.engine.optim import param_groups, warmup_linear
from training.multitask.splits import load_split
from training.engine.streams import TaskStream


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


def build_model(args, encoder: BertModel) -> MultitaskBert:
    """MultitaskBert on `encoder`, with a head for every task of args.tasks, on args.device."""
    model = MultitaskBert(encoder, sentiment_pooling=args.sentiment_pooling, pair_mode=args.pair_mode,
                          sts_mode=args.sts_mode, dropout=args.dropout, task_layers=args.task_layers)
    for t in args.tasks:  # a task of the table whose head MultitaskBert does not build
        if t not in model.heads:
            model.add_head(t, tasks.TASKS[t].head(encoder.config.hidden_size, args))
    return model.to(args.device)


@dataclass
class MultitaskRun:
    """What build() makes of the options: the model and its data, the optimizer, the step plan."""
    tok: Tokenizer
    model: MultitaskBert
    data: dict[str, dict[str, list]]  # task -> split -> encoded examples
    player: Player  # the optimizer, its LR schedule, the trained parameters
    streams: dict[str, TaskStream]  # task -> its training batches
    phases: list[Phase]  # the epochs
    n_batches: dict[str, int]  # task -> its batches per epoch
    total_steps: int
    pcgrad: tuple | None  # --pcgrad: (shared params, each task's own params, generator)
    pcgrad_gen: torch.Generator  # PCGrad's order draws (saved with the checkpoints)
    ema: EMA | None  # --ema
    precision: Precision  # --amp fp16's loss scaler, --accumulate
    state: dict = field(default_factory=dict)  # the checkpoint resumed from (run_multitask --resume); {} fresh
    say: Callable = print  # rank 0's print; a no-op on the other ranks


def build(args, world: World = World(), say: Callable = print) -> MultitaskRun:
    """Seeds, model, data, optimizer, schedule, data streams and the step plan of a run (nothing written)."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    tok, encoder = load_checkpoint(args)
    args.max_length = clamp_max_length(args.max_length, tok, log=say if world.is_main else (lambda _: None))
    model = build_model(args, encoder)
    data = {t: {s: load_split(args, tok, t, s) for s in ("train", "dev", "test")} for t in args.tasks}
    root = find_data_dir(args.data_dir, required=all_files([tasks.TASKS[t].data for t in args.tasks]))
    for t in args.tasks:
        for s in ("train", "dev"):
            if not data[t][s]:
                raise DataError(f"{root / task_file(tasks.TASKS[t].data, s)}: no {s} examples left (empty file, "
                                f"--skip-bad-rows dropped every row, or --limit-{'train' if s == 'train' else 'eval'} "
                                f"0); {t} needs some")
    if args.freeze == "encoder":
        freezing.freeze_encoder(model.encoder)
    elif args.freeze == "embeddings":
        freezing.freeze_embeddings(model.encoder)
    elif args.freeze.startswith("lower:"):
        freezing.freeze_lower_layers(model.encoder, int(args.freeze.split(":")[1]))
    for copies in model.task_layers.values():  # a task's copy of a frozen layer stays frozen too
        for own, layer in zip(copies, model.encoder.layers[-len(copies):]):
            if not any(p.requires_grad for p in layer.parameters()):
                freezing.freeze_module(own)
    for t in filter(None, args.freeze_head.split(",")):
        freezing.freeze_module(model.heads[t])
    own_layers = {t: model.task_layers[t] for t in args.tasks if t in model.task_layers}
    opt = AdamW(param_groups(model.encoder, {t: model.heads[t] for t in args.tasks}, lr=args.lr,
                             layer_decay=args.layer_decay, weight_decay=args.weight_decay, task_layers=own_layers),
                lr=args.lr, fused=args.adamw == "fused")
    bs = {t: args.task_batch_size.get(t, args.batch_size) for t in args.tasks}
    # With R processes a step trains on one global batch of R * batch_size examples (streams.py); with
    # --accumulate N on N of them: n_batches counts optimizer steps, so an epoch sees the same examples.
    n_batches = {t: math.ceil(len(data[t]["train"]) / (bs[t] * world.world_size * args.accumulate))
                 for t in args.tasks}
    # PCGrad steps see one batch of every task: fewer steps for the same number of examples.
    steps_per_epoch = sum(n_batches.values()) // (len(args.tasks) if args.pcgrad else 1)
    # Each epoch's schedule draws from its own seed, args.seed + the epoch's index.
    phases = [Phase("multitask", dict(n_batches), steps_per_epoch, args.schedule) for _ in range(args.epochs)]
    phases += [Phase(f"extra-{t}", {t: n_batches[t]}, n_batches[t]) for t, e in args.extra_epochs.items()
               for _ in range(e)]
    phases = [replace(p, seed=args.seed + k, alpha=args.alpha) for k, p in enumerate(phases)]
    total_steps = sum(p.steps for p in phases)
    if total_steps == 0:
        raise ValueError("nothing to train: --epochs 0 and no --extra-epochs; train for at least one epoch")
    player = Player(opt, warmup_linear(opt, int(args.warmup * total_steps), total_steps),
                    [p for p in model.parameters() if p.requires_grad])
    streams = {t: TaskStream(data[t]["train"], bs[t], tok.pad_id, args.seed, world.rank, world.world_size)
               for t in args.tasks}
    pcgrad_gen = torch.Generator().manual_seed(args.seed)
    if world.rank:  # dropout: the same heads on every rank (seeded alike above), different masks
        torch.manual_seed(args.seed + world.rank)
    pcgrad = None
    if args.pcgrad:  # a task's head and own top layers see its gradient alone; the rest is shared
        own = {t: [p for m in (model.heads[t], *model.own_layers(t)) for p in m.parameters() if p.requires_grad]
               for t in args.tasks}
        mine = {id(p) for ps in own.values() for p in ps}
        pcgrad = ([p for p in model.encoder.parameters() if p.requires_grad and id(p) not in mine],
                  [own[t] for t in args.tasks], pcgrad_gen)
    ema = EMA(model, args.ema) if args.ema else None  # starts at the initial weights; the loop updates it
    return MultitaskRun(tok, model, data, player, streams, phases, n_batches, total_steps, pcgrad, pcgrad_gen, ema,
                        Precision.of(args.amp, args.device, args.accumulate, say=say), say=say)


def loop_settings(args, precision: Precision | None = None, say: Callable = print, desc: str = "") -> dict:
    """The training-loop settings that come straight from the multitask options (training/engine/loop.Loop).
    precision: --amp fp16's scaler and --accumulate (made here unless given, e.g. to restore its scale)."""
    mixed = args.amp in ("bf16", "fp16")
    on_nonfinite = args.on_nonfinite if args.on_nonfinite != "auto" else ("skip" if mixed else "stop")
    return dict(clip=args.clip, guard=Guard(on_nonfinite, args.max_skips, args.time_budget),
                report=Report(args.log_every, say=say, desc=desc),
                precision=precision or Precision.of(args.amp, args.device, args.accumulate))


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(args):
    """The context of --amp: bf16 or fp16 autocast on this device type, or a null context."""
    if args.amp not in AMP_DTYPES:
        return contextlib.nullcontext
    return lambda: torch.autocast(torch.device(args.device).type, dtype=AMP_DTYPES[args.amp])


def task_output(net, task: str, batch: dict, args) -> torch.Tensor:
    """The head output of one task batch. net: the model or its DDP wrapper (which must see forward())."""
    with autocast(args)():
        return net(task, *tasks.inputs(to_device(batch, args.device)))


def aux_output(model, task: str, batch: dict, args) -> torch.Tensor:
    """A task's second loss on one batch (e.g. --quora-mnrl), unweighted; see tasks.Task.aux_loss."""
    with autocast(args)():
        return tasks.TASKS[task].aux_loss(model, to_device(batch, args.device))


def doubled(batch: dict) -> dict:
    """The batch stacked on itself, [x; x]: one forward of it draws two dropout masks per example."""
    return {k: {n: torch.cat([x, x]) for n, x in v.items()} if k.startswith("inputs") else v  # (2B, T)
            for k, v in batch.items()}


def rdrop_loss(net, task: str, batch: dict, labels: torch.Tensor, alpha: float, args) -> torch.Tensor:
    """R-Drop (Liang et al. 2021): the batch through the model twice, with two dropout masks; the mean of
    the two halves' training losses (tasks.task_loss) + alpha * the table's divergence of the two outputs.
    (The paper sums the two losses: this is its loss / 2 with its alpha = 2 * alpha.) Without dropout it
    is the plain loss."""
    out1, out2 = task_output(net, task, doubled(batch), args).chunk(2)  # (2B, ...) -> 2 x (B, ...)
    loss = tasks.task_loss(task, args)
    return (loss(out1, labels) + loss(out2, labels)) / 2 + alpha * tasks.TASKS[task].divergence(out1, out2)


def batch_loss(net, model, task: str, batch: dict, weight: float, args) -> torch.Tensor:
    """The training loss of one batch of a task, the scalar the loop differentiates (loss.backward(),
    or PCGrad's per-task gradients): the task's training loss (tasks.task_loss: the one --sts-loss
    names) of its head output (task_output) against the batch's labels, or R-Drop's (rdrop_loss) with
    --rdrop; plus the task's second loss (aux_output) x its weight (tasks.aux_weight) when that is on;
    all x the task's --loss-weights (1 when absent) x the stream's weight of the batch (training/engine/streams.py).
    net: the model or its DDP wrapper, for the head output; model: the model itself, for the second loss."""
    # BEGIN SOLUTION
    labels = batch["labels"].to(args.device)
    loss = (rdrop_loss(net, task, batch, labels, args.rdrop, args) if args.rdrop else
            tasks.task_loss(task, args)(task_output(net, task, batch, args), labels))
    aux = tasks.aux_weight(task, args)
    if aux:  # --quora-mnrl: a second loss, on the sentences' own vectors
        # through model, not net: DDP's gradient hooks sit on the shared parameters, which the
        # forward above used too, so they fire once with both losses' gradients
        loss = loss + aux * aux_output(model, task, batch, args)
    return loss * (args.loss_weights.get(task, 1.0) * weight)
    # END SOLUTION


def evaluate(model, data, args, pad_id, split="dev") -> tuple[dict, dict]:
    """({task: score, "overall"}, {task: (ids, predictions)}) of every task on a split, in eval mode."""
    scores, outputs = {}, {}
    for t in args.tasks:
        ids, out, labels = tasks.outputs(model, data[t][split], pad_id, args.device, t, autocast(args))
        outputs[t] = (ids, tasks.predictions(t, out))
        if labels is not None:
            scores[t] = tasks.TASKS[t].metric(outputs[t][1], labels)
    if tasks.overall(scores) is not None:
        scores["overall"] = tasks.overall(scores)
    return scores, outputs


def dev_score(model, data, args, pad_id, say=print, prefix: str = "") -> tuple[float, dict]:
    """The dev scores, printed, and what keeps the best epoch: the overall score, or the mean over the tasks."""
    scores, _ = evaluate(model, data, args, pad_id)
    say(f"  {prefix}dev " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return scores.get("overall", float(np.mean([scores[t] for t in args.tasks]))), scores


def write_predictions(model, data, args, pad_id, predictions_dir) -> dict:
    """The course's prediction files of dev and test from the model as it is; returns the dev scores."""
    final = {}
    for split in ("dev", "test"):
        scores, outputs = evaluate(model, data, args, pad_id, split)
        final = scores if split == "dev" else final
        for t, (ids, preds) in outputs.items():
            tasks.write_predictions(tasks.prediction_file(predictions_dir, t, split), t, ids, preds)
    return final
