"""Task heads (heads/): shapes, ranges, masking, pair features, the one-call pair encoder,
SentenceEncoder.encode against forward, and gradient flow from every head into the encoder."""
import pytest
import torch
import torch.nn.functional as F

from heads import (CosineScore, CrossEncoderHead, MultitaskBert, ParaphraseHead, SentenceEncoder,
                   SentimentHead, SimilarityRegressor, cls_pool, cosine_score, mean_pool, pair_features)
from minbert import BertConfig, BertModel, Tokenizer

C = 32
TOL = dict(atol=1e-5, rtol=1e-5)


def tiny_bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=100, hidden_size=C, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=37, max_position_embeddings=64))


def batch(lengths: list[int], seed: int = 0, T: int | None = None) -> dict:
    """Random ids (never [PAD] = 0) padded to T (default the longest)."""
    g = torch.Generator().manual_seed(seed)
    T = T or max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 100, (n,), generator=g)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.fixture(scope="module")
def minilm():
    return BertModel.from_pretrained(), Tokenizer.from_pretrained()


# ---- pooling ----

def test_mean_pool_equals_manual_mean_of_real_tokens():
    torch.manual_seed(0)
    h, lengths = torch.randn(3, 6, C), [6, 2, 4]
    mask = batch(lengths)["attention_mask"]
    expected = torch.stack([h[i, :n].mean(0) for i, n in enumerate(lengths)])
    torch.testing.assert_close(mean_pool(h, mask), expected)


def test_mean_pool_ignores_padding_values_even_nan():
    torch.manual_seed(0)
    h, mask = torch.randn(3, 6, C), batch([6, 2, 4])["attention_mask"]
    poisoned = h.clone()
    poisoned[mask == 0] = torch.randn(int((mask == 0).sum()), C) * 1e3
    torch.testing.assert_close(mean_pool(poisoned, mask), mean_pool(h, mask))
    poisoned[mask == 0] = float("nan")
    torch.testing.assert_close(mean_pool(poisoned, mask), mean_pool(h, mask))


def test_mean_pool_all_padding_row_is_zero_not_nan():
    h, mask = torch.randn(2, 4, C), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    out = mean_pool(h, mask)
    assert torch.isfinite(out).all() and (out[1] == 0).all()


def test_pooling_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="attention_mask"):
        mean_pool(torch.randn(2, 4, C), torch.ones(2, 5))


def test_cls_pool_is_first_token():
    h = torch.randn(2, 4, C)
    assert torch.equal(cls_pool(h), h[:, 0])


# ---- single heads ----

@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
@pytest.mark.parametrize("mlp_hidden", [None, 16])
def test_sentiment_head_logits_shape(pooling, mlp_hidden):
    head = SentimentHead(C, pooling=pooling, mlp_hidden=mlp_hidden)
    out = head(torch.randn(3, 6, C), batch([6, 2, 4])["attention_mask"], pooler_output=torch.randn(3, C))
    assert out.shape == (3, 5)


def test_sentiment_head_uses_the_pooling_it_names():
    h, mask, pooled = torch.randn(3, 6, C), batch([6, 2, 4])["attention_mask"], torch.randn(3, C)
    for pooling, x in [("cls", h[:, 0]), ("mean", mean_pool(h, mask)), ("pooler", pooled)]:
        head = SentimentHead(C, pooling=pooling).eval()
        torch.testing.assert_close(head(h, mask, pooler_output=pooled), head.classifier(x))
    with pytest.raises(ValueError, match="pooler_output"):
        SentimentHead(C, pooling="pooler")(h, mask)
    with pytest.raises(ValueError, match="pooling"):
        SentimentHead(C, pooling="max")


def test_pair_features_layout():
    u, v = torch.randn(3, C), torch.randn(3, C)
    f = pair_features(u, v)
    assert f.shape == (3, 4 * C)
    for k, part in enumerate([u, v, (u - v).abs(), u * v]):
        assert torch.equal(f[:, k * C:(k + 1) * C], part)


def test_paraphrase_head_gives_one_logit_per_pair():
    assert ParaphraseHead(C)(torch.randn(3, C), torch.randn(3, C)).shape == (3,)
    assert ParaphraseHead(C, mlp_hidden=8)(torch.randn(3, C), torch.randn(3, C)).shape == (3,)


def test_cosine_score_mapping_and_range():
    torch.manual_seed(0)
    u = torch.randn(4, C)
    w = torch.randn(4, C)
    orth = w - (w * u).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True) * u  # orthogonal to u
    torch.testing.assert_close(cosine_score(u, 3 * u), torch.full((4,), 5.0))  # identical direction
    torch.testing.assert_close(cosine_score(u, -u), torch.zeros(4))  # opposite
    torch.testing.assert_close(cosine_score(u, orth), torch.zeros(4), atol=1e-5, rtol=0)  # unrelated
    v = torch.randn(64, C)
    s = cosine_score(torch.randn(64, C), v)
    assert ((s >= 0) & (s <= 5)).all()
    a, b = torch.randn(64, C), torch.randn(64, C)
    expected = 5 * F.cosine_similarity(a, b).clamp(min=0)
    torch.testing.assert_close(cosine_score(a, b), expected)


def test_cosine_score_is_symmetric():
    a, b = torch.randn(8, C), torch.randn(8, C)
    assert torch.equal(cosine_score(a, b), cosine_score(b, a))
    assert torch.equal(CosineScore()(a, b), cosine_score(a, b))


def test_similarity_regressor_scores_in_range():
    torch.manual_seed(0)
    head = SimilarityRegressor(C)
    with torch.no_grad():  # push the logits far out: the sigmoid must still bound them
        head.regressor[-1].weight.mul_(1e3)
    s = head(torch.randn(64, C), torch.randn(64, C))
    assert s.shape == (64,) and ((s >= 0) & (s <= 5)).all() and s.min() < 1 and s.max() > 4


def test_cross_encoder_head_shapes_and_scaled_range():
    h = torch.randn(3, 6, C)
    assert CrossEncoderHead(C)(h).shape == (3,)
    assert CrossEncoderHead(C, num_outputs=3)(h).shape == (3, 3)
    s = CrossEncoderHead(C, scale=5.0)(h * 100)
    assert ((s >= 0) & (s <= 5)).all()


# ---- MultitaskBert ----

def heads_by_hand(m: MultitaskBert, b1: dict, b2: dict) -> dict:
    """The heads' outputs computed independently of heads/: [CLS] -> linear for sst; separate
    encoder calls, a masked mean written as a weighted sum, [u; v; |u-v|; u*v] -> linear for quora;
    5 * relu(cos(u, v)) for sts (cosine mode)."""
    def encode(b):
        return m.encoder(b["input_ids"], b["attention_mask"])["last_hidden_state"]  # (B, T, C)

    def mean(b):
        w = b["attention_mask"].float()  # (B, T)
        return torch.einsum("btc,bt->bc", encode(b), w) / w.sum(1, keepdim=True)  # (B, C)

    sst = m.heads["sst"].classifier[-1]
    quora = m.heads["quora"].classifier[-1]
    u, v = mean(b1), mean(b2)
    feats = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)  # (B, 4C)
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    return {"sst": encode(b1)[:, 0] @ sst.weight.T + sst.bias,
            "quora": (feats @ quora.weight.T + quora.bias).squeeze(-1),
            "sts": 5 * cos.clamp(min=0)}


def test_multitask_output_shapes_for_every_mode():
    b1, b2 = batch([5, 3, 7], seed=1), batch([4, 6, 2], seed=2)
    pair = batch([9, 8, 10], seed=3)
    for sts_mode in ["cosine", "regressor"]:
        m = MultitaskBert(tiny_bert(), sts_mode=sts_mode)
        assert set(m.heads) == {"sst", "quora", "sts"}
        assert m.predict_sentiment(b1).shape == (3, 5)
        assert m.predict_paraphrase(b1, b2).shape == (3,)
        s = m.predict_similarity(b1, b2)
        assert s.shape == (3,) and ((s >= 0) & (s <= 5)).all()
        m.eval()  # no dropout: forward(task, ...) must equal the heads' math written out here
        expected = heads_by_hand(m, b1, b2)
        torch.testing.assert_close(m("sst", b1), expected["sst"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m("quora", b1, b2), expected["quora"], atol=1e-5, rtol=1e-5)
        if sts_mode == "cosine":
            torch.testing.assert_close(m("sts", b1, b2), expected["sts"], atol=1e-5, rtol=1e-5)
    m = MultitaskBert(tiny_bert(), pair_mode="cross", sts_mode="cross").eval()
    assert m.predict_paraphrase(pair).shape == (3,)
    s = m.predict_similarity(pair)
    assert s.shape == (3,) and ((s >= 0) & (s <= 5)).all()
    with pytest.raises(ValueError, match="cross-encoder"):
        m.predict_paraphrase(b1, b2)
    with pytest.raises(ValueError, match="bi-encoder"):
        MultitaskBert(tiny_bert()).predict_paraphrase(b1)
    with pytest.raises(ValueError, match="unknown task"):
        m("nli", pair)


def test_multitask_rejects_unknown_modes():
    for kwargs in [dict(pair_mode="poly"), dict(sts_mode="dot"), dict(sentiment_pooling="max")]:
        with pytest.raises(ValueError):
            MultitaskBert(tiny_bert(), **kwargs)


def test_encode_pair_in_one_call_equals_two_calls():
    m = MultitaskBert(tiny_bert()).eval()
    b1, b2 = batch([5, 3, 7], seed=1), batch([4, 9, 2], seed=2)  # different T: 7 vs 9
    b1["token_type_ids"][0, :2] = 1  # segment ids must be carried over too
    u, v = m.encode_pair(b1, b2)
    torch.testing.assert_close(u, m.embed(b1), **TOL)
    torch.testing.assert_close(v, m.embed(b2), **TOL)
    with pytest.raises(ValueError, match="differ in size"):
        m.encode_pair(b1, batch([4, 9], seed=2))


def test_bi_encoder_cosine_similarity_is_symmetric_in_the_pair():
    m = MultitaskBert(tiny_bert(), sts_mode="cosine").eval()
    b1, b2 = batch([5, 3, 7], seed=1), batch([4, 9, 2], seed=2)
    torch.testing.assert_close(m.predict_similarity(b1, b2), m.predict_similarity(b2, b1), **TOL)


def test_embed_is_mean_pooled_last_hidden_state():
    enc = tiny_bert().eval()
    m = MultitaskBert(enc)
    b = batch([5, 3, 7])
    torch.testing.assert_close(m.embed(b), mean_pool(enc(**b)["last_hidden_state"], b["attention_mask"]))


CASES = [("sst", "cls", "bi", "cosine"), ("sst", "mean", "bi", "cosine"), ("quora", "cls", "bi", "cosine"),
         ("quora", "cls", "cross", "cosine"), ("sts", "cls", "bi", "cosine"), ("sts", "cls", "bi", "regressor"),
         ("sts", "cls", "bi", "cross")]


@pytest.mark.parametrize("task,pooling,pair_mode,sts_mode", CASES)
def test_gradients_reach_the_encoder_from_every_head(task, pooling, pair_mode, sts_mode):
    m = MultitaskBert(tiny_bert(), sentiment_pooling=pooling, pair_mode=pair_mode, sts_mode=sts_mode)
    b1, b2, pair = batch([5, 3, 7], seed=1), batch([4, 6, 2], seed=2), batch([9, 8, 10], seed=3)
    cross = (task == "quora" and pair_mode == "cross") or (task == "sts" and sts_mode == "cross")
    out = m(task, pair) if cross else (m(task, b1) if task == "sst" else m(task, b1, b2))
    if task == "sts":
        assert ((out > 0) & (out < 5)).all()  # inside the range, where relu / sigmoid pass gradient
    out.pow(2).sum().backward()
    for name in ["embeddings.word_embeddings.weight", "layers.0.attn.qkv.weight", "layers.1.ffn_in.weight"]:
        grad = m.encoder.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, f"{task} head: no gradient at encoder.{name}"
    for p in m.heads[task].parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


# ---- SentenceEncoder on the real all-MiniLM-L6-v2 ----

SENTENCES = ["A man is playing a guitar.", "Hi", "The quick brown fox jumps over the lazy dog near the river bank.",
             "A woman slices an onion.", "Two dogs run through a field of tall grass.", "ok then"]


@pytest.mark.parametrize("dim", [None, 16])
def test_sentence_encoder_encode_matches_forward_for_any_batching(minilm, dim):
    bert, tok = minilm
    torch.manual_seed(0)
    enc = SentenceEncoder(bert, tok, dim=dim).eval()
    with torch.no_grad():
        expected = torch.stack([enc(tok([s]))[0] for s in SENTENCES])  # one at a time: no padding at all
    assert expected.shape == (len(SENTENCES), dim or bert.config.hidden_size)
    enc.train()
    for bs in [1, 2, 4, 64]:
        torch.testing.assert_close(enc.encode(SENTENCES, batch_size=bs), expected, **TOL)
    perm = [3, 0, 5, 1, 4, 2]
    torch.testing.assert_close(enc.encode([SENTENCES[i] for i in perm], batch_size=4), expected[perm], **TOL)
    assert enc.training  # encode restores the mode it found


def test_sentence_encoder_is_mean_pooling_then_projection(minilm):
    bert, tok = minilm
    enc = SentenceEncoder(bert, tok, dim=8).eval()
    b = tok(SENTENCES[:3])
    with torch.no_grad():
        pooled = mean_pool(bert(**b)["last_hidden_state"], b["attention_mask"])
        torch.testing.assert_close(enc(b), enc.proj(pooled))
        torch.testing.assert_close(SentenceEncoder(bert, tok, dim=None)(b), pooled)


def test_sentence_encoder_mean_pools_like_sentence_transformers(minilm):
    """dim=None is plain mean pooling: paraphrases score above unrelated sentences."""
    bert, tok = minilm
    e = SentenceEncoder(bert, tok, dim=None).encode(["A man is playing a guitar.", "A person plays the guitar.",
                                                     "A woman slices an onion."])
    assert cosine_score(e[:1], e[1:2]) > cosine_score(e[:1], e[2:3])


def test_sentence_encoder_empty_input_and_bad_input(minilm):
    bert, tok = minilm
    enc = SentenceEncoder(bert, tok, dim=16)
    out = enc.encode([])
    assert out.shape == (0, 16) and out.dtype == torch.float32
    assert SentenceEncoder(bert, tok, dim=None).encode([]).shape == (0, bert.config.hidden_size)
    with pytest.raises(TypeError):
        enc.encode("one sentence")
