"""run_multitask.py end to end on the fixture files with a tiny random BERT: files, formats,
determinism, and that each training option takes effect (seen through a spy on the loop, the batches,
PCGrad's projection and the attention/pooling functions)."""
from pathlib import Path

import pytest
import torch

from minbert import BertModel
from minbert.safetensors import load_safetensors
from heads import sentiment
from training.multitask import options
from training.engine import pcgrad
from training import run_multitask
from training.engine.streams import TaskStream

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"



def run(tmp_path, ckpt, *extra, name="run"):
    out = tmp_path / name
    result = run_multitask.main([
        "--model", str(ckpt), "--data-dir", str(FIXTURE_DATA), "--device", "cpu", "--preset", "quick", "--amp", "none", "--epochs", "1",
        "--batch-size", "2", "--out-dir", str(out), "--predictions-dir", str(out / "predictions"),
        "--threads", "1", "--log-every", "1", *extra])
    return result, out


def test_tiny_run_writes_all_six_prediction_files_in_course_format(tmp_path, tiny_checkpoint):
    result, out = run(tmp_path, tiny_checkpoint)
    headers = {"sst": "Predicted_Sentiment", "para": "Predicted_Is_Paraphrase", "sts": "Predicted_Similiary"}
    for prefix, header in headers.items():
        for split in ("dev", "test"):
            lines = (out / "predictions" / f"{prefix}-{split}-output.csv").read_text().splitlines()
            assert lines[0].split() == ["id", header]
            rows = [line.split(" , ") for line in lines[1:]]
            assert rows and all(len(r) == 2 for r in rows), f"{prefix}-{split}: expected 'id , value' rows"
            values = [float(v) for _, v in rows]
            if prefix == "sst":
                assert all(v in range(5) for v in values)
            elif prefix == "para":
                assert all(v in (0, 1) for v in values)
            else:
                assert all(0.0 <= v <= 5.0 for v in values)
    assert set(result["dev"]) == {"sst", "quora", "sts", "overall"}
    assert (out / "best" / "model.safetensors").is_file() and (out / "best" / "options.json").is_file()
    assert (out / "log.jsonl").read_text().count('"eval": "dev"') == 1


def test_prediction_ids_cover_each_test_file_once(tmp_path, tiny_checkpoint):
    from data.datasets import load_task
    _, out = run(tmp_path, tiny_checkpoint)
    for task, prefix in (("sst", "sst"), ("quora", "para"), ("sts", "sts")):
        expected = sorted(e["id"] for e in load_task(task, "test", FIXTURE_DATA).examples)
        lines = (out / "predictions" / f"{prefix}-test-output.csv").read_text().splitlines()[1:]
        assert sorted(line.split(" , ")[0] for line in lines) == expected


def test_same_seed_gives_same_result_on_cpu(tmp_path, tiny_checkpoint):
    a, out_a = run(tmp_path, tiny_checkpoint, name="a")
    b, out_b = run(tmp_path, tiny_checkpoint, name="b")
    assert a["history"][0] | {"minutes": 0} == b["history"][0] | {"minutes": 0}
    wa = load_safetensors(out_a / "best" / "model.safetensors")
    wb = load_safetensors(out_b / "best" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture
def spy(monkeypatch):
    """What a run did, seen from outside: its Loop, each step's tasks and (weighted) losses, each
    batch's ids, each PCGrad projection (task gradients in, sum out), and the calls of SDPA and of
    the sentiment head's mean pooling."""
    seen = {"loop": None, "steps": [], "batches": [], "pcgrad": [], "sdpa": 0, "sst_mean_pool": 0}
    real_fit = run_multitask.fit

    def fit(loop, *a, **k):
        seen["loop"], inner = loop, loop.losses

        def losses(step_tasks):
            out = inner(step_tasks)
            seen["steps"].append({t: float(v.detach()) for t, v in out.items()})
            return out
        loop.losses = losses
        return real_fit(loop, *a, **k)

    def counted(key, real):
        def f(*a, **k):
            seen[key] += 1
            return real(*a, **k)
        return f

    real_next, real_project = TaskStream.__next__, pcgrad.pcgrad_project

    def next_batch(self):
        batch, rest = real_next(self)
        seen["batches"].append(list(batch["ids"]))
        return batch, rest

    def project(grads, generator=None):
        out = real_project(grads, generator)
        seen["pcgrad"].append(([g.clone() for g in grads], out.clone()))
        return out

    monkeypatch.setattr(run_multitask, "fit", fit)
    monkeypatch.setattr(TaskStream, "__next__", next_batch)
    monkeypatch.setattr(pcgrad, "pcgrad_project", project)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        counted("sdpa", torch.nn.functional.scaled_dot_product_attention))
    monkeypatch.setattr(sentiment, "mean_pool", counted("sst_mean_pool", sentiment.mean_pool))
    return seen


def step_tasks(seen) -> list[str]:
    return [next(iter(s)) if len(s) == 1 else "+".join(s) for s in seen["steps"]]


def n_batches(seen) -> dict[str, int]:
    return dict(seen["loop"].phases[0].batches)


def test_default_mode_uses_sdpa_cls_pooling_and_samples_the_tasks(tmp_path, tiny_checkpoint, spy):
    run(tmp_path, tiny_checkpoint, "--epochs", "3")
    assert spy["sdpa"] > 0 and spy["sst_mean_pool"] == 0
    assert set(step_tasks(spy)) == {"sst", "quora", "sts"} and not spy["pcgrad"]


def test_pcgrad_projects_the_conflicting_task_gradients(tmp_path, tiny_checkpoint, spy):
    run(tmp_path, tiny_checkpoint, "--pcgrad", "--epochs", "3")
    assert step_tasks(spy) == ["sst+quora+sts"] * len(spy["steps"]) and len(spy["pcgrad"]) == len(spy["steps"])
    conflicts = 0
    for grads, out in spy["pcgrad"]:
        G = torch.stack(grads)  # (K, D)
        dots = G @ G.T
        conflicting = bool((dots.triu(diagonal=1) < 0).any())
        conflicts += conflicting
        if conflicting:  # projected: not the plain sum, and no longer against any original gradient
            assert not torch.allclose(out, G.sum(0))
        else:
            torch.testing.assert_close(out, G.sum(0))
    assert conflicts > 0, "no step had conflicting task gradients: the test saw no projection"


def test_round_robin_cycles_through_the_tasks(tmp_path, tiny_checkpoint, spy):
    run(tmp_path, tiny_checkpoint, "--schedule", "round_robin", "--epochs", "2")
    order, nb = step_tasks(spy), n_batches(spy)
    n, k = sum(nb.values()), min(nb.values())
    for epoch in (order[:n], order[n:]):  # while every task has batches left: a fixed cycle of the three
        assert len(set(epoch[:3])) == 3 and epoch[:3 * k] == epoch[:3] * k, order


def test_sequential_trains_one_task_after_another_then_the_extra_epochs(tmp_path, tiny_checkpoint, spy):
    run(tmp_path, tiny_checkpoint, "--schedule", "sequential", "--extra-epochs", "sst=1")
    order, nb = step_tasks(spy), n_batches(spy)
    multitask = order[:sum(nb.values())]
    blocks = [t for i, t in enumerate(multitask) if i == 0 or multitask[i - 1] != t]
    assert sorted(blocks) == ["quora", "sst", "sts"], order  # each task in one contiguous block
    assert [p.name for p in spy["loop"].phases] == ["multitask", "extra-sst"]
    assert order[sum(nb.values()):] == ["sst"] * nb["sst"]


def test_bi_encoder_cosine_and_symmetric_augmentation(tmp_path, tiny_checkpoint, spy):
    _, out = run(tmp_path, tiny_checkpoint, "--pair-mode", "bi", "--sts-mode", "cosine", "--augment-symmetric")
    rows = {t: sum(1 for _ in (FIXTURE_DATA / f).open()) - 1 for t, f in
            (("sst", "ids-sst-train.csv"), ("quora", "quora-train.csv"), ("sts", "sts-train.csv"))}
    assert n_batches(spy) == {"sst": -(-rows["sst"] // 2), "quora": rows["quora"], "sts": rows["sts"]}  # (a,b), (b,a)
    weights = load_safetensors(out / "best" / "model.safetensors")
    assert not [k for k in weights if k.startswith("heads.sts")], "cosine similarity has no parameters"
    [quora_in] = [v.shape[1] for k, v in weights.items() if k.startswith("heads.quora") and v.ndim == 2][:1]
    assert quora_in == 4 * 32, "bi-encoder pair features [u; v; |u-v|; u*v] of hidden size 32"


def test_regressor_sts_head_reads_pair_features(tmp_path, tiny_checkpoint, spy):
    _, out = run(tmp_path, tiny_checkpoint, "--sts-mode", "regressor", "--pair-mode", "bi")
    weights = load_safetensors(out / "best" / "model.safetensors")
    sts = [v.shape[1] for k, v in weights.items() if k.startswith("heads.sts") and v.ndim == 2]
    assert sts and sts[0] == 4 * 32


def test_single_task_run_trains_and_scores_only_that_task(tmp_path, tiny_checkpoint, spy):
    result, _ = run(tmp_path, tiny_checkpoint, "--tasks", "sst")
    assert set(step_tasks(spy)) == {"sst"} and set(result["dev"]) == {"sst"}
    assert all(i.startswith("sst") for b in spy["batches"] for i in b)


def test_manual_attention_and_mean_pooling(tmp_path, tiny_checkpoint, spy):
    run(tmp_path, tiny_checkpoint, "--attn", "manual", "--sentiment-pooling", "mean")
    assert spy["sdpa"] == 0 and spy["sst_mean_pool"] > 0


def test_task_batch_size_loss_weights_and_layer_decay_take_effect(tmp_path, tiny_checkpoint, spy):
    common = ["--task-batch-size", "quora=3", "--layer-decay", "0.8", "--lr", "1e-3", "--schedule", "round_robin"]
    run(tmp_path, tiny_checkpoint, *common, name="plain")
    plain = list(spy["steps"])
    groups = {g["name"]: g["initial_lr"] for g in spy["loop"].players[0].opt.param_groups}
    sizes = {len(b) for b in spy["batches"] if b[0].startswith("qqp")}
    assert sizes <= {3, 1} and 3 in sizes, sizes  # 4 quora rows: batches of 3 (and the rest)
    spy["steps"].clear()
    run(tmp_path, tiny_checkpoint, *common, "--loss-weights", "sts=2", name="weighted")
    # Same seed, same schedule: the steps before the first sts step are the same, so its loss doubles.
    first = next(i for i, s in enumerate(plain) if "sts" in s)
    assert spy["steps"][:first] == plain[:first]
    assert spy["steps"][first]["sts"] == pytest.approx(2 * plain[first]["sts"], rel=1e-6)
    # layer l of L = 2 gets lr * 0.8^(L - l), the embeddings 0.8^(L + 1), the pooler and heads the full lr
    expected = {"embeddings": 1e-3 * 0.8 ** 3, "layers.0": 1e-3 * 0.8 ** 2, "layers.1": 1e-3 * 0.8}
    for name, lr in groups.items():
        section = name.removesuffix(".no_decay")
        assert lr == pytest.approx(expected.get(section, 1e-3)), f"group {name}: lr {lr}"
    assert {n.removesuffix(".no_decay") for n in groups} >= {"embeddings", "layers.0", "layers.1", "head.sst"}


def test_freezing_the_encoder_leaves_it_unchanged(tmp_path, tiny_checkpoint):
    _, out = run(tmp_path, tiny_checkpoint, "--freeze", "encoder")
    trained = load_safetensors(out / "best" / "model.safetensors")
    original = BertModel.from_pretrained(tiny_checkpoint).state_dict()
    assert all(torch.equal(trained[f"encoder.{k}"], v) for k, v in original.items())
    head = [k for k in trained if k.startswith("heads.sst")]
    assert head, "the sst head should exist and be trained"


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "sst,imdb"], "unknown task"),
    (["--batch-size", "0"], "batch sizes"),
    (["--loss-weights", "nli=2"], "task=value"),
])
def test_bad_options_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        run_multitask.parse_args(["--device", "cpu", *argv])
    assert e.value.code != 0
    assert message in capsys.readouterr().err


def test_bf16_on_cpu_is_refused_only_without_native_bf16(monkeypatch, capsys):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(SystemExit):
        run_multitask.parse_args(["--amp", "bf16", "--device", "cpu"])
    assert "AVX512-BF16" in capsys.readouterr().err
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert run_multitask.parse_args(["--amp", "bf16", "--device", "cpu"]).amp == "bf16"


@pytest.mark.skipif(not options.cpu_has_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX)")
def test_bf16_autocast_run_on_cpu_trains_and_predicts(tmp_path, tiny_checkpoint):
    result, out = run(tmp_path, tiny_checkpoint, "--amp", "bf16", "--device", "cpu")
    assert set(result["dev"]) == {"sst", "quora", "sts", "overall"}
    trained = load_safetensors(out / "best" / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in trained.values())  # autocast: the weights stay fp32
    original = BertModel.from_pretrained(tiny_checkpoint).state_dict()
    assert any(not torch.equal(trained[f"encoder.{k}"], v) for k, v in original.items())


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "none")])
def test_amp_auto_picks_bf16_only_where_the_cpu_has_it(monkeypatch, native, expected):
    monkeypatch.setattr(options, "cpu_has_bf16", lambda: native)
    assert run_multitask.parse_args(["--device", "cpu"]).amp == expected  # the presets say auto
    assert run_multitask.parse_args(["--device", "cpu", "--amp", "none"]).amp == "none"
