"""Single-task sentiment classification, the course's first part: SST-5 or binary CFIMDB.

    python training/run_classifier.py --task sst --mode pretrain      # frozen BERT, only the head trains
    python training/run_classifier.py --task cfimdb --mode finetune   # the whole model trains
    python training/run_classifier.py --task sst --labelled-fraction 0.05 --steps 300   # few labels
    python training/run_classifier.py --help

BERT -> [CLS] (or mean / pooler) vector -> dropout -> linear (heads/sentiment.py). Keeps the best
dev epoch and writes its predictions to {predictions-dir}/{task}-{dev,test}-output.csv (run_multitask.py
writes its sst files under the same names: give each its own --predictions-dir) and a JSON record.
--labelled-fraction draws the same examples as run_gan.py: the plain baseline of the GAN-BERT sweep.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from data.batching import clamp_max_length, to_device
from heads.sentiment import POOLINGS, SentimentHead
from minbert import AdamW, BertModel, Tokenizer
from minbert.safetensors import save_safetensors
from training.engine import checkpointing, freezing
from training.multitask import tasks
from training.multitask.options import add_shared, amp_problems, auto_amp, device_problems
from training.engine.loop import Guard, Loop, Phase, Player, Precision, Report, fit
from training.multitask.recipe import autocast
from training.engine.optim import param_groups, warmup_linear
from training.multitask.splits import NUM_CLASSES, labelled_subset, load_sentences
from training.engine.streams import TaskStream

DEFAULT_LR = {"pretrain": 1e-3, "finetune": 5e-5}  # a frozen encoder leaves only a linear layer to fit


class SentimentClassifier(nn.Module):
    """BertModel + SentimentHead; forward(inputs) -> logits (B, num_classes)."""

    def __init__(self, encoder: BertModel, num_classes: int, pooling: str = "cls", dropout: float = 0.3):
        super().__init__()
        self.encoder = encoder
        self.head = SentimentHead(encoder.config.hidden_size, num_classes, pooling=pooling, dropout=dropout)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.encoder(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))
        return self.head(out["last_hidden_state"], inputs["attention_mask"], pooler_output=out["pooler_output"])
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("task and data")
    add_shared(g, "--task")
    g.add_argument("--labelled-fraction", type=float, default=1.0,
                   help="train on a seeded random fraction of the training set, in (0, 1] (few-label baseline)")
    add_shared(g, "--data-dir", "--limit-train", "--limit-eval", "--max-length", "--skip-bad-rows", max_length=128)
    g = p.add_argument_group("model")
    add_shared(g, "--model", "--attn", "--unpad")
    g.add_argument("--mode", choices=["pretrain", "finetune"], default="pretrain",
                   help="pretrain: BERT frozen (eval mode, no dropout), only the head trains; finetune: all trains")
    g.add_argument("--pooling", choices=POOLINGS, default="cls",
                   help="sentence vector: [CLS], masked mean, or the pooler")
    g.add_argument("--dropout", type=float, default=0.3, help="dropout before the linear layer (the course uses 0.3)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=5, help="passes over the (labelled) training set")
    g.add_argument("--steps", type=int,
                   help="train exactly this many steps instead (cycling the data; overrides --epochs)")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default: {DEFAULT_LR})")
    g.add_argument("--layer-decay", type=float, default=1.0, help="layer-wise LR decay in finetune mode (1: off)")
    g.add_argument("--weight-decay", type=float, default=0.01,
                   help="AdamW decoupled weight decay (not on LayerNorm/bias)")
    g.add_argument("--batch-size", type=int, default=16,
                   help="sentences per training batch (per micro-batch with --accumulate)")
    add_shared(g, "--warmup", "--clip", "--adamw", "--accumulate")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=11711, help="model init, batch order and the labelled subset")
    add_shared(g, "--device", "--threads")
    add_shared(g, "--amp", amp="none")
    g.add_argument("--out-dir", default="runs/classifier", help="checkpoint (model.safetensors) and the JSON record")
    g.add_argument("--predictions-dir", default="predictions", help="where {task}-{dev,test}-output.csv go")
    g.add_argument("--json", help="path of the JSON record (default: OUT_DIR/result.json)")
    g.add_argument("--no-save", action="store_true", help="do not write the checkpoint")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = DEFAULT_LR[args.mode]
    if not 0.0 < args.labelled_fraction <= 1.0:
        p.error(f"--labelled-fraction must be in (0, 1], got {args.labelled_fraction}")
    if min(args.batch_size, args.epochs, args.accumulate) < 1 or (args.steps is not None and args.steps < 1):
        p.error("--batch-size, --epochs, --steps and --accumulate must be at least 1")
    for problem in device_problems(args.device):
        p.error(problem)
    args.amp = auto_amp(args.device) if args.amp == "auto" else args.amp
    for problem in amp_problems(args.amp, args.device):
        p.error(problem)
    return args


def predict(model: nn.Module, encoded: list[dict], pad_id: int, device) -> tuple[list, np.ndarray, np.ndarray | None]:
    """(ids, predicted classes, gold labels or None) over encoded examples, in eval mode."""
    ids, out, labels = tasks.outputs(model, encoded, pad_id, device)
    return ids, tasks.predictions("sst", out), labels  # argmax, as for sst


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    print(f"loading {args.model} and {args.task} ...")
    tok = Tokenizer.from_pretrained(args.model)
    args.max_length = clamp_max_length(args.max_length, tok)
    model = SentimentClassifier(BertModel.from_pretrained(args.model, attn_implementation=args.attn, unpad=args.unpad),
                                NUM_CLASSES[args.task], args.pooling, args.dropout).to(args.device)
    data = load_sentences(args, tok)
    n_all = len(data["train"])
    data["train"] = [data["train"][i] for i in labelled_subset(n_all, args.labelled_fraction, args.seed)]

    if args.mode == "pretrain":
        freezing.freeze_encoder(model.encoder)
    opt = AdamW(param_groups(model.encoder, {"head": model.head}, lr=args.lr, layer_decay=args.layer_decay,
                             weight_decay=args.weight_decay), lr=args.lr, fused=args.adamw == "fused")
    n_batches = math.ceil(len(data["train"]) / (args.batch_size * args.accumulate))  # optimizer steps
    total = args.steps or args.epochs * n_batches
    player = Player(opt, warmup_linear(opt, int(args.warmup * total), total), list(model.parameters()))
    print(f"{len(data['train'])} of {n_all} training examples labelled; {freezing.count_trainable(model):,} "
          f"trainable parameters; {total} steps of batch {args.batch_size}")
    stream = TaskStream(data["train"], args.batch_size, tok.pad_id, args.seed)

    def train_mode():
        model.train()
        if args.mode == "pretrain":
            model.encoder.eval()  # frozen features: no dropout noise inside BERT, only in the head

    def losses(_) -> dict:
        batch, _ = next(stream)
        b = to_device(batch, args.device)
        with autocast(args)():
            return {"loss": tasks.TASKS["sst"].loss(model(b["inputs"]), b["labels"])}  # cross-entropy

    def score() -> tuple[float, dict]:
        _, preds, labels = predict(model, data["dev"], tok.pad_id, args.device)
        acc = tasks.accuracy(preds, labels)
        print(f"  dev accuracy {acc:.4f}")
        return acc, {"dev_acc": acc}

    phases = [Phase(args.task, {args.task: n_batches}, min(n_batches, total - s), seed=args.seed + k)
              for k, s in enumerate(range(0, total, n_batches))]
    result = fit(Loop(model, [player], phases, losses, score, train_mode=train_mode, clip=args.clip,
                      guard=Guard("skip" if args.amp != "none" else "stop", max_skips=20),
                      report=Report(log_every=1, smoothing=0.0),
                      precision=Precision.of(args.amp, args.device, args.accumulate)))
    # (fit keeps the best epoch's weights in memory and loads them)

    for split in ("dev", "test"):
        ids, preds, _ = predict(model, data[split], tok.pad_id, args.device)
        path = Path(args.predictions_dir) / f"{args.task}-{split}-output.csv"
        tasks.write_predictions(path, "sst", ids, preds)  # same format: `id \t Predicted_Sentiment`, ints
    if not args.no_save:
        save_safetensors({k: v.cpu() for k, v in model.state_dict().items()}, out_dir / "model.safetensors",
                         metadata={"base_model": str(args.model), "task": args.task})
    record = {"script": "run_classifier", "options": vars(args), "dev_acc": result["best"],
              "history": result["history"], "train_examples": len(data["train"]), "train_pool": n_all,
              "steps": result["step"], "wall_seconds": round(time.time() - t0, 1)}
    json_path = Path(args.json) if args.json else out_dir / "result.json"
    checkpointing.atomic_write(json_path, json.dumps(record, indent=2))
    if args.limit_eval:
        print(f"note: --limit-eval {args.limit_eval}: the prediction files cover only part of each split")
    print(f"best dev accuracy {result['best']:.4f} ({args.task}, {args.mode}); predictions in "
          f"{args.predictions_dir}/, record in {json_path}")
    return record


if __name__ == "__main__":
    main()
