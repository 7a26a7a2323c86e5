"""The benchmark's efficiency figures (issue 15): model FLOPs against a count by hand, MFU = model
FLOPs / time / peak, the matrix peak's arithmetic, the resident-memory probe against a known
allocation, and the sst-epoch section on a tiny checkpoint (whole trainer processes)."""
import csv
import json
import os
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from minbert import BertConfig, BertModel
from bench import benchmark, efficiency, run_benchmark

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
LINUX_PROC = Path("/proc/self/status").exists() and Path("/proc/self/clear_refs").exists()


def flops_by_hand(lengths: list[int], C=32, I=37, L=2, train=True) -> float:
    """6 N sum(T) + 12 L sum(T^2) C with N counted from the layer's shapes, not from the model."""
    per_layer = (3 * C * C + 3 * C) + (C * C + C) + (C * I + I) + (I * C + C) + 4 * C  # qkv, proj, ffn, 2 LN
    f = 6 * L * per_layer * sum(lengths) + 12 * L * sum(t * t for t in lengths) * C
    return f if train else f / 3


def test_model_flops_of_ragged_lengths_match_the_count_by_hand():
    model = BertModel(BertConfig(vocab_size=100, **TINY))
    lengths = [1, 7, 12, 12]
    assert efficiency.model_flops(model, lengths) == flops_by_hand(lengths)
    assert efficiency.model_flops(model, lengths, train=False) == pytest.approx(flops_by_hand(lengths, train=False))
    # the GPU section's per-sequence count is the same formula
    assert benchmark.train_flops_per_seq(model, 12) == flops_by_hand([12])


def test_mfu_is_model_flops_on_real_tokens_over_time_over_peak():
    """A padded batch (real lengths 10, 4, 1): padded positions count no FLOPs."""
    models = benchmark.contenders(benchmark.load_model("tiny", "manual"))
    ids = torch.randint(1000, 2000, (3, 10), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(10) < torch.tensor([[10], [4], [1]])).long()
    batch = {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    args = Namespace(reps=2, warmup=1, cpu_amp="none", profile=0)
    peak = {"gflops": 100.0, "fp32_gflops": 50.0}
    for mode in ("train", "infer"):
        rec = {mode: benchmark.model_section(mode, models, {"ragged": batch}, args)}
        efficiency.add_rates(rec, peak)
        row = rec[mode][0]
        assert row["model_flops"] == pytest.approx(flops_by_hand([10, 4, 1], train=mode == "train"))
        for s in row["results"].values():
            assert s["gflops"] == pytest.approx(row["model_flops"] / s["median_s"] / 1e9)
            assert s["mfu"] == pytest.approx(s["gflops"] / 100.0) and s["mfu_fp32"] == pytest.approx(s["gflops"] / 50.0)


def test_peak_rate_is_the_product_flops_over_the_median_time(monkeypatch):
    """A fake clock that advances 1 ms per reading: each call takes exactly 1 ms."""
    clock = iter(range(10**6))
    monkeypatch.setattr(efficiency.time, "perf_counter", lambda: next(clock) * 1e-3)
    r = efficiency.matmul_rate(torch.float32, reps=5, warmup=1)
    assert r["median_s"] == pytest.approx(1e-3)
    assert r["gflops"] == pytest.approx(2 * 1024 * 384 * 1536 / 1e-3 / 1e9)


def test_peak_of_the_run_is_the_higher_of_start_and_end():
    def rates(fp32, bf16=None):
        return {"fp32": {"gflops": fp32}} | ({"bf16": {"gflops": bf16}} if bf16 else {})
    p = efficiency.combine_peaks(rates(300, 2000), rates(340, 1800))
    assert (p["dtype"], p["gflops"], p["fp32_gflops"]) == ("bf16", 2000, 340)
    p = efficiency.combine_peaks(rates(300), rates(250))  # no native bf16: the fp32 peak
    assert (p["dtype"], p["gflops"], p["fp32_gflops"]) == ("fp32", 300, 300)


@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc/self/status and clear_refs")
def test_memory_probe_sees_an_allocation_and_resets_after_a_freed_one():
    big = torch.ones(64 * 2**20)  # 256 MB, written: resident
    del big
    mark = efficiency.memory_mark()  # the high-water mark drops back to what is live now
    assert efficiency.memory_since(mark)["mem_added_mb"] < 64
    x = torch.ones(32 * 2**20)  # 128 MB
    added = efficiency.memory_since(mark)
    assert 120 <= added["mem_added_mb"] < 200 and added["rss_peak_mb"] >= mark + 120
    del x
    assert efficiency.process_peak_mb() >= mark + 250  # the 256 MB before the reset still counts


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["--model", "tiny", "--shapes", "8", "--reps", "2", "--warmup", "1", "--threads", "1",
            "--peak-reps", "5", "--sections", "train,infer", "--json", str(path)]
    try:
        run_benchmark.main(argv)
    except FileNotFoundError as e:  # the embedded tokenizer is not installed
        pytest.skip(f"embedded checkpoint not installed: {e}")
    return json.loads(path.read_text())


def test_record_has_the_peak_and_the_efficiency_columns(bench):
    peak = bench["peak"]
    dtype = "bf16" if efficiency.options.cpu_has_bf16() else "fp32"
    assert peak["dtype"] == dtype and set(peak["start"]) == set(peak["end"]) == ({"fp32", "bf16"} if dtype == "bf16"
                                                                                else {"fp32"})
    assert peak["gflops"] == max(peak["start"][dtype]["gflops"], peak["end"][dtype]["gflops"]) > 0
    for sec in ("train", "infer"):
        row = bench[sec][0]
        assert row["model_flops"] == pytest.approx(flops_by_hand([8] * row["B"], train=sec == "train"))
        for s in row["results"].values():
            assert s["mfu"] == pytest.approx(row["model_flops"] / s["median_s"] / 1e9 / peak["gflops"])
            if LINUX_PROC:
                assert s["mem_added_mb"] >= 0 and s["rss_peak_mb"] > 0
    if LINUX_PROC:
        assert bench["meta"]["process_peak_rss_mb"] >= max(s["rss_peak_mb"] for s in bench["train"][0]["results"].values())


def test_sst_epoch_is_not_a_default_section_and_checks_its_options():
    assert "sst-epoch" not in run_benchmark.parse_args([]).sections
    args = run_benchmark.parse_args(["--sections", "sst-epoch"])
    assert args.epoch_adamw == ["graded", "fused"] and args.epoch_repeats == 1
    for bad in (["--epoch-adamw", "graded,sgd"], ["--epoch-args", "--device cuda"],
                ["--epoch-args", "--adamw=fused"], ["--epoch-args", "--model 'unclosed"], ["--epoch-repeats", "0"]):
        with pytest.raises(SystemExit):
            run_benchmark.parse_args(["--sections", "sst-epoch", *bad])


def test_sst_epoch_times_whole_trainer_processes(tiny_checkpoint, tmp_path):
    transformers = pytest.importorskip("transformers")
    rec = run_benchmark.main(["--sections", "sst-epoch", "--threads", "1", "--data-dir", str(FIXTURE_DATA),
                              "--peak-reps", "5", "--epoch-repeats", "2", "--json", str(tmp_path / "b.json"),
                              "--epoch-args", f"--model {tiny_checkpoint} --limit-train 64 --batch-size 2 --amp none"])
    ep = rec["sst-epoch"]
    assert [r["adamw"] for r in ep["runs"]] == ["graded", "fused", "fused", "graded"]  # order reversed on repeat 2
    # the epoch's work, counted independently: transformers' tokenizer over the training file's sentences
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    with open(FIXTURE_DATA / "ids-sst-train.csv", newline="") as f:
        sentences = [row["sentence"].strip() for row in csv.DictReader(f, delimiter="\t")]
    lengths = [len(ids) for ids in tok(sentences, truncation=True, max_length=128)["input_ids"]]
    w = ep["work"]
    assert (w["examples"], w["real_tokens"], w["sum_T2"]) == (len(lengths), sum(lengths), sum(t * t for t in lengths))
    assert w["model_flops"] == flops_by_hand(lengths)
    for r in ep["runs"]:
        assert r["wall_s"] > 0 and 50 < r["max_rss_mb"] < 4000
        assert "--device cpu" in r["command"] and "--threads 1" in r["command"] and f"--adamw {r['adamw']}" in r["command"]
        assert r["gflops"] == pytest.approx(w["model_flops"] / r["wall_s"] / 1e9)
        assert r["mfu"] == pytest.approx(r["gflops"] / rec["peak"]["gflops"])
    assert json.loads((tmp_path / "b.json").read_text())["sst-epoch"]["runs"] == json.loads(json.dumps(ep["runs"]))
