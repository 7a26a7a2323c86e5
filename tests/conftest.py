import sys
from pathlib import Path

import pytest
import torch

# Tests import their shared helpers (reference.py) by name, and the project without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with the real uncased vocabulary (so the real tokenizer works)."""
    from reliability_cases import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"))
