"""Compare this run's metrics log line by line with the stored full default run (../full-default-fused):
every key but "minutes" (wall time, which depends on the machine's load)."""
import json
from pathlib import Path

here = Path(__file__).parent
def key(r):
    return (r.get("step"), r.get("eval"), r.get("final"))
ref = {key(r): r for r in map(json.loads, (here.parent / "full-default-fused" / "log.jsonl").read_text().splitlines())}
lines = [json.loads(l) for l in (here / "log.jsonl").read_text().splitlines()]
same = 0
for r in lines:
    old = ref.get(key(r), {})
    if {k: v for k, v in r.items() if k != "minutes"} == {k: v for k, v in old.items() if k != "minutes"}:
        same += 1
    else:
        print("DIFFERENT:", r, "\n   stored:", old or "(no such line)")
    if "eval" in r or "final" in r:
        print(f"{r.get('eval') or r.get('final')} {'epoch ' + str(r['epoch']) if 'epoch' in r else 'best'}: overall "
              f"{r['overall']:.4f} (sst {r['sst']:.4f} quora {r['quora']:.4f} sts {r['sts']:.4f}), {r['minutes']} min")
print(f"{same} of {len(lines)} lines identical to the stored run (minutes aside); the stored run has {len(ref)}")
