"""Per-step training losses of every trainer, recorded from outside the product.

Each case runs a training script (as `python SCRIPT ARGS` would, through runpy) on the hand-written
fixture data with a tiny BERT, on CPU in fp32 (--amp none), and records the value every call of the
named loss functions returns while gradients are on (training, not evaluation), through
sys.setprofile: no product code is changed or patched to record them. tests/test_loss_traces.py
replays every case on the current code and compares each loss with the stored one.

    python tests/loss_traces.py       # (re)record tests/fixtures/loss_traces.json from this tree

The tiny checkpoint's weights come from one seeded generator in sorted key order, so they do not
depend on the order in which minbert creates its parameters.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "fixtures" / "data" / "course"
FIXTURE = REPO / "tests" / "fixtures" / "loss_traces.json"

# Common options of the multitask-style trainers: CPU, fp32, one thread, tiny batches.
# --adamw graded: the traces were recorded with the course's per-parameter update (the old code's only one).
MT = ["--preset", "quick", "--batch-size", "2", "--amp", "none", "--device", "cpu", "--threads", "1", "--adamw", "graded"]
RUN = ["--device", "cpu", "--threads", "1", "--adamw", "graded"]

# name: (script, argv, loss functions whose return values are recorded). {ckpt}, {data}, {out} are filled in.
CASES = {
    "multitask": ("training/run_multitask.py",
                  ["--model", "{ckpt}", "--data-dir", "{data}", *MT, "--epochs", "8",
                   "--out-dir", "{out}/run", "--predictions-dir", "{out}/predictions"],
                  ["training.multitask.tasks.loss_from_output"]),
    "multitask-pcgrad": ("training/run_multitask.py",
                         ["--model", "{ckpt}", "--data-dir", "{data}", *MT, "--epochs", "25", "--pcgrad",
                          "--out-dir", "{out}/run", "--predictions-dir", "{out}/predictions"],
                         ["training.multitask.tasks.loss_from_output"]),
    "classifier": ("training/run_classifier.py",
                   ["--model", "{ckpt}", "--data-dir", "{data}", "--task", "sst", "--mode", "finetune",
                    "--steps", "50", "--batch-size", "2", *RUN,
                    "--out-dir", "{out}/run", "--predictions-dir", "{out}/predictions"],
                   ["torch.nn.functional.cross_entropy"]),
    "distill": ("training/methods/distill.py",
                ["all", "--variants", "annealed", "--teachers-dir", "{out}/teachers", "--bam-dir", "{out}/bam",
                 "--model", "{ckpt}", "--data-dir", "{data}", *MT, "--epochs", "7"],
                ["training.methods.distill_targets.distill_loss"]),
    "gan": ("training/run_gan.py",
            ["--model", "{ckpt}", "--data-dir", "{data}", "--task", "sst", "--method", "gan", "--labelled", "0.5",
             "--steps", "50", "--batch-size", "2", *RUN, "--out-dir", "{out}/run"],
            ["training.methods.gan.discriminator_loss", "training.methods.gan.generator_loss"]),
    "acgan": ("training/run_gan.py",
              ["--model", "{ckpt}", "--data-dir", "{data}", "--task", "sst", "--method", "acgan", "--labelled", "0.5",
               "--steps", "50", "--batch-size", "2", *RUN, "--out-dir", "{out}/run"],
              ["training.methods.gan.discriminator_loss", "training.methods.gan.generator_loss"]),
}


def make_checkpoint(d: Path) -> Path:
    """A 2-layer, hidden-32 BERT (dropout 0.1) with the real vocabulary, weights from one seeded stream."""
    from minbert import BertConfig, BertModel
    from minbert.safetensors import load_safetensors, save_safetensors
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=128)
    BertModel(cfg).save_pretrained(d)
    # Refill the saved (transformers-format) tensors from one seeded stream, in sorted key order.
    g = torch.Generator().manual_seed(1234)
    weights = load_safetensors(d / "model.safetensors")
    for k in sorted(weights):
        w = torch.randn(weights[k].shape, generator=g) * 0.05
        weights[k] = w + 1.0 if k.endswith("LayerNorm.weight") else w
    save_safetensors(weights, d / "model.safetensors")
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(REPO / "tests" / "fixtures" / "tokenizer" / f, d / f)
    return d


def _function(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def record(name: str, ckpt: Path, out: Path, script: str | None = None) -> list[float]:
    """The loss values of case `name`, in call order. script: the entry script (default: the case's)."""
    default, argv, functions = CASES[name]
    argv = [a.format(ckpt=ckpt, data=DATA, out=out) for a in argv]
    codes = {_function(f).__code__ for f in functions}
    values: list[float] = []

    def hook(frame, event, arg):
        if event == "return" and frame.f_code in codes and isinstance(arg, torch.Tensor) and arg.requires_grad:
            values.append(arg.item())

    old_argv = sys.argv
    sys.argv = [str(REPO / (script or default)), *argv]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            sys.setprofile(hook)
            try:
                runpy.run_path(sys.argv[0], run_name="__main__")
            finally:
                sys.setprofile(None)
    finally:
        sys.argv = old_argv
    return values


def main() -> None:
    import tempfile
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "training", "minbert", "heads", "data"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    torch.set_num_threads(1)
    traces = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp) / "tiny-bert")
        for name, (script, argv, functions) in CASES.items():
            traces[name] = {"script": script, "argv": argv, "recorded": functions,
                            "losses": record(name, ckpt, Path(tmp) / name)}
            print(f"{name}: {len(traces[name]['losses'])} losses")
    FIXTURE.write_text(json.dumps({
        "about": "per-call training losses (tests/loss_traces.py); CPU, fp32, 1 thread, tiny checkpoint of "
                 "tests/loss_traces.make_checkpoint, data tests/fixtures/data/course",
        "commit": commit + (" (with uncommitted changes)" if dirty else ""), "torch": torch.__version__,
        "cases": traces}, indent=1))
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
