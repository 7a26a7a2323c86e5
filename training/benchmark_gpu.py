"""GPU mode of the benchmark: bert-base shape, bf16 autocast + TF32 + fused AdamW (+ compile).

Reports sequences/s, model FLOPs utilisation against the device's dense bf16 peak, peak memory, and
the ratio to transformers. Run through `python training/run_benchmark.py --sections gpu [--compile]`.
"""
from __future__ import annotations

import torch

from minbert import BertConfig, BertModel
from training.benchmark import hf_copy, interleaved, summary, synthetic_batch, train_step, transformers

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' datasheets; the first match wins.
PEAK_BF16_TFLOPS = [("H100 PCIe", 756), ("H100 NVL", 835), ("GH200", 989), ("H200", 989),
                    ("H100", 989), ("A100", 312), ("L40S", 362), ("L4", 121)]


def peak_tflops(device_name: str, override: float | None) -> float | None:
    return override or next((v for k, v in PEAK_BF16_TFLOPS if k in device_name), None)


def train_flops_per_seq(model: BertModel, T: int) -> float:
    """6 N T + 12 L T^2 C (PaLM, appendix B): N = parameters of the encoder layers (embeddings are
    lookups, the pooler sees one token); the second term is Q K^T and att V, forward and backward."""
    c = model.config
    return 6 * sum(p.numel() for p in model.layers.parameters()) * T + 12 * c.num_hidden_layers * T * T * c.hidden_size


def gpu_bench(cfg: BertConfig, device: torch.device, batch_size: int, seq_len: int, reps: int,
              steps: int, compile_: bool = False, peak: float | None = None, warmup: int = 2) -> dict:
    """Training steps in bf16 autocast with TF32 matmuls and fused AdamW, random weights."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    base = BertModel(cfg, attn_implementation="sdpa")
    models = {"minbert-sdpa": base}
    if transformers is not None:
        models["transformers-sdpa"] = hf_copy(base, "sdpa")
    batch = synthetic_batch(batch_size, seq_len, cfg.vocab_size, device)
    old_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    fns, memory = {}, {}
    try:
        for name, m in models.items():
            before = torch.cuda.memory_allocated() if cuda else 0
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            m.to(device).train()
            step = train_step(torch.compile(m) if compile_ else m, torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True),
                              [batch], lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            for _ in range(warmup):  # compiles, allocates the optimizer state
                step()
            sync()
            # weights + grads + AdamW state + peak activations of this contender alone
            memory[name] = (torch.cuda.max_memory_allocated() - before) / 2**30 if cuda else None
            fns[name] = lambda step=step: [step() for _ in range(steps)]
        times = interleaved(fns, reps, 0, sync)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32
    name = torch.cuda.get_device_name(device) if cuda else str(device)
    peak, flops = peak_tflops(name, peak), train_flops_per_seq(base, seq_len)
    res = {}
    for n, t in times.items():
        s = res[n] = summary(t, batch_size * steps)
        s.update(tflops=s["seq_per_s"] * flops / 1e12, peak_mem_gib=memory[n])
        s["mfu"] = s["tflops"] / peak if peak else None
    ratios = ({"minbert-sdpa/transformers-sdpa": res["minbert-sdpa"]["seq_per_s"] / res["transformers-sdpa"]["seq_per_s"]}
              if "transformers-sdpa" in res else {})
    return {"device": name, "B": batch_size, "T": seq_len, "steps_per_rep": steps, "compile": compile_,
            "peak_tflops": peak, "flops_per_seq": flops, "results": res, "ratios": ratios}


def print_gpu(g: dict) -> None:
    print(f"\n== GPU training step, bert-base shape, bf16 autocast + TF32 + fused AdamW"
          f"{' + compile' if g['compile'] else ''}: {g['device']}, B={g['B']}, T={g['T']}, "
          f"peak {g['peak_tflops']} TFLOP/s ==")
    for n, s in g["results"].items():
        mfu = f"{s['mfu']:.1%}" if s["mfu"] is not None else "n/a (pass --peak-tflops)"
        print(f"{n:19s} {s['seq_per_s']:9.1f} seq/s  {s['tflops']:6.1f} TFLOP/s  MFU {mfu}  "
              f"peak mem {s['peak_mem_gib']:.2f} GiB")
    for k, v in g["ratios"].items():
        print(f"{k}: {v:.3f}x")
