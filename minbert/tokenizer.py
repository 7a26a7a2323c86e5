"""WordPiece tokenization with the `tokenizers` library (Rust), wrapped for BertModel's inputs.

We never hand-copy a tokenizer: BERT's basic tokenization (lower-casing, accent stripping, Chinese
characters, punctuation splits) has many corner cases that the reference library already gets right.
This file only decides *what* to ask of it: [CLS] a [SEP] (b [SEP]) with segment ids, truncation to
the model's positions, dynamic padding.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer as _Backend
from tokenizers.implementations import BertWordPieceTokenizer

from .hub import resolve


class Tokenizer:
    def __init__(self, backend: _Backend, model_max_length: int = 512):
        self.backend = backend
        # A tokenizer.json may carry its own truncation / fixed padding (all-MiniLM-L6-v2 pads
        # everything to 128); we pad per batch instead and truncate to what the model can read.
        backend.no_padding()
        backend.no_truncation()
        self.model_max_length = model_max_length
        self.pad_id = self._id("[PAD]")
        self.cls_id = self._id("[CLS]")
        self.sep_id = self._id("[SEP]")
        self.unk_id = self._id("[UNK]")
        self.vocab_size = backend.get_vocab_size()

    def _id(self, token: str) -> int:
        i = self.backend.token_to_id(token)
        if i is None:
            raise ValueError(f"the vocabulary has no {token} token; is this a BERT tokenizer?")
        return i

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike = "all-MiniLM-L6-v2",
                        cache_dir: str | None = None) -> "Tokenizer":
        """From tokenizer.json if the checkpoint has one, else WordPiece built from vocab.txt."""
        d = resolve(name_or_dir, cache_dir=cache_dir)
        cfg = {}
        if (d / "tokenizer_config.json").is_file():
            cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
        max_len = int(cfg.get("model_max_length", 512))
        if (d / "config.json").is_file():  # never longer than the position table
            max_pos = json.loads((d / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings", 512)
            max_len = min(max_len, max_pos)
        if (d / "tokenizer.json").is_file():
            backend = _Backend.from_file(str(d / "tokenizer.json"))
        elif (d / "vocab.txt").is_file():
            backend = cls.from_vocab(d / "vocab.txt", lowercase=cfg.get("do_lower_case", True)).backend
        else:
            raise FileNotFoundError(f"{d}: neither tokenizer.json nor vocab.txt found")
        return cls(backend, model_max_length=max_len)

    @classmethod
    def from_vocab(cls, vocab_file: str | os.PathLike, lowercase: bool = True,
                   model_max_length: int = 512) -> "Tokenizer":
        wp = BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase)
        return cls(wp._tokenizer, model_max_length=model_max_length)

    def encode_ids(self, texts: list[str], pairs: list[str] | None = None,
                   max_length: int | None = None) -> list[tuple[list[int], list[int]]]:
        """Unpadded (ids, token_type_ids) per example: [CLS] a [SEP] or [CLS] a [SEP] b [SEP].
        Pairs are truncated longest-first, like the reference BertTokenizer."""
        if isinstance(texts, str):
            raise TypeError("encode_ids takes a list of strings; wrap a single sentence in a list")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(texts)} first sentences but {len(pairs)} second sentences")
        limit = min(max_length or self.model_max_length, self.model_max_length)
        if limit < (4 if pairs is not None else 3):
            raise ValueError(f"max_length {limit} is too short to hold the special tokens")
        self.backend.enable_truncation(limit, strategy="longest_first")
        try:
            inputs = list(texts) if pairs is None else list(zip(texts, pairs))
            encs = self.backend.encode_batch(inputs)
        finally:
            self.backend.no_truncation()
        return [(e.ids, e.type_ids) for e in encs]

    def pad(self, encoded: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Pad to the longest example of this batch (dynamic padding), right side."""
        B = len(encoded)
        T = max((len(ids) for ids, _ in encoded), default=0)
        input_ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        token_type_ids = torch.zeros((B, T), dtype=torch.long)
        attention_mask = torch.zeros((B, T), dtype=torch.long)
        for i, (ids, types) in enumerate(encoded):
            n = len(ids)
            input_ids[i, :n] = torch.tensor(ids)
            token_type_ids[i, :n] = torch.tensor(types)
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    def __call__(self, texts: list[str] | str, pairs: list[str] | str | None = None,
                 max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenize, truncate, pad: a dict of (B, T) LongTensors ready for BertModel(**batch)."""
        if isinstance(texts, str):
            texts = [texts]
            pairs = [pairs] if isinstance(pairs, str) else pairs
        return self.pad(self.encode_ids(texts, pairs, max_length))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json: what
        from_pretrained reads back, and what transformers' AutoTokenizer loads as a BertTokenizer."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(d / "tokenizer.json"))  # no truncation/padding: __init__ cleared them
        vocab = sorted(self.backend.get_vocab().items(), key=lambda kv: kv[1])
        (d / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
        # transformers rebuilds the normalizer from these flags, so they must say what tokenizer.json does
        normalizer = json.loads(self.backend.to_str()).get("normalizer") or {}
        special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]"}
        if self.backend.token_to_id("[MASK]") is not None:
            special["mask_token"] = "[MASK]"
        config = dict(tokenizer_class="BertTokenizer", do_lower_case=bool(normalizer.get("lowercase", True)),
                      strip_accents=normalizer.get("strip_accents"),
                      tokenize_chinese_chars=bool(normalizer.get("handle_chinese_chars", True)),
                      model_max_length=self.model_max_length, **special)
        (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (d / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
