"""The trainers (run_*.py, the entry scripts) and what they are built on: engine/ (the one loop and its
helpers), multitask/ (the task table and the multitask recipe), methods/ (distillation, GAN-BERT, MLM).
Importing the package caps oneDNN's primitive cache (training/engine/memory.py)."""
from training.engine import memory

memory.cap_onednn_cache()  # before any matrix product: oneDNN reads the setting once (training/engine/memory.py)
