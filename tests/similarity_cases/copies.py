"""Copies of the solution, disguised the usual ways, for the similarity measurement.

- renamed: every local the solution assigns gets another name;
- reordered: independent lines swapped where the solution has any;
- comments: a comment above and beside every line;
- helper: part of the longer functions moved into a new module-level helper (appended to the file);
- all: the four together.
The known-mistake cases of tests/test_graded_mistakes.py (the solution with one body replaced) are
copies too: build.py adds them.
"""
from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

from course.make_student import find_fences
from course.code_similarity import graded_functions

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["tmp", "acc", "res", "buf", "val", "cur", "out2", "hold", "item", "thing", "part", "piece"]


def solution_bodies() -> dict[tuple[str, str], str]:
    """(path, function) -> the solution's fenced lines, dedented."""
    return {key: body for key, (body, _) in _solution().items()}


def _solution() -> dict[tuple[str, str], tuple[str, str]]:
    """(path, function) -> (fenced lines dedented, the rest of the function: names used there stay)."""
    out = {}
    for path, name in graded_functions():
        text = (ROOT / path).read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        f = next(f for f in find_fences(text, path) if f.function == name)
        node = next(n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef) and n.name == name
                    and n.lineno < f.begin <= n.end_lineno)
        rest = "".join(lines[node.lineno - 1:f.begin - 1] + lines[f.end:node.end_lineno])
        out[(path, name)] = (textwrap.dedent("".join(lines[f.begin:f.end - 1])), rest)
    return out


def renamed(body: str, rest: str = "") -> str:
    """Every local assigned in `body` renamed, except names the rest of the function uses (parameters,
    names set before the fence or read after it)."""
    stored = []
    for node in ast.walk(ast.parse(body)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id not in stored \
                and not re.search(rf"(?<![.\w]){re.escape(node.id)}(?!\w)", rest):
            stored.append(node.id)
    for i, name in enumerate(stored):
        body = re.sub(rf"(?<![.\w]){re.escape(name)}(?!\w)", f"{WORDS[i % len(WORDS)]}{i}", body)
    return body


def commented(body: str) -> str:
    out = []
    for i, line in enumerate(body.splitlines()):
        indent = line[:len(line) - len(line.lstrip())]
        out += [f"{indent}# part {i}: my own reasoning for this line", f"{line}  # checked by hand"]
    return "\n".join(out) + "\n"


REORDERED = {
    ("minbert/embeddings.py", "forward"): """
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # everything is segment A
        pos = torch.arange(T, device=input_ids.device)  # (T,), broadcast over the batch
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.ln(x))
        """,
    ("minbert/optimizer.py", "update"): """
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)     # v = b2 v + (1 - b2) g^2
        m.mul_(beta1).add_(grad, alpha=1.0 - beta1)               # m = b1 m + (1 - b1) g
        step_size = lr
        if group["correct_bias"]:
            step_size = lr * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
        p.addcdiv_(m, v.sqrt().add_(eps), value=-step_size)
        if group["weight_decay"] > 0.0:
            p.add_(p, alpha=-lr * group["weight_decay"])
        """,
    ("heads/pooling.py", "mean_pool"): """
        keep = mask.bool().unsqueeze(-1)  # (B, T, 1)
        count = keep.sum(dim=1).clamp(min=1).to(h.dtype)
        total = h.masked_fill(~keep, 0.0).sum(dim=1)  # (B, C)
        return total / count
        """,
    ("training/methods/gan.py", "discriminator_loss"): """
        log_fake_fake, _ = _log_p_fake(fake_logits.float())
        _, log_not_fake_real = _log_p_fake(real_logits.float())
        loss = supervised_loss(real_logits, labels, labelled) - log_not_fake_real.mean() - log_fake_fake.mean()
        if fake_labels is not None:
            loss = loss + F.cross_entropy(fake_logits[:, :-1].float(), fake_labels)
        return loss
        """,
    ("training/methods/gan.py", "generator_loss"): """
        matching = (real_features.detach().float().mean(dim=0) - fake_features.float().mean(dim=0)).pow(2).mean()
        _, log_not_fake = _log_p_fake(fake_logits.float())
        loss = -log_not_fake.mean() + matching
        if fake_labels is not None:
            loss = loss + F.cross_entropy(fake_logits[:, :-1].float(), fake_labels)
        return loss
        """,
    ("training/methods/distill_targets.py", "distill_loss"): """
        output, target = output.float(), target.float()
        if task == "quora":
            return F.binary_cross_entropy_with_logits(output, target)
        if task == "sst":
            return -(target * F.log_softmax(output, dim=-1)).sum(dim=-1).mean()
        return F.mse_loss(output, target)
        """,
}

# (path, function) -> (body calling the helper, the helper appended to the file)
HELPERS = {
    ("minbert/attention.py", "attention"): ("""
        att = _attention_scores(q, k, self.head_size)
        if mask is not None:
            att = att + mask
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        return att @ v
        """, """

def _attention_scores(q, k, head_size):
    return (q @ k.transpose(-2, -1)) / math.sqrt(head_size)
"""),
    ("training/engine/pcgrad.py", "project_conflicting"): ("""
        projected = []
        for i in range(K):
            g_i = grads[i].clone()
            others = [j for j in torch.randperm(K, generator=generator).tolist() if j != i]
            for j in others:
                g_i = _remove_conflict(g_i, grads[j])
            projected.append(g_i)
        return projected
        """, """

def _remove_conflict(g_i, g_j):
    dot = torch.dot(g_i, g_j)
    if dot < 0:
        g_i = g_i - dot / torch.dot(g_j, g_j) * g_j
    return g_i
"""),
    ("heads/pooling.py", "mean_pool"): ("""
        keep = mask.bool().unsqueeze(-1)
        return _masked_total(h, keep) / keep.sum(dim=1).clamp(min=1).to(h.dtype)
        """, """

def _masked_total(h, keep):
    return h.masked_fill(~keep, 0.0).sum(dim=1)
"""),
    ("training/methods/gan.py", "generator_loss"): ("""
        _, log_not_fake = _log_p_fake(fake_logits.float())
        loss = -log_not_fake.mean() + _matching(real_features, fake_features)
        if fake_labels is not None:
            loss = loss + F.cross_entropy(fake_logits[:, :-1].float(), fake_labels)
        return loss
        """, """

def _matching(real_features, fake_features):
    return (real_features.detach().float().mean(dim=0) - fake_features.float().mean(dim=0)).pow(2).mean()
"""),
}


def disguised() -> dict[str, tuple[dict[tuple[str, str], str], dict[str, str]]]:
    """name -> (bodies, text appended to each file) for each disguised copy."""
    both = _solution()
    sol = {k: b for k, (b, _) in both.items()}
    helper_bodies = {k: b for k, (b, _) in HELPERS.items()}
    helper_text: dict[str, str] = {}
    for (path, _), (_, text) in HELPERS.items():
        helper_text[path] = helper_text.get(path, "") + text
    all_bodies = {k: commented(renamed(textwrap.dedent(helper_bodies.get(k, REORDERED.get(k, b))), both[k][1]))
                  for k, b in sol.items()}
    return {
        "copy_renamed": ({k: renamed(b, both[k][1]) for k, b in sol.items()}, {}),
        "copy_reordered": (dict(REORDERED), {}),
        "copy_comments": ({k: commented(b) for k, b in sol.items()}, {}),
        "copy_helper": (helper_bodies, helper_text),
        "copy_all": (all_bodies, helper_text),
    }
