"""The layout's numbers for issue 31's before/after: files and lines per folder, the import edges
between the product's modules (and how deep the deepest chain goes), the Loop's fields, the README's
length. Run from the repository root:  python docs/results/layout/measure.py > docs/results/layout/NAME.txt
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
from pathlib import Path

PACKAGES = ("minbert", "heads", "training", "data", "course", "bench")
root = Path.cwd()
modules = {}
for pkg in PACKAGES:
    for f in sorted((root / pkg).rglob("*.py")) if (root / pkg).is_dir() else []:
        name = ".".join(f.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = f


def imported(f: Path, name: str) -> set[str]:
    out = set()
    for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            targets = [n.module] + [f"{n.module}.{a.name}" for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level:  # relative: from . import x / from .x import y
            base = name.split(".")[: -n.level] if not f.name == "__init__.py" else name.split(".")[: len(name.split(".")) - n.level + 1]
            mod = ".".join(base + ([n.module] if n.module else []))
            targets = [mod] + [f"{mod}.{a.name}" for a in n.names]
        elif isinstance(n, ast.Import):
            targets = [a.name for a in n.names]
        else:
            continue
        out |= {t for t in targets if t in modules and t != name}
    return out


edges = {m: imported(f, m) for m, f in modules.items()}


@functools.cache
def depth(m: str, seen: frozenset = frozenset()) -> int:
    return 1 + max((depth(d, seen | {m}) for d in edges[m] if d not in seen), default=0)


print("files and lines per folder (*.py, __init__.py included)")
folders = {}
for m, f in modules.items():
    folders.setdefault(str(f.parent.relative_to(root)), []).append(len(f.read_text(encoding="utf-8").splitlines()))
for folder in sorted(folders):
    print(f"  {folder + '/':24} {len(folders[folder]):3} files {sum(folders[folder]):6} lines")
train = {m: e for m, e in edges.items() if m.startswith("training")}
inner = sum(len({d for d in e if d.startswith("training")}) for e in train.values())
print(f"import edges among training/'s modules: {inner}; deepest chain: "
      f"{max(depth(m) for m in train)} modules")
print(f"import edges among all product modules ({', '.join(PACKAGES)}): {sum(map(len, edges.values()))}")
top = sorted(p.name for p in (root / "training").iterdir() if not p.name.startswith("__pycache__"))
print(f"training/ top level: {', '.join(top)}")
for loop_module in ("training.engine.loop", "training.engine.loop"):
    if loop_module in modules:
        loop = importlib.import_module(loop_module).Loop
        fields = [f.name for f in dataclasses.fields(loop)]
        print(f"{loop_module}.Loop: {len(fields)} fields: {', '.join(fields)}")
        break
readme = (root / "README.md").read_text(encoding="utf-8")
print(f"README.md: {len(readme.splitlines())} lines, {len(readme.split())} words, {len(readme)} characters")
names = {}
for m, f in modules.items():
    if f.name != "__init__.py":
        names.setdefault(f.name, []).append(str(f.relative_to(root)))
print("file names shared by two files: " + (", ".join(f"{k} ({' '.join(v)})" for k, v in names.items() if len(v) > 1) or "none"))
