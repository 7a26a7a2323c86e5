"""Born-Again multi-task distillation with teacher annealing (Clark et al. 2019, "BAM!").

    python training/distill.py all --preset quick            # every step below, one JSON record
    python training/distill.py teachers --preset quick       # step 1 only
    python training/distill.py student --preset quick        # step 2, annealed (needs step 1)
    python training/distill.py student --fixed-lambda 0      # step 2, pure distillation (ablation)
    python training/distill.py --help

Step 1 (`teachers`): one single-task model per task (same architecture and options as the student;
only that task's head trains), saved to TEACHERS_DIR/{task}/model.safetensors, and their outputs on
the training sets (sst: probabilities (N, 5); quora: P(paraphrase) (N,); sts: score (N,)) keyed by
example id in TEACHERS_DIR/teacher_outputs.json. Existing teachers are reused (--retrain-teachers
to train them again); outputs are recomputed when the training set has ids they lack.
Step 2 (`student`): one multitask model trained on target = lambda * gold + (1 - lambda) * teacher
(training/distill_targets.py), lambda rising linearly from 0 to 1 over the training steps, or fixed
with --fixed-lambda. Tasks are sampled ~ |D|^0.75 per step and the encoder gets layer-wise LR decay
(--schedule proportional --alpha 0.75 --layer-decay, the run_multitask.py defaults).
`all`: step 1, then the students of --variants: multi (gold labels only, lambda = 1: the multitask
baseline without distillation), annealed (Single->Multi), and fixed lambdas such as 0 and 0.5.
Every run uses the same loop, seed, batches and task order, so only the targets differ.

All other options are run_multitask.py's (see `python training/run_multitask.py --help`): --model,
--data-dir, --preset, --epochs, --lr, --layer-decay, --batch-size, --limit-train, --limit-eval,
--pair-mode, --sts-mode, --schedule, --alpha, --seed, --threads, --time-budget, ... (not --pcgrad,
--extra-epochs or --freeze). --time-budget stops a run early: lambda then never reaches 1.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data.batching import to_device  # noqa: E402
from heads.multitask import MultitaskBert  # noqa: E402
from minbert import AdamW, BertModel, Tokenizer  # noqa: E402
from minbert.safetensors import load_safetensors, save_safetensors  # noqa: E402
from training import tasks  # noqa: E402
from training.distill_targets import annealed_lambda, distill_loss, mixed_targets  # noqa: E402
from training.optim import param_groups, warmup_linear  # noqa: E402
from training.run_multitask import batches, evaluate, load_split, parse_args as multitask_args  # noqa: E402
from training.sampling import TaskScheduler  # noqa: E402

ARCH_OPTIONS = ("model", "pair_mode", "sts_mode", "sentiment_pooling")  # a teacher must match the student here


def parse_args(argv=None) -> tuple[argparse.Namespace, argparse.Namespace]:
    """(distillation options, run_multitask options)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["teachers", "student", "all"], help="step 1, step 2, or both with every variant")
    p.add_argument("--teachers-dir", default="runs/bam/teachers", help="teacher checkpoints and teacher_outputs.json")
    p.add_argument("--retrain-teachers", action="store_true", help="train the teachers even if checkpoints exist")
    p.add_argument("--fixed-lambda", type=float, help="student: constant gold weight lambda instead of the 0 -> 1 ramp")
    p.add_argument("--variants", default="multi,annealed,0,0.5",
                   help="all: students to train: multi (lambda 1), annealed, or numbers (fixed lambdas)")
    p.add_argument("--bam-dir", default="runs/bam", help="student runs (checkpoint, predictions) and the JSON record")
    p.add_argument("--json", help="JSON record (default: BAM_DIR/all.json, teachers.json, student-<variant>.json)")
    own, rest = p.parse_known_args(argv)
    margs = multitask_args(rest)
    if margs.pcgrad or margs.extra_epochs or margs.freeze != "none":
        p.error("the distillation loop supports neither --pcgrad, --extra-epochs nor --freeze")
    if own.fixed_lambda is not None and not 0 <= own.fixed_lambda <= 1:
        p.error(f"--fixed-lambda must be in [0, 1], got {own.fixed_lambda}")
    try:
        own.variants = [v if v in ("multi", "annealed") else float(v) for v in own.variants.split(",") if v]
    except ValueError:
        p.error(f"--variants: expected multi, annealed or numbers in [0, 1], got {own.variants!r}")
    return own, margs


def build(margs):
    tok = Tokenizer.from_pretrained(margs.model)
    model = MultitaskBert(BertModel.from_pretrained(margs.model, attn_implementation=margs.attn,
                                                    unpad=margs.unpad),
                          sentiment_pooling=margs.sentiment_pooling, pair_mode=margs.pair_mode,
                          sts_mode=margs.sts_mode, dropout=margs.dropout).to(margs.device)
    return tok, model


def train(margs, task_list: list[str], lam: float | str, teacher: dict | None, out_dir: Path) -> dict:
    """The shared loop: teachers (one task, lam 1), multi (lam 1), students (annealed or fixed lam).
    Keeps the best epoch by dev score (overall, or the mean over task_list), writes its checkpoint
    and dev/test predictions to out_dir. Returns {"dev", "history", "minutes", "model"}."""
    margs = copy.copy(margs)
    margs.tasks = list(task_list)
    torch.manual_seed(margs.seed)
    np.random.seed(margs.seed)
    if margs.threads:
        torch.set_num_threads(margs.threads)
    tok, model = build(margs)
    data = {t: {s: load_split(margs, tok, t, s) for s in ("train", "dev", "test")} for t in task_list}
    if lam != 1.0:
        for t in task_list:
            missing = [e["id"] for e in data[t]["train"] if e["id"] not in teacher[t]]
            if missing:
                raise ValueError(f"{t}: {len(missing)} training ids have no teacher output (e.g. {missing[0]}); run "
                                 "`distill.py teachers` with the same --limit-train and data")
    heads = {t: model.heads[t] for t in task_list}
    opt = AdamW(param_groups(model.encoder, heads, lr=margs.lr, layer_decay=margs.layer_decay,
                             weight_decay=margs.weight_decay), lr=margs.lr)
    bs = {t: margs.task_batch_size.get(t, margs.batch_size) for t in task_list}
    n_batches = {t: math.ceil(len(data[t]["train"]) / bs[t]) for t in task_list}
    per_epoch = sum(n_batches.values())
    total = per_epoch * margs.epochs
    sched = warmup_linear(opt, int(margs.warmup * total), total)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if margs.amp == "bf16" else None
    streams, passes = {}, {t: 0 for t in task_list}

    def next_batch(t):  # endless, reshuffled every pass, as in run_multitask.py
        while True:
            if t not in streams:
                streams[t] = batches(data[t]["train"], bs[t], tok.pad_id, True, margs.seed, passes[t])
            b = next(streams[t], None)
            if b is not None:
                return b
            del streams[t]
            passes[t] += 1

    best, best_state, history, step, t0 = -math.inf, None, [], 0, time.time()
    model.train()
    for epoch in range(margs.epochs):
        order = TaskScheduler(n_batches, mode=margs.schedule, alpha=margs.alpha, steps=per_epoch,
                              seed=margs.seed + epoch)
        bar = tqdm(order, total=per_epoch, desc=f"{out_dir.name} epoch {epoch + 1}/{margs.epochs}", dynamic_ncols=True)
        for t in bar:
            b = next_batch(t)
            w = annealed_lambda(step, total) if lam == "annealed" else float(lam)
            gold = b["labels"]
            if w < 1.0:
                soft = torch.tensor([teacher[t][i] for i in b["ids"]], dtype=torch.float32)  # (B, 5) or (B,)
                target = mixed_targets(t, gold, soft, w)
            else:  # gold only, in the form distill_loss expects
                target = mixed_targets(t, gold, torch.zeros(len(gold), 5) if t == "sst" else gold.float(), 1.0)
            b = to_device(b, margs.device)
            with autocast() if autocast else torch.autocast("cpu", enabled=False):
                loss = distill_loss(t, tasks.forward(model, t, b), target.to(margs.device))
            loss = loss * margs.loss_weights.get(t, 1.0)
            loss.backward()
            if not math.isfinite(loss.item()):
                raise SystemExit(f"step {step}: {t} loss is not finite; lower --lr or check the data")
            if margs.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), margs.clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.set_postfix(task=t, loss=f"{loss.item():.3f}", lam=f"{w:.2f}")
            if margs.time_budget and time.time() - t0 > margs.time_budget * 60:
                break
        scores, _ = evaluate(model, data, margs, tok.pad_id, autocast)
        history.append({"epoch": epoch + 1, "step": step, "lambda": w, "minutes": round((time.time() - t0) / 60, 2),
                        **scores})
        print(f"  {out_dir.name} dev " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        key = scores.get("overall", float(np.mean([scores[t] for t in task_list])))
        if key > best:
            best, best_state = key, {k: v.detach().clone() for k, v in model.state_dict().items()}
        if margs.time_budget and time.time() - t0 > margs.time_budget * 60:
            print(f"  time budget reached at step {step} of {total} (lambda {w:.2f})")
            break

    model.load_state_dict(best_state)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_safetensors({k: v.cpu() for k, v in best_state.items()}, out_dir / "model.safetensors")
    final = {}
    for split in ("dev", "test"):
        scores, outputs = evaluate(model, data, margs, tok.pad_id, autocast, split)
        final = scores if split == "dev" else final
        for t, (ids, preds) in outputs.items():
            tasks.write_predictions(tasks.prediction_file(out_dir / "predictions", t, split), t, ids, preds)
    (out_dir / "options.json").write_text(json.dumps({"options": vars(margs), "lambda": lam, "dev": final}, indent=2))
    return {"dev": final, "history": history, "minutes": round((time.time() - t0) / 60, 2), "model": model}


@torch.no_grad()
def teacher_outputs(model: MultitaskBert, task: str, encoded: list[dict], pad_id: int, device) -> dict:
    """{example id: teacher output} over encoded training examples, in eval mode (no dropout):
    sst -> 5 probabilities, quora -> P(paraphrase), sts -> the predicted score."""
    model.eval()
    out = {}
    for b in batches(encoded, 128, pad_id, False, 0):
        y = tasks.forward(model, task, to_device(b, device)).float()
        y = y.softmax(-1) if task == "sst" else y.sigmoid() if task == "quora" else y
        out.update(zip(b["ids"], np.round(y.cpu().numpy(), 6).tolist()))
    return out


def teachers(own, margs) -> dict:
    """Step 1: train or load one teacher per task; write (or reuse) their training-set outputs."""
    root = Path(own.teachers_dir)
    path = root / "teacher_outputs.json"
    outputs = json.loads(path.read_text()) if path.is_file() else {}
    scores = {}
    for t in margs.tasks:
        ckpt = root / t / "model.safetensors"
        if own.retrain_teachers or not ckpt.is_file():
            print(f"step 1: training the {t} teacher ...")
            result = train(margs, [t], 1.0, None, root / t)
            model, scores[t] = result["model"], result["dev"][t]
            outputs.pop(t, None)  # a new teacher: its old outputs are stale
        else:
            saved = json.loads((root / t / "options.json").read_text())
            diff = {k: (saved["options"].get(k), getattr(margs, k)) for k in ARCH_OPTIONS
                    if saved["options"].get(k) != getattr(margs, k)}
            if diff:
                raise SystemExit(f"{ckpt} was trained with other options {diff} (teacher, now); pass the same "
                                 "options or --retrain-teachers")
            print(f"step 1: reusing the {t} teacher in {ckpt}")
            _, model = build(margs)
            model.load_state_dict(load_safetensors(ckpt))
            scores[t] = saved["dev"][t]
        tok = Tokenizer.from_pretrained(margs.model)
        train_set = load_split(margs, tok, t, "train")
        if any(e["id"] not in outputs.get(t, {}) for e in train_set):
            print(f"  {t}: teacher outputs on {len(train_set)} training examples")
            outputs[t] = {**outputs.get(t, {}), **teacher_outputs(model, t, train_set, tok.pad_id, margs.device)}
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outputs))
    if len(scores) == len(tasks.TASK_NAMES):
        scores["overall"] = tasks.overall(scores)
    return {"single": scores, "outputs": outputs}


def main(argv=None) -> dict:
    own, margs = parse_args(argv)
    t0 = time.time()
    record = {"script": "distill", "command": own.command, "options": {**vars(own), **vars(margs)}}
    step1 = teachers(own, margs)  # `student` reuses the stored teachers (trains them if missing)
    record["single"] = step1["single"]
    if own.command == "all":
        variants = own.variants
    elif own.command == "student":
        variants = ["annealed" if own.fixed_lambda is None else own.fixed_lambda]
    else:
        variants = []
    for v in variants:
        name = v if isinstance(v, str) else f"lambda={v:g}"
        lam = 1.0 if v == "multi" else v
        print(f"step 2: student {name} ...")
        result = train(margs, margs.tasks, lam, step1["outputs"], Path(own.bam_dir) / name.replace("=", "_"))
        record[name] = result["dev"]
        record.setdefault("history", {})[name] = result["history"]
    record["wall_seconds"] = round(time.time() - t0, 1)
    names = ["single"] + [v if isinstance(v, str) else f"lambda={v:g}" for v in variants]
    cols = [*margs.tasks, "overall"]
    print(f"\n{'dev':>14} " + " ".join(f"{c:>8}" for c in cols))
    for n in names:
        print(f"{n:>14} " + " ".join(f"{record[n].get(c, float('nan')):8.4f}" for c in cols))
    stem = own.command if own.command != "student" else f"student-{names[-1].replace('=', '_')}"
    path = Path(own.json) if own.json else Path(own.bam_dir) / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))
    print(f"record in {path} ({record['wall_seconds']:.0f} s)")
    return record


if __name__ == "__main__":
    main()
