"""Write the reference fixtures that let the tests run without transformers installed.

    python tests/make_fixtures.py      # needs transformers; rewrites tests/fixtures/*

Each fixture holds inputs and what transformers' BertModel computes from them, so that a student's
environment (torch + tokenizers only) can still check every component against the reference. The
safetensors metadata records the transformers and torch versions they were made with;
tests/test_fixture_provenance.py recomputes every fixture live (where transformers is installed)
with the functions below and compares, so a stale fixture fails there.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from minbert import BertConfig, BertModel  # noqa: E402
from minbert.checkpoint import minbert_to_hf  # noqa: E402
from minbert.hub import embedded_dir  # noqa: E402
from minbert.safetensors import save_safetensors  # noqa: E402
from reference import FIXTURES, SENTENCES, TINY, hf_intermediates, hf_model_from, tiny_inputs  # noqa: E402


def provenance() -> dict[str, str]:
    import transformers
    return {"made_by": "tests/make_fixtures.py", "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0]}


def tiny_tensors() -> dict[str, torch.Tensor]:
    """A random tiny BERT's weights (HF names), inputs with padding, and transformers' intermediates."""
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY)).eval()  # only a source of random weights: the outputs are HF's
    # Non-trivial LayerNorm and bias values, so a swapped weight/bias cannot pass by accident.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    hf = hf_model_from(model)
    inputs = tiny_inputs()
    expected = hf_intermediates(hf, inputs)
    tensors = {f"weights.{k}": v for k, v in minbert_to_hf(model.state_dict(), model.config).items()}
    tensors.update({f"inputs.{k}": v for k, v in inputs.items()})
    tensors.update({f"expected.{k}": v for k, v in expected.items()})
    return tensors


def tiny_fixture() -> None:
    save_safetensors(tiny_tensors(), FIXTURES / "tiny_reference.safetensors", metadata=provenance())
    (FIXTURES / "tiny_config.json").write_text(json.dumps(TINY, indent=2) + "\n")


def minilm_tensors() -> dict[str, torch.Tensor]:
    """Real text through the embedded checkpoint: the reference tokenizer's ids and the model's outputs."""
    from transformers import BertModel as HFBert
    from transformers import BertTokenizerFast
    d = str(embedded_dir())
    tok = BertTokenizerFast.from_pretrained(d)
    hf = HFBert.from_pretrained(d, attn_implementation="eager").eval()
    firsts = [a for a, _ in SENTENCES]
    seconds = [b or "" for _, b in SENTENCES]
    tensors = {}
    single = tok(firsts, padding=True, return_tensors="pt")
    pair = tok(firsts[1::2], seconds[1::2], padding=True, return_tensors="pt")
    for prefix, batch in (("single", single), ("pair", pair)):
        with torch.no_grad():
            out = hf(**batch)
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            tensors[f"{prefix}.{k}"] = batch[k]
        tensors[f"{prefix}.last_hidden_state"] = out.last_hidden_state
        tensors[f"{prefix}.pooler_output"] = out.pooler_output
    # Truncation of a long pair, as BertTokenizer does it (longest first).
    long = tok(["word " * 40], ["other " * 10], truncation="longest_first", max_length=16, return_tensors="pt")
    tensors["truncated.input_ids"] = long["input_ids"]
    tensors["truncated.token_type_ids"] = long["token_type_ids"]
    return tensors


def minilm_fixture() -> None:
    save_safetensors(minilm_tensors(), FIXTURES / "minilm_reference.safetensors", metadata=provenance())


if __name__ == "__main__":
    FIXTURES.mkdir(exist_ok=True)
    tiny_fixture()
    minilm_fixture()
    print("wrote", *sorted(p.name for p in FIXTURES.glob("*reference*")))
