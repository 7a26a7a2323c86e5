"""The layout's rules (docs/ARCHITECTURE.md): the engine imports neither the multitask recipe nor the
methods; training/'s top holds only the entry scripts, __init__.py and the folders; no two product
files share a name; the loop's interface stays small; and an installed (non-editable) copy runs
every entry script's --help."""
import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("minbert", "heads", "training", "data", "course", "bench")


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_the_engine_imports_neither_the_recipe_nor_the_methods():
    bad = {f"{p.relative_to(ROOT)}: {m}" for p in (ROOT / "training" / "engine").glob("*.py") for m in imports(p)
           if m.startswith(("training.multitask", "training.methods", "training.run_", "heads", "bench", "course"))}
    assert not bad, sorted(bad)


def test_nothing_in_the_product_imports_an_entry_script():
    bad = {f"{p.relative_to(ROOT)}: {m}" for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") for m in imports(p)
           if m.startswith(("training.run_", "bench.run_")) and not p.name.startswith("run_")}
    assert not bad, sorted(bad)


def test_trainings_top_holds_the_entry_scripts_init_and_the_folders():
    top = {p.name for p in (ROOT / "training").iterdir() if p.name != "__pycache__"}
    assert {n for n in top if n.endswith(".py") and not n.startswith("run_")} == {"__init__.py"}, top
    assert {n for n in top if not n.endswith(".py")} == {"engine", "multitask", "methods"}, top


def test_no_two_product_files_share_a_name():
    seen: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            if p.name != "__init__.py":
                seen.setdefault(p.name, []).append(str(p.relative_to(ROOT)))
    assert not {k: v for k, v in seen.items() if len(v) > 1}


def test_each_task_name_table_is_defined_in_one_file_and_the_task_names_once():
    """One name, one thing: data/datasets.py names the tasks (TASK_NAMES) and the data sets (DATASETS),
    training/multitask/tasks.py holds the task table (TASKS); heads/ and training/ import the names."""
    defined: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            for node in ast.parse(p.read_text(encoding="utf-8")).body:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
                for t in targets:
                    if isinstance(t, ast.Name) and ("TASK" in t.id or t.id == "DATASETS"):
                        defined.setdefault(t.id, []).append(str(p.relative_to(ROOT)))
    assert {k: v for k, v in defined.items() if len(v) > 1} == {}
    assert defined["TASK_NAMES"] == ["data/datasets.py"] and defined["DATASETS"] == ["data/datasets.py"]
    assert defined["TASKS"] == ["training/multitask/tasks.py"]
    from data import datasets
    from heads import multitask_bert
    from training.multitask import tasks
    assert multitask_bert.TASK_NAMES is datasets.TASK_NAMES and tuple(tasks.TASKS) == datasets.TASK_NAMES
    assert all(row.data in datasets.DATASETS for row in tasks.TASKS.values())


def test_the_loop_has_at_most_15_fields_each_record_a_dataclass():
    from training.engine.loop import Loop
    fields = dataclasses.fields(Loop)
    assert len(fields) <= 15, [f.name for f in fields]
    assert not any(f.name in ("kwargs", "extra", "options") for f in fields)


def test_an_installed_copy_runs_every_entry_script_help(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    scripts = sorted((target / "training").glob("run_*.py")) + [target / "bench" / "run_benchmark.py"]
    assert len(scripts) >= 10
    env = {**os.environ, "PYTHONPATH": str(target)}
    for script in scripts:  # from outside the checkout: only the installed copy can be imported
        r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=tmp_path,
                           env=env)
        assert r.returncode == 0 and "usage:" in r.stdout, (script.name, r.stderr[-2000:])
