"""The student release leaves out the two fast-path files (minbert/fast.py, minbert/fused_adamw.py:
they compute graded steps by themselves). Without them the same switches must take the teaching path,
with the same numbers, and say so once per process; the trainers' defaults must be the teaching path.

The release is simulated the true way: a copy of minbert/ without those files, imported by a fresh
process (CHILD below) that writes what it computed; the test compares it with this repository's
teaching path, computed here on the same weights, inputs and gradients."""
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from minbert import AdamW, BertConfig, BertModel, fast_paths_available
from reference import TINY, tiny_inputs
from training.multitask.options import build_parser

REPO = Path(__file__).resolve().parents[1]
LEFT_OUT = ("fast.py", "fused_adamw.py")  # what the release leaves out of minbert/
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
STEPS = 12

# Runs in the release copy (cwd: the folder holding the copied minbert/; the rest from PYTHONPATH).
CHILD = r"""
import sys, warnings
# An editable install (pip install -e .) adds a finder that would find the left-out submodules in the
# repository after the copy lacks them: drop it, so that only the copy's files exist.
sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
import torch
warnings.simplefilter("always")  # let every warn() call through: the once-per-process guard is under test
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import minbert
    from minbert import AdamW, BertConfig, BertModel
    from training.multitask.options import build_parser
    given = torch.load("given.pt")
    torch.set_num_threads(given["threads"])
    out = {"minbert_file": minbert.__file__, "available": minbert.fast_paths_available()}
    cfg = BertConfig(**given["config"])
    models = [BertModel(cfg, attn_implementation="sdpa", unpad=True) for _ in range(2)]  # built twice
    out["runtime"] = [(m.attn_implementation, m.unpad) for m in models]
    with torch.no_grad():
        out["hidden"] = []
        for m in models:
            m.load_state_dict(given["weights"])
            out["hidden"].append(m.eval()(**given["inputs"])["last_hidden_state"])
    params = [p.clone().requires_grad_() for p in given["params"]]
    opts = [AdamW([{"params": params[:2], "weight_decay": 0.01}, {"params": params[2:]}], lr=1e-2, fused=True),
            AdamW([torch.zeros(1, requires_grad=True)], fused=True)]  # a second one: still one message
    out["fused_flags"] = [o.fused for o in opts]
    for grads in given["grads"]:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opts[0].step()
    out["params"] = [p.detach() for p in params]
    a = build_parser().parse_args(["--device", "cpu"])
    out["defaults"] = (a.attn, a.unpad, a.adamw)
    out["help"] = build_parser().format_help()
out["warnings"] = [str(w.message) for w in caught if str(w.message).startswith("minbert:")]
torch.save(out, "out.pt")
"""


def seeded_params_and_grads(seed: int) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g) for s in [(5, 4), (4,), (3, 6)]]
    grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(STEPS)]
    return params, grads


def graded_adamw(params, grads, fused: bool) -> list[torch.Tensor]:
    """What the child's optimizer does, here, on the given path."""
    ps = [p.clone().requires_grad_() for p in params]
    opt = AdamW([{"params": ps[:2], "weight_decay": 0.01}, {"params": ps[2:]}], lr=1e-2, fused=fused)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in ps]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Run CHILD against a copy of minbert/ without the fast-path files; returns (given, out)."""
    root = tmp_path_factory.mktemp("release")
    shutil.copytree(REPO / "minbert", root / "minbert", ignore=shutil.ignore_patterns("__pycache__", *LEFT_OUT))
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY, **NO_DROPOUT))
    params, grads = seeded_params_and_grads(1)
    given = {"config": dict(TINY, **NO_DROPOUT), "weights": model.state_dict(), "inputs": tiny_inputs(seed=2),
             "params": params, "grads": grads, "threads": torch.get_num_threads()}
    torch.save(given, root / "given.pt")
    env = dict(os.environ, PYTHONPATH=str(REPO))  # training/, data/, heads/ from here; minbert/ from the cwd
    p = subprocess.run([sys.executable, "-c", CHILD], cwd=root, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = torch.load(root / "out.pt")
    assert Path(out["minbert_file"]).resolve().parent == (root / "minbert").resolve(), "imported the wrong minbert"
    return given, out, model


def test_release_copy_has_no_fast_paths(release):
    _, out, _ = release
    assert out["available"] is False


def test_release_model_asked_for_fast_paths_computes_the_teaching_path_and_warns_once(release):
    given, out, model = release
    with torch.no_grad():
        teaching = model.eval()(**given["inputs"])["last_hidden_state"]  # this repository's teaching path
    for hidden in out["hidden"]:
        # Exactly, padded positions included (unpadding would leave zeros there, sdpa other roundings).
        assert torch.equal(hidden, teaching)
    assert out["runtime"] == [("manual", False)] * 2
    said = [w for w in out["warnings"] if "fast.py" in w]
    assert len(said) == 1, out["warnings"]  # two models built, one message
    assert "teaching path" in said[0]


def test_release_fused_adamw_computes_the_graded_update_and_warns_once(release):
    given, out, _ = release
    graded = graded_adamw(given["params"], given["grads"], fused=False)
    for got, want in zip(out["params"], graded):
        assert torch.equal(got, want)
    assert out["fused_flags"] == [False, False]
    said = [w for w in out["warnings"] if "fused AdamW" in w]
    assert len(said) == 1, out["warnings"]  # two optimizers built, one message
    assert "AdamW.update" in said[0]
    # The check has teeth: the real fused path rounds differently, so it would not have passed.
    fused = graded_adamw(given["params"], given["grads"], fused=True)
    assert not all(torch.equal(a, b) for a, b in zip(fused, graded))


def test_release_trainer_defaults_are_the_teaching_path(release):
    _, out, _ = release
    assert out["defaults"] == ("manual", False, "graded")
    said = " ".join(out["help"].lower().split())  # argparse wraps the lines
    assert "default manual" in said and "default graded" in said


def test_here_the_fast_paths_are_present_and_the_defaults():
    present = all((REPO / "minbert" / f).exists() for f in LEFT_OUT)
    assert fast_paths_available() is present
    a = build_parser().parse_args(["--device", "cpu"])
    assert (a.attn, a.unpad, a.adamw) == (("sdpa", True, "fused") if present else ("manual", False, "graded"))
    if present:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback message where the fast paths exist
            m = BertModel(BertConfig(**TINY), attn_implementation="sdpa", unpad=True)
            opt = AdamW(m.parameters(), fused=True)
        assert (m.attn_implementation, m.unpad, opt.fused) == ("sdpa", True, True)
