"""BAM! distillation (Clark et al. 2019): single-task teachers, then multitask students trained on
annealed targets (training/methods/distill_targets.py), all through the one loop (training/engine/loop.py).
The command is training/run_distill.py."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from heads.multitask_bert import MultitaskBert
from minbert import Tokenizer
from minbert.safetensors import load_safetensors
from training.engine import checkpointing
from training.multitask import tasks
from training.methods.distill_targets import annealed_lambda, distill_loss, mixed_targets
from training.engine.loop import Loop, fit
from training.multitask.recipe import (build, build_model, dev_score, load_checkpoint, loop_settings, task_output,
                                write_predictions)
from training.multitask.splits import load_split

ARCH_OPTIONS = ("model", "pair_mode", "sts_mode", "sentiment_pooling", "task_layers")  # a teacher must match the student here


def train(margs, task_list: list[str], lam: float | str, teacher: dict | None, out_dir: Path) -> dict:
    """The shared loop: teachers (one task, lam 1), multi (lam 1), students (annealed or fixed lam).
    Keeps the best epoch by dev score (overall, or the mean over task_list), writes its checkpoint
    and dev/test predictions to out_dir. Returns {"dev", "history", "minutes", "model"}."""
    margs = copy.copy(margs)
    margs.tasks = list(task_list)
    run = build(margs)
    model, data = run.model, run.data
    if lam != 1.0:
        for t in task_list:
            missing = [e["id"] for e in data[t]["train"] if e["id"] not in teacher[t]]
            if missing:
                raise ValueError(f"{t}: {len(missing)} training ids have no teacher output (e.g. {missing[0]}); run "
                                 "`run_distill.py teachers` with the same --limit-train and data")
    done, weight = [0], [1.0]  # steps taken, the gold weight of the last one

    def losses(step_tasks: list[str]) -> dict:
        t = step_tasks[0]
        b, _ = next(run.streams[t])
        w = weight[0] = annealed_lambda(done[0], run.total_steps) if lam == "annealed" else float(lam)
        done[0] += 1
        gold = b["labels"]
        if w < 1.0:
            soft = torch.tensor([teacher[t][i] for i in b["ids"]], dtype=torch.float32)  # (B, 5) or (B,)
            target = mixed_targets(t, gold, soft, w)
        else:  # gold only, in the form distill_loss expects
            target = mixed_targets(t, gold, torch.zeros(len(gold), 5) if t == "sst" else gold.float(), 1.0)
        return {t: distill_loss(t, task_output(model, t, b, margs), target.to(margs.device))
                * margs.loss_weights.get(t, 1.0)}

    def score() -> tuple[float, dict]:
        key, scores = dev_score(model, data, margs, run.tok.pad_id, prefix=f"{out_dir.name} ")
        return key, {"lambda": weight[0], **scores}

    result = fit(Loop(model, [run.player], run.phases, losses, score,
                      **loop_settings(margs, run.precision, desc=f"{out_dir.name} ")))
    kept = next((h for h in result["history"] if h["epoch"] == result["best_epoch"]), {})
    dev = {k: kept[k] for k in (*task_list, "overall") if k in kept}  # the kept epoch's scores, as run_multitask saves
    # a complete run folder (heads/multitask_bert.py), so run_predict.py, run_export.py and from_run read it
    model.save_run(out_dir, run.tok, {**vars(margs), "lambda": lam}, dev, result["best_epoch"] or 0)
    final = write_predictions(model, data, margs, run.tok.pad_id, out_dir / "predictions")
    history = [{k: v for k, v in h.items() if k != "phase"} for h in result["history"]]
    return {"dev": final, "history": history, "minutes": round(result["minutes"], 2), "model": model}


def teacher_outputs(model: MultitaskBert, task: str, encoded: list[dict], pad_id: int, device) -> dict:
    """{example id: teacher output} over encoded training examples, in eval mode (no dropout):
    sst -> 5 probabilities, quora -> P(paraphrase), sts -> the predicted score."""
    ids, out, _ = tasks.outputs(model, encoded, pad_id, device, task)
    return dict(zip(ids, np.round(tasks.TASKS[task].teacher(torch.from_numpy(out)).numpy(), 6).tolist()))


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
            model = build_model(margs, load_checkpoint(margs)[1])
            model.load_state_dict(load_safetensors(ckpt))
            scores[t] = saved["dev"][t]
        tok = Tokenizer.from_pretrained(margs.model)
        train_set = load_split(margs, tok, t, "train")
        if any(e["id"] not in outputs.get(t, {}) for e in train_set):
            print(f"  {t}: teacher outputs on {len(train_set)} training examples")
            outputs[t] = {**outputs.get(t, {}), **teacher_outputs(model, t, train_set, tok.pad_id, margs.device)}
    checkpointing.atomic_write(path, json.dumps(outputs))
    if tasks.overall(scores) is not None:
        scores["overall"] = tasks.overall(scores)
    return {"single": scores, "outputs": outputs}
