"""Training utilities for multitask fine-tuning: PCGrad, task schedules, optimizer groups, freezing."""
from training.engine import memory

memory.cap_onednn_cache()  # before any matrix product: oneDNN reads the setting once (training/engine/memory.py)
