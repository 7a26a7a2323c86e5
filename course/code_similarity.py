"""Overly similar submissions, per graded function (instructor-only; course/report.py writes similar.md).

Each graded function (course/steps.py fences) is cut out of each submission with ast, normalised
and compared across every pair of submissions:

- code: the function's body without its docstring, plus the body of every module-level helper it
  calls that the scaffold does not define (so moving code into a new helper hides nothing);
- tokens only (tokenize): comments, docstrings, newlines and indentation dropped;
- the scaffold's own lines subtracted: a line whose tokens equal a line of the scaffold's version
  of the function (signature checks, `B, T = x.shape`, the final `return`) is dropped, as often as
  the scaffold has it;
- identifiers renamed v0, v1, ... in order of first use, except what the student did not choose:
  keywords, builtins, names the scaffold file defines or imports (torch, F, math, mean_pool,
  MAX_SCORE), attribute names after a dot (the tensor API: .softmax, .transpose) and keyword-argument
  names (dim=, keepdim=). Renaming a local then changes nothing; calling another API does.

Two versions of a function are compared by the Jaccard index of their sets of token K-grams. A
pair's score is the mean of its functions' Jaccard indices weighted by how much code each function
leaves to the student: the token count of the solution's fenced body after the same normalisation
(the one-line `pair_features` weighs 30, the AdamW update 113, of about 1,000 in all, so code
the stub forces cannot make everyone look alike). Functions that neither submission wrote are left
out of the pair's mean. The threshold was chosen on tests/similarity_cases: between the highest
honest pair and the lowest disguised copy, nearer the copies (docs/report-section.md).
"""
from __future__ import annotations

import ast
import builtins
import hashlib
import io
import keyword
import re
import textwrap
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from .make_student import strip_solutions
from .steps import STEPS

REPO = Path(__file__).resolve().parents[1]
K = 5             # tokens per k-gram: `torch . softmax ( v1` is one; shorter grams match any two tensor programs
THRESHOLD = 0.6   # weighted pair score at or above which a pair is listed (measured: docs/report-section.md)
KEEP = (set(dir(builtins)) | set(keyword.kwlist) | set(getattr(keyword, "softkwlist", []))) - {"_"}  # `_` is a local
SKIP_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
               tokenize.ENDMARKER, tokenize.ENCODING}


@dataclass
class Function:
    """One graded function of one submission, ready to compare."""
    path: str
    name: str
    source: str = ""                                   # the code compared, as written (for similar.md)
    tokens: list[str] = field(default_factory=list)    # normalised
    grams: frozenset[int] = frozenset()

    @property
    def written(self) -> bool:
        return bool(self.tokens)


def graded_functions() -> list[tuple[str, str]]:
    """(path, function name) of every graded function, in step order."""
    return [(path, name) for step in STEPS for path, names in step.fences.items() for name in names]


def find_def(tree: ast.Module, name: str, qualname: str | None = None) -> ast.FunctionDef | None:
    """The def called `name`, preferring the one at `qualname` ("Class.name"); None if absent."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                q = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef) and child.name == name:
                    found.append((q, child))
                visit(child, q + ".")
    visit(tree, "")
    for q, node in found:
        if q == qualname:
            return node
    return found[0][1] if found else None


def qualname_of(tree: ast.Module, node: ast.AST) -> str:
    for top in tree.body:
        if top is node:
            return node.name  # type: ignore[attr-defined]
        if isinstance(top, ast.ClassDef) and node in top.body:
            return f"{top.name}.{node.name}"  # type: ignore[attr-defined]
    return getattr(node, "name", "")


def body_source(lines: list[str], node: ast.FunctionDef) -> str:
    """The function's body without its docstring, dedented."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return ""
    return textwrap.dedent("".join(lines[body[0].lineno - 1:body[-1].end_lineno]))


def module_names(tree: ast.Module) -> set[str]:
    """Names a module defines or imports at top level."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def line_tokens(source: str) -> list[list[tokenize.TokenInfo]]:
    """Significant tokens of `source`, grouped by the line they start on (docstring-like
    statements and comments dropped). Raises tokenize.TokenError / SyntaxError on broken code."""
    toks = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)]
    out: dict[int, list[tokenize.TokenInfo]] = {}
    for i, t in enumerate(toks):
        if t.type in SKIP_TOKENS:
            continue
        if t.type == tokenize.STRING:  # a string that is a whole statement is a comment in disguise
            prev = next((p for p in reversed(toks[:i]) if p.type not in (tokenize.COMMENT, tokenize.NL)), None)
            after = next((a for a in toks[i + 1:] if a.type != tokenize.COMMENT), None)
            if (prev is None or prev.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)) and \
                    (after is None or after.type in (tokenize.NEWLINE, tokenize.ENDMARKER)):
                continue
        out.setdefault(t.start[0], []).append(t)
    return [out[k] for k in sorted(out)]


def normalise(groups: list[list[tokenize.TokenInfo]], keep: set[str]) -> list[str]:
    """Token strings with identifiers renamed in order of first use (see the module docstring)."""
    flat = [t for g in groups for t in g]
    names: dict[str, str] = {}
    out, depth = [], 0
    for i, t in enumerate(flat):
        s = t.string
        if t.type == tokenize.OP:
            depth += s in "([{"
            depth -= s in ")]}"
        if t.type == tokenize.NAME and s not in keep:
            after_dot = i > 0 and flat[i - 1].string == "."
            kwarg = depth > 0 and i + 1 < len(flat) and flat[i + 1].string == "=" and \
                i > 0 and flat[i - 1].string in "(,"
            if not (after_dot or kwarg):
                s = names.setdefault(s, f"v{len(names)}")
        out.append(s)
    return out


def kgrams(tokens: list[str], k: int = K) -> frozenset[int]:
    """Hashes of every k-gram (the whole sequence when shorter than k)."""
    grams = [tokens[i:i + k] for i in range(max(1, len(tokens) - k + 1))] if tokens else []
    return frozenset(int.from_bytes(hashlib.blake2b(" ".join(g).encode(), digest_size=8).digest(), "little")
                     for g in grams)


@dataclass
class Scaffold:
    """What the scaffold gives for each graded function, and each function's weight."""
    lines: dict[tuple[str, str], Counter]     # scaffold lines of the function, as token tuples
    keep: dict[str, set[str]]                 # per file: names never renamed
    qualnames: dict[tuple[str, str], str]
    weights: dict[tuple[str, str], int]       # normalised tokens of the solution's fenced body

    @classmethod
    def from_solution(cls, root: Path = REPO) -> "Scaffold":
        lines, keep, qualnames, weights = {}, {}, {}, {}
        for path, name in graded_functions():
            solution = (root / path).read_text(encoding="utf-8")
            scaffold_text, _ = strip_solutions(solution, path)
            stree = ast.parse(scaffold_text)
            keep.setdefault(path, KEEP | module_names(stree))
            node = find_def(stree, name)
            qualnames[(path, name)] = qualname_of(stree, node) if node else name
            src = body_source(scaffold_text.splitlines(keepends=True), node) if node else ""
            lines[(path, name)] = Counter(tuple(t.string for t in g) for g in line_tokens(src))
        self = cls(lines, keep, qualnames, {})
        for path, name in graded_functions():
            f = self.extract((root / path).read_text(encoding="utf-8"), None, path, name)
            self.weights[(path, name)] = max(1, len(f.tokens))
        return self

    def extract(self, text: str, tree: ast.Module | None, path: str, name: str) -> Function:
        """The graded function `name` of file text `text` (parsed: `tree`), normalised; empty when
        absent or broken."""
        f = Function(path, name)
        try:
            tree = tree or ast.parse(text)
        except (SyntaxError, ValueError):
            return f
        node = find_def(tree, name, self.qualnames.get((path, name)))
        if node is None:
            return f
        lines = text.splitlines(keepends=True)
        parts = [body_source(lines, node)]
        # New module-level helpers it calls (transitively), inlined after the body.
        scaffold_names = self.keep[path]
        helpers = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and n.name not in scaffold_names and n.name != name}
        seen, todo = set(), [node]
        while todo:
            for call in ast.walk(todo.pop()):
                if isinstance(call, ast.Name) and call.id in helpers and call.id not in seen:
                    seen.add(call.id)
                    todo.append(helpers[call.id])
                    parts.append(body_source(lines, helpers[call.id]))
        groups, shown, budget = [], [], Counter(self.lines.get((path, name), Counter()))
        try:
            for part in parts:
                part_lines, rows = part.splitlines(), set()
                for g in line_tokens(part):
                    key = tuple(t.string for t in g)
                    if budget[key] > 0:  # the scaffold's own line
                        budget[key] -= 1
                        continue
                    groups.append(g)
                    rows |= set(range(g[0].start[0], g[-1].end[0] + 1))
                shown += [part_lines[r - 1].rstrip() for r in sorted(rows)] + [""]
        except (tokenize.TokenError, SyntaxError):
            return f
        f.source = "\n".join(shown).strip("\n")
        f.tokens = normalise(groups, scaffold_names)
        f.grams = kgrams(f.tokens)
        return f


def submission_file(folder: Path, rel: str) -> Path | None:
    """Where a submission keeps `rel`: at its path, or flat when the name is unique (as autograder.assemble)."""
    from .autograder import editable_files
    names = [Path(p).name for p in editable_files()]
    candidates = [folder / rel] + ([folder / Path(rel).name] if names.count(Path(rel).name) == 1 else [])
    return next((c for c in candidates if c.is_file() and not c.is_symlink()), None)


TOP = re.compile(r"(?:async[ \t]+)?(?:def|class)[ \t]+(\w+)")


def top_blocks(text: str) -> dict[str, str]:
    """Top-level def and class blocks by name, cut at column-0 lines (no parsing)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line[:1] not in ("", " ", "\t", "\n", "\r", "#")]
    blocks = {}
    for n, s in enumerate(starts):
        m = TOP.match(lines[s])
        if m:
            blocks[m[1]] = "".join(lines[s:starts[n + 1] if n + 1 < len(starts) else len(lines)])
    return blocks


def parse_needed(text: str, wanted: set[str], scaffold_names: set[str]) -> tuple[str, ast.Module]:
    """(text, tree) holding the top-level blocks `wanted` and every new top-level def (a helper).
    Parsing only those is 5-10x faster than the whole file (training/multitask/tasks.py is long); when the cut
    is not valid Python (a column-0 line inside a block), the whole file is parsed."""
    blocks = top_blocks(text)
    part = "".join(b for n, b in blocks.items() if n in wanted or n not in scaffold_names)
    try:
        return part, ast.parse(part)
    except (SyntaxError, ValueError):
        return text, ast.parse(text)


def load_submission(folder: Path, scaffold: Scaffold) -> dict[tuple[str, str], Function]:
    """Every graded function of one submission folder (missing or broken files: unwritten functions)."""
    out, parsed = {}, {}
    wanted: dict[str, set[str]] = {}
    for (path, name), q in scaffold.qualnames.items():
        wanted.setdefault(path, set()).add(q.split(".")[0])
    for path, name in graded_functions():
        if path not in parsed:
            found = submission_file(folder, path)
            try:
                text = found.read_text(encoding="utf-8", errors="replace") if found else ""
                parsed[path] = parse_needed(text, wanted[path], scaffold.keep[path])
            except (OSError, SyntaxError, ValueError):
                parsed[path] = ("", ast.Module(body=[], type_ignores=[]))  # unreadable: nothing written
        out[(path, name)] = scaffold.extract(*parsed[path], path=path, name=name)
    return out


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


@dataclass
class Pair:
    a: str
    b: str
    score: float
    functions: list[tuple[str, str, float]]   # (path, name, Jaccard), most similar first


def compare_all(subs: dict[str, dict[tuple[str, str], Function]], weights: dict[tuple[str, str], int]) -> list[Pair]:
    """Every pair's weighted score, highest first."""
    keys = list(weights)
    grams = {sid: [subs[sid][k].grams for k in keys] for sid in subs}
    w = [weights[k] for k in keys]
    pairs = []
    for a, b in combinations(sorted(subs), 2):
        total = wsum = 0.0
        per = []
        for i, (x, y) in enumerate(zip(grams[a], grams[b])):
            if not (x or y):  # neither wrote it: not part of this pair's mean
                continue
            inter = len(x & y)
            j = inter / (len(x) + len(y) - inter)
            total += w[i] * j
            wsum += w[i]
            per.append((keys[i][0], keys[i][1], j))
        if wsum:
            pairs.append(Pair(a, b, total / wsum, per))
    for p in pairs:
        p.functions.sort(key=lambda f: -f[2])
    return sorted(pairs, key=lambda p: -p.score)


def similarity(folders: dict[str, Path], root: Path = REPO) -> tuple[list[Pair], dict[str, dict]]:
    """(every pair, highest first; the extracted functions) for submissions {id: folder}."""
    scaffold = Scaffold.from_solution(root)
    subs = {sid: load_submission(folder, scaffold) for sid, folder in folders.items()}
    return compare_all(subs, scaffold.weights), subs


def side_by_side(left: str, right: str, width: int = 60) -> list[str]:
    a, b = left.splitlines() or [""], right.splitlines() or [""]
    cut = lambda s: s if len(s) <= width else s[:width - 1] + "~"
    return [f"{cut(x):<{width}} | {cut(y)}" for x, y in zip(a + [""] * (len(b) - len(a)), b + [""] * (len(a) - len(b)))]


def similar_md(pairs: list[Pair], subs: dict[str, dict], threshold: float = THRESHOLD, shown: int = 3,
               max_pairs: int = 100) -> str:
    """similar.md: the pairs at or above the threshold (the `max_pairs` highest), each with its `shown`
    most similar functions side by side."""
    above = [p for p in pairs if p.score >= threshold]
    hidden, above = above[max_pairs:], above[:max_pairs]
    out = ["# Overly similar submissions", "",
           f"{len(above)} of {len(pairs)} pairs score at least {threshold:g} (weighted k-gram Jaccard, k={K}; "
           "course/code_similarity.py says how). A high score is a reason to look, not a verdict.", ""]
    if pairs:
        out += [f"Highest pair score: {pairs[0].score:.2f}; median pair score: "
                f"{sorted(p.score for p in pairs)[len(pairs) // 2]:.2f}.", ""]
    if hidden:
        out += [f"Only the {max_pairs} highest are shown; {len(hidden)} more pairs score at least {threshold:g}, "
                f"down to {hidden[-1].score:.2f} (a higher --threshold, or --max-pairs, shows others).", ""]
    for p in above:
        out += [f"## {p.a} and {p.b}: {p.score:.2f}", "",
                "| function | similarity |", "|---|---|"]
        out += [f"| `{path}` `{name}` | {j:.2f} |" for path, name, j in p.functions]
        out.append("")
        for path, name, j in p.functions[:shown]:
            out += [f"### `{path}` `{name}` ({j:.2f})", "", "```",
                    f"{p.a:<60} | {p.b}", *side_by_side(subs[p.a][(path, name)].source,
                                                         subs[p.b][(path, name)].source), "```", ""]
    return "\n".join(out)
