import sys
from pathlib import Path

import torch

# Tests import their shared helpers (reference.py) by name, and the project without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.manual_seed(0)
