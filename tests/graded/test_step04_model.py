"""Step 4: BertModel's pooler and the whole model (minbert/model.py).

The pooler is graded on its own: the embeddings are replaced by a stub that returns transformers'
final hidden states and the layers are removed, so steps 1-3 do not matter there. The other tests
run the whole model against the stored reference (they need steps 1-3).
"""
import torch
import torch.nn as nn

from checks import assert_close, likely_mistake, tiny


class Constant(nn.Module):
    """Stands in for the embeddings: returns a fixed (B, T, C) tensor."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.x = x

    def forward(self, input_ids, token_type_ids=None):
        return self.x


def pooler_only(model, hidden):
    model.embeddings, model.layers = Constant(hidden), nn.ModuleList()
    return model


def test_pooler_is_tanh_of_dense_on_the_cls_token():
    model, inputs, expected = tiny()
    hidden = expected["last_hidden_state"]  # (B, T, C)
    model = pooler_only(model, hidden)
    with torch.no_grad():
        got = model(inputs["input_ids"])["pooler_output"]  # no attention_mask: the layers are gone anyway
        dense = model.pooler
        hint = likely_mistake(got, {
            "the dense layer without the tanh": lambda: dense(hidden[:, 0]),
            "tanh(dense(.)) of the mean over tokens instead of the [CLS] (first) token": lambda: torch.tanh(dense(hidden.mean(1))),
            "tanh(dense(.)) of the last token instead of the [CLS] (first) token": lambda: torch.tanh(dense(hidden[:, -1])),
            "the [CLS] vector itself, without the pooler": lambda: hidden[:, 0],
        }, "Expected pooler_output = tanh(self.pooler(last_hidden_state[:, 0])), shape (B, C).")
    assert_close("pooler_output", got, expected["pooler_output"], hint)


def test_model_matches_transformers_last_hidden_state():
    model, inputs, expected = tiny()
    with torch.no_grad():
        got = model(**inputs)["last_hidden_state"]
    assert_close("last_hidden_state", got, expected["last_hidden_state"],
                 "The model chains steps 1-3: make those pass first.")


def test_model_matches_transformers_pooler_output():
    model, inputs, expected = tiny()
    with torch.no_grad():
        got = model(**inputs)["pooler_output"]
    assert_close("pooler_output of the whole model", got, expected["pooler_output"],
                 "The model chains steps 1-3 and the pooler: make those pass first.")


def test_padding_does_not_change_the_real_tokens():
    model, inputs, _ = tiny()
    n = int(inputs["attention_mask"][2].sum())  # sequence 2 has 7 padding positions
    with torch.no_grad():
        batched = model(**inputs)["last_hidden_state"][2:3, :n]
        alone = model(**{k: v[2:3, :n] for k, v in inputs.items()})["last_hidden_state"]
    assert_close(f"sequence 2's {n} real tokens, computed inside the padded batch", batched, alone,
                 "Padding must be invisible: the attention mask must give padded keys no weight.")
