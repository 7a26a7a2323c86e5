"""Label sentences with a trained run: your own sentences, or a course-format file.

    R=runs/multitask/best
    python training/run_predict.py --run $R --task sst "A gripping, funny film." "Two dull hours."
    python training/run_predict.py --run $R --task sts "A man plays a guitar." "Someone plays music."
    printf 'How do I learn Python?\\tWhat is the best way to learn Python?\\n' | \\
        python training/run_predict.py --run $R --task quora
    python training/run_predict.py --run $R --task sts --input my-pairs.csv --output sts-predictions.csv

--run is the best/ folder that training/run_multitask.py wrote (or its --out-dir). Quick use prints
one line per item, tab-separated: for sst the label and the five class probabilities, for quora the
paraphrase probability, for sts the similarity score in [0, 5]; then the input. Pair tasks take two
sentences per item: on the command line consecutive arguments pair up, on stdin a tab separates them
(one item a line). --input reads a file in the course's format (tab-separated, header with id and
sentence / sentence1 sentence2, labels optional: with labels the score is printed too) and --output
writes the course's prediction file (id , prediction), in the input's order.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.batching import collate, encode_examples, example_lengths, to_device
from data.datasets import load_cfimdb, load_quora, load_sst, load_sts
from heads.multitask_bert import MultitaskBert, read_run
from minbert import Tokenizer
from training.multitask import tasks
from training.multitask.options import device_problems
from training.multitask.tasks import TASKS, predictions, write_predictions

LOADERS = {"sst": load_sst, "quora": load_quora, "sts": load_sts, "cfimdb": load_cfimdb}  # by data set
PROGRESS_MIN = 256  # a progress bar for more items than this (4 batches of the default size)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a run's best/ folder (or the run's --out-dir)")
    p.add_argument("--task", required=True, choices=list(TASKS), help="which head answers")
    p.add_argument("sentences", nargs="*", help="sentences to label (pair tasks: consecutive arguments pair up); "
                   "without them and without --input, items are read from stdin")
    p.add_argument("--input", type=Path, help="a course-format CSV (tab-separated; labels optional)")
    p.add_argument("--output", type=Path, help="write the course's prediction file here (needs --input)")
    p.add_argument("--batch-size", type=int, default=64, help="items per forward pass")
    p.add_argument("--max-length", type=int, help="truncate to this many tokens (default: the run's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1 ..., mps")
    args = p.parse_args(argv)
    if args.input and args.sentences:
        p.error("give sentences on the command line or --input FILE, not both")
    if args.output and not args.input:
        p.error("--output writes the predictions of --input FILE; for sentences, read the printed lines")
    if args.batch_size < 1:
        p.error(f"--batch-size {args.batch_size}: must be at least 1")
    if args.max_length is not None and args.max_length < 4:
        p.error(f"--max-length {args.max_length}: must be at least 4 ([CLS] a [SEP] b [SEP])")
    for problem in device_problems(args.device):  # cuda and mps that this machine lacks, unknown devices
        p.error(problem)
    return args


def items_from_text(task: str, sentences: list[str], lines: list[str] | None) -> list[dict]:
    """Command-line sentences or stdin lines -> examples {"id", "sentence"} / {"id", "sentence1", "sentence2"}."""
    pair = TASKS[task].pair
    if lines is None:  # the command line
        if pair and len(sentences) % 2:
            raise ValueError(f"--task {task} compares two sentences: give an even number of arguments "
                             f"(got {len(sentences)}), each two form a pair")
        groups = [sentences[i:i + 2] for i in range(0, len(sentences), 2)] if pair else [[s] for s in sentences]
    else:
        groups = []
        for n, line in enumerate(lines, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = [s.strip() for s in line.split("\t")] if pair else [line.strip()]
            if pair and (len(parts) != 2 or not all(parts)):
                raise ValueError(f"stdin line {n}: --task {task} needs two sentences separated by one tab, "
                                 f"got {len(parts)} part(s): {line[:80]!r}")
            groups.append(parts)
    keys = ("sentence1", "sentence2") if pair else ("sentence",)
    return [{"id": str(i), **dict(zip(keys, g))} for i, g in enumerate(groups, 1)]


@torch.no_grad()
def run_head(model: MultitaskBert, tok: Tokenizer, task: str, examples: list[dict], max_length: int,
             batch_size: int, device: str) -> torch.Tensor:
    """The head's raw output for every example, in the examples' order: sst logits (N, 5), quora
    logits (N,), sts scores (N,). Batches hold similar lengths (little padding)."""
    encoded = encode_examples(tok, examples, TASKS[task].data, max_length=max_length,
                              cross_encoder=tasks.is_cross(task, model))
    order = np.argsort(example_lengths(encoded), kind="stable")
    outputs: list[torch.Tensor] = []
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=f"predict {task}", disable=len(order) <= PROGRESS_MIN):
        batch = to_device(collate([encoded[i] for i in order[start:start + batch_size]], tok.pad_id), device)
        outputs.append(model(task, *tasks.inputs(batch)).float().cpu())
    out = torch.cat(outputs)
    result = torch.empty_like(out)
    result[torch.as_tensor(order)] = out  # back to the input order
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        return predict(args)
    except (OSError, ValueError) as e:  # CheckpointError, DataError, a bad device name, ...
        raise SystemExit(f"error: {e}") from None


def predict(args) -> dict:
    info = read_run(args.run)
    if args.task not in info["tasks"]:
        raise ValueError(f"the run in {info['directory']} was trained on {', '.join(info['tasks'])}, not {args.task}: "
                         f"its {args.task} head is untrained. Use --task {' or --task '.join(info['tasks'])}, or "
                         f"train with --tasks including {args.task}")
    if device_problems(args.device):  # predict() called without parse_args
        raise ValueError(device_problems(args.device)[0])
    model = MultitaskBert.from_run(info["directory"]).to(args.device)
    tok = Tokenizer.from_pretrained(info["directory"])
    if args.input:
        examples = LOADERS[TASKS[args.task].data](args.input).examples
    else:
        lines = None
        if not args.sentences:
            if sys.stdin.isatty():
                print("type one item a line" + (" (two sentences separated by a tab)" if TASKS[args.task].pair
                                                else "") + "; Ctrl-D to finish", file=sys.stderr)
            lines = sys.stdin.readlines()
        examples = items_from_text(args.task, args.sentences, lines)
    if not examples:
        where = f" ({args.input} has no rows)" if args.input else ""
        raise ValueError(f"nothing to predict: no sentences given{where}")
    out = run_head(model, tok, args.task, examples, args.max_length or info["max_length"], args.batch_size, args.device)
    preds = predictions(args.task, out.numpy())
    ids = [e["id"] for e in examples]
    result = {"ids": ids, "outputs": out, "predictions": preds}
    if args.output:
        write_predictions(args.output, args.task, ids, preds)
        print(f"{len(ids)} predictions in {args.output}", file=sys.stderr)
    else:
        keys = ("sentence1", "sentence2") if TASKS[args.task].pair else ("sentence",)
        for e, row in zip(examples, out):
            print(TASKS[args.task].describe(row) + "\t" + "\t".join(e[k] for k in keys))
    if all("label" in e for e in examples):
        result["score"] = TASKS[args.task].metric(preds, np.array([e["label"] for e in examples]))
        print(f"{args.task} {TASKS[args.task].metric_name} {result['score']:.4f} on {len(examples)} labelled "
              "examples", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
