"""Data pipeline for the multitask model: CS224N file loaders, tokenization, length bucketing."""

from .batching import (BucketBatchSampler, RandomBatchSampler, clamp_max_length, collate,
                       encode_examples, example_lengths, pad_batch, padding_stats, to_device)
from .datasets import (TASK_NAMES, PAIR_DATASETS, DATASETS, DataError, Loaded, all_files,
                       find_data_dir, load_cfimdb, load_file, load_quora, load_sst, load_sts, load_task,
                       task_file)

__all__ = [
    "BucketBatchSampler", "RandomBatchSampler", "clamp_max_length", "collate", "encode_examples",
    "example_lengths", "pad_batch", "padding_stats", "to_device",
    "TASK_NAMES", "PAIR_DATASETS", "DATASETS", "DataError", "Loaded", "all_files", "find_data_dir",
    "load_cfimdb", "load_file", "load_quora", "load_sst", "load_sts", "load_task", "task_file",
]
