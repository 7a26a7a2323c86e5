"""Endless per-task batch streams for multitask training: resumable, and sharded across ranks.

Each stream runs through epoch after epoch of its task's data, each epoch in a fresh bucketed order
(data.batching.BucketBatchSampler). Resume: an epoch's order depends only on (seed, epoch), so a
position is two ints, (epoch, batches consumed). Sharding: every rank builds the same global batch
of batch_size * R examples and keeps global[rank::R] (strided: a bucketed batch is sorted by
length), so R ranks train on exactly the batches of one process; `next()` also returns the loss
weight n_local * R / n_global that makes DDP's average the global-batch mean (a rank left empty
trains on one example with weight 0). docs/RELIABILITY.md, sections 4 and 6, has the details.
"""
from __future__ import annotations

from typing import Callable

from data.batching import BucketBatchSampler, collate, example_lengths


class TaskStream:
    """stream = TaskStream(encoded_train, batch_size=32, pad_id=0, seed=1); batch, weight = next(stream)

    order: epoch -> that epoch's batches of example indices, instead of the bucketed order (it is
    called when the epoch starts, so it may draw from a random generator of its own)."""

    def __init__(self, encoded: list[dict], batch_size: int, pad_id: int, seed: int,
                 rank: int = 0, world_size: int = 1, order: Callable[[int], list[list[int]]] | None = None):
        if not encoded:
            raise ValueError("a task stream needs at least one training example")
        if not (0 <= rank < world_size):
            raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
        self.encoded, self.lengths = encoded, example_lengths(encoded)
        self.global_batch_size = batch_size * world_size
        self.pad_id, self.seed, self.rank, self.world_size = pad_id, seed, rank, world_size
        self.epoch, self.index, self.order = 0, 0, order
        self._order: list[list[int]] | None = None  # the global batches of self.epoch

    def global_batches(self) -> list[list[int]]:
        """Example indices of every global batch of the current epoch, in training order."""
        if self._order is None and self.order is not None:
            self._order = self.order(self.epoch)
        elif self._order is None:
            sampler = BucketBatchSampler(self.lengths, self.global_batch_size, shuffle=True, seed=self.seed)
            sampler.set_epoch(self.epoch)
            self._order = list(sampler)
        return self._order

    def next_indices(self) -> tuple[list[int], float]:
        """This rank's example indices of the next global batch, and its loss weight."""
        if self.index == len(self.global_batches()):  # epoch done: the next pass, in a new order
            self.epoch, self.index, self._order = self.epoch + 1, 0, None
        batch = self.global_batches()[self.index]
        self.index += 1
        mine = batch[self.rank::self.world_size]
        weight = len(mine) * self.world_size / len(batch)
        return (mine or batch[:1]), weight

    def __iter__(self) -> "TaskStream":
        return self

    def __next__(self) -> tuple[dict, float]:
        indices, weight = self.next_indices()
        return collate([self.encoded[i] for i in indices], self.pad_id), weight

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        epoch, index = int(state["epoch"]), int(state["index"])
        self.epoch, self.index, self._order = epoch, index, None
        if not (epoch >= 0 and 0 <= index <= len(self.global_batches())):
            raise ValueError(f"stream position (epoch {epoch}, batch {index}) does not exist: this epoch has "
                             f"{len(self.global_batches())} batches; was the data or the batch size changed?")
