"""Smoke test of bench/run_benchmark.py: every section runs with tiny settings and the JSON record
has the documented structure. No timing assertions: speed is for the benchmark to report."""
import json
from pathlib import Path

import pytest
import torch

from minbert import BertConfig
from bench import benchmark, run_benchmark

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"
TINY_ARGS = ["--model", "tiny", "--shapes", "8,sst-bucket,sst-random", "--reps", "2", "--warmup", "1",
             "--data-dir", str(FIXTURE_DATA), "--epoch-batches", "1", "--threads", "1", "--peak-reps", "5"]


def summary_ok(s: dict) -> bool:
    return (s["reps"] >= 1 and 0 < s["min_s"] <= s["median_s"] <= s["max_s"]
            and s["seq_per_s"] > 0)


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    try:
        rec = run_benchmark.main(TINY_ARGS + ["--json", str(path)])
    except FileNotFoundError as e:  # the embedded tokenizer is not installed
        pytest.skip(f"embedded checkpoint not installed: {e}")
    return rec, json.loads(path.read_text())


def test_json_file_holds_the_returned_record(record):
    rec, from_file = record
    assert from_file == json.loads(json.dumps(rec))
    assert {"meta", "train", "infer", "epoch", "gpu", "targets"} <= set(from_file)
    assert from_file["meta"]["threads"] == 1 and from_file["meta"]["model"] == "tiny"


@pytest.mark.parametrize("section", ["train", "infer"])
def test_model_sections_time_every_contender_on_every_shape(record, section):
    rows = record[1][section]
    assert [r["shape"] for r in rows] == ["T8", "sst-bucket", "sst-random"]
    expected = {"minbert-manual", "minbert-sdpa", "minbert-sdpa-unpad"}
    if benchmark.transformers is not None:
        expected |= {"transformers-eager", "transformers-sdpa"}
    for row in rows:
        assert set(row["results"]) == expected
        assert all(summary_ok(s) and s["reps"] == 2 for s in row["results"].values())
        assert row["B"] >= 1 and row["T"] >= 1 and 0 <= row["padding"] < 1
        if benchmark.transformers is not None:
            assert set(row["ratios"]) == {"minbert-manual/transformers-eager", "minbert-sdpa/transformers-sdpa",
                                          "minbert-sdpa-unpad/transformers-sdpa"}
    assert rows[0]["T"] == 8 and rows[0]["padding"] == 0  # an int shape: no padding


def test_contenders_share_weights_and_agree(record):
    if benchmark.transformers is None:
        pytest.skip("transformers not installed")
    diffs = record[1]["meta"]["max_abs_diff_vs_minbert_manual"]
    assert set(diffs) == {"minbert-manual", "minbert-sdpa", "minbert-sdpa-unpad", "transformers-eager",
                          "transformers-sdpa"}
    assert max(diffs.values()) < 1e-4


def test_epoch_token_counts_are_exact(record):
    epoch = record[1]["epoch"]
    assert set(epoch["tasks"]) == {"sst", "quora", "sts"} and "extrapolated" in epoch["wall_time_note"]
    for task, t in epoch["tasks"].items():
        s = t["schemes"]
        assert set(s) == {"bucket", "random", "fixed", "bucket+unpad", "random+unpad"}
        # every scheme sees the same real tokens; padding only adds computed ones
        assert len({r["real_tokens"] for r in s.values()}) == 1
        for r in s.values():
            assert r["computed_tokens"] >= r["real_tokens"] > 0 and r["epoch_s_est"] > 0
        sides = 2 if t["pairs"] == "bi-encoder" else 1
        assert s["fixed"]["computed_tokens"] == t["examples"] * 128 * sides
        assert s["bucket"]["computed_tokens"] <= s["random"]["computed_tokens"]
        # unpadding keeps the batches (same grid) but the Linear layers see only the real tokens
        for base in ("bucket", "random"):
            assert s[base + "+unpad"]["computed_tokens"] == s[base]["computed_tokens"]
            assert s[base + "+unpad"]["linear_tokens"] == s[base]["real_tokens"]
            assert s[base]["linear_tokens"] == s[base]["computed_tokens"]


def test_gpu_section_skips_cleanly_without_cuda(record):
    gpu = record[1]["gpu"]
    if torch.cuda.is_available():
        assert "results" in gpu
    else:
        assert gpu == {"skipped": "no CUDA device"}


def test_gpu_code_path_runs_on_cpu_and_reports_mfu_fields():
    cfg = BertConfig(vocab_size=100, **benchmark.TINY)
    row = benchmark.gpu_bench(cfg, torch.device("cpu"), batch_size=2, seq_len=8, reps=1, steps=1,
                              peak=1.0, warmup=1)
    assert row["flops_per_seq"] > 0 and row["peak_tflops"] == 1.0
    for s in row["results"].values():
        assert summary_ok(s) and s["mfu"] == pytest.approx(s["tflops"] / 1.0)


def test_flop_count_matches_the_formula():
    cfg = BertConfig(vocab_size=100, **benchmark.TINY)
    model = benchmark.BertModel(cfg)
    C, I, L, T = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, 16
    per_layer = (3 * C * C + 3 * C) + (C * C + C) + (C * I + I) + (I * C + C) + 4 * C  # qkv, proj, ffn, 2 LN
    assert benchmark.train_flops_per_seq(model, T) == 6 * L * per_layer * T + 12 * L * T * T * C


def test_peak_lookup_prefers_the_specific_name():
    assert benchmark.peak_tflops("NVIDIA H100 PCIe", None) == 756
    assert benchmark.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989
    assert benchmark.peak_tflops("NVIDIA L40S", None) == 362
    assert benchmark.peak_tflops("Mystery GPU", None) is None
    assert benchmark.peak_tflops("NVIDIA H100 PCIe", 123.0) == 123.0


def test_bad_section_is_rejected_with_its_name():
    with pytest.raises(SystemExit):
        run_benchmark.parse_args(["--sections", "train,warp"])


def test_bi_encoder_epoch_pads_each_side():
    rec = run_benchmark.main(TINY_ARGS + ["--sections", "epoch", "--pair-mode", "bi", "--tasks", "sts"])
    t = rec["epoch"]["tasks"]["sts"]
    assert t["pairs"] == "bi-encoder" and set(rec) == {"meta", "epoch", "targets"}
    assert t["schemes"]["fixed"]["computed_tokens"] == t["examples"] * 128 * 2


def test_without_transformers_minbert_alone_and_says_so(monkeypatch):
    monkeypatch.setattr(benchmark, "transformers", None)
    rec = run_benchmark.main(TINY_ARGS + ["--sections", "train", "--shapes", "8"])
    assert set(rec["train"][0]["results"]) == {"minbert-manual", "minbert-sdpa", "minbert-sdpa-unpad"}
    assert rec["train"][0]["ratios"] == {} and rec["targets"] == []
    assert any("transformers is not installed" in n for n in rec["meta"]["notes"])


def test_profile_prints_the_top_ops_per_contender(capsys):
    run_benchmark.main(TINY_ARGS + ["--sections", "infer", "--shapes", "8", "--profile", "3"])
    out = capsys.readouterr().out
    assert out.count("top 3 ops by self CPU time") == (5 if benchmark.transformers else 3)
    assert "Self CPU" in out


def test_cpu_bf16_autocast_mode_runs_every_contender():
    rec = run_benchmark.main(TINY_ARGS + ["--sections", "train,infer", "--shapes", "8", "--cpu-amp", "bf16"])
    assert rec["meta"]["cpu_amp"] == "bf16"
    for sec in ("train", "infer"):
        assert {"minbert-sdpa", "minbert-sdpa-unpad"} <= set(rec[sec][0]["results"])
        assert all(summary_ok(s) for s in rec[sec][0]["results"].values())


# ----------------------------------------------------------------------------- the memory section

def test_memory_section_reports_every_batch_size_and_the_cards():
    rec = run_benchmark.main(["--model", "tiny", "--sections", "memory", "--memory-models", "tiny",
                              "--memory-batch-sizes", "1,4", "--memory-amp", "none,bf16", "--threads", "1"])
    mem = rec["memory"]
    assert mem["T"] == 128 and mem["recipe_batch"] == 32  # the trainer's --max-length and batch (options.FULL)
    assert [(r["model"], r["amp"]) for r in mem["results"]] == [("tiny", "none"), ("tiny", "bf16")]
    params = sum(p.numel() for p in benchmark.memory_model("tiny").parameters())  # counted apart
    for r in mem["results"]:
        assert [row["B"] for row in r["rows"]] == [1, 4]
        for row in r["rows"]:
            assert row["params"] == params and row["state_mb"] == pytest.approx(16 * params / 2**20)
            assert row["step_added_mb"] is not None and row["step_added_mb"] > 0  # Linux: measured
        assert r["rows"][1]["saved_mb"] > 3 * r["rows"][0]["saved_mb"]  # activations grow with the batch
        assert [c["card_gib"] for c in r["cards"]] == [15.0, 22.5]


def test_saved_for_backward_counts_each_activation_once_and_no_parameter():
    w = torch.nn.Parameter(torch.randn(5, 7))
    x = torch.randn(3, 5, 7, requires_grad=True)
    out = {}
    with benchmark.saved_for_backward(torch.nn.ParameterList([w]), out):
        y = x * w         # saves x and w (w is a parameter: not counted)
        z = y.exp()       # saves its result z
        (z + y.view(-1, 7).view(3, 5, 7).exp()).sum().backward()  # a view of y: y's storage, not counted again
    expected = x.nbytes + z.nbytes + y.nbytes  # the second exp's result, the size of y
    assert out["bytes"] == expected


def test_card_estimate_follows_its_formula():
    P = 1_000_000
    rows = [{"B": b, "params": P, "step_added_mb": 100.0 + 10.0 * b, "cuda_peak_mb": None} for b in (1, 8, 32)]
    est = benchmark.card_estimate(rows, card_gib=2.0, recipe_batch=32)
    fixed = 12 * P / 2**20  # weights + AdamW's two moments, fp32
    fits = int((2.0 * 1024 - benchmark.CUDA_RESERVE_GIB * 1024 - fixed - 100.0) // 10.0)
    assert est["a_mb"] == pytest.approx(100.0) and est["b_mb_per_seq"] == pytest.approx(10.0)
    assert est["batch_fits"] == fits == 40
    assert (est["accumulate"], est["micro_batch"]) == (1, 32)
    small = benchmark.card_estimate(rows, card_gib=1.75, recipe_batch=32)  # room for 14 sequences
    assert small["batch_fits"] == int((1.75 * 1024 - 1536 - fixed - 100) // 10) == 14
    assert (small["accumulate"], small["micro_batch"]) == (4, 8)  # the largest divisor of 32 that fits
