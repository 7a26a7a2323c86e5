"""--task-layers N: each task runs its own copy of the encoder's top N layers (heads/multitask_bert.py).

References, built without the option: the plain encoder with the heads on top (N = 0), and for a
task's path a standard BertModel whose top layers are loaded from that task's copies. Parameter
counts come from one layer's numel; the export is read back by transformers."""
import copy
import json
from pathlib import Path

import pytest
import torch

from heads import MultitaskBert, mean_pool
from minbert import BertConfig, BertModel, Tokenizer
from minbert.safetensors import load_safetensors
from training.multitask import recipe, options, tasks
from training import run_export, run_multitask, run_predict
from training.engine.optim import param_groups

L = 3
FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"
MODES = [("bi", "cosine"), ("cross", "regressor"), ("bi", "cross")]
PATHS = [("manual", False), ("sdpa", True)]  # the teaching path and the trainers' fast path


def tiny_bert(attn: str = "manual", unpad: bool = False, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=L, num_attention_heads=4,
                                intermediate_size=37, max_position_embeddings=64), attn_implementation=attn, unpad=unpad)


def batch(lengths: list[int], seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 100, (n,), generator=g)
    return {"input_ids": ids, "attention_mask": (ids > 0).long(), "token_type_ids": torch.zeros_like(ids)}


def task_inputs(model: MultitaskBert, seed: int = 0) -> dict[str, tuple]:
    """Padded inputs of every task, one batch (cross-encoder) or two (bi-encoder)."""
    one, two = batch([5, 3, 7], seed), batch([4, 6, 2], seed + 1)
    return {"sst": (one,), "quora": (one, two) if model.pair_mode == "bi" else (one,),
            "sts": (one, two) if model.sts_mode != "cross" else (one,)}


def outputs(model: MultitaskBert, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {t: model(t, *x) for t, x in task_inputs(model, seed).items()}


def pair(n: int, pair_mode="bi", sts_mode="cosine", attn="manual", unpad=False):
    """(the N = 0 model, the N = n model): the same encoder and heads, built independently."""
    plain = MultitaskBert(tiny_bert(attn, unpad), pair_mode=pair_mode, sts_mode=sts_mode).eval()
    split = MultitaskBert(tiny_bert(attn, unpad), pair_mode=pair_mode, sts_mode=sts_mode, task_layers=n).eval()
    split.heads.load_state_dict(plain.heads.state_dict())
    return plain, split


def perturb(model: MultitaskBert, seed: int = 1) -> None:
    """Move every task's own top layers apart (as training would), so the tasks' paths differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in [*model.encoder.layers, *(m for c in model.task_layers.values() for m in c)]:
            for p in layer.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def layer_numel(encoder: BertModel) -> int:
    return sum(p.numel() for p in encoder.layers[0].parameters())


# ---- N = 0 is the model without the option ----

@pytest.mark.parametrize("attn,unpad", PATHS)
def test_zero_task_layers_is_the_plain_encoder_with_the_heads(attn, unpad):
    torch.manual_seed(0)
    model = MultitaskBert(tiny_bert(attn, unpad), pair_mode="cross", task_layers=0).eval()
    enc = model.encoder
    assert list(model.state_dict()) == ([f"encoder.{k}" for k in enc.state_dict()]
                                        + [f"heads.{k}" for k in model.heads.state_dict()])
    x = task_inputs(model)
    with torch.no_grad():
        out = enc(**x["sst"][0])
        expected_sst = model.heads["sst"](out["last_hidden_state"], x["sst"][0]["attention_mask"])
        u, v = (mean_pool(enc(**b)["last_hidden_state"], b["attention_mask"]) for b in x["sts"])
        got = outputs(model)
    torch.testing.assert_close(got["sst"], expected_sst, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got["sts"], model.heads["sts"](u, v), atol=1e-5, rtol=1e-5)


# ---- N > 0: at init every task computes the N = 0 model; after that, its own layers ----

@pytest.mark.parametrize("n", [1, 2, L])
@pytest.mark.parametrize("pair_mode,sts_mode", MODES)
@pytest.mark.parametrize("attn,unpad", PATHS)
def test_at_init_every_task_computes_what_the_plain_model_does(n, pair_mode, sts_mode, attn, unpad):
    plain, split = pair(n, pair_mode, sts_mode, attn, unpad)
    assert sorted(split.task_layers) == ["quora", "sst"]  # STS runs the encoder's own top layers
    want, got = outputs(plain), outputs(split)
    for t in want:
        torch.testing.assert_close(got[t], want[t], atol=1e-6, rtol=1e-6, msg=lambda m: f"{t}: {m}")


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("attn,unpad", PATHS)
def test_each_task_runs_the_shared_layers_then_its_own_copies(n, attn, unpad):
    _, split = pair(n, "bi", "cosine", attn, unpad)
    perturb(split)
    got = outputs(split)
    for t in ("sst", "quora", "sts"):
        # the reference: a standard BertModel whose top n layers hold task t's own weights
        enc = copy.deepcopy(split.encoder)
        if t != "sts":
            for i, layer in enumerate(split.task_layers[t]):
                enc.layers[L - n + i].load_state_dict(layer.state_dict())
        ref = MultitaskBert(enc).eval()
        ref.heads.load_state_dict(split.heads.state_dict())
        torch.testing.assert_close(got[t], outputs(ref)[t], atol=1e-6, rtol=1e-6, msg=lambda m: f"{t}: {m}")
    shared_top = MultitaskBert(split.encoder).eval()  # the same weights, every task on the encoder's own layers
    shared_top.heads.load_state_dict(split.heads.state_dict())
    assert not torch.allclose(outputs(shared_top)["sst"], got["sst"], atol=1e-3)  # the copies do matter


def test_more_task_layers_than_the_encoder_has_is_a_clear_error():
    with pytest.raises(ValueError, match=r"--task-layers.*from 0 to 3.*3 layers.*got 4"):
        MultitaskBert(tiny_bert(), task_layers=L + 1)
    with pytest.raises(ValueError, match="from 0 to 3"):
        MultitaskBert(tiny_bert(), task_layers=-1)


# ---- training: build() of the trainer on the fixture data with the tiny checkpoint (2 layers) ----

def build(tiny_checkpoint, *extra):
    args = options.parse_args(["--model", str(tiny_checkpoint), "--data-dir", str(FIXTURE_DATA), "--device", "cpu",
                               "--preset", "quick", "--amp", "none", "--batch-size", "4", "--threads", "1", *extra])
    return args, recipe.build(args)


@pytest.mark.parametrize("n", [1, 2])
def test_trainable_parameters_grow_by_one_copy_of_the_top_layers_per_task_but_sts(tiny_checkpoint, n):
    _, plain = build(tiny_checkpoint)
    _, split = build(tiny_checkpoint, "--task-layers", str(n))
    count = lambda run: sum(p.numel() for p in run.player.params)  # what the trainer prints and clips
    assert count(split) - count(plain) == 2 * n * layer_numel(plain.model.encoder)  # sst's and quora's copies
    in_optimizer = lambda run: sum(p.numel() for g in run.player.opt.param_groups for p in g["params"])
    assert in_optimizer(split) - in_optimizer(plain) == 2 * n * layer_numel(plain.model.encoder)
    # saved once: no tensor of the state dict shares storage with another
    state = split.model.state_dict()
    assert len({t.data_ptr() for t in state.values()}) == len(state)
    assert sum(t.numel() for t in state.values()) - sum(t.numel() for t in plain.model.state_dict().values()) \
        == 2 * n * layer_numel(plain.model.encoder)


def test_an_sst_step_moves_sst_copy_and_the_shared_layers_not_quoras_or_sts(tiny_checkpoint):
    args, run = build(tiny_checkpoint, "--task-layers", "1", "--warmup", "0")
    model = run.model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    b, _ = next(run.streams["sst"])
    loss = tasks.TASKS["sst"].loss(recipe.task_output(model, "sst", b, args), b["labels"])
    loss.backward()
    run.player.opt.step()
    after = model.state_dict()
    moved = lambda prefix: any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))
    assert moved("task_layers.sst.0.") and moved("encoder.layers.0.") and moved("heads.sst.")
    assert not moved("task_layers.quora.") and not moved("encoder.layers.1.")  # quora's copy, STS's top layer


def test_a_copy_of_layer_l_gets_layer_ls_learning_rate(tiny_checkpoint):
    model = MultitaskBert(tiny_bert(), task_layers=2)
    groups = param_groups(model.encoder, dict(model.heads), lr=1e-3, layer_decay=0.5,
                          task_layers=dict(model.task_layers))
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    for copies in model.task_layers.values():
        for i, layer in enumerate(copies):
            original = model.encoder.layers[L - 2 + i]
            for p, q in zip(layer.parameters(), original.parameters()):
                assert lr_of[id(p)] == lr_of[id(q)] == 1e-3 * 0.5 ** (L - (L - 2 + i))


def test_pcgrad_treats_each_tasks_top_layers_as_its_own(tiny_checkpoint):
    _, run = build(tiny_checkpoint, "--task-layers", "1", "--pcgrad")
    shared, own, _ = run.pcgrad
    m = run.model
    ids = lambda mods: {id(p) for mod in mods for p in mod.parameters()}
    assert {id(p) for p in shared} == ids([m.encoder.embeddings, m.encoder.layers[0], m.encoder.pooler])
    for t, params in zip(("sst", "quora", "sts"), own):
        top = m.task_layers[t] if t != "sts" else [m.encoder.layers[1]]
        assert {id(p) for p in params} == ids([m.heads[t], *top])


def test_a_frozen_layer_keeps_its_task_copies_frozen(tiny_checkpoint):
    _, run = build(tiny_checkpoint, "--task-layers", "1", "--freeze", "lower:2")
    assert not any(p.requires_grad for c in run.model.task_layers.values() for p in c.parameters())


def test_the_trainer_refuses_more_task_layers_than_the_checkpoint_has(tiny_checkpoint, tmp_path):
    argv = ["--model", str(tiny_checkpoint), "--data-dir", str(FIXTURE_DATA), "--device", "cpu", "--preset", "quick",
            "--amp", "none", "--out-dir", str(tmp_path / "run"), "--predictions-dir", str(tmp_path / "p")]
    with pytest.raises(SystemExit, match=r"--task-layers.*from 0 to 2.*got 3"):
        run_multitask.main([*argv, "--task-layers", "3"])
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit):
        options.parse_args([*argv, "--task-layers", "-1"])


# ---- the run folder, run_predict and run_export ----

def saved_run(tmp_path, model: MultitaskBert, tok: Tokenizer, max_length: int = 16) -> Path:
    opts = {"tasks": ["sst", "quora", "sts"], "max_length": max_length, "model": "all-MiniLM-L6-v2"}
    model.save_run(tmp_path / "best", tok, opts, {"sst": 0.5, "quora": 0.8, "sts": 0.8, "overall": 0.7}, 1)
    return tmp_path / "best"


def test_save_run_and_from_run_keep_the_task_layers(tmp_path):
    tok = Tokenizer.from_pretrained("all-MiniLM-L6-v2")
    _, model = pair(2, "cross", "cosine")
    perturb(model)
    d = saved_run(tmp_path, model, tok)
    assert json.loads((d / "heads.json").read_text())["heads"]["task_layers"] == 2
    assert set(load_safetensors(d / "model.safetensors")) == set(model.state_dict())
    loaded = MultitaskBert.from_run(d)
    assert loaded.n_task_layers == 2 and sorted(loaded.task_layers) == ["quora", "sst"]
    want, got = outputs(model), outputs(loaded)
    for t in want:
        torch.testing.assert_close(got[t], want[t], atol=0, rtol=0)


def test_a_run_folder_without_task_layers_loads_as_zero(tmp_path):
    tok = Tokenizer.from_pretrained("all-MiniLM-L6-v2")
    model, _ = pair(1)
    d = saved_run(tmp_path, model, tok)
    heads = json.loads((d / "heads.json").read_text())
    del heads["heads"]["task_layers"]  # as written before the option existed
    (d / "heads.json").write_text(json.dumps(heads))
    loaded = MultitaskBert.from_run(d)
    assert loaded.n_task_layers == 0 and len(loaded.task_layers) == 0
    torch.testing.assert_close(outputs(loaded)["sst"], outputs(model)["sst"], atol=0, rtol=0)


def test_run_predict_uses_each_tasks_own_layers(tmp_path, capsys):
    tok = Tokenizer.from_pretrained("all-MiniLM-L6-v2")
    torch.manual_seed(0)
    model = MultitaskBert(BertModel.from_pretrained("all-MiniLM-L6-v2"), pair_mode="cross", task_layers=2).eval()
    perturb(model)
    d = saved_run(tmp_path, model, tok)
    sentences = ["A man is playing a guitar.", "The stock market fell sharply on Tuesday."]
    result = run_predict.main(["--run", str(d), "--task", "sst", "--device", "cpu", *sentences])
    with torch.no_grad():
        want = model("sst", tok(sentences, max_length=16))
    torch.testing.assert_close(result["outputs"], want, atol=1e-5, rtol=1e-5)


def test_run_export_writes_the_shared_layers_with_stss_own_top_layers(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = Tokenizer.from_pretrained("all-MiniLM-L6-v2")
    torch.manual_seed(0)
    model = MultitaskBert(BertModel.from_pretrained("all-MiniLM-L6-v2"), pair_mode="cross", task_layers=2).eval()
    perturb(model)
    out = run_export.main(["--run", str(saved_run(tmp_path, model, tok)), "--out", str(tmp_path / "exported")])
    hf, info = transformers.AutoModel.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    b = tok(["A man is playing a guitar.", "Someone plays music on a stage, loudly."], max_length=16)
    mask = b["attention_mask"].bool()
    with torch.no_grad():
        theirs = hf.eval()(**b).last_hidden_state[mask]
        sts, sst = (model.encode(b, t)["last_hidden_state"][mask] for t in ("sts", "sst"))
    torch.testing.assert_close(theirs, sts, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(theirs, sst, atol=1e-3)
    assert "--task-layers 2" in (out / "README.md").read_text()


def test_a_tiny_training_run_with_task_layers_saves_a_run_that_loads_and_predicts(tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    result = run_multitask.main(["--model", str(tiny_checkpoint), "--data-dir", str(FIXTURE_DATA), "--device", "cpu",
                                 "--preset", "quick", "--amp", "none", "--epochs", "1", "--batch-size", "2",
                                 "--threads", "1", "--task-layers", "1", "--out-dir", str(out),
                                 "--predictions-dir", str(out / "predictions")])
    assert set(result["dev"]) == {"sst", "quora", "sts", "overall"}
    model = MultitaskBert.from_run(out / "best")
    assert model.n_task_layers == 1 and sorted(model.task_layers) == ["quora", "sst"]
    # the trained copies moved away from the layer they were copied from, each its own way
    top = model.encoder.layers[-1].state_dict()
    sst, quora = (model.task_layers[t][0].state_dict() for t in ("sst", "quora"))
    assert not torch.equal(sst["ffn_in.weight"], top["ffn_in.weight"])
    assert not torch.equal(sst["ffn_in.weight"], quora["ffn_in.weight"])
    predicted = run_predict.main(["--run", str(out / "best"), "--task", "sst", "--device", "cpu", "A fine film."])
    assert predicted["outputs"].shape == (1, 5)
