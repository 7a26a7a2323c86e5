"""Born-Again multi-task distillation with teacher annealing (Clark et al. 2019, "BAM!").

    python training/run_distill.py all --preset quick            # every step below, one JSON record
    python training/run_distill.py teachers --preset quick       # step 1 only
    python training/run_distill.py student --preset quick        # step 2, annealed (needs step 1)
    python training/run_distill.py student --fixed-lambda 0      # step 2, pure distillation (ablation)
    python training/run_distill.py --help

Step 1 (`teachers`): one single-task model per task, saved to TEACHERS_DIR/{task}/, and its outputs
on the training set in TEACHERS_DIR/teacher_outputs.json (existing teachers are reused). Step 2
(`student`): one multitask model trained on target = lambda * gold + (1 - lambda) * teacher, lambda
rising from 0 to 1 over the steps (or --fixed-lambda). `all`: step 1, then the students of --variants.
Every run uses the same loop, seed, batches and task order, so only the targets differ.

All other options are run_multitask.py's (`python training/run_multitask.py --help`), except
--pcgrad, --extra-epochs, --freeze, --ema and --rdrop. Details: docs/RESULTS_METHODS.md, section 2.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from training.engine import checkpointing
from training.multitask import options
from training.methods.distill import teachers, train


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
    margs = options.parse_args(rest)
    if margs.pcgrad or margs.extra_epochs or margs.freeze != "none" or margs.ema or margs.rdrop:
        p.error("the distillation loop supports neither --pcgrad, --extra-epochs, --freeze, --ema nor --rdrop "
                "(nor --preset best, which turns --ema and --task-layers on)")
    if margs.sts_loss != "mse" or margs.quora_mnrl:
        p.error("the distillation loop trains on distillation targets (distill_targets.py): it supports neither "
                "--sts-loss cosent nor --quora-mnrl")
    if own.fixed_lambda is not None and not 0 <= own.fixed_lambda <= 1:
        p.error(f"--fixed-lambda must be in [0, 1], got {own.fixed_lambda}")
    try:
        own.variants = [v if v in ("multi", "annealed") else float(v) for v in own.variants.split(",") if v]
    except ValueError:
        p.error(f"--variants: expected multi, annealed or numbers in [0, 1], got {own.variants!r}")
    return own, margs


def main(argv=None) -> dict:
    own, margs = parse_args(argv)
    t0 = time.time()
    record = {"script": "distill", "command": own.command, "options": {**vars(own), **vars(margs)}}
    step1 = teachers(own, margs)  # `student` reuses the stored teachers (trains them if missing)
    record["single"] = step1["single"]
    variants = {"all": own.variants, "student": ["annealed" if own.fixed_lambda is None else own.fixed_lambda]}
    names = ["single"]
    for v in variants.get(own.command, []):
        name = v if isinstance(v, str) else f"lambda={v:g}"
        names.append(name)
        print(f"step 2: student {name} ...")
        result = train(margs, margs.tasks, 1.0 if v == "multi" else v, step1["outputs"],
                       Path(own.bam_dir) / name.replace("=", "_"))
        record[name] = result["dev"]
        record.setdefault("history", {})[name] = result["history"]
    record["wall_seconds"] = round(time.time() - t0, 1)
    cols = [*margs.tasks] + (["overall"] if any("overall" in record[n] for n in names) else [])  # all 3 tasks
    print(f"\n{'dev':>14} " + " ".join(f"{c:>8}" for c in cols))
    for n in names:
        print(f"{n:>14} " + " ".join(f"{record[n].get(c, float('nan')):8.4f}" for c in cols))
    stem = own.command if own.command != "student" else f"student-{names[-1].replace('=', '_')}"
    path = Path(own.json) if own.json else Path(own.bam_dir) / f"{stem}.json"
    checkpointing.atomic_write(path, json.dumps(record, indent=2, default=str))
    print(f"record in {path} ({record['wall_seconds']:.0f} s)")
    return record


if __name__ == "__main__":
    main()
