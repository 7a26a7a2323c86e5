"""The generated handout (course/handout.py): the release's README.md is the assignment and PROJECT.md the
students' view of the project. Each test reads a release generated here and checks it against the step
table (course/steps.py), the release's own code (ast) and what exists in the release."""
import ast
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from course import assignment, handout
from course.grade import VERDICTS
from course.make_student import make_student

REPO = Path(__file__).resolve().parents[1]
# The steps of the release the fixture makes: the standard assignment (the larger-piece step is not in it).
STEPS = assignment.default().table()


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release")
    make_student(REPO, out, force=True)
    return out


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def sections(text: str) -> dict[int, str]:
    """Step number -> its section of the README (from its '## Step N:' heading to the next heading)."""
    parts = re.split(r"^## ", text, flags=re.M)
    found = {}
    for part in parts:
        m = re.match(r"Step (\d+): ", part)
        if m:
            found[int(m[1])] = part
    return found


def stubbed_functions(path: Path, step: int) -> dict[tuple[str | None, str], ast.FunctionDef]:
    """(class or None, name) -> the release's function that raises NotImplementedError("step N: ...")."""
    text = path.read_text(encoding="utf-8")
    lines = [i for i, line in enumerate(text.splitlines(), 1)
             if re.search(rf"raise NotImplementedError\(['\"]step {step}:", line)]
    tree = ast.parse(text)
    candidates = [(None, n) for n in tree.body if isinstance(n, ast.FunctionDef)]
    for c in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        candidates += [(c.name, n) for n in c.body if isinstance(n, ast.FunctionDef)]
    return {(owner, n.name): n for owner, n in candidates if any(n.lineno <= i <= n.end_lineno for i in lines)}


def signature(node: ast.FunctionDef) -> str:
    return f"{node.name}({ast.unparse(node.args)}) -> {ast.unparse(node.returns) if node.returns else None}"


def test_readme_names_every_step_with_its_functions(release):
    text = (release / "README.md").read_text()
    found = sections(text)
    assert sorted(found) == [s.number for s in STEPS]
    for step in STEPS:
        part = found[step.number]
        assert part.startswith(f"Step {step.number}: {step.name} ({step.points:g} points)")
        for path, functions in step.fences.items():
            assert f"`{path}`" in part
            for function in functions:
                assert re.search(rf"`(\w+\.)?{re.escape(function)}`", part), (step.number, function)
        assert f"-m course.grade --steps {step.number}\n" in part
        assert f"-m pytest tests/graded -k step{step.number:02d}" in part
        assert f"-k step{step.number:02d} --pdb --raise" in part
        # the passing row of the score table: full points, every test of the step passed
        n = len(VERDICTS[step.number][1])
        row = re.search(rf"^ *{step.number}  {re.escape(step.name)} +(\S+) / (\S+) +(\d+)/(\d+) +passed$", part, re.M)
        assert row and float(row[1]) == float(row[2]) == step.points and int(row[3]) == int(row[4]) == n
        assert handout.cite(handout.BACKGROUND[step.number][1][0]) in part


def test_readme_has_setup_submission_and_rules(release):
    text = (release / "README.md").read_text()
    assert "bash setup.sh" in blocks(text, "bash")[0]
    assert any("-m course.submit" in b for b in blocks(text, "bash"))
    submit = text[text.index("## Submit"):text.index("## Rules")]
    graded = {path for step in STEPS for path in step.fences}
    assert set(re.findall(r"^- `([^`]+)`$", submit, re.M)) == graded
    rules = text[text.index("## Rules"):]
    for name in ("`transformers`", "`F.scaled_dot_product_attention`", "`nn.MultiheadAttention`",
                 "`torch.optim.Adam`", "`torch.optim.AdamW`", "fused", "`course/guard.py`", "Your own work"):
        assert name in rules, name
    assert "## FAQ" in text and len(re.findall(r"^\*\*.+\?\*\*", text, re.M)) >= 5
    for paper in ("1810.04805", "1706.03762", "1711.05101", "1412.6980", "2001.06782", "1907.04829",
                  "1908.10084", "2020.acl-main.191"):
        assert paper in text, paper


def test_readme_signatures_equal_the_release_code(release):
    text = (release / "README.md").read_text()
    shown = {}
    for block in blocks(text, "python"):
        # one block per step; each file's functions follow a "# path" line
        for path, source in re.findall(r"^# (\S+\.py)\n(.*?)(?=^# \S+\.py$|\Z)", block, re.S | re.M):
            for node in ast.parse(source).body:
                owner = node.name if isinstance(node, ast.ClassDef) else None
                for f in (node.body if owner else [node]):
                    if isinstance(f, ast.FunctionDef):
                        shown[(path, owner, f.name)] = f
    expected = set()
    for step in STEPS:
        for path, functions in step.fences.items():
            stubs = stubbed_functions(release / path, step.number)
            assert sorted(name for _, name in stubs) == sorted(functions)
            for (owner, name), node in stubs.items():
                expected.add((path, owner, name))
                assert (path, owner, name) in shown, (path, owner, name)
                assert signature(shown[(path, owner, name)]) == signature(node)
                assert ast.get_docstring(shown[(path, owner, name)]) == ast.get_docstring(node)
    assert set(shown) == expected


def command_targets(line: str) -> list[str]:
    """What a command line names that must exist: `-m module`, `bash file`, the *.py files and tests/ paths."""
    words = shlex.split(line, comments=True)
    found = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-m"]
    found += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "bash"]
    found += [w for w in words if w.endswith(".py") or w.startswith("tests/")]
    return found


@pytest.mark.parametrize("name", ["README.md", "PROJECT.md"])
def test_every_command_names_what_exists_in_the_release(release, name):
    text = (release / name).read_text()
    lines = [line for b in blocks(text, "bash") for line in b.splitlines() if line.strip()]
    assert lines
    for line in lines:
        targets = command_targets(line)
        assert targets, line
        for t in targets:
            if "/" in t or t.endswith((".py", ".sh")):
                assert (release / t).exists(), (line, t)
            else:  # a module: the release's own, or an installed tool such as pytest
                rel = Path(*t.split("."))
                ok = (release / rel.with_suffix(".py")).is_file() or (release / rel / "__init__.py").is_file()
                assert ok or (not t.startswith("course") and importlib.util.find_spec(t)), (line, t)


def test_project_is_the_students_view_with_the_measured_results(release):
    text = (release / "PROJECT.md").read_text()
    assert text != (REPO / "README.md").read_text()
    for word in ("TEACHING.md", "make_student", "grader suites", "-m grader", "test_graded_mistakes", "checks_"):
        assert word not in text, word
    for extension in ("PCGrad", "BAM!", "GAN-BERT", "run_multitask.py", "run_predict.py"):
        assert extension in text
    rows = {r[0]: r[1:] for r in re.findall(r"^\| ([^|]+?) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| "
                                            r"(\d+) s \(([\d.]+) s\) \|$", text, re.M)}
    assert len(rows) == 2
    for label, key in (("this release, solved", "release"), ("the project's fast paths", "solution")):
        r = handout.RESULTS["quick"][key]
        got = [float(x) for x in rows[label]]
        want = [r["sst"], r["quora"], r["sts"], r["overall"], r["train_s"], r["wall_s"]]
        assert got == pytest.approx(want, abs=5e-4), label
