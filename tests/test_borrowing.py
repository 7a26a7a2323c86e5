"""Borrowing submissions earn nothing (issue 27): a step whose code calls into something the release
used to ship (a reference, a fast path, a checker helper, a unit test's independent reference), a
library call that does the step wholesale, or the release's stored expected tensors. Each case runs
through local grading in a generated release (its stored public checks) and through the generated
Gradescope autograder (fresh secret inputs), and must earn 0 in its step with a hint that says why;
the other steps of the submission are the solution and keep their points.

Where the borrowed code still exists in the instructors' tree, the same body graded there (with the
instructors' packages) earns full marks: the borrow is real, the release is what stops it.

Needs root (the Gradescope privilege drop and the staged interpreter): run with `pytest -m grader`.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from course.grade import grade
from grader_cases import (ROOT, build_autograder, replace_fences, run_gradescope, solution_files, staged_python,
                          with_bodies)

pytestmark = pytest.mark.grader
A, L, E, O, P, T = ("minbert/attention.py", "minbert/layer.py", "minbert/embeddings.py", "minbert/optimizer.py",
                    "heads/pooling.py", "training/engine/pcgrad.py")
MISSING = "No module named"  # what an import of a file the release leaves out says
HONEST = {"course/checks_tasks.py masked_mean": {"head_cls", "head_pooler"},  # SentimentHead without mean_pool
          "course/probes.py torch_attention": {"mask"}, "F.scaled_dot_product_attention": {"mask"}}  # the honest mask

# The fused kernel made to compute the course's AdamW (the coefficients the old optimizer.py derived).
FUSED_UPDATE = '''
        b1, b2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        s = lr * math.sqrt(b2) / b1 if group["correct_bias"] else lr
        c = lr * group["weight_decay"]
        lr_k = (1.0 - c) * s * b1 / math.sqrt(b2)
        torch._fused_adamw_([p], [grad], [m], [v], [], [torch.tensor(float(t))], lr=lr_k, beta1=beta1, beta2=beta2,
                            weight_decay=c / lr_k, eps=eps / math.sqrt(b2), amsgrad=False, maximize=False)
'''

# (name, step, {(file, function): body}, words the step's hint must hold in the release, full marks
# when graded in the instructors' tree). {TESTS}: where the unit tests live for that grading. A step
# earns nothing, except its tests that never call the borrowed code (HONEST).
CASES = [
    ("course/reference.py", 1, {
        (A, "attention"): """
            from course.reference import attention_math
            keep = self.attn_dropout(torch.ones(*q.shape[:-1], k.shape[-2])) if self.training else None
            return attention_math(q, k, v, mask, keep=keep)""",
        (A, "extended_attention_mask"): """
            from course.reference import additive_mask
            return additive_mask(attention_mask, dtype)"""}, MISSING, True),
    ("minbert/fast.py layer_forward", 2, {
        (L, "forward"): """
            from minbert import fast
            return fast.layer_forward(self, x, mask, sdpa=False)"""}, "fast", False),  # no control: step 2's
    # stand-in attention (course/probes.py) already defeats it in the instructors' tree
    ("course/checks_model.py", 3, {
        (E, "forward"): """
            from course import checks_model
            w = {"embeddings.word_embeddings.weight": self.word_embeddings.weight,
                 "embeddings.position_embeddings.weight": self.position_embeddings.weight,
                 "embeddings.token_type_embeddings.weight": self.token_type_embeddings.weight,
                 "embeddings.LayerNorm.weight": self.ln.weight, "embeddings.LayerNorm.bias": self.ln.bias}
            return self.dropout(checks_model.R.embeddings(w, input_ids, token_type_ids, self.ln.eps))"""},
     "checks_model", True),
    ("minbert/fused_adamw.py", 6, {
        (O, "update"): """
            from minbert.fused_adamw import fused_coefficients
            lr_k, wd_k, eps_k = fused_coefficients(group, t)
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            p.mul_(1 - lr_k * wd_k).addcdiv_(m, (v / (1 - beta2 ** t)).sqrt().add_(eps_k), value=-lr_k / (1 - beta1 ** t))"""},
     MISSING, True),
    ("course/checks_tasks.py masked_mean", 7, {
        (P, "mean_pool"): """
            from course.checks_tasks import masked_mean
            return masked_mean(h, mask)"""}, MISSING, True),
    ("course/checks_tasks.py project_in_order", 9, {
        (T, "project_conflicting"): """
            from course.checks_tasks import project_in_order
            return [project_in_order(grads, i, [j for j in torch.randperm(K, generator=generator).tolist() if j != i]
                                     ).to(grads[i].dtype) for i in range(K)]"""}, MISSING, True),
    # round 2
    ("course/probes.py torch_attention", 1, {
        (A, "attention"): """
            from course.probes import torch_attention
            return torch_attention(self)(q, k, v, mask)"""}, "torch_attention", False),
    ("the fused AdamW kernel", 6, {(O, "update"): FUSED_UPDATE}, "step 6 refuses", False),
    ("tests/test_pcgrad.py reference_pcgrad", 9, {
        (T, "project_conflicting"): """
            import os, runpy
            found = [t for t in ({TESTS}, "/autograder/source/scaffold/tests") if os.path.isfile(t + "/test_pcgrad.py")]
            if not found:
                raise FileNotFoundError("tests/test_pcgrad.py is not in this tree")
            reference = runpy.run_path(found[0] + "/test_pcgrad.py")["reference_pcgrad"]
            out = []
            for i in range(K):
                order = [j for j in torch.randperm(K, generator=generator).tolist() if j != i]
                total = reference(grads, [order if k == i else [] for k in range(K)])  # only task i projected
                out.append(total - sum(grads[k] for k in range(K) if k != i))
            return out"""}, "test_pcgrad.py", True),
    # round 3
    ("F.scaled_dot_product_attention", 1, {
        (A, "attention"): """
            p = self.attn_dropout.p if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)"""}, "step 1 refuses", False),
    ("torch.optim.AdamW", 6, {
        (O, "update"): """
            opt = torch.optim.AdamW([p], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=group["weight_decay"])
            p.grad = grad
            opt.step()"""}, "step 6 refuses", False),
]


def rounds() -> list[list[tuple]]:
    """Cases of different steps share a submission: round k holds the k-th case of each step."""
    by_step: dict[int, list] = {}
    for case in CASES:
        by_step.setdefault(case[1], []).append(case)
    return [[cs[k] for cs in by_step.values() if k < len(cs)] for k in range(max(map(len, by_step.values())))]


def submission(cases, tests: Path) -> dict[str, str]:
    """The solution's graded files with the borrowing bodies in place."""
    files = solution_files()
    by_file: dict[str, dict[str, str]] = {}
    for _, _, bodies, _, _ in cases:
        for (path, function), body in bodies.items():
            by_file.setdefault(path, {})[function] = body.replace("{TESTS}", repr(str(tests)))
    for path, functions in by_file.items():
        files[path] = replace_fences(files[path], path, functions)
    return files


@pytest.fixture(scope="module")
def autograder(tmp_path_factory) -> Path:
    return build_autograder(tmp_path_factory.mktemp("gradescope"))


def grade_release(release: Path, files: dict[str, str], steps: list[int], tmp: Path) -> dict:
    """Local self-grading as a student runs it: the release with the files in place, graded by its own
    course.grade (stored public checks), with an interpreter that has no editable install of the
    instructors' tree (which would quietly supply files the release leaves out)."""
    tree = tmp / "student"
    shutil.copytree(release, tree)
    for rel, text in files.items():
        (tree / rel).write_text(text)
    proc = subprocess.run([str(staged_python()), "-m", "course.grade", "--steps", ",".join(map(str, steps)),
                           "--json", str(tmp / "local.json")], cwd=tree, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp / "local.json").read_text())


def by_step(results: dict) -> dict[int, dict]:
    """Per step: its score (the sum of its tests' entries), the tests that passed, and their outputs."""
    out: dict[int, dict] = {}
    for t in results["tests"]:
        step = out.setdefault(t["extra_data"]["step"], {"score": 0.0, "max_score": 0.0, "passed": set(), "output": ""})
        step["score"] += t["score"]
        step["max_score"] += t["max_score"]
        step["output"] += t["output"] + "\n"
        if t["status"] == "passed":
            step["passed"].add(t["extra_data"]["test"])
    for step in out.values():
        step["score"], step["max_score"] = round(step["score"], 2), round(step["max_score"], 2)
    return out


@pytest.mark.parametrize("round_", rounds(), ids=[f"round{k}" for k in range(len(rounds()))])
def test_a_borrowed_step_earns_nothing_locally_and_on_gradescope(round_, autograder, tmp_path):
    steps = sorted({step for _, step, _, _, _ in round_})
    release = autograder / "scaffold"
    files = submission(round_, release / "tests")
    local = by_step(grade_release(release, files, steps, tmp_path))
    remote = by_step(run_gradescope(autograder, tmp_path, files, "--steps", ",".join(map(str, steps))))
    problems = []
    for name, step, _, words, _ in round_:
        for where, got in (("locally", local[step]), ("on Gradescope", remote[step])):
            passed = got["passed"]
            if passed != HONEST.get(name, set()):
                problems.append(f"{name}: step {step} earned {got['score']} {where} ({sorted(passed)} passed)\n"
                                f"{got['output']}")
            elif words not in got["output"]:
                problems.append(f"{name}: step {step}'s report {where} does not say why ({words!r})\n{got['output']}")
    assert not problems, "\n\n".join(problems)


CONTROLS = [[c for c in round_ if c[4]] for round_ in rounds() if any(c[4] for c in round_)]


@pytest.mark.parametrize("cases", CONTROLS, ids=[f"round{k}" for k in range(len(CONTROLS))])
def test_the_same_borrowing_earns_full_marks_where_the_borrowed_code_exists(cases, tmp_path):
    """The control: in the instructors' tree the borrowed files exist, and these bodies do the step
    (the cases that borrow code which exists nowhere now, or a refused library call, have none)."""
    files = submission(cases, ROOT / "tests")
    tree = with_bodies(tmp_path / "tree", {})
    for rel, text in files.items():
        (tree / rel).write_text(text)
    results = {r.step.number: r for r in grade(tree, steps=sorted({c[1] for c in cases}), jobs=2, seed=7)}
    lost = [f"{name}:\n{results[step].output()}" for name, step, _, _, _ in cases
            if results[step].score != results[step].step.points]
    assert not lost, "\n\n".join(lost)


def test_the_release_stored_expected_tensors_earn_nothing_on_gradescope(autograder, tmp_path):
    """The release ships its public checks' expected outputs; a step that returns them scores locally
    (self-grading is advisory) and earns nothing where it counts, on fresh secret inputs."""
    body = """
        import os
        import course
        from course import wire
        stored, _ = wire.load(os.path.join(os.path.dirname(course.__file__), "public", "step03.safetensors"))
        ids = stored["in.input_ids"]
        for key, rows in (("ex.full.y", ids), ("ex.no_types.y", ids[:1]), ("ex.short.y", ids[:, :5])):
            if input_ids.shape == rows.shape and torch.equal(input_ids, rows):
                return stored[key]
        return torch.zeros(B, T, self.word_embeddings.embedding_dim)"""
    files = solution_files()
    files[E] = replace_fences(files[E], E, {"forward": body})
    local = by_step(grade_release(autograder / "scaffold", files, [3], tmp_path))
    remote = by_step(run_gradescope(autograder, tmp_path, files, "--steps", "3,7"))
    assert local[3]["score"] > 0, local[3]["output"]  # the stored tensors do answer the public checks
    assert remote[3]["score"] == 0 and remote[7]["score"] == pytest.approx(remote[7]["max_score"], abs=0.01), \
        remote[3]["output"]
