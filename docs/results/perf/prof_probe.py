"""Profile steps A..B of a run_multitask run (probe, not product)."""
import os, sys, time, importlib.util
import torch
spec = importlib.util.spec_from_file_location("rm", "training/run_multitask.py"); rm = importlib.util.module_from_spec(spec); spec.loader.exec_module(rm)
A, B = int(os.environ.get("PA", "20")), int(os.environ.get("PB", "60"))
prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
orig = rm.Loop
state = {}
def LoopP(*a, **k):
    l = orig(*a, **k)
    def on_step(step, values):
        if step == A:
            prof.__enter__(); state['t'] = time.time()
        if step == B:
            prof.__exit__(None, None, None)
            dt = time.time() - state['t']
            print(f"PROF {B-A} steps {dt:.2f}s = {dt/(B-A)*1000:.0f} ms/step")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=int(os.environ.get("PROWS", "25")), max_name_column_width=40))
            os._exit(0)
    l.on_step = on_step
    return l
rm.Loop = LoopP
rm.main()
