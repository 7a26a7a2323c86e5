"""Step 3: BERT's input embeddings (BertEmbeddings.forward in minbert/embeddings.py).

Reference: transformers' embedding output for the fixture's padded, two-segment batch.
"""
import torch

from checks import assert_close, likely_mistake, tiny

HINT = ("Expected LayerNorm(word_embeddings(ids) + position_embeddings(0..T-1) + "
        "token_type_embeddings(types)), then dropout.")


def mistakes(emb, ids, types):
    word, pos = emb.word_embeddings(ids), emb.position_embeddings(torch.arange(ids.shape[1]))
    typ = emb.token_type_embeddings(types)
    return {"the embedding sum without the LayerNorm": lambda: word + pos + typ,
            "embeddings without the position embeddings": lambda: emb.ln(word + typ),
            "embeddings without the token-type (segment) embeddings": lambda: emb.ln(word + pos)}


def embed(emb, ids, types):
    with torch.no_grad():
        got = emb(ids, types)
        hint = likely_mistake(got, mistakes(emb, ids, types if types is not None else torch.zeros_like(ids)), HINT)
    return got, hint


def test_embeddings_match_transformers():
    model, inputs, expected = tiny()
    got, hint = embed(model.embeddings, inputs["input_ids"], inputs["token_type_ids"])
    assert_close("embeddings(input_ids, token_type_ids)", got, expected["embeddings"], hint)


def test_missing_token_type_ids_mean_segment_a():
    model, inputs, expected = tiny()
    ids = inputs["input_ids"][:1, :5]  # the first 5 tokens of sequence 0 are all segment A (type 0)
    assert torch.all(inputs["token_type_ids"][:1, :5] == 0)
    got, hint = embed(model.embeddings, ids, None)
    assert_close("embeddings(input_ids, token_type_ids=None)", got, expected["embeddings"][:1, :5],
                 "token_type_ids=None must mean every token is in segment A (type 0).")


def test_positions_count_from_zero_for_any_length():
    model, inputs, expected = tiny()
    T = 5  # a shorter batch: positions are 0..4, whatever the longest possible input
    got, hint = embed(model.embeddings, inputs["input_ids"][:, :T], inputs["token_type_ids"][:, :T])
    assert_close(f"embeddings of the first {T} tokens", got, expected["embeddings"][:, :T],
                 "Positions must be 0..T-1 for a batch of length T. " + hint)


def test_embeddings_apply_dropout_only_in_training():
    model, inputs, _ = tiny()
    emb = model.embeddings
    emb.dropout.p = 0.5
    with torch.no_grad():
        emb.eval()
        first, second = emb(inputs["input_ids"], inputs["token_type_ids"]), emb(inputs["input_ids"], inputs["token_type_ids"])
        emb.train()
        training = emb(inputs["input_ids"], inputs["token_type_ids"])
    assert torch.equal(first, second), "in eval mode the embeddings must be deterministic (no dropout)"
    zeros = (training == 0).float().mean().item()
    assert 0.35 < zeros < 0.65, (
        f"with dropout p=0.5 in training mode about half of the outputs should be exactly 0, but "
        f"{zeros:.0%} are: apply self.dropout after the LayerNorm")
