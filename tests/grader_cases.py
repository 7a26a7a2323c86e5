"""Submissions for the grader suites (tests/test_graded_mistakes.py, tests/test_grader_security.py):
trees whose solution fences are replaced by other code, graded by the real grader.

A body replaces the whole fence of (file, enclosing function), at the fence's indentation. Two
honest implementations written in another style than the solution (ALT_A, ALT_B) must get full
marks; each known mistake must lose points in its step with a hint that names it.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

from course.autograder import editable_files
from course.gradescope import write_gradescope_zip
from course.make_student import find_fences, make_student
from course.sandbox import RUNNER_USER, ensure_runner_user, user_processes

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("minbert", "heads", "training", "course", "data")


def replace_fences(text: str, path: str, functions: dict[str, str]) -> str:
    """`text` (the file `path`) with the fence of each function replaced by its body."""
    lines = text.splitlines(keepends=True)
    fences = {f.function: f for f in find_fences(text, path)}
    missing = set(functions) - set(fences)
    assert not missing, f"no fence in {path} for {missing}"
    for f in sorted((fences[name] for name in functions), key=lambda f: -f.begin):
        code = textwrap.indent(textwrap.dedent(functions[f.function]).strip("\n") + "\n", f.indent)
        lines[f.begin - 1:f.end] = [code]
    return "".join(lines)


def with_bodies(dest: Path, bodies: dict[tuple[str, str], str], source: Path = ROOT) -> Path:
    """A copy of the source packages in dest with the fences of `bodies` replaced."""
    dest.mkdir(parents=True, exist_ok=True)
    for pkg in PACKAGES:
        shutil.copytree(source / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    by_file: dict[str, dict[str, str]] = {}
    for (path, function), body in bodies.items():
        by_file.setdefault(path, {})[function] = body
    for path, functions in by_file.items():
        (dest / path).write_text(replace_fences((dest / path).read_text(), path, functions))
    return dest


# ------------------------------------------------------------------ the Gradescope layout

@functools.cache
def staged_python() -> Path:
    """An interpreter the runner user can reach wherever this clone lives (tests/staging.py), once per
    test process."""
    from staging import stage_python
    dest = Path(tempfile.mkdtemp(prefix="minbert-python-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    return stage_python(dest)


def build_autograder(base: Path) -> Path:
    """make_student --gradescope, unzipped: base/source (setup.sh, run_autograder, scaffold/, checker/).
    Root only (the privilege drop): fails, not skips, without it."""
    assert os.geteuid() == 0, "the grader suites in the Gradescope layout need root: they test the privilege drop"
    ensure_runner_user(RUNNER_USER)
    make_student(ROOT, base / "scaffold")
    write_gradescope_zip(base / "scaffold", editable_files(), base / "autograder.zip")
    with zipfile.ZipFile(base / "autograder.zip") as z:
        z.extractall(base / "source")
    for script in ("run_autograder", "setup.sh"):
        (base / "source" / script).chmod(0o755)
    return base / "source"


def tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def run_gradescope(source: Path, tmp: Path, files: dict[str, str], *args: str) -> dict:
    """Grade `files` as a Gradescope submission with the staged interpreter; checks that nothing
    outlived or changed the grading, and that nothing was planted where Python looks."""
    ag = tmp / "ag"
    shutil.copytree(source, ag / "source")
    for rel, text in files.items():
        (ag / "submission" / rel).parent.mkdir(parents=True, exist_ok=True)
        (ag / "submission" / rel).write_text(text)
    before = tree_hash(ag / "source")
    python = staged_python()
    env = {"AUTOGRADER_ROOT": str(ag), "HOME": str(tmp), "LANG": "C.UTF-8", "PYTHON": str(python),
           "PATH": f"{python.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(["bash", str(ag / "source" / "run_autograder"), *args], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    left = user_processes(pwd.getpwnam(RUNNER_USER).pw_uid)
    assert not left, f"processes of {RUNNER_USER} outlived the grading: {left}"
    assert tree_hash(ag / "source") == before, "the autograder's source folder was changed during grading"
    site = {Path(p) for p in sys.path if p.endswith("site-packages")}
    site |= set(python.parent.parent.glob("lib/python*/site-packages"))
    planted = [p / name for p in site for name in ("sitecustomize.py", "zz_minbert_cheat.pth")
               if (p / name).exists() and "cheating" in (p / name).read_text()]
    for p in planted:
        p.unlink()
    assert not planted, f"a submission planted {planted}"
    return json.loads((ag / "results" / "results.json").read_text())


def solution_files() -> dict[str, str]:
    return {rel: (ROOT / rel).read_text() for rel in editable_files()}


# ------------------------------------------------------------------ honest, in another style
# A: einsum and explicit formulas, from the papers. B: loops and plain tensor algebra.

ALT_A = {
    ("minbert/attention.py", "extended_attention_mask"): """
        big_negative = torch.finfo(dtype).min
        additive = torch.where(attention_mask.bool(), 0.0, big_negative).to(dtype)
        return additive.view(attention_mask.shape[0], 1, 1, attention_mask.shape[1])  # (B, 1, 1, T)
    """,
    ("minbert/attention.py", "attention"): """
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * self.head_size ** -0.5  # (B, nh, T, T)
        if mask is not None:
            scores = scores + mask
        weights = self.attn_dropout(torch.softmax(scores, dim=-1))
        return torch.einsum("bhqk,bhkd->bhqd", weights, v)  # (B, nh, T, hs)
    """,
    ("minbert/layer.py", "forward"): """
        attended = self.dropout(self.attn(x, mask))
        h = self.ln1(attended + x)
        hidden = self.act(self.ffn_in(h))
        return self.ln2(self.dropout(self.ffn_out(hidden)) + h)
    """,
    ("minbert/embeddings.py", "forward"): """
        types = torch.zeros(B, T, dtype=torch.long, device=input_ids.device) if token_type_ids is None else token_type_ids
        positions = self.position_embeddings.weight[:T]  # (T, C)
        total = self.word_embeddings(input_ids) + self.token_type_embeddings(types) + positions
        return self.dropout(self.ln(total))
    """,
    ("minbert/model.py", "forward"): """
        cls = x.select(1, 0)  # (B, C)
        pooled = torch.tanh(cls @ self.pooler.weight.T + self.pooler.bias)
    """,
    ("minbert/optimizer.py", "update"): """
        # Loshchilov & Hutter, Algorithm 2, with the bias correction folded into the step size.
        m.copy_(beta1 * m + (1 - beta1) * grad)
        v.copy_(beta2 * v + (1 - beta2) * grad * grad)
        alpha = lr * (1 - beta2 ** t) ** 0.5 / (1 - beta1 ** t) if group["correct_bias"] else lr
        p.copy_(p - alpha * m / (torch.sqrt(v) + eps))
        p.copy_(p * (1 - lr * group["weight_decay"]))
    """,
    ("heads/pooling.py", "mean_pool"): """
        weights = mask.to(h.dtype)  # (B, T)
        safe = torch.where(mask.bool()[..., None], h, torch.zeros_like(h))
        return torch.einsum("btc,bt->bc", safe, weights) / weights.sum(1, keepdim=True).clamp(min=1)
    """,
    ("heads/sentiment.py", "forward"): """
        pooled = {"cls": lambda: last_hidden_state[:, 0], "mean": lambda: mean_pool(last_hidden_state, attention_mask),
                  "pooler": lambda: pooler_output}[self.pooling]()
        return self.classifier(pooled)
    """,
    ("heads/paraphrase.py", "pair_features"): """
        return torch.hstack([u, v, torch.abs(u - v), torch.mul(u, v)])
    """,
    ("heads/similarity.py", "cosine_score"): """
        cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1)).clamp(min=eps)
        return MAX_SCORE * torch.relu(cos)
    """,
    ("training/multitask/tasks.py", "loss_from_output"): """
        if task == "sst":
            return -torch.log_softmax(out.float(), -1).gather(1, labels[:, None]).mean()
        if task == "quora":
            z, y = out.float(), labels.float()
            return (torch.clamp(z, min=0) - z * y + torch.log1p(torch.exp(-z.abs()))).mean()
        return ((out.float() - labels.float()) ** 2).mean()
    """,
    ("training/engine/pcgrad.py", "project_conflicting"): """
        G = torch.stack(grads)  # (K, D), never modified
        out = []
        for i in range(len(grads)):
            g = G[i].clone()
            for j in torch.randperm(len(grads), generator=generator).tolist():
                if j != i and torch.dot(g, G[j]) < 0:
                    g -= torch.dot(g, G[j]) / G[j].pow(2).sum() * G[j]
            out.append(g)
        return out
    """,
    ("training/methods/distill_targets.py", "annealed_lambda"): """
        return 0.0 if step <= 0 else 1.0 if step >= total_steps else step / total_steps
    """,
    ("training/methods/distill_targets.py", "mixed_targets"): """
        gold = torch.eye(teacher.shape[-1])[gold.long()] if task == "sst" else gold.float()
        return torch.lerp(teacher, gold.to(teacher.dtype), lam)
    """,
    ("training/methods/distill_targets.py", "distill_loss"): """
        if task == "sst":
            return torch.mean(torch.sum(-target * torch.log_softmax(output, dim=1), dim=1))
        if task == "quora":
            p = torch.sigmoid(output)
            return -(target * torch.log(p) + (1 - target) * torch.log1p(-p)).mean()
        return torch.mean((output - target) ** 2)
    """,
    ("training/methods/gan.py", "supervised_loss"): """
        k = logits.shape[1] - 1
        if int(labelled.sum()) == 0:
            return torch.zeros((), dtype=logits.dtype)
        rows = logits[labelled][:, :k]
        return -(rows.log_softmax(-1)[torch.arange(rows.shape[0]), labels[labelled]]).mean()
    """,
    ("training/methods/gan.py", "discriminator_loss"): """
        p_real, p_fake = torch.softmax(real_logits, -1)[:, -1], torch.softmax(fake_logits, -1)[:, -1]
        loss = supervised_loss(real_logits, labels, labelled) - torch.log(1 - p_real).mean() - torch.log(p_fake).mean()
        if fake_labels is not None:
            loss = loss + F.cross_entropy(fake_logits[:, :-1], fake_labels)
        return loss
    """,
    ("training/multitask/recipe.py", "batch_loss"): """
        out = task_output(net, task, batch, args)
        scale = weight * (args.loss_weights[task] if task in args.loss_weights else 1.0)
        total = tasks.task_loss(task, args)(out, batch["labels"].to(args.device))
        if tasks.aux_weight(task, args) > 0:
            total = total + tasks.aux_weight(task, args) * aux_output(model, task, batch, args)
        return scale * total
    """,
    ("training/methods/gan.py", "generator_loss"): """
        p_fake = torch.softmax(fake_logits, -1)[:, -1]
        gap = real_features.detach().mean(0) - fake_features.mean(0)
        loss = -torch.log(1 - p_fake).mean() + (gap * gap).mean()
        if fake_labels is not None:
            loss = loss + F.cross_entropy(fake_logits[:, :-1], fake_labels)
        return loss
    """,
}

ALT_B = {
    ("minbert/attention.py", "attention"): """
        B, nh, T, hs = q.shape
        scores = torch.matmul(q / math.sqrt(hs), k.transpose(2, 3))  # (B, nh, T, T)
        if mask is not None:
            scores = scores + mask
        scores = scores - scores.amax(-1, keepdim=True)  # a stable softmax, written out
        probs = scores.exp() / scores.exp().sum(-1, keepdim=True)
        return torch.matmul(self.attn_dropout(probs), v)
    """,
    ("minbert/layer.py", "forward"): """
        branches = [lambda h: self.attn(h, mask), lambda h: self.ffn_out(self.act(self.ffn_in(h)))]
        for branch, norm in zip(branches, (self.ln1, self.ln2)):
            x = norm(x + self.dropout(branch(x)))
        return x
    """,
    ("minbert/optimizer.py", "update"): """
        # Adam with explicit bias-corrected moments, rewritten to the course's eps placement:
        # m_hat / (sqrt(v_hat) + eps_hat) with eps_hat = eps / sqrt(1 - b2^t) equals the folded form.
        m.mul_(beta1).add_((1 - beta1) * grad)
        v.mul_(beta2).add_((1 - beta2) * grad.square())
        if group["correct_bias"]:
            c1, c2 = 1 - beta1 ** t, 1 - beta2 ** t
            p.sub_(lr * (m / c1) / (torch.sqrt(v / c2) + eps / math.sqrt(c2)))
        else:
            p.sub_(lr * m / (v.sqrt() + eps))
        p.mul_(1 - lr * group["weight_decay"])
    """,
    ("heads/pooling.py", "mean_pool"): """
        rows = []
        for b in range(h.shape[0]):
            real = h[b][mask[b].bool()]  # (n_b, C)
            rows.append(real.mean(0) if len(real) else h.new_zeros(h.shape[-1]))
        return torch.stack(rows)
    """,
    ("training/engine/pcgrad.py", "project_conflicting"): """
        K = len(grads)
        result = [g.clone() for g in grads]
        for i in range(K):
            order = torch.randperm(K, generator=generator).tolist()
            for j in order:
                if j == i:
                    continue
                dot = (result[i] * grads[j]).sum()
                if dot < 0:
                    result[i] = result[i] - dot * grads[j] / (grads[j] * grads[j]).sum()
        return result
    """,
}
