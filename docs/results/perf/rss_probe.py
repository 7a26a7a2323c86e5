"""RSS over steps of a multitask run (probe, not product)."""
import os, sys, time, resource, importlib.util
import torch
from training.engine import memory
sys.argv = [sys.argv[0]] + sys.argv[1:]
spec = importlib.util.spec_from_file_location("rm", "training/run_multitask.py"); rm = importlib.util.module_from_spec(spec); spec.loader.exec_module(rm)
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
every = int(os.environ.get("PROBE_EVERY", "100"))
t0 = time.time()
orig = rm.Loop
def LoopP(*a, **k):
    l = orig(*a, **k)
    def on_step(step, values):
        if step % every == 0 or step < 5:
            pass
        if step % every == 0 or step < 5:
            print(f"PROBE step {step} rss {rss():.0f} MB peak {peak():.0f} MB t {time.time()-t0:.0f}s", flush=True)
    stop = int(os.environ.get("PROBE_STOP", "0"))
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    trim = int(os.environ.get("PROBE_TRIM", "0"))
    def on_step2(step, values):
        if trim and step % trim == 0:
            libc.malloc_trim(0)
        on_step(step, values)
        if stop and step >= stop:
            print(f"PROBE stop rss {rss():.0f} MB peak {peak():.0f} MB t {time.time()-t0:.0f}s", flush=True); os._exit(0)
    l.on_step = on_step2
    memory.RELEASE_EVERY = int(os.environ.get("PROBE_K", memory.RELEASE_EVERY))
    print(f"PROBE built rss {rss():.0f} MB peak {peak():.0f} MB", flush=True)
    return l
rm.Loop = LoopP
rm.main()
print(f"PROBE end rss {rss():.0f} MB peak {peak():.0f} MB", flush=True)
