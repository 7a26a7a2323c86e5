"""MultitaskBert: ONE shared BertModel encoder and a small head per task, as in CS224N's
multitask_classifier.py.

    sst   (SST-5 sentiment, 5 classes)  : SentimentHead on [CLS] / mean / pooler of one sentence
    quora (paraphrase, binary)          : pair_mode "bi"    -> ParaphraseHead on two mean-pooled vectors
                                          pair_mode "cross" -> CrossEncoderHead on one [CLS] s1 [SEP] s2 [SEP]
    sts   (similarity, 0..5)            : sts_mode "cosine"    -> 5 * relu(cos(u, v)), no parameters
                                          sts_mode "regressor" -> SimilarityRegressor on pair features
                                          sts_mode "cross"     -> CrossEncoderHead, 5 * sigmoid

Task-specific top layers (task_layers = N > 0, --task-layers): the lower L - N encoder layers are
shared, and each task runs its own copy of the top N. The encoder's own top N layers are STS's copy
(so model.encoder is the sentence encoder that run_export.py writes, a standard BertModel); every
other head gets a copy in self.task_layers, made from the encoder's layers when the head is added,
i.e. from the pretrained ones, so at step 0 every task computes exactly what the N = 0 model does.
A batch belongs to one task: its forward runs the shared layers once, then that task's layers.

Batches are dicts of (B, T) tensors input_ids / attention_mask / token_type_ids, as produced by
Tokenizer.__call__ / Tokenizer.pad / data.batching.collate. Bi-encoder pair methods take two batches
(one per sentence), cross-encoder ones a single pair batch.
For training.engine.optim.param_groups pass `model.encoder`, `dict(model.heads)` and `dict(model.task_layers)`.

A run folder (save_run / from_run) holds everything needed to rebuild the model without the command
line that trained it:
    model.safetensors   the whole multitask model (encoder + heads), our parameter names
                        (with --task-layers: task_layers.<task>.<i>.* are the tasks' own top layers)
    config.json         the encoder's BertConfig (as transformers writes it)
    tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json
    heads.json          the heads' constructor arguments (task_layers among them; absent in older runs: 0),
                        the tasks trained, max_length, base model
    options.json        the training options, the dev scores and the epoch: {"options", "dev", "epoch"}
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from data.datasets import TASK_NAMES
from minbert import BertConfig, BertModel, CheckpointError, Tokenizer
from minbert.safetensors import load_safetensors, save_safetensors

from .cross_encoder import CrossEncoderHead
from .paraphrase import ParaphraseHead
from .pooling import mean_pool
from .sentiment import SentimentHead
from .similarity import MAX_SCORE, CosineScore, SimilarityRegressor

LAYER_OWNER = "sts"  # with task_layers, the encoder's own top layers are this task's (the exported encoder)
PAIR_MODES = ("bi", "cross")
STS_MODES = ("cosine", "regressor", "cross")
Batch = dict[str, torch.Tensor]
RUN_FILES = ("model.safetensors", "config.json", "tokenizer.json", "heads.json", "options.json")


class MultitaskBert(nn.Module):
    def __init__(self, encoder: BertModel, sentiment_pooling: str = "cls", pair_mode: str = "bi",
                 sts_mode: str = "cosine", dropout: float = 0.1, num_sentiment_classes: int = 5,
                 task_layers: int = 0):
        super().__init__()
        if pair_mode not in PAIR_MODES:
            raise ValueError(f"pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
        if sts_mode not in STS_MODES:
            raise ValueError(f"sts_mode must be one of {STS_MODES}, got {sts_mode!r}")
        L = len(encoder.layers)
        if not (isinstance(task_layers, int) and 0 <= task_layers <= L):
            raise ValueError(f"task_layers (--task-layers) must be an integer from 0 to {L}: the encoder has {L} "
                             f"layers, and each task copies its top task_layers of them; got {task_layers!r}")
        self.encoder = encoder
        self.pair_mode, self.sts_mode = pair_mode, sts_mode
        # the constructor's arguments, written to heads.json by save_run so from_run can rebuild the heads
        self.head_config = dict(sentiment_pooling=sentiment_pooling, pair_mode=pair_mode, sts_mode=sts_mode,
                                dropout=dropout, num_sentiment_classes=num_sentiment_classes,
                                task_layers=task_layers)
        self.n_task_layers = task_layers
        self.task_layers = nn.ModuleDict()  # task -> its copies of the top layers (empty when task_layers = 0)
        C = encoder.config.hidden_size
        self.heads = nn.ModuleDict()
        for task, head in {
            "sst": SentimentHead(C, num_sentiment_classes, pooling=sentiment_pooling, dropout=dropout),
            "quora": ParaphraseHead(C, dropout) if pair_mode == "bi" else CrossEncoderHead(C, 1, dropout),
            "sts": (CosineScore() if sts_mode == "cosine" else
                    SimilarityRegressor(C, dropout) if sts_mode == "regressor" else
                    CrossEncoderHead(C, 1, dropout, scale=MAX_SCORE)),
        }.items():
            self.add_head(task, head)

    def add_head(self, task: str, head: nn.Module) -> None:
        """A head for `task`, and with task_layers its own copy of the encoder's top layers (STS
        uses the encoder's). Add heads before training: the copy is of the layers as they are now."""
        self.heads[task] = head
        if self.n_task_layers and task != LAYER_OWNER:
            self.task_layers[task] = copy.deepcopy(self.encoder.layers[-self.n_task_layers:])

    # ---- the shared encoder ----

    def own_layers(self, task: str) -> list[nn.Module]:
        """The top layers `task` alone trains: its copies, or for STS the encoder's own top
        task_layers; none when task_layers = 0."""
        if task in self.task_layers:
            return list(self.task_layers[task])
        return list(self.encoder.layers[-self.n_task_layers:]) if self.n_task_layers and task == LAYER_OWNER else []

    def layers_of(self, task: str | None) -> list[nn.Module]:
        """The layers a task's batches run: the shared ones, then the task's own top layers
        (task_layers > 0). STS, and task None, run the encoder's own layers."""
        if task is None or task not in self.task_layers:
            return list(self.encoder.layers)
        return [*self.encoder.layers[:-self.n_task_layers], *self.task_layers[task]]

    def encode(self, batch: Batch, task: str | None = None) -> dict[str, torch.Tensor]:
        """One encoder pass through `task`'s layers (layers_of) -> {"last_hidden_state": (B, T, C),
        "pooler_output": (B, C)}. task None: the encoder's own layers (STS's)."""
        if "input_ids" not in batch:
            raise ValueError(f"a batch needs input_ids (+ attention_mask, token_type_ids); got keys {sorted(batch)}")
        layers = self.layers_of(task) if self.task_layers else None  # None: exactly the plain encoder call
        return self.encoder(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"), layers=layers)

    @staticmethod
    def _mask(batch: Batch) -> torch.Tensor:
        mask = batch.get("attention_mask")
        return torch.ones_like(batch["input_ids"]) if mask is None else mask

    def embed(self, batch: Batch, task: str | None = None) -> torch.Tensor:
        """Sentence vectors (B, C): mean of last_hidden_state (of `task`'s layers) over the real tokens."""
        return mean_pool(self.encode(batch, task)["last_hidden_state"], self._mask(batch))

    def encode_pair(self, batch1: Batch, batch2: Batch, task: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed both sentences of a bi-encoder pair batch in ONE encoder call -> u, v (B, C).
        Stacking 2B rows padded to a common T gives one larger matmul per layer instead of two
        smaller ones and half the kernel launches (what dominates small GPU batches); the price is
        the extra padding when T1 and T2 differ a lot. Padding is masked out, so the vectors equal
        those of two separate calls (up to float rounding)."""
        B = batch1["input_ids"].shape[0]
        if batch2["input_ids"].shape[0] != B:
            raise ValueError(f"pair batches differ in size: {B} first sentences vs "
                             f"{batch2['input_ids'].shape[0]} second sentences")
        T = max(batch1["input_ids"].shape[1], batch2["input_ids"].shape[1])
        pad_values = {"input_ids": self.encoder.config.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
        both = {}
        for key, value in pad_values.items():
            parts = []
            for b in (batch1, batch2):
                x = self._mask(b) if key == "attention_mask" else b.get(key)
                if x is None:  # no token_type_ids: all segment 0
                    x = torch.zeros_like(b["input_ids"])
                parts.append(F.pad(x, (0, T - x.shape[1]), value=value))  # (B, T), right padding
            both[key] = torch.cat(parts, dim=0)  # (2B, T)
        uv = self.embed(both, task)  # (2B, C)
        return uv[:B], uv[B:]

    # ---- one method per task ----

    def predict_sentiment(self, batch: Batch) -> torch.Tensor:
        """One sentence per row -> logits (B, num_sentiment_classes)."""
        out = self.encode(batch, "sst")
        return self.heads["sst"](out["last_hidden_state"], self._mask(batch), pooler_output=out["pooler_output"])

    def _pair(self, task: str, cross: bool, batch1: Batch, batch2: Batch | None) -> torch.Tensor:
        head = self.heads[task]
        if cross:
            if batch2 is not None:
                raise ValueError(f"{task} uses a cross-encoder: pass ONE batch of '[CLS] s1 [SEP] s2 [SEP]' "
                                 "pairs (tokenizer(s1, pairs=s2)), not two batches")
            return head(self.encode(batch1, task)["last_hidden_state"], self._mask(batch1))
        if batch2 is None:
            raise ValueError(f"{task} uses a bi-encoder: pass two batches, one per sentence "
                             "(for a cross-encoder build the model with the 'cross' mode)")
        return head(*self.encode_pair(batch1, batch2, task))

    def predict_paraphrase(self, batch1: Batch, batch2: Batch | None = None) -> torch.Tensor:
        """-> logits (B,) of "is a paraphrase"."""
        return self._pair("quora", self.pair_mode == "cross", batch1, batch2)

    def predict_similarity(self, batch1: Batch, batch2: Batch | None = None) -> torch.Tensor:
        """-> similarity scores (B,) in [0, 5]."""
        return self._pair("sts", self.sts_mode == "cross", batch1, batch2)

    def forward(self, task: str, *batches: Batch) -> torch.Tensor:
        """model("sst", batch), model("quora", b1, b2) / model("quora", pair_batch), model("sts", ...)."""
        if task == "sst":
            if len(batches) != 1:
                raise ValueError(f"sst takes one batch, got {len(batches)}")
            return self.predict_sentiment(batches[0])
        if task in ("quora", "sts"):
            if len(batches) not in (1, 2):
                raise ValueError(f"{task} takes one (cross-encoder) or two (bi-encoder) batches, got {len(batches)}")
            predict = self.predict_paraphrase if task == "quora" else self.predict_similarity
            return predict(*batches)
        if task in self.heads and len(batches) == 1:  # a head added through training/multitask/tasks.py: one sequence
            out = self.encode(batches[0], task)
            return self.heads[task](out["last_hidden_state"], self._mask(batches[0]), pooler_output=out["pooler_output"])
        raise ValueError(f"unknown task {task!r}; expected one of {TASK_NAMES}")

    # ---- a self-contained run folder ----

    def save_run(self, directory: str | os.PathLike, tokenizer: Tokenizer, options: dict, dev: dict,
                 epoch: int) -> None:
        """Write the run folder `directory` (the module docstring lists its files). options: the
        training options (vars(args)); "tasks", "max_length" and "model" are read from it. The folder
        is written aside and swapped in, so readers see the old run or the new one, never half of one
        (a crash between the two renames leaves the old run in .NAME.old)."""
        d = Path(directory)
        tmp, old = d.with_name(f".{d.name}.tmp"), d.with_name(f".{d.name}.old")
        for leftover in (tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_safetensors({k: v.detach().cpu() for k, v in self.state_dict().items()}, tmp / "model.safetensors",
                         metadata={"base_model": str(options.get("model"))})
        (tmp / "config.json").write_text(json.dumps(self.encoder.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        tokenizer.save_pretrained(tmp)
        heads = dict(heads=self.head_config, tasks=list(options.get("tasks", TASK_NAMES)),
                     max_length=options.get("max_length") or tokenizer.model_max_length,
                     base_model=str(options.get("model")))
        (tmp / "heads.json").write_text(json.dumps(heads, indent=2) + "\n", encoding="utf-8")
        (tmp / "options.json").write_text(json.dumps({"options": options, "dev": dev, "epoch": epoch}, indent=2,
                                                     default=str) + "\n", encoding="utf-8")
        if d.exists():
            os.replace(d, old)
        os.replace(tmp, d)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def from_run(cls, directory: str | os.PathLike) -> "MultitaskBert":
        """Rebuild a saved run (save_run) in eval mode, on the CPU; read_run(directory) gives its
        tasks, max_length and scores, Tokenizer.from_pretrained(directory) its tokenizer."""
        info = read_run(directory)
        d = info["directory"]
        config = BertConfig.from_json(d / "config.json")
        model = cls(BertModel(config), **info["heads"])
        state = load_safetensors(d / "model.safetensors")
        try:
            model.load_state_dict(state)
        except RuntimeError as e:  # torch lists every missing / unexpected / mis-shaped key
            raise CheckpointError(f"{d}/model.safetensors does not fit its config.json and heads.json: "
                                  f"{str(e).splitlines()[0]} ...; the folder was mixed from different runs") from None
        return model.eval()


def read_run(directory: str | os.PathLike) -> dict:
    """heads.json and options.json of a run folder, checked -> {"directory": Path, "heads": {...},
    "tasks", "max_length", "base_model", "options", "dev", "epoch"}. A run_multitask.py --out-dir is
    accepted too: its best/ folder is read."""
    d = Path(directory)
    if not (d / "heads.json").is_file() and (d / "best" / "heads.json").is_file():
        d = d / "best"
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such run folder; pass the best/ folder of a training run "
                              "(e.g. runs/multitask/best) or its --out-dir")
    missing = [f for f in RUN_FILES if not (d / f).is_file()]
    if missing:
        hint = (" (a run written before runs were self-contained, with only model.safetensors and options.json: "
                "train it again)" if "heads.json" in missing and (d / "options.json").is_file() else "")
        raise CheckpointError(f"{d}: not a complete run folder, it lacks {', '.join(missing)}{hint}. Pass the best/ "
                              "folder that training/run_multitask.py wrote, e.g. runs/multitask/best")
    try:
        info = json.loads((d / "heads.json").read_text(encoding="utf-8"))
        info.update(json.loads((d / "options.json").read_text(encoding="utf-8")))
        info["heads"] = dict(info["heads"])
        info["tasks"] = list(info["tasks"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{d}: heads.json or options.json is damaged ({type(e).__name__}: {e}); "
                              "restore them from the run, or train again") from None
    info["directory"] = d
    return info
