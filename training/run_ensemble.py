"""Ensemble trained runs: average their outputs on dev and test and write the course's six files.

    python training/run_ensemble.py runs/seed1/best runs/seed2/best runs/cross-sts/best
    python training/run_ensemble.py runs/a runs/b --predictions-dir predictions-ensemble --record ens.json

Each RUN is a best/ folder that training/run_multitask.py wrote (or its --out-dir), as for
run_predict.py. Every member encodes the dev and test sets with its own options (its max_length,
cross- or bi-encoder pairs), so the members may differ in seed, in head (e.g. a cross- and a
bi-encoder for STS) or in length. The members' outputs are matched by example id and averaged in
probability space, as the task table's `teacher` maps a head's output: SST's five class
probabilities, Quora's paraphrase probability, STS's score. The task table's `decide` then predicts:
SST the most probable class, Quora p > 0.5, STS the mean score clamped to [0, 5].

The ensemble covers the course tasks that every member was trained on. It prints (and --record
writes as JSON) each member's dev scores and the ensemble's, and the seconds of each member's
inference and of the whole command. The cost: K members predict K times (and were trained K times);
their inference runs one after the other, one model in memory at a time.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from data.batching import encode_examples
from data.datasets import TASK_NAMES, find_data_dir, load_task, task_file
from heads.multitask_bert import MultitaskBert, read_run
from minbert import Tokenizer
from training.multitask import options, tasks
from training.multitask.splits import sample
from training.multitask.tasks import TASKS

SPLITS = ("dev", "test")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="the members: best/ folders of training runs (or their --out-dirs); one or more")
    p.add_argument("--predictions-dir", type=Path, default=Path("predictions-ensemble"),
                   help="where the course's prediction files go (sst/para/sts-dev/test-output.csv)")
    p.add_argument("--data-dir", help="the folder with the course files (default: $MINBERT_DATA_DIR, ../shared/data, "
                   "./data-files)")
    options.add_shared(p, "--device")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--limit-eval", type=int, metavar="N",
                   help="use a fixed random sample of N examples of every dev and test file (a quick check)")
    p.add_argument("--record", type=Path, metavar="OUT.json",
                   help="also write the members' and the ensemble's dev scores and times as JSON here")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads {args.threads}: must be at least 1")
    if args.limit_eval is not None and args.limit_eval < 1:
        p.error(f"--limit-eval {args.limit_eval}: must be at least 1 (leave it out for the whole files)")
    for problem in options.device_problems(args.device):
        p.error(problem)
    return args


def common_tasks(infos: list[dict]) -> list[str]:
    """The course tasks every member was trained on (a member's other heads are untrained)."""
    common = [t for t in TASK_NAMES if all(t in info["tasks"] for info in infos)]
    if not common:
        trained = "; ".join(f"{info['directory']}: {', '.join(info['tasks'])}" for info in infos)
        raise ValueError(f"the runs share no course task ({trained}); an ensemble averages the same task's "
                         "outputs, so pass runs trained on at least one common task")
    return common


def load_sets(task_names: list[str], data_dir, limit: int | None) -> dict[str, dict[str, list[dict]]]:
    """{task: {split: examples}} of dev and test, in file order (limited to a fixed sample)."""
    find_data_dir(data_dir, required=[task_file(TASKS[t].data, s) for t in task_names for s in SPLITS])
    return {t: {s: sample(load_task(TASKS[t].data, s, data_dir).examples, limit) for s in SPLITS}
            for t in task_names}


def aligned(ids: list, out: np.ndarray, examples: list[dict]) -> np.ndarray:
    """Rows of `out` (in the order of `ids`, tasks.outputs' length buckets) put in the examples' order."""
    row = {i: n for n, i in enumerate(ids)}
    if len(row) != len(examples) or any(e["id"] not in row for e in examples):
        raise ValueError("the model's outputs do not cover the examples' ids one to one")
    return out[[row[e["id"]] for e in examples]]


def member_outputs(info: dict, sets: dict, device: str, name: str) -> dict[str, dict[str, np.ndarray]]:
    """{task: {split: the member's head outputs, in the examples' order}}, encoded with the member's
    own max_length and pair encoding."""
    model = MultitaskBert.from_run(info["directory"]).to(device)
    tok = Tokenizer.from_pretrained(info["directory"])
    result = {}
    for t, splits in sets.items():
        result[t] = {}
        for s, examples in splits.items():
            encoded = encode_examples(tok, examples, TASKS[t].data, max_length=info["max_length"],
                                      cross_encoder=tasks.is_cross(t, model))
            ids, out, _ = tasks.outputs(model, encoded, tok.pad_id, device, t, progress=f"{name} {t}-{s}")
            result[t][s] = aligned(ids, out, examples)
    return result


def mean_teacher(task: str, outs: list[np.ndarray]) -> np.ndarray:
    """The members' mean in probability space (float64: a one-member ensemble decides as the member)."""
    return np.mean([TASKS[task].teacher(torch.from_numpy(o).double()).numpy() for o in outs], axis=0)


def dev_scores(preds: dict[str, np.ndarray], sets: dict) -> dict[str, float]:
    scores = {t: TASKS[t].metric(p, np.array([e["label"] for e in sets[t]["dev"]])) for t, p in preds.items()}
    if tasks.overall(scores) is not None:
        scores["overall"] = tasks.overall(scores)
    return scores


def show(scores: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in scores.items())


def ensemble(args) -> dict:
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    infos = [read_run(r) for r in args.runs]
    names = common_tasks(infos)
    for info in infos:
        if set(info["tasks"]) - set(names):
            print(f"note: {info['directory']} also has {', '.join(sorted(set(info['tasks']) - set(names)))}; the "
                  f"ensemble covers the tasks all members share: {', '.join(names)}", file=sys.stderr)
    sets = load_sets(names, args.data_dir, args.limit_eval)
    members = []
    for k, info in enumerate(infos, 1):
        t0 = time.perf_counter()
        outs = member_outputs(info, sets, args.device, f"member {k}/{len(infos)}")
        seconds = time.perf_counter() - t0
        dev = dev_scores({t: tasks.predictions(t, outs[t]["dev"]) for t in names}, sets)
        members.append(dict(run=str(info["directory"]), max_length=info["max_length"], heads=info["heads"],
                            dev=dev, seconds=seconds, outputs=outs))
        print(f"member {k} {info['directory']}: dev {show(dev)}  ({seconds:.1f} s inference)")
    mean = {t: {s: mean_teacher(t, [m["outputs"][t][s] for m in members]) for s in SPLITS} for t in names}
    preds = {t: {s: TASKS[t].decide(torch.from_numpy(mean[t][s])).numpy() for s in SPLITS} for t in names}
    dev = dev_scores({t: preds[t]["dev"] for t in names}, sets)
    for t in names:
        for s in SPLITS:
            tasks.write_predictions(tasks.prediction_file(args.predictions_dir, t, s), t,
                                    [e["id"] for e in sets[t][s]], preds[t][s])
    seconds = time.perf_counter() - start
    key = "overall" if "overall" in dev else names[0]
    best = max(m["dev"][key] for m in members)
    print(f"ensemble of {len(members)}: dev {show(dev)}  ({dev[key] - best:+.4f} {key} over the best member)")
    print(f"time: {seconds:.1f} s in all, {sum(m['seconds'] for m in members):.1f} s of it the members' inference; "
          f"{2 * len(names)} prediction files in {args.predictions_dir}")
    record = dict(command=args.command, tasks=names, limit_eval=args.limit_eval, device=args.device,
                  threads=torch.get_num_threads(),
                  members=[{k: v for k, v in m.items() if k != "outputs"} for m in members],
                  ensemble=dict(dev=dev), seconds=seconds, predictions_dir=str(args.predictions_dir))
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    ids = {t: {s: [e["id"] for e in sets[t][s]] for s in SPLITS} for t in names}
    return dict(record, ids=ids, mean=mean, predictions=preds, member_outputs=[m["outputs"] for m in members])


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_args(argv)
    args.command = shlex.join(["python", "training/run_ensemble.py"] + argv)
    try:
        return ensemble(args)
    except (OSError, ValueError) as e:  # CheckpointError, DataError, a missing data file, a bad device name, ...
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
