"""How fast is one optimizer step? minbert.AdamW's graded loop, its fused path, and torch.optim.AdamW
(foreach, fused), side by side in one process over one model's parameters.

    from bench.bench_optim import optimizer_benchmark, format_report
    result = optimizer_benchmark("all-MiniLM-L6-v2", steps=5, reps=9, threads=2)
    print(format_report(result))

Every contender gets its own copy of the weights, grouped as the trainers group them
(training/engine/optim.py param_groups: layer-wise lr, no decay on biases and LayerNorm), and the same fixed
gradients. A repetition times `steps` optimizer steps; repetitions run A B C D, D C B A, ... so that
drift (other processes, clocks) hits every contender alike. Medians are reported with min and max,
and the ratios are of medians. After the timing the graded and fused paths have taken the same
steps from the same start: their largest weight difference is reported as a check that the fast path
computed the same thing at this scale.
"""
from __future__ import annotations

import platform
from pathlib import Path

import torch

from minbert import AdamW, BertConfig, BertModel
from training.engine.optim import param_groups

CONTENDERS = {  # name -> optimizer over the trainers' param groups
    "minbert-graded": lambda groups: AdamW(groups, lr=1e-4),
    "minbert-fused": lambda groups: AdamW(groups, lr=1e-4, fused=True),
    "torch-foreach": lambda groups: torch.optim.AdamW(groups, lr=1e-4, foreach=True),
    "torch-fused": lambda groups: torch.optim.AdamW(groups, lr=1e-4, fused=True),
}
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=1000)


def cpu_name() -> str:
    """The CPU's model name as lscpu prints it (from /proc/cpuinfo; platform's answer elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def optimizer_benchmark(model: str = "all-MiniLM-L6-v2", steps: int = 5, reps: int = 9, warmup: int = 1,
                        threads: int = 2, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict:
    """Time `steps` optimizer steps per repetition for each of CONTENDERS; see the module docstring.

    model: a checkpoint name or directory (its parameter set is what is stepped), or "tiny" (random
    weights, for smoke tests). Returns plain JSON-able data: per contender median/min/max seconds per
    step, the speed-ups over the graded loop (ratios of medians), the fused path's largest difference from the graded one, and the setup.
    """
    from bench.benchmark import interleaved  # here, not above: benchmark.py may import this module

    if steps < 1 or reps < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"steps, reps and threads must be >= 1 and warmup >= 0, got steps={steps}, reps={reps}, "
                         f"warmup={warmup}, threads={threads}")
    torch.set_num_threads(threads)
    base = BertModel(BertConfig(**TINY)) if model == "tiny" else BertModel.from_pretrained(model)
    base = base.to(dtype)
    g = torch.Generator().manual_seed(seed)
    # Adam's update is elementwise, so gradient values only matter through denormals; scale them like
    # a fine-tuning step's (about 1e-3) to keep every contender on normal floats.
    grads = {name: torch.randn(p.shape, generator=g).mul_(1e-3).to(dtype) for name, p in base.named_parameters()}

    models, opts, fns = {}, {}, {}
    for name, make in CONTENDERS.items():
        m = BertModel(base.config).to(dtype)
        m.load_state_dict(base.state_dict())
        for pname, p in m.named_parameters():
            p.grad = grads[pname]  # shared and read-only: no optimizer here writes its gradients
        models[name] = m
        opts[name] = make(param_groups(m, {}, lr=1e-4, layer_decay=0.9, weight_decay=0.01))
        fns[name] = lambda opt=opts[name]: [opt.step() for _ in range(steps)]
    times = interleaved(fns, reps=reps, warmup=warmup)

    per_step = {}
    for name, ts in times.items():
        wall = sorted(w / steps for w, _ in ts)
        cpu = sorted(c / steps for _, c in ts)
        per_step[name] = {"median_s": wall[len(wall) // 2], "min_s": wall[0], "max_s": wall[-1],
                          "cpu_median_s": cpu[len(cpu) // 2], "reps": len(wall)}
    graded = per_step["minbert-graded"]["median_s"]
    speedup = {name: graded / r["median_s"] for name, r in per_step.items() if name != "minbert-graded"}
    diff = max((a - b).abs().max().item() for a, b in zip(models["minbert-graded"].parameters(),
                                                          models["minbert-fused"].parameters()))
    return {"model": model, "parameters": sum(p.numel() for p in base.parameters()),
            "tensors": len(list(base.parameters())), "groups": len(opts["minbert-graded"].param_groups),
            "dtype": str(dtype).removeprefix("torch."), "threads": threads, "steps_per_rep": steps, "warmup": warmup,
            "order": "interleaved A B C D, D C B A, ...", "cpu": cpu_name(), "torch": torch.__version__,
            "per_step": per_step, "speedup_over_graded": speedup,
            "fused_time_over_torch_fused": per_step["minbert-fused"]["median_s"] / per_step["torch-fused"]["median_s"],
            "optimizer_steps_taken": (warmup + reps) * steps,
            "max_abs_weight_diff_graded_vs_fused": diff}


def format_report(r: dict) -> str:
    """The result of optimizer_benchmark as a small table (seconds per optimizer step)."""
    lines = [f"optimizer step over {r['model']}: {r['parameters'] / 1e6:.1f}M parameters in {r['tensors']} tensors, "
             f"{r['groups']} param groups, {r['dtype']}, {r['threads']} threads; {r['cpu']}; torch {r['torch']}",
             f"{r['steps_per_rep']} steps per repetition, {r['per_step']['minbert-graded']['reps']} repetitions "
             f"({r['order']}), after {r['warmup']} untimed",
             f"{'contender':<16} {'median ms/step':>15} {'min':>8} {'max':>8} {'cpu ms/step':>12}"]
    for name, s in r["per_step"].items():
        lines.append(f"{name:<16} {s['median_s'] * 1e3:>15.1f} {s['min_s'] * 1e3:>8.1f} {s['max_s'] * 1e3:>8.1f} "
                     f"{s['cpu_median_s'] * 1e3:>12.1f}")
    lines += [f"speed-up of {k} over minbert-graded (ratio of medians): {v:.2f}x" for k, v in r["speedup_over_graded"].items()]
    lines.append(f"minbert-fused time / torch-fused time: {r['fused_time_over_torch_fused']:.2f}")
    lines.append(f"after {r['optimizer_steps_taken']} steps, max |graded - fused| over the weights: "
                 f"{r['max_abs_weight_diff_graded_vs_fused']:.3g}")
    return "\n".join(lines)
