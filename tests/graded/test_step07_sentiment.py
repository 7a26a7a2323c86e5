"""Step 7: the sentiment classifier (mean_pool in heads/pooling.py, SentimentHead.forward in
heads/sentiment.py). References are computed here token by token, independently of your code."""
import torch

from checks import assert_close
from heads.pooling import mean_pool
from heads.sentiment import SentimentHead


def hidden_and_mask(seed=0, B=4, T=7, C=6):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, C, generator=g)
    lengths = [7, 3, 1, 5]  # real tokens per row; the rest is padding
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    return h, mask, lengths


def reference_mean(h, lengths):
    return torch.stack([h[b, :n].mean(0) for b, n in enumerate(lengths)])  # (B, C)


def test_mean_pool_averages_only_the_real_tokens():
    h, mask, lengths = hidden_and_mask()
    assert_close("mean_pool(h, mask)", mean_pool(h, mask), reference_mean(h, lengths),
                 "Average over the tokens whose mask is 1 only: sum them and divide by their count, per row.")


def test_mean_pool_ignores_whatever_sits_in_the_padding():
    h, mask, lengths = hidden_and_mask()
    poisoned = h.masked_fill(mask[..., None] == 0, float("nan"))
    poisoned[1, -1] = float("inf")
    assert_close("mean_pool with nan/inf at padded positions", mean_pool(poisoned, mask), reference_mean(h, lengths),
                 "h * mask keeps nan (nan * 0 = nan): zero the padded positions with masked_fill or torch.where.")


def test_mean_pool_of_an_all_padding_row_is_zero():
    h, mask, _ = hidden_and_mask()
    mask[2] = 0
    got = mean_pool(h, mask)
    assert_close("mean_pool of a row that is all padding", got[2], torch.zeros(h.shape[-1]),
                 "An empty row must pool to zeros, not 0/0 = nan: clamp the token count to at least 1.")


def head_outputs(pooling):
    torch.manual_seed(0)
    h, mask, lengths = hidden_and_mask(B=4, C=8)
    pooler_output = torch.tanh(torch.randn(4, 8))
    head = SentimentHead(hidden_size=8, num_classes=5, pooling=pooling).eval()
    with torch.no_grad():
        got = head(h, mask, pooler_output=pooler_output)
        pooled = {"cls": h[:, 0], "mean": reference_mean(h, lengths), "pooler": pooler_output}[pooling]
        expected = head.classifier(pooled)  # (B, 5)
    return got, expected


def test_sentiment_head_classifies_the_cls_vector():
    got, expected = head_outputs("cls")
    assert_close("SentimentHead(pooling='cls') logits", got, expected,
                 "pooling='cls': self.classifier applied to the first token's vector, logits (B, num_classes).")


def test_sentiment_head_classifies_the_mean_of_real_tokens():
    got, expected = head_outputs("mean")
    assert_close("SentimentHead(pooling='mean') logits", got, expected,
                 "pooling='mean': self.classifier applied to mean_pool(last_hidden_state, attention_mask).")


def test_sentiment_head_classifies_the_pooler_output():
    got, expected = head_outputs("pooler")
    assert_close("SentimentHead(pooling='pooler') logits", got, expected,
                 "pooling='pooler': self.classifier applied to pooler_output.")
