"""Tokenize-once encoding, dynamic padding, collate, and the length-bucketing batch samplers."""
import functools
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from data import batching
from data.batching import (BucketBatchSampler, RandomBatchSampler, clamp_max_length, collate,
                           encode_examples, example_lengths, pad_batch, padding_stats, to_device)
from data.datasets import load_task

COURSE = Path(__file__).resolve().parent / "fixtures" / "data" / "course"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class WhitespaceTokenizer:
    """Stand-in with the real Tokenizer's encode_ids contract: [CLS] a [SEP] (b [SEP])."""
    pad_id, cls_id, sep_id = 0, 1, 2

    def _ids(self, text):
        return [3 + zlib.crc32(w.encode()) % 97 for w in text.split()]

    def encode_ids(self, texts, pairs=None, max_length=None):
        out = []
        for i, t in enumerate(texts):
            a = [self.cls_id] + self._ids(t) + [self.sep_id]
            types = [0] * len(a)
            if pairs is not None:
                b = self._ids(pairs[i]) + [self.sep_id]
                a, types = a + b, types + [1] * len(b)
            if max_length is not None:
                a, types = a[:max_length], types[:max_length]
            out.append((a, types))
        return out


TOK = WhitespaceTokenizer()


# ----------------------------------------------------------------------------- encoding

def test_encode_single_sentence_keeps_id_label_and_tokenizes_once():
    examples = load_task("sst", "train", COURSE).examples
    enc = encode_examples(TOK, examples, "sst")
    assert [e["id"] for e in enc] == [e["id"] for e in examples]
    assert [e["label"] for e in enc] == [e["label"] for e in examples]
    for e, ex in zip(enc, examples):
        assert (e["input_ids"].tolist(), e["token_type_ids"].tolist()) == TOK.encode_ids([ex["sentence"]])[0]
    assert example_lengths(enc) == [len(ex["sentence"].split()) + 2 for ex in examples]


def test_encode_pair_bi_encoder_encodes_each_sentence_alone():
    examples = load_task("sts", "dev", COURSE).examples
    enc = encode_examples(TOK, examples, "sts")
    for e, ex in zip(enc, examples):
        assert (e["input_ids_1"].tolist(), e["token_type_ids_1"].tolist()) == TOK.encode_ids([ex["sentence1"]])[0]
        assert (e["input_ids_2"].tolist(), e["token_type_ids_2"].tolist()) == TOK.encode_ids([ex["sentence2"]])[0]
        assert isinstance(e["label"], float)
    assert example_lengths(enc) == [len(e["input_ids_1"]) + len(e["input_ids_2"]) for e in enc]


def test_encode_pair_cross_encoder_joins_sentences_with_token_types():
    examples = load_task("quora", "test", COURSE).examples
    enc = encode_examples(TOK, examples, "quora", max_length=12, cross_encoder=True)
    for e, ex in zip(enc, examples):
        ids, types = TOK.encode_ids([ex["sentence1"]], [ex["sentence2"]], max_length=12)[0]
        assert e["input_ids"].tolist() == ids and e["token_type_ids"].tolist() == types
        assert "label" not in e
    assert any(1 in e["token_type_ids"] for e in enc)


def test_encode_rejects_bad_task_arguments():
    examples = load_task("sst", "dev", COURSE).examples
    with pytest.raises(ValueError, match="sentence-pair"):
        encode_examples(TOK, examples, "sst", cross_encoder=True)
    with pytest.raises(ValueError, match="unknown task"):
        encode_examples(TOK, examples, "imdb")
    assert encode_examples(TOK, [], "sst") == []


# ----------------------------------------------------------------------------- padding / collate

def test_pad_batch_pads_to_batch_max_with_mask():
    seqs = [[5, 6, 7], [8], [9, 10]]
    ids, mask = pad_batch(seqs, pad_id=-1)
    assert ids.shape == mask.shape == (3, 3) and ids.dtype == mask.dtype == torch.long
    for i, s in enumerate(seqs):
        assert ids[i, :len(s)].tolist() == s and (ids[i, len(s):] == -1).all()
        assert mask[i].tolist() == [1] * len(s) + [0] * (3 - len(s))
    with pytest.raises(ValueError, match="empty batch"):
        pad_batch([])


def test_collate_single_sentence_batch():
    enc = encode_examples(TOK, load_task("sst", "train", COURSE).examples, "sst")
    batch = collate(enc[:3], pad_id=TOK.pad_id)
    inputs = batch["inputs"]
    T = max(len(e["input_ids"]) for e in enc[:3])
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.shape == (3, T) for v in inputs.values())
    assert inputs["attention_mask"].sum().item() == sum(example_lengths(enc[:3]))
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [3, 0, 1]
    assert batch["ids"] == [e["id"] for e in enc[:3]]


def test_collate_bi_encoder_gives_two_input_dicts_and_float_labels():
    enc = encode_examples(TOK, load_task("sts", "train", COURSE).examples, "sts")
    batch = collate(enc)
    for side in ("1", "2"):
        inputs = batch["inputs" + side]
        ids, _ = pad_batch([e["input_ids_" + side] for e in enc])
        assert torch.equal(inputs["input_ids"], ids)
        assert (inputs["token_type_ids"] == 0).all()
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == pytest.approx([e["label"] for e in enc])


def test_collate_cross_encoder_pads_token_types_with_zero():
    enc = encode_examples(TOK, load_task("quora", "train", COURSE).examples, "quora",
                          cross_encoder=True)
    batch = collate(enc)
    types, mask = batch["inputs"]["token_type_ids"], batch["inputs"]["attention_mask"]
    assert (types[mask == 0] == 0).all() and (types == 1).any()
    assert batch["labels"].tolist() == [1, 0, 1, 0]


def test_collate_test_split_has_no_labels_and_mixing_is_rejected():
    test = encode_examples(TOK, load_task("sst", "test", COURSE).examples, "sst")
    dev = encode_examples(TOK, load_task("sst", "dev", COURSE).examples, "sst")
    assert collate(test)["labels"] is None
    with pytest.raises(ValueError, match="labelled"):
        collate(test + dev)


def test_to_device_moves_nested_tensors():
    enc = encode_examples(TOK, load_task("sts", "dev", COURSE).examples, "sts")
    moved = to_device(collate(enc), "cpu")
    assert moved["inputs1"]["input_ids"].device.type == "cpu" and moved["ids"][0] == enc[0]["id"]


def test_real_tokenizer_encoding_matches_its_own_padded_batch():
    tok = real_tokenizer()
    examples = load_task("quora", "train", COURSE).examples
    enc = encode_examples(tok, examples, "quora", cross_encoder=True)
    ref = tok([e["sentence1"] for e in examples], [e["sentence2"] for e in examples])
    batch = collate(enc, pad_id=tok.pad_id)
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch["inputs"][k], ref[k]), k


def padded(seqs: list[list[int]], value: int) -> torch.Tensor:
    """(B, T) long, right-padded with `value`: the list encoding's batch, built by torch's pad_sequence."""
    return torch.nn.utils.rnn.pad_sequence([torch.tensor(s, dtype=torch.long) for s in seqs], batch_first=True,
                                           padding_value=value)


@pytest.mark.parametrize("task,cross", [("sst", False), ("quora", True), ("sts", False)])
def test_compact_encoding_collates_to_the_tensors_of_the_tokenizers_lists(monkeypatch, task, cross):
    """The encoded splits are numpy arrays (int32 ids, int8 token types; issue 15), tokenized in chunks:
    every batch must still be exactly the (B, T) long tensors of the tokenizer's own id lists."""
    tok = real_tokenizer()
    monkeypatch.setattr(batching, "ENCODE_CHUNK", 3)  # 8-10 examples: three or four chunks
    examples = [{k: v for k, v in ex.items() if k != "label"}  # all splits, so unlabelled
                for split in ("train", "dev", "test") for ex in load_task(task, split, COURSE).examples]
    assert len(examples) > 2 * batching.ENCODE_CHUNK
    enc = encode_examples(tok, examples, task, max_length=16, cross_encoder=cross)
    if "sentence" in examples[0]:
        sides = {"inputs": tok.encode_ids([e["sentence"] for e in examples], max_length=16)}
    elif cross:
        sides = {"inputs": tok.encode_ids([e["sentence1"] for e in examples], [e["sentence2"] for e in examples],
                                          max_length=16)}
    else:
        sides = {f"inputs{i}": tok.encode_ids([e[f"sentence{i}"] for e in examples], max_length=16) for i in (1, 2)}
    for e in enc:
        for k, v in e.items():
            if k.startswith(("input_ids", "token_type_ids")):
                assert isinstance(v, np.ndarray) and v.dtype == (np.int32 if k.startswith("input") else np.int8)
    assert example_lengths(enc) == [sum(len(ref[i][0]) for ref in sides.values()) for i in range(len(enc))]
    for idx in ([0, 1, 2], [len(enc) - 1, 3, 0, 5], list(range(len(enc)))):  # across chunks, in any order
        batch = collate([enc[i] for i in idx], pad_id=tok.pad_id)
        for name, ref in sides.items():
            expected = {"input_ids": padded([ref[i][0] for i in idx], tok.pad_id),
                        "attention_mask": padded([[1] * len(ref[i][0]) for i in idx], 0),
                        "token_type_ids": padded([ref[i][1] for i in idx], 0)}
            assert batch[name].keys() == expected.keys()
            for k, want in expected.items():
                got = batch[name][k]
                assert got.dtype == want.dtype == torch.long and torch.equal(got, want), (name, k)
    if cross:
        assert any(1 in types for _, types in sides["inputs"])  # the pair's segment ids are really tested


def test_encoding_in_chunks_checks_every_chunk_of_the_tokenizer(monkeypatch):
    class Short(WhitespaceTokenizer):
        def encode_ids(self, texts, pairs=None, max_length=None):
            return super().encode_ids(texts, pairs, max_length)[:-1]  # one encoding lost
    monkeypatch.setattr(batching, "ENCODE_CHUNK", 2)
    with pytest.raises(ValueError, match="returned 1 encodings for 2 texts"):
        encode_examples(Short(), load_task("sst", "train", COURSE).examples, "sst")


def real_tokenizer():
    from minbert import Tokenizer
    try:
        return Tokenizer.from_pretrained("all-MiniLM-L6-v2")
    except FileNotFoundError as e:  # (CheckpointNotFound) no embedded/cached vocabulary in this checkout;
        pytest.skip(f"real tokenizer unavailable: {e}")  # any other error is a failure (and in CI, so is this skip)


def test_sentence_longer_than_csv_field_limit_is_truncated_like_any_other(tmp_path):
    transformers = pytest.importorskip("transformers")
    from minbert.hub import resolve
    tok = real_tokenizer()
    ref = transformers.BertTokenizerFast.from_pretrained(str(resolve("all-MiniLM-L6-v2")))
    # generated: 25,000 distinct words, ~160,000 characters, over the csv module's 131,072 limit
    long_text = " ".join(f"river{i % 97} stone{i}" for i in range(12_500))
    assert len(long_text) > 131_072
    (tmp_path / "sts-dev.csv").write_text(
        "\tid\tsentence1\tsentence2\tsimilarity\n"
        f"0\tlong\t{long_text}\tA short one .\t1.5\n1\tshort\tTwo dogs run .\tA dog runs .\t4.0\n")
    examples = load_task("sts", "dev", tmp_path).examples
    assert examples[0]["sentence1"] == long_text
    for max_length in (32, 128):
        enc = encode_examples(tok, examples, "sts", max_length=max_length)
        assert len(enc[0]["input_ids_1"]) == max_length
        assert enc[0]["input_ids_1"].tolist() == ref(long_text, truncation=True, max_length=max_length)["input_ids"]
        assert enc[1]["input_ids_1"].tolist() == ref("Two dogs run .")["input_ids"]  # short ones untouched


def test_max_length_above_the_position_limit_is_clamped_and_said_once():
    import json
    from minbert.hub import resolve
    tok = real_tokenizer()
    config = json.loads((resolve("all-MiniLM-L6-v2") / "config.json").read_text())
    limit = config["max_position_embeddings"]  # read independently of the tokenizer
    messages = []
    max_length = clamp_max_length(100_000, tok, log=messages.append)
    assert max_length == limit == 512
    assert len(messages) == 1 and "100000" in messages[0] and f"limit of {limit} tokens" in messages[0]
    # The clamp is what the tokenizer does anyway, silently: same encodings either way.
    examples = [{"id": "a", "sentence": "word " * 2_000}, {"id": "b", "sentence": "A short one ."}]
    clamped = encode_examples(tok, examples, "sst", max_length=max_length)
    unclamped = encode_examples(tok, examples, "sst", max_length=100_000)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(clamped, unclamped) for k in ("input_ids", "token_type_ids"))
    assert [len(e["input_ids"]) for e in clamped] == [limit, 6]
    # Within the limit, or unset: nothing to say.
    assert clamp_max_length(128, tok, log=messages.append) == 128
    assert clamp_max_length(limit, tok, log=messages.append) == limit
    assert clamp_max_length(None, tok, log=messages.append) == limit
    assert len(messages) == 1


# ----------------------------------------------------------------------------- samplers

def sst_like_lengths(n=8544, seed=0):
    """Token counts shaped like SST (long right tail, 3..~70) for tests without the data."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(3.0, 0.5, n).round(), 3, 70).astype(int).tolist()


def flat(batches):
    return [i for b in batches for i in b]


@pytest.mark.parametrize("n,bs,mult", [(103, 8, 3), (64, 8, 50), (5, 8, 2), (1, 1, 1)])
def test_bucket_sampler_yields_every_index_once_per_epoch(n, bs, mult):
    lengths = sst_like_lengths(n)
    s = BucketBatchSampler(lengths, bs, bucket_size_multiplier=mult)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert sorted(flat(batches)) == list(range(n))
        assert len(batches) == len(s) == -(-n // bs)
        assert sum(len(b) < bs for b in batches) == (n % bs != 0)


def test_bucket_sampler_is_deterministic_per_seed_and_epoch_but_reshuffles():
    lengths = sst_like_lengths(500)
    a, b, c = (BucketBatchSampler(lengths, 16, seed=s, bucket_size_multiplier=4) for s in (7, 7, 8))
    assert list(a) == list(b)
    assert list(a) != list(c)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(flat(list(a))) == sorted(flat(first))
    a.set_epoch(0)
    assert list(a) == first  # same epoch again: same order (resumable)


def test_bucket_sampler_batches_hold_similar_lengths():
    lengths = sst_like_lengths(2000)
    s = BucketBatchSampler(lengths, 32, bucket_size_multiplier=50)
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in s]
    assert np.median(spread) <= 1


def test_unshuffled_sampler_ignores_epoch():
    s = BucketBatchSampler(sst_like_lengths(100), 10, shuffle=False)
    first = list(s)
    s.set_epoch(5)
    assert list(s) == first


def test_drop_last_keeps_only_full_batches():
    s = BucketBatchSampler(sst_like_lengths(103), 8, drop_last=True, bucket_size_multiplier=2)
    batches = list(s)
    assert len(batches) == len(s) == 103 // 8
    assert all(len(b) == 8 for b in batches) and len(set(flat(batches))) == 8 * (103 // 8)


def test_bucketing_padding_within_5_percent_on_sst_like_lengths():
    lengths = sst_like_lengths()
    bucket = padding_stats(lengths, list(BucketBatchSampler(lengths, 32)))
    random = padding_stats(lengths, list(RandomBatchSampler(len(lengths), 32)))
    assert bucket["real"] == random["real"] == sum(lengths)
    assert bucket["computed"] <= 1.05 * bucket["real"]
    assert random["computed"] > 1.3 * random["real"]  # the baseline really wastes compute


@pytest.mark.skipif(not (SHARED / "ids-sst-train.csv").is_file(), reason="no shared data")
def test_bucketing_padding_within_5_percent_on_real_sst_train():
    # word count + [CLS] + [SEP] as a tokenizer-free stand-in for the token count
    lengths = [len(e["sentence"].split()) + 2 for e in load_task("sst", "train", SHARED).examples]
    stats = padding_stats(lengths, list(BucketBatchSampler(lengths, 32, seed=1)))
    assert stats["computed"] <= 1.05 * stats["real"]


def test_padding_stats_matches_padded_tensor_sizes():
    rng = np.random.default_rng(0)
    seqs = [[1] * int(k) for k in rng.integers(1, 30, 57)]
    lengths = [len(s) for s in seqs]
    batches = list(RandomBatchSampler(len(seqs), 10, seed=3))
    stats = padding_stats(lengths, batches)
    padded = [pad_batch([seqs[i] for i in b]) for b in batches]
    assert stats["computed"] == sum(ids.numel() for ids, _ in padded)
    assert stats["real"] == sum(int(mask.sum()) for _, mask in padded)


def test_random_sampler_every_index_once_and_not_length_sorted():
    s = RandomBatchSampler(100, 7, seed=0)
    batches = list(s)
    assert sorted(flat(batches)) == list(range(100)) and len(batches) == len(s) == 15
    assert flat(batches) != sorted(flat(batches))


@pytest.mark.parametrize("sampler", ["bucket", "random"])
@pytest.mark.parametrize("n,bs,R,drop_last", [(96, 8, 4, False), (100, 8, 3, False),
                                              (100, 8, 3, True), (10, 8, 4, False)])
def test_shards_are_equal_sized_disjoint_and_covering(sampler, n, bs, R, drop_last):
    def make(rank):
        if sampler == "bucket":
            return BucketBatchSampler(sst_like_lengths(n), bs, seed=3, drop_last=drop_last,
                                      bucket_size_multiplier=2, num_replicas=R, rank=rank)
        return RandomBatchSampler(n, bs, seed=3, drop_last=drop_last, num_replicas=R, rank=rank)
    shards = []
    for rank in range(R):
        s = make(rank)
        s.set_epoch(2)
        shards.append(list(s))
        assert len(shards[-1]) == len(s)
    assert len({len(sh) for sh in shards}) == 1  # same number of steps on every rank
    single = BucketBatchSampler(sst_like_lengths(n), bs, drop_last=drop_last) if sampler == \
        "bucket" else RandomBatchSampler(n, bs, drop_last=drop_last)
    n_global = len(single)
    all_batches = [tuple(b) for sh in shards for b in sh]
    if drop_last:
        assert len(set(all_batches)) == len(all_batches)  # disjoint
        assert len(all_batches) == n_global // R * R
    else:
        covered = {i for b in all_batches for i in b}
        assert covered == set(range(n))
        # disjoint except for the < R batches repeated to even out the step count
        assert len(all_batches) - len(set(all_batches)) == -n_global % R


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler([3, 4], 2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        RandomBatchSampler(10, 0)
    with pytest.raises(ValueError, match="bucket_size_multiplier"):
        BucketBatchSampler([3, 4], 2, bucket_size_multiplier=0)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 200), bs=st.integers(1, 20), mult=st.integers(1, 5),
       drop_last=st.booleans(), epoch=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_bucket_sampler_len_matches_iteration_and_partitions(n, bs, mult, drop_last, epoch, seed):
    lengths = [1 + (i * 7919) % 37 for i in range(n)]
    s = BucketBatchSampler(lengths, bs, seed=seed, bucket_size_multiplier=mult,
                           drop_last=drop_last)
    s.set_epoch(epoch)
    batches = list(s)
    assert len(batches) == len(s)
    idx = flat(batches)
    assert len(idx) == len(set(idx)) and set(idx) <= set(range(n))
    assert len(idx) == (n // bs * bs if drop_last else n)


def test_dataloader_with_bucket_sampler_and_collate_sees_every_example():
    enc = encode_examples(TOK, load_task("sst", "train", COURSE).examples, "sst")
    sampler = BucketBatchSampler(example_lengths(enc), 2, seed=0)
    loader = DataLoader(enc, batch_sampler=sampler,
                        collate_fn=functools.partial(collate, pad_id=TOK.pad_id))
    seen = [i for batch in loader for i in batch["ids"]]
    assert sorted(seen) == sorted(e["id"] for e in enc)
