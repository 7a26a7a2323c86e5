"""The product never imports a reference library (transformers, sentence-transformers): those are
for the tests only, and students run the course without them (issue 13)."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("minbert", "heads", "training", "data", "course")
REFERENCE_LIBRARIES = {"transformers", "sentence_transformers"}
# The one allowed place: the benchmark measures minbert side by side with transformers' BertModel,
# imported lazily inside the function that builds that contender, and runs without it.
ALLOWED = {"bench/benchmark.py", "bench/run_benchmark.py"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant):
                names.add(str(node.args[0].value).split(".")[0])
    return names


def test_no_product_file_imports_a_reference_library():
    found = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            bad = imported_modules(path) & REFERENCE_LIBRARIES
            if bad and rel not in ALLOWED:
                found.append(f"{rel}: {sorted(bad)}")
    assert not found, "the product imports reference libraries: " + "; ".join(found)


def test_the_static_check_sees_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom transformers import BertModel\ndef g():\n    import sentence_transformers.util\n")
    assert imported_modules(f) >= {"transformers", "sentence_transformers", "os"}


def test_importing_the_product_loads_no_reference_library():
    code = ("import sys, importlib, pkgutil\n"
            f"for pkg in {PRODUCT!r}:\n"
            "    m = importlib.import_module(pkg)\n"
            "    for info in pkgutil.iter_modules(m.__path__):\n"
            "        if not info.name.startswith('run_') and 'benchmark' not in info.name and info.name not in"
            " ('download', 'grade', 'make_student'):\n"
            "            importlib.import_module(f'{pkg}.{info.name}')\n"
            f"print(sorted(set(sys.modules) & set({sorted(REFERENCE_LIBRARIES)!r})))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "[]", p.stdout
