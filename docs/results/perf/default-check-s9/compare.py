"""Compare this check's metrics log line by line with the full default run's (docs/results/perf/full-default-fused)."""
import json
from pathlib import Path

here = Path(__file__).parent
ref = {r["step"]: r for r in map(json.loads, (here.parent / "full-default-fused" / "log.jsonl").read_text().splitlines())
       if "step" in r}
for r in map(json.loads, (here / "log.jsonl").read_text().splitlines()):
    print(f"step {r['step']:>4}: {'identical' if r == ref.get(r['step']) else 'DIFFERENT'} "
          f"(loss sst {r['loss_sst']:.6f} quora {r['loss_quora']:.6f} sts {r['loss_sts']:.6f})")
