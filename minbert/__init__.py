"""minBERT: BERT written by hand in PyTorch.

    from minbert import BertModel, Tokenizer
    model = BertModel.from_pretrained("all-MiniLM-L6-v2")   # embedded, works offline
    tok = Tokenizer.from_pretrained("all-MiniLM-L6-v2")
    out = model(**tok(["Hello world!", "BERT reads both directions."]))
    out["last_hidden_state"]  # (B, T, 384)

Files, in dependency order: config -> embeddings -> attention -> layer -> fast -> model; optimizer;
safetensors -> checkpoint (+ hub); tokenizer. fast.py holds the opt-in fast paths
(BertModel(config, attn_implementation="sdpa", unpad=True)); the rest is the teaching path.
"""
from .checkpoint import CheckpointError
from .config import BertConfig
from .hub import CheckpointNotFound
from .model import BertModel
from .optimizer import AdamW
from .tokenizer import Tokenizer

__all__ = ["BertConfig", "BertModel", "AdamW", "Tokenizer", "CheckpointError", "CheckpointNotFound"]
