"""The training engine: the one loop and what it is built on (checkpoints, distributed, ...).

It imports neither the multitask recipe (training/multitask/) nor the methods (training/methods/)."""
