"""Export a trained run's encoder as a standard folder for transformers and sentence-transformers.

    python training/run_export.py --run runs/multitask/best --out my-minilm-sts

The folder holds config.json + model.safetensors (Hugging Face parameter names) and the tokenizer
files, so transformers' AutoModel / AutoTokenizer load it; modules.json, 1_Pooling/ and
sentence_bert_config.json make it a sentence-transformers model (mean pooling, the pooling of the
project's STS head, truncation at the run's max_length); README.md is its model card.

For a run trained with --sts-mode cosine, cos(SentenceTransformer(out).encode(a), ...encode(b))
is the cosine inside the run's STS head, so `run_predict.py --task sts` prints 5 * max(cos, 0).
For --sts-mode cross or regressor the export still holds the fine-tuned encoder, but its
sentence-transformers vectors are plain mean pooling, not what the run's STS head scores. The task
heads themselves (SST classifier, paraphrase head) are not exported; use run_predict.py for them.

A run trained with --task-layers N has a copy of the top N layers per task. The export is the
encoder a user wants for sentence embeddings: the shared lower layers with the STS task's own top
N layers (the run keeps them in its encoder), a standard BertModel. SST's and Quora's own top
layers are not exported; run_predict.py uses them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from heads.multitask_bert import MultitaskBert, read_run
from minbert import Tokenizer

# Base checkpoints we can name on the hub, with their licences; others: the card says to check.
KNOWN_BASES = {"all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
               "sentence-transformers/all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
               "bert-base-uncased": ("google-bert/bert-base-uncased", "apache-2.0")}
TASK_DATA = {"sst": "SST-5 sentiment (ids-sst-train.csv, 5 classes)",
             "quora": "Quora Question Pairs (quora-train.csv, paraphrase or not)",
             "sts": "STS Benchmark (sts-train.csv, similarity 0-5)"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a run's best/ folder (or the run's --out-dir)")
    p.add_argument("--out", required=True, type=Path, help="the folder to write (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write into an --out folder that holds files (ours are "
                   "replaced, others are left)")
    return p.parse_args(argv)


def sentence_transformers_files(out: Path, hidden_size: int, max_length: int) -> None:
    """modules.json: token vectors from the transformer, then mean pooling. No Normalize module:
    the vectors stay the plain mean, whose cosines are the STS head's."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    pooling = {"word_embedding_dimension": hidden_size, "pooling_mode_cls_token": False,
               "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True}
    write_json(out / "modules.json", modules)
    (out / "1_Pooling").mkdir(exist_ok=True)
    write_json(out / "1_Pooling" / "config.json", pooling)
    # the tokenizer lower-cases already; max_seq_length: the same truncation as the run's predictions
    write_json(out / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    write_json(out / "config_sentence_transformers.json", {"similarity_fn_name": "cosine"})


def model_card(info: dict, hidden_size: int, name: str) -> str:
    options, base = info.get("options", {}), str(info["base_model"])
    hub_id, licence = KNOWN_BASES.get(base.lower(), (None, None))
    sts_mode = info["heads"]["sts_mode"]
    front = ["---", f"license: {licence or 'other'}", "library_name: sentence-transformers",
             "pipeline_tag: sentence-similarity", "tags: [sentence-transformers, feature-extraction, "
             "sentence-similarity, minbert]"] + ([f"base_model: {hub_id}"] if hub_id else []) + ["---", ""]
    if sts_mode == "cosine":
        contract = ("The run's STS head scores a pair 5 * max(cos(u, v), 0), with u, v the mean-pooled vectors that "
                    "`SentenceTransformer(...).encode` returns here: cosines of these vectors are that head's.")
    else:
        contract = (f"**Note:** this run's STS head is `--sts-mode {sts_mode}`, not the cosine. The vectors that "
                    "sentence-transformers returns here are plain mean pooling of the fine-tuned encoder, NOT what "
                    "the run's STS head scores; their cosines are not the run's STS predictions.")
    n_top = int(info["heads"].get("task_layers", 0))
    if n_top:
        contract += (f" The run was trained with `--task-layers {n_top}` (each task its own copy of the top "
                     f"{n_top} layers): this encoder is the shared lower layers with the STS task's own top {n_top}; "
                     "the SST and Quora tasks' own top layers are not exported.")
    trained = [t for t in info["tasks"] if t in TASK_DATA]
    limits = {k: options.get(k) for k in ("limit_train", "train_fraction", "epochs", "preset") if k in options}
    dev = "\n".join(f"| {k} | {v:.4f} |" for k, v in info.get("dev", {}).items())
    lines = front + [
        "# Fine-tuned encoder from minBERT's multitask run", "",
        f"A BERT encoder (hidden size {hidden_size}) fine-tuned on {', '.join(trained)} with minBERT's "
        "`training/run_multitask.py` (one shared encoder, one head per task), exported by "
        "`training/run_export.py`.", "",
        "## Base checkpoint", "",
        f"`{base}`" + (f" ([{hub_id}](https://huggingface.co/{hub_id}))" if hub_id else "") + ".", "",
        "## Training data", "",
        "The CS224N default final project's files:", "",
        *[f"- {TASK_DATA[t]}" for t in trained], "",
        "Training set size and length: " + (", ".join(f"{k} {v}" for k, v in limits.items()) or "not recorded")
        + " (all options below). The data sets come with their own terms of use.", "",
        f"## Dev scores (best epoch {info.get('epoch')})", "",
        "| task | score |", "|---|---:|", dev, "",
        "sst and quora: accuracy; sts: Pearson correlation; overall: (sst + quora + (sts + 1) / 2) / 3.", "",
        "## Use", "",
        "```python", "from sentence_transformers import SentenceTransformer",
        f"model = SentenceTransformer('{name}')",
        "u, v = model.encode(['A man plays a guitar.', 'Someone plays music.'])",
        "```", "",
        "```python", "from transformers import AutoModel, AutoTokenizer",
        f"model, tok = AutoModel.from_pretrained('{name}'), AutoTokenizer.from_pretrained('{name}')", "```", "",
        contract, "",
        "Only the encoder is exported. The task heads (SST-5 classifier, paraphrase head) stay in the run folder; "
        "`python training/run_predict.py --run RUN --task sst ...` uses them.", "",
        "## Training options", "", "```json", json.dumps(options, indent=2, default=str), "```", "",
        "## Licence", "",
        (f"{licence}, the licence of the base checkpoint {hub_id}." if licence else
         f"The base checkpoint `{base}`'s licence applies; check it before you share this model."), "",
    ]
    return "\n".join(lines)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def export(run: Path, out: Path, overwrite: bool = False) -> Path:
    info = read_run(run)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} already holds files; pass --overwrite to replace them, or choose a new --out")
    model = MultitaskBert.from_run(info["directory"])
    tok = Tokenizer.from_pretrained(info["directory"])
    model.encoder.save_pretrained(out)  # config.json + model.safetensors with Hugging Face names
    tok.save_pretrained(out)
    hidden = model.encoder.config.hidden_size
    sentence_transformers_files(out, hidden, int(info["max_length"]))
    (out / "README.md").write_text(model_card(info, hidden, out.name), encoding="utf-8")
    return out


def main(argv=None) -> Path:
    args = parse_args(argv)
    try:
        out = export(args.run, args.out, args.overwrite)
    except (OSError, ValueError) as e:  # CheckpointError, a full disk, ...
        raise SystemExit(f"error: {e}") from None
    print(f"exported to {out}: load it with transformers' AutoModel / AutoTokenizer or SentenceTransformer('{out}')")
    return out


if __name__ == "__main__":
    main()
