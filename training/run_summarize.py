"""Print a Markdown table of finished run_multitask.py runs, from their out-dirs.

    python training/run_summarize.py runs/ablation-*      # one row per run directory
    python training/run_summarize.py runs/multitask --plot  # also RUN/curves.png (needs matplotlib)

Each row comes from the run's own files: the best dev scores in best/options.json, the wall time
in log.jsonl. Nothing is typed in by hand, so a table in docs/ can be regenerated from the runs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.engine import curves

COLUMNS = ("sst", "quora", "sts", "overall")


def summarize(run_dir: Path) -> dict:
    best = json.loads((run_dir / "best" / "options.json").read_text())
    minutes = None
    log = run_dir / "log.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            if "final" in row:
                minutes = row.get("minutes")
    return {"run": run_dir.name, "epoch": best.get("epoch"), "minutes": minutes, **best["dev"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run_multitask.py --out-dir folders")
    p.add_argument("--plot", action="store_true",
                   help="also draw each RUN/log.jsonl into RUN/curves.png: training loss per task, dev scores per "
                        "epoch (needs matplotlib)")
    args = p.parse_args(argv)
    rows = []
    for d in args.runs:
        if args.plot and (d / "log.jsonl").is_file():
            print(f"(curves of {d}: {curves.plot_run(d / 'log.jsonl', d / 'curves.png', title=d.name) or 'not drawn'})")
        if not (d / "best" / "options.json").is_file():
            print(f"(skipping {d}: no best/options.json — unfinished run?)")
            continue
        rows.append(summarize(d))
    print("| run | " + " | ".join(COLUMNS) + " | best epoch | wall min |")
    print("|---|" + "---:|" * (len(COLUMNS) + 2))
    for r in rows:
        cells = [f"{r[c]:.4f}" if c in r else "–" for c in COLUMNS]
        cells += [r["epoch"], "–" if r["minutes"] is None else r["minutes"]]
        print(f"| {r['run']} | " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
