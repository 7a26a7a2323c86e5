"""Reading and writing Hugging Face BERT checkpoints, with one explicit key-mapping table.

A checkpoint directory holds config.json and either model.safetensors (parsed by our own code in
safetensors.py: no pickle, so loading cannot run code) or the legacy pytorch_model.bin (a pickle,
opened only with torch.load(weights_only=True), which refuses anything but tensors and containers).

Key names differ between checkpoints of the same model, and every variant is normalised first:
  * BertForPreTraining files (Google's bert-base-uncased) prefix the encoder with "bert." and carry
    pre-training heads "cls.*" that an encoder does not use;
  * files converted from TensorFlow call LayerNorm's parameters "gamma"/"beta";
  * newer files store the "position_ids" buffer, which is not a weight.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import torch

from .config import BertConfig
from .hub import resolve
from .safetensors import DiskFullError, load_safetensors, save_safetensors


class CheckpointError(ValueError):
    pass


# Our parameter name -> Hugging Face name(s). Several HF names are concatenated along dim 0, in order:
# we fuse query/key/value into one (3C, C) matrix (attention.py).
EMBEDDING_KEYS = {
    "embeddings.word_embeddings.weight": ["embeddings.word_embeddings.weight"],
    "embeddings.position_embeddings.weight": ["embeddings.position_embeddings.weight"],
    "embeddings.token_type_embeddings.weight": ["embeddings.token_type_embeddings.weight"],
    "embeddings.ln.weight": ["embeddings.LayerNorm.weight"],
    "embeddings.ln.bias": ["embeddings.LayerNorm.bias"],
}
LAYER_KEYS = {  # "layers.{i}." + ours  <-  "encoder.layer.{i}." + theirs
    "attn.qkv.weight": ["attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight"],
    "attn.qkv.bias": ["attention.self.query.bias", "attention.self.key.bias", "attention.self.value.bias"],
    "attn.proj.weight": ["attention.output.dense.weight"],
    "attn.proj.bias": ["attention.output.dense.bias"],
    "ln1.weight": ["attention.output.LayerNorm.weight"],
    "ln1.bias": ["attention.output.LayerNorm.bias"],
    "ffn_in.weight": ["intermediate.dense.weight"],
    "ffn_in.bias": ["intermediate.dense.bias"],
    "ffn_out.weight": ["output.dense.weight"],
    "ffn_out.bias": ["output.dense.bias"],
    "ln2.weight": ["output.LayerNorm.weight"],
    "ln2.bias": ["output.LayerNorm.bias"],
}
POOLER_KEYS = {"pooler.weight": ["pooler.dense.weight"], "pooler.bias": ["pooler.dense.bias"]}
# Present in real checkpoints, deliberately not loaded.
IGNORED_PREFIXES = ("cls.",)          # masked-LM and next-sentence heads of BertForPreTraining
IGNORED_SUFFIXES = ("position_ids",)  # a buffer arange(512), not a weight


def key_map(config: BertConfig) -> dict[str, list[str]]:
    """The full table for a config: our name -> list of HF names."""
    table = dict(EMBEDDING_KEYS)
    for i in range(config.num_hidden_layers):
        for ours, theirs in LAYER_KEYS.items():
            table[f"layers.{i}.{ours}"] = [f"encoder.layer.{i}.{t}" for t in theirs]
    table.update(POOLER_KEYS)
    return table


def normalize_hf_key(key: str) -> str:
    if key.startswith("bert."):
        key = key[len("bert."):]
    if "LayerNorm." in key:  # TF-converted files: gamma/beta
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    return key


def read_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """HF-named tensors from model.safetensors (preferred) or pytorch_model.bin in `directory`."""
    d = Path(directory)
    st, pt = d / "model.safetensors", d / "pytorch_model.bin"
    if st.is_file():
        return load_safetensors(st)
    if pt.is_file():
        try:
            sd = torch.load(pt, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"{pt}: refused to unpickle: the file contains objects other than tensors, which could "
                f"run code on load ({str(e).splitlines()[0]}). Convert a trusted copy to "
                "model.safetensors instead.") from None
        except (EOFError, RuntimeError, OSError) as e:
            raise CheckpointError(f"{pt}: cannot read this legacy checkpoint ({e}); the file may be "
                                  "truncated or not a PyTorch file") from None
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError(f"{pt}: expected a dict of tensors, got {type(sd).__name__}")
        return sd
    raise CheckpointError(f"{d}: no model.safetensors or pytorch_model.bin in this directory")


def hf_to_minbert(hf_state: dict[str, torch.Tensor], model: torch.nn.Module,
                  source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Map HF-named tensors onto `model`'s names; one error lists every missing, unexpected and
    mis-shaped key."""
    hf = {normalize_hf_key(k): v for k, v in hf_state.items()}
    expected = model.state_dict()
    out, used = {}, set()
    missing, misshaped = [], []
    for ours, theirs in key_map(model.config).items():
        absent = [t for t in theirs if t not in hf]
        used.update(t for t in theirs if t in hf)  # a half-present qkv is "missing", not "unexpected"
        if absent:
            missing.extend(absent)
            continue
        t = hf[theirs[0]] if len(theirs) == 1 else torch.cat([hf[n] for n in theirs], dim=0)
        if t.shape != expected[ours].shape:
            parts = " + ".join(f"{n} {tuple(hf[n].shape)}" for n in theirs)
            misshaped.append(f"{parts} -> {ours} expects {tuple(expected[ours].shape)}")
            continue
        out[ours] = t
    unexpected = [k for k in hf if k not in used
                  and not k.startswith(IGNORED_PREFIXES) and not k.endswith(IGNORED_SUFFIXES)]
    if missing or unexpected or misshaped:
        lines = [f"{source} does not match a BERT with this config "
                 f"({model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
                 f"vocab {model.config.vocab_size}):"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                lines.append(f"  {len(keys)} {title}: " + ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else ""))
        raise CheckpointError("\n".join(lines))
    return out


def minbert_to_hf(state: dict[str, torch.Tensor], config: BertConfig) -> dict[str, torch.Tensor]:
    """Inverse of hf_to_minbert: split the fused qkv back into query, key, value."""
    hf = {}
    for ours, theirs in key_map(config).items():
        for name, part in zip(theirs, state[ours].chunk(len(theirs), dim=0)):
            hf[name] = part.contiguous()
    return hf


def load_model(cls, name_or_dir, cache_dir: str | None = None, **runtime):
    """cls(config, **runtime) holding the checkpoint's weights, in eval mode. runtime: the model's
    switches that are not part of the checkpoint (BertModel's attn_implementation, unpad)."""
    directory = resolve(name_or_dir, cache_dir=cache_dir)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{directory}: no config.json; a BERT checkpoint directory needs one")
    model = cls(BertConfig.from_json(cfg_path), **runtime)
    state = hf_to_minbert(read_weights(directory), model, source=str(directory))
    model.load_state_dict(state, strict=True)
    model.eval()  # like transformers: dropout off until the caller asks for .train()
    return model


def save_model(model, directory: str | os.PathLike) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_safetensors(minbert_to_hf(state, model.config), d / "model.safetensors", metadata={"format": "pt"})
    # config.json last and atomically, so a directory with a config always has its weights.
    text = json.dumps(model.config.to_dict(), indent=2)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".config.json.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / "config.json")
    except BaseException as e:  # a full disk: no half-written config left behind (nor a stray temp file)
        os.unlink(tmp)
        if DiskFullError.is_full(e):
            raise DiskFullError(d / "config.json", len(text.encode("utf-8")), e.errno) from None
        raise
