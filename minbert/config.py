"""BertConfig: the handful of numbers that fix a BERT's shape. Defaults are bert-base-uncased.

It describes the checkpoint only (it is its config.json); how the model is computed (attention
implementation, unpadding) is chosen when the model is built: BertModel(config, ...).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields


@dataclass
class BertConfig:
    vocab_size: int = 30522               # WordPiece vocabulary of bert-base-uncased
    hidden_size: int = 768                # C: width of every token vector
    num_hidden_layers: int = 12           # depth; BERT-base has 12 post-LN layers
    num_attention_heads: int = 12         # nh; head size hs = C / nh = 64 in BERT-base
    intermediate_size: int = 3072         # FFN width, 4 x C as in the Transformer paper
    hidden_act: str = "gelu"              # BERT uses the exact erf GELU, not the tanh approximation
    hidden_dropout_prob: float = 0.1      # dropout on embeddings and on every residual branch
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention probabilities (BERT quirk)
    max_position_embeddings: int = 512    # learned absolute positions: the longest input BERT can read
    type_vocab_size: int = 2              # segment A / segment B (token_type_ids)
    layer_norm_eps: float = 1e-12         # BERT's TF original used 1e-12, not PyTorch's 1e-5
    initializer_range: float = 0.02       # std of the truncated-normal init used for fresh weights
    pad_token_id: int = 0                 # [PAD] in the uncased vocab; its embedding is never trained

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}): each head gets hidden_size / num_heads dimensions")
        if self.hidden_act not in ("gelu", "gelu_new", "relu"):
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (gelu, gelu_new, relu)")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        """Build from a Hugging Face config dict, ignoring keys BERT does not need."""
        known = {f.name for f in fields(cls)}
        model_type = d.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"config has model_type {model_type!r}; minBERT reads only 'bert' checkpoints")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported "
                             f"(config says {d['position_embedding_type']!r})")
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "BertConfig":
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        """config.json as transformers writes it for a BertModel (tests/test_checkpoint.py checks the keys).
        position_embedding_type is left out, as transformers 5 does: absent means "absolute" in every version."""
        d = asdict(self)
        d.update(model_type="bert", architectures=["BertModel"])
        return d

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads
