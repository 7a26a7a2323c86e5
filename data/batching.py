"""
From loaded examples to padded model inputs: tokenize once, bucket by length, pad per batch.

Padding every batch to a fixed max_length wastes most of the compute on SST (median ~20 tokens,
max ~60), and padding to the batch maximum only helps if a batch holds sentences of similar
length. BucketBatchSampler sorts examples by length inside large random pools and shuffles the
order of the resulting batches, so training still sees random batches while padding drops to a
few percent (the "bucket iterator" of torchtext / fairseq's length-grouped batching).

Encoded example (a dict; what collate consumes):
    single sentence / cross-encoder pair: {"input_ids", "token_type_ids", "id"} (+ "label")
    bi-encoder pair: {"input_ids_1", "token_type_ids_1", "input_ids_2", "token_type_ids_2",
                      "id"} (+ "label")
    cross-encoder pair with sentences=True: both of the above (a loss on each sentence's own
                      vector beside the pair's head, --quora-mnrl)
The ids are 1-D numpy int32 arrays and the token types int8 arrays, not Python lists: a list
spends about 36 bytes a token (a pointer and an int object), an int32 array 4, and a multitask run
holds every split of every task encoded (issue 15). collate also takes plain lists.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from .datasets import PAIR_DATASETS, DATASETS

# ----------------------------------------------------------------------------- encoding

ENCODE_CHUNK = 1024  # texts per tokenizer call in encode_examples


def clamp_max_length(max_length: int | None, tokenizer,
                     log: Callable[[str], None] = print) -> int:
    """The truncation length the tokenizer really uses: max_length, but never more than
    tokenizer.model_max_length (the checkpoint's position limit; a longer input has no position
    embedding). Tokenizer.encode_ids clamps silently; call this once per run, before encoding,
    so the run says so once: a note through `log` naming both numbers."""
    limit = tokenizer.model_max_length
    if max_length is None:
        return limit
    if max_length > limit:
        log(f"note: --max-length {max_length} is more than the checkpoint can read; sequences "
            f"are truncated to its position limit of {limit} tokens")
        return limit
    return max_length


def encode_examples(tokenizer, examples: Sequence[dict], task: str,
                    max_length: int | None = None, cross_encoder: bool = False,
                    sentences: bool = False) -> list[dict]:
    """Tokenize every example once with `tokenizer.encode_ids`: unpadded ids (int32 arrays) and
    token types (int8 arrays).
    Pair tasks: two separately encoded sentences `[CLS] a [SEP]`, `[CLS] b [SEP]` (bi-encoder),
    or with cross_encoder=True one `[CLS] a [SEP] b [SEP]` sequence with token types 0/1, and with
    sentences=True also the two sentences on their own, as a bi-encoder pair has them."""
    if task not in DATASETS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(DATASETS)}")
    pair = task in PAIR_DATASETS
    if (cross_encoder or sentences) and not pair:
        raise ValueError(f"cross_encoder=True and sentences=True need a sentence-pair task, got {task!r}")
    if not examples:
        return []

    def encode(texts, pairs=None):
        # In chunks: the tokenizer holds a whole call's encodings (ids, offsets, token strings) at
        # once, and the freed memory of one big call stays with the process.
        out = []
        for i in range(0, len(texts), ENCODE_CHUNK):
            chunk = texts[i:i + ENCODE_CHUNK]
            enc = tokenizer.encode_ids(chunk, pairs=None if pairs is None else pairs[i:i + ENCODE_CHUNK],
                                       max_length=max_length)
            if len(enc) != len(chunk):
                raise ValueError(f"tokenizer.encode_ids returned {len(enc)} encodings for "
                                 f"{len(chunk)} texts")
            # int8 token types: BERT has two segments (type_vocab_size 2).
            out += [(np.array(ids, dtype=np.int32), np.array(tt, dtype=np.int8)) for ids, tt in enc]
        return out

    if not pair:
        enc = encode([ex["sentence"] for ex in examples])
        out = [{"input_ids": ids, "token_type_ids": tt} for ids, tt in enc]
    elif cross_encoder:
        enc = encode([ex["sentence1"] for ex in examples], [ex["sentence2"] for ex in examples])
        out = [{"input_ids": ids, "token_type_ids": tt} for ids, tt in enc]
    if pair and (sentences or not cross_encoder):
        enc1 = encode([ex["sentence1"] for ex in examples])
        enc2 = encode([ex["sentence2"] for ex in examples])
        own = [{"input_ids_1": a, "token_type_ids_1": ta, "input_ids_2": b, "token_type_ids_2": tb}
               for (a, ta), (b, tb) in zip(enc1, enc2)]
        out = [dict(o, **sent) for o, sent in zip(out, own)] if cross_encoder else own
    for o, ex in zip(out, examples):
        o["id"] = ex["id"]
        if "label" in ex:
            o["label"] = ex["label"]
    return out


def example_lengths(encoded: Sequence[dict]) -> list[int]:
    """Bucketing key: sequence length, or the sum of both lengths for bi-encoder pairs (the
    compute of a pair batch is B * (T1 + T2)). A cross-encoder pair that also carries its
    sentences is bucketed by its pair sequence, so it gets the same batches as without them."""
    return [len(e["input_ids"]) if "input_ids" in e
            else len(e["input_ids_1"]) + len(e["input_ids_2"]) for e in encoded]


# ----------------------------------------------------------------------------- padding


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence of the batch. Returns (ids, mask), both (B, T) long;
    mask is 1 on real tokens. Pad token types with pad_id=0."""
    if len(seqs) == 0:
        raise ValueError("pad_batch got an empty batch")
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def _model_inputs(batch: Sequence[dict], suffix: str, pad_id: int) -> dict[str, torch.Tensor]:
    ids, mask = pad_batch([ex["input_ids" + suffix] for ex in batch], pad_id)
    types, _ = pad_batch([ex["token_type_ids" + suffix] for ex in batch], 0)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def collate(batch: Sequence[dict], pad_id: int = 0) -> dict:
    """Encoded examples -> {"inputs": model kwargs, "labels", "ids"} for single sentences and
    cross-encoder pairs, or {"inputs1", "inputs2", "labels", "ids"} for bi-encoder pairs (a
    cross-encoder pair that carries its sentences gets all three of inputs, inputs1, inputs2).
    Model kwargs = input_ids / attention_mask / token_type_ids, each (B, T). labels: float32
    (B,) if the labels are floats (sts), int64 (B,) otherwise, None for unlabelled test data.
    Use with a DataLoader via functools.partial(collate, pad_id=tokenizer.pad_id)."""
    if len(batch) == 0:
        raise ValueError("collate got an empty batch")
    out = {}
    if "input_ids" in batch[0]:
        out["inputs"] = _model_inputs(batch, "", pad_id)
    if "input_ids_1" in batch[0]:
        out["inputs1"] = _model_inputs(batch, "_1", pad_id)
        out["inputs2"] = _model_inputs(batch, "_2", pad_id)
    n_labelled = sum("label" in ex for ex in batch)
    if n_labelled not in (0, len(batch)):
        raise ValueError(f"collate got {n_labelled} labelled examples in a batch of "
                         f"{len(batch)}; do not mix train/dev and test data")
    labels = None
    if n_labelled:
        values = [ex["label"] for ex in batch]
        is_float = any(isinstance(v, float) for v in values)
        labels = torch.tensor(values, dtype=torch.float32 if is_float else torch.long)  # (B,)
    out["labels"] = labels
    out["ids"] = [ex["id"] for ex in batch]
    return out


def to_device(batch: dict, device: torch.device | str) -> dict:
    """Move every tensor of a collated batch (nested dicts included) to `device`."""
    def move(x):
        if isinstance(x, torch.Tensor):
            return x.to(device, non_blocking=True)
        if isinstance(x, dict):
            return {k: move(v) for k, v in x.items()}
        return x
    return move(batch)


# ----------------------------------------------------------------------------- sampling


class _BatchSampler(Sampler[list[int]]):
    """Shared epoch seeding, drop_last and distributed sharding. Every rank must build the
    sampler with the same seed and call set_epoch(e) with the same e: all ranks then compute
    the same global batch order and each takes every num_replicas-th batch."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool,
                 num_replicas: int, rank: int):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not (isinstance(num_replicas, int) and num_replicas >= 1):
            raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
        if not (isinstance(rank, int) and 0 <= rank < num_replicas):
            raise ValueError(f"rank must be in 0..{num_replicas - 1}, got {rank!r}")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call at the start of every epoch for a fresh (but reproducible) batch order."""
        self.epoch = epoch

    def _global_batches(self, rng: np.random.Generator) -> list[list[int]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        # A (seed, epoch) seed sequence: unlike seed + epoch, (0, 1) and (1, 0) differ.
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = self._global_batches(rng)
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        R = self.num_replicas
        if R > 1 and batches:
            # Every rank must run the same number of steps or DDP's all-reduce hangs: drop the
            # tail (drop_last) or repeat batches from the front, like DistributedSampler.
            if self.drop_last:
                batches = batches[:len(batches) // R * R]
            else:
                pad = -len(batches) % R
                batches = batches + [batches[i % len(batches)] for i in range(pad)]
            batches = batches[self.rank::R]
        return iter(batches)

    def __len__(self) -> int:
        n_batches = self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)
        if self.drop_last:
            return n_batches // self.num_replicas
        return -(-n_batches // self.num_replicas)


class BucketBatchSampler(_BatchSampler):
    """Batches of similar-length examples in random order. Each epoch: shuffle all indices,
    cut them into pools of batch_size * bucket_size_multiplier, sort each pool by length, cut
    pools into batches, shuffle the batch order. shuffle=False: no randomness (pools in data
    order). Every example appears exactly once per epoch (num_replicas=1)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True,
                 seed: int = 0, bucket_size_multiplier: int = 50, drop_last: bool = False,
                 num_replicas: int = 1, rank: int = 0):
        if not (isinstance(bucket_size_multiplier, int) and bucket_size_multiplier >= 1):
            raise ValueError(f"bucket_size_multiplier must be a positive int, "
                             f"got {bucket_size_multiplier!r}")
        super().__init__(len(lengths), batch_size, shuffle, seed, drop_last, num_replicas, rank)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.bucket_size_multiplier = bucket_size_multiplier

    def _global_batches(self, rng: np.random.Generator) -> list[list[int]]:
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        pool = self.batch_size * self.bucket_size_multiplier  # a multiple of batch_size, so
        batches = []                                          # only the last batch is partial
        for start in range(0, self.n, pool):
            chunk = order[start:start + pool]
            # stable: equal lengths keep their random order, so ties are not always grouped
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size].tolist()
                        for i in range(0, len(chunk), self.batch_size)]
        return batches


class RandomBatchSampler(_BatchSampler):
    """Plain shuffled batches, ignoring length (what the course's DataLoader(shuffle=True)
    does); the baseline for padding benchmarks. Same epoch/sharding semantics as
    BucketBatchSampler."""

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, num_replicas: int = 1, rank: int = 0):
        super().__init__(n, batch_size, shuffle, seed, drop_last, num_replicas, rank)

    def _global_batches(self, rng: np.random.Generator) -> list[list[int]]:
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        return [order[i:i + self.batch_size].tolist() for i in range(0, self.n, self.batch_size)]


def padding_stats(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> dict[str, int]:
    """Token counts of one pass over `batches`: real = sum of sequence lengths, computed =
    sum over batches of batch_size * longest length (what the model actually processes).
    For bi-encoder pairs call it once per side with that side's lengths and add up."""
    real = computed = 0
    for b in batches:
        lens = [lengths[i] for i in b]
        if lens:
            real += sum(lens)
            computed += len(lens) * max(lens)
    return {"real": real, "computed": computed}
