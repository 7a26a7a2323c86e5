"""Per method and labelled fraction of the merged fine-tuned sweep (all/sweep.json, plus the fix's runs):
dev accuracy, the paired difference to the plain classifier (same seed = same labelled subset, same
budget), collapse, conditioning and what D says about the fakes at the last step.

    python docs/results/gan-sweep-finetuned/analyse.py > docs/results/gan-sweep-finetuned/analysis.txt
"""
import json
from pathlib import Path

import numpy as np

from training.run_gan import variant

here = Path(__file__).parent
runs = json.loads((here / "all" / "sweep.json").read_text())["runs"]
plain = {(r["fraction"], r["seed"]): r["dev_acc"] for r in runs if r["method"] == "plain"}
groups: dict = {}
for r in runs:
    groups.setdefault((variant(r), r["fraction"]), []).append(r)
print("sd: sample sd over seeds (ddof 1). diff: dev accuracy minus the plain classifier's on the same seed.")
print("collapse: mean per class (1 = as varied as real, 0 = collapsed). cond: probe puts fakes in their class "
      "(chance 0.200). p_fake(fake): D's fake probability on fakes at the last logged step.")
for (name, f), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0] != "plain", kv[0][0])):
    acc = np.array([r["dev_acc"] for r in rs])
    line = f"{f:>5.0%} {name:<44} n={len(rs)} dev {acc.mean():.4f} ± {acc.std(ddof=1) if len(rs) > 1 else 0:.4f}"
    if name != "plain":
        diff = [r["dev_acc"] - plain[(r["fraction"], r["seed"])] for r in rs if (r["fraction"], r["seed"]) in plain]
        line += f"  diff {np.mean(diff):+.4f} (" + ", ".join(f"{d:+.3f}" for d in diff) + ")"
        line += f"  collapse {np.mean([r['collapse']['mean_per_class'] for r in rs]):.3f}"
        line += f"  cond {np.mean([r['conditioning']['accuracy'] for r in rs]):.3f}"
        line += f" [probe dev {np.mean([r['conditioning']['probe_dev_acc'] for r in rs]):.3f},"
        line += f" D agrees {np.mean([r['conditioning']['discriminator_accuracy'] for r in rs]):.3f}]"
        line += f"  p_fake(fake) {np.mean([r['log'][-1]['p_fake_fake'] for r in rs]):.3f}"
        line += f"  p_fake(real) {np.mean([r['log'][-1]['p_fake_real'] for r in rs]):.3f}"
    line += f"  ({np.mean([r['seconds'] for r in rs]) / 60:.1f} min per run)"
    print(line)
