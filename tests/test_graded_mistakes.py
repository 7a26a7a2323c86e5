"""Graded steps catch real mistakes, black-box: a submission with one known mistake goes through the
real grader (course.grade: runner process, fresh inputs, the checker's verdict) and must lose points
in its step, with a hint that names the mistake. Two honest implementations in another style than the
solution (tests/grader_cases.py) must get full marks.

Mistakes in different steps share a tree ("rounds"), so each round is graded once; a round asserts
only on the steps it mutated. Run with the other grader suites: `pytest -m grader`.
"""
from __future__ import annotations

import pytest

from course.grade import grade, judge, stored_material, write_public
from course.steps import STEPS
from grader_cases import ALT_A, ALT_B, with_bodies

pytestmark = pytest.mark.grader

A, L, E, M, O, P, H, S, T, G, D = ("minbert/attention.py", "minbert/layer.py", "minbert/embeddings.py",
                                   "minbert/model.py", "minbert/optimizer.py", "heads/pooling.py",
                                   "heads/sentiment.py", "heads/similarity.py", "training/engine/pcgrad.py",
                                   "training/methods/gan.py", "training/methods/distill_targets.py")
MT = "training/multitask/recipe.py"
ATT = "attention"
SEED = 4242  # one seed for the live verdicts and the stored ones they are compared with

# (step, {(file, function): body}, words the step's hint must contain)
MISTAKES = [
    (1, {(A, ATT): "return torch.softmax(q @ k.transpose(-2, -1) + (0 if mask is None else mask), -1) @ v"},
     "without the 1/sqrt(head_size) scaling"),
    (1, {(A, ATT): "return torch.softmax(q @ k.transpose(-2, -1) / self.head_size + (0 if mask is None else mask), -1) @ v"},
     "scaled by 1/head_size"),
    (1, {(A, ATT): "return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.n_head * self.head_size) + (0 if mask is None else mask), -1) @ v"},
     "scaled by 1/sqrt(hidden_size)"),
    (1, {(A, ATT): "return v"}, "the values v themselves"),
    # the larger-piece assignment's part of step 1: SelfAttention.split_heads and forward
    (1, {(A, "forward"): """
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        return self.proj(self.attention(q, k, v, mask).reshape(B, T, C))"""}, "merged back without moving them"),
    (1, {(A, "forward"): """
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        return self.attention(q, k, v, mask).transpose(1, 2).reshape(B, T, C)"""}, "without the output projection"),
    (1, {(A, "split_heads"): "return x.reshape(x.shape[0], self.n_head, x.shape[1], self.head_size)",
         (A, "forward"): """
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        return self.proj(self.attention(q, k, v, mask).reshape(B, T, C))"""}, "split into heads by a reshape"),
    (1, {(A, ATT): "return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_size), -2) @ v"},
     "softmax over the queries"),
    (1, {(A, ATT): "return self.attn_dropout(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_size), -1)) @ v"},
     "ignores the mask"),
    (1, {(A, ATT): """
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_size) + (0 if mask is None else mask), -1)
        return self.attn_dropout(att @ v)"""}, "dropout to the attention output"),
    (1, {(A, "extended_attention_mask"): "return (1.0 - attention_mask[:, None, None, :].to(dtype)) * float('-inf')"},
     "must be finite"),
    (1, {(A, "extended_attention_mask"): "return ((1.0 - attention_mask[:, None, None, :].to(dtype)) * -1e9).to(dtype)"},
     "must be finite"),
    (2, {(L, "forward"): """
        x = x + self.dropout(self.attn(self.ln1(x), mask))
        return x + self.dropout(self.ffn_out(self.act(self.ffn_in(self.ln2(x)))))"""}, "pre-LN"),
    (2, {(L, "forward"): """
        x = self.ln1(x + self.dropout(self.attn(x, mask)))
        return self.ln2(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x), approximate="tanh"))))"""},
     "tanh approximation"),
    (2, {(L, "forward"): """
        x = self.ln1(x + self.dropout(self.attn(x, mask)))
        return self.ln2(self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))"""},
     "without the residual connection around the feed-forward"),
    (2, {(L, "forward"): """
        x = self.ln1(x + self.dropout(self.attn(x, mask)))
        return self.ln2(x + self.ffn_out(self.act(self.ffn_in(x))))"""}, "only one residual branch"),
    (2, {(L, "forward"): """
        x = self.ln1(x + self.attn(x, mask))
        return self.ln2(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))"""}, "only one residual branch"),
    (2, {(L, "forward"): """
        x = self.dropout(self.ln1(x + self.attn(x, mask)))
        return self.dropout(self.ln2(x + self.ffn_out(self.act(self.ffn_in(x)))))"""}, "after the LayerNorm"),
    (2, {(L, "forward"): """
        x = self.ln1(x + self.dropout(self.attn(x, None)))
        return self.ln2(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))"""}, "Pass the mask on"),
    (2, {(L, "forward"): """
        x = x + self.ln1(self.dropout(self.attn(x, mask)))
        return x + self.ln2(self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))"""}, "LayerNorm on the branch"),
    (2, {(L, "forward"): """
        x = self.ln1(x + self.dropout(self.attn(x, mask)))
        return self.ln1(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))"""}, "ln1 reused"),
    (3, {(E, "forward"): """
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        return self.dropout(self.word_embeddings(input_ids) + self.position_embeddings(torch.arange(T)) + self.token_type_embeddings(types))"""},
     "without the LayerNorm"),
    (3, {(E, "forward"): """
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        return self.dropout(self.ln(self.word_embeddings(input_ids) + self.token_type_embeddings(types)))"""},
     "without the position embeddings"),
    (3, {(E, "forward"): "return self.dropout(self.ln(self.word_embeddings(input_ids) + self.position_embeddings(torch.arange(T))))"},
     "without the token-type"),
    (3, {(E, "forward"): """
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        return self.ln(self.dropout(self.word_embeddings(input_ids) + self.position_embeddings(torch.arange(T)) + self.token_type_embeddings(types)))"""},
     "dropout before the LayerNorm"),
    (4, {(M, "forward"): "pooled = self.pooler(x[:, 0])"}, "without the tanh"),
    (4, {(M, "forward"): "pooled = torch.tanh(self.pooler(x.mean(1)))"}, "mean over tokens"),
    (4, {(M, "forward"): "pooled = torch.tanh(self.pooler(x[:, -1]))"}, "last token"),
    (4, {(M, "forward"): "pooled = x[:, 0]"}, "without the pooler"),
    (6, {(O, "update"): """
        p.mul_(1 - lr * group["weight_decay"])  # torch.optim.AdamW: decay first, eps after the correction
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        p.sub_(lr * (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps))"""}, "torch.optim.AdamW"),
    (6, {(O, "update"): """
        grad = grad + group["weight_decay"] * p
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t) if group["correct_bias"] else lr
        p.addcdiv_(m, v.sqrt() + eps, value=-step)"""}, "added to the gradient (L2)"),
    (6, {(O, "update"): """
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        p.addcdiv_(m, v.sqrt() + eps, value=-lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t))
        p.add_(p, alpha=-lr * group["weight_decay"])"""}, "bias correction the wrong way round"),
    (7, {(P, "mean_pool"): "return h.mean(1)"}, "padding included"),
    (7, {(P, "mean_pool"): "return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)"},
     "keeps nan"),
    (7, {(P, "mean_pool"): "return h.masked_fill(mask[..., None] == 0, 0).sum(1) / mask.sum(1, keepdim=True)"},
     "clamp the token count"),
    (7, {(H, "forward"): "return self.classifier(last_hidden_state[:, 0] if self.pooling != 'pooler' else pooler_output)"},
     "the cls vector instead"),
    (7, {(H, "forward"): "return self.classifier(mean_pool(last_hidden_state, attention_mask) if self.pooling != 'pooler' else pooler_output)"},
     "the mean vector instead"),
    (7, {(H, "forward"): "return self.classifier(pooler_output if pooler_output is not None else last_hidden_state[:, 0])"},
     "the pooler vector instead"),
    (8, {("heads/paraphrase.py", "pair_features"): "return torch.cat([u, v, u - v, u * v], -1)"}, "absolute value"),
    (8, {("heads/paraphrase.py", "pair_features"): "return torch.cat([u, v, (u - v).abs(), u * v], 0)"},
     "stacked along dim 0"),
    (8, {(S, "cosine_score"): "return F.cosine_similarity(u, v, dim=-1).clamp(min=0)"}, "without the factor 5"),
    (8, {(S, "cosine_score"): "return 5 * F.cosine_similarity(u, v, dim=-1)"}, "without the relu"),
    (9, {(T, "project_conflicting"): """
        out = []
        for i in range(len(grads)):
            g = grads[i].clone()
            for j in range(len(grads)):  # always the same order
                if j != i and torch.dot(g, grads[j]) < 0:
                    g = g - torch.dot(g, grads[j]) / torch.dot(grads[j], grads[j]) * grads[j]
            out.append(g)
        return out"""}, "fixed visiting order"),
    (9, {(T, "project_conflicting"): """
        out = [g.clone() for g in grads]
        for i in range(len(grads)):
            for j in torch.randperm(len(grads), generator=generator).tolist():
                if j != i and torch.dot(out[i], out[j]) < 0:  # the projected g_j, not the original
                    out[i] = out[i] - torch.dot(out[i], out[j]) / torch.dot(out[j], out[j]) * out[j]
        return out"""}, "ORIGINAL g_j"),
    (9, {(T, "project_conflicting"): """
        for i in range(len(grads)):
            for j in torch.randperm(len(grads), generator=generator).tolist():
                if j != i and torch.dot(grads[i], grads[j]) < 0:
                    grads[i].sub_(torch.dot(grads[i], grads[j]) / torch.dot(grads[j], grads[j]) * grads[j])
        return grads"""}, "copy"),
    (10, {(D, "annealed_lambda"): "return step / total_steps"}, "clamped"),
    (10, {(D, "mixed_targets"): """
        if task == "sst":
            gold = F.one_hot(gold.long(), teacher.shape[-1]).to(teacher.dtype)
        return lam * teacher + (1.0 - lam) * gold.to(teacher.dtype)"""}, "weights swapped"),
    *[(10, {(D, "distill_loss"): f"""
        if task == "sst":
            return {sst}
        if task == "quora":
            return {quora}
        return {sts}"""}, hint) for sst, quora, sts, hint in [
        ("-(target * F.log_softmax(output, -1)).mean()", "F.binary_cross_entropy_with_logits(output, target)",
         "F.mse_loss(output, target)", "mean over the 5 classes"),
        ("F.cross_entropy(output, target.argmax(-1))", "F.binary_cross_entropy_with_logits(output, target)",
         "F.mse_loss(output, target)", "argmax"),
        ("-(target * F.log_softmax(output, -1)).sum()", "F.binary_cross_entropy_with_logits(output, target)",
         "F.mse_loss(output, target)", "sum over the batch"),
        ("-(target * F.log_softmax(output, -1)).sum(-1).mean()", "F.binary_cross_entropy_with_logits(output, target.round())",
         "F.mse_loss(output, target)", "rounded to 0/1"),
        ("-(target * F.log_softmax(output, -1)).sum(-1).mean()", "F.mse_loss(torch.sigmoid(output), target)",
         "F.mse_loss(output, target)", "squared error between sigmoid"),
        ("-(target * F.log_softmax(output, -1)).sum(-1).mean()", "F.binary_cross_entropy_with_logits(output, target)",
         "((output - target) ** 2).sum()", "sum of squared errors"),
        ("-(target * F.log_softmax(output, -1)).sum(-1).mean()", "F.binary_cross_entropy_with_logits(output, target)",
         "(output - target).abs().mean()", "mean absolute error")]],
    (11, {(G, "supervised_loss"): "return F.cross_entropy(logits[:, :-1], labels)"}, "over ALL rows"),
    (11, {(G, "supervised_loss"): "return F.cross_entropy(logits[labelled], labels[labelled]) if labelled.any() else logits.sum() * 0"},
     "all k + 1 logits"),
    (11, {(G, "supervised_loss"): "return F.cross_entropy(logits[labelled, :-1], labels[labelled], reduction='sum') if labelled.any() else logits.sum() * 0"},
     "sum over the labelled rows"),
    *[(11, {(G, "discriminator_loss"): f"""
        pr, pf = torch.softmax(real_logits, -1)[:, -1], torch.softmax(fake_logits, -1)[:, -1]
        loss = {loss}
        if fake_labels is not None and {ac}:
            loss = loss + F.cross_entropy(fake_logits[:, :-1], fake_labels)
        return loss"""}, hint) for loss, ac, hint in [
        ("supervised_loss(real_logits, labels, labelled) - torch.log(pf).mean()", True, "the fake term alone"),
        ("supervised_loss(real_logits, labels, labelled) - torch.log(1 - pr).mean()", True, "the real term alone"),
        ("supervised_loss(real_logits, labels, labelled) - torch.log(pr).mean() - torch.log(1 - pf).mean()", True, "swapped"),
        ("-torch.log(1 - pr).mean() - torch.log(pf).mean()", True, "no supervised term"),
        ("supervised_loss(real_logits, labels, labelled) - torch.log(1 - pr).mean() - torch.log(pf).mean()", False,
         "without the AC-GAN term"),
        ("F.cross_entropy(real_logits[:, :-1], labels) - torch.log(1 - pr).mean() - torch.log(pf).mean()", True,
         "every real row, labelled or not")]],
    *[(11, {(G, "discriminator_loss"): f"""
        pr, pf = torch.softmax(real_logits, -1)[:, -1], torch.softmax(fake_logits, -1)[:, -1]
        loss = supervised_loss(real_logits, labels, labelled) - torch.log(1 - pr).mean() - torch.log(pf).mean()
        return loss if fake_labels is None else loss {ac}"""}, hint) for ac, hint in [
        ("+ F.cross_entropy(fake_logits, fake_labels)", "all k + 1 logits"),
        ("- F.cross_entropy(fake_logits[:, :-1], fake_labels)", "AC-GAN term subtracted")]],
    *[(11, {(G, "generator_loss"): f"""
        pf = torch.softmax(fake_logits, -1)[:, -1]
        loss = -torch.log(1 - pf).mean() + (real_features.detach().mean(0) - fake_features.mean(0)).pow(2).mean()
        return loss if fake_labels is None else loss {ac}"""}, hint) for ac, hint in [
        ("", "without the AC-GAN term"),
        ("+ F.cross_entropy(fake_logits, fake_labels)", "all k + 1 logits"),
        ("- F.cross_entropy(fake_logits[:, :-1], fake_labels)", "AC-GAN term subtracted")]],
    *[(11, {(G, "generator_loss"): f"""
        pf = torch.softmax(fake_logits, -1)[:, -1]
        gap = real_features{detach}.mean(0) - fake_features.mean(0)
        loss = {loss}
        if fake_labels is not None:
            loss = loss + F.cross_entropy(fake_logits[:, :-1], fake_labels)
        return loss"""}, hint) for loss, detach, hint in [
        ("torch.log(pf).mean() + gap.pow(2).mean()", ".detach()", "saturating minimax"),
        ("-torch.log(pf).mean() + gap.pow(2).mean()", ".detach()", "called REAL"),
        ("torch.log(1 - pf).mean() + gap.pow(2).mean()", ".detach()", "the sign is wrong"),
        ("-torch.log(1 - pf).mean()", ".detach()", "adversarial term alone"),
        ("-torch.log(1 - pf).mean() + gap.pow(2).sum()", ".detach()", "SUM over the feature dimension"),
        ("-torch.log(1 - pf).mean() + gap.abs().mean()", ".detach()", "|difference|"),
        ("-torch.log(1 - pf).mean() + gap.pow(2).mean()", "", "detach()")]],
    # step 12 (the larger-piece assignment's training step): training/multitask/recipe.py's batch_loss
    (12, {(MT, "batch_loss"): """
        labels = batch["labels"].to(args.device)
        loss = tasks.task_loss(task, args)(task_output(net, task, batch, args), labels)
        aux = tasks.aux_weight(task, args)
        if aux:
            loss = loss + aux * aux_output(model, task, batch, args)
        return loss * args.loss_weights.get(task, 1.0)"""}, "multiply by the batch's `weight`"),
    (12, {(MT, "batch_loss"): """
        labels = batch["labels"].to(args.device)
        loss = tasks.task_loss(task, args)(task_output(net, task, batch, args), labels)
        aux = tasks.aux_weight(task, args)
        if aux:
            loss = loss + aux * aux_output(model, task, batch, args)
        return loss * weight"""}, "multiply by args.loss_weights.get(task, 1.0) too"),
    (12, {(MT, "batch_loss"): """
        labels = batch["labels"].to(args.device)
        loss = tasks.TASKS[task].loss(task_output(net, task, batch, args), labels)
        aux = tasks.aux_weight(task, args)
        if aux:
            loss = loss + aux * aux_output(model, task, batch, args)
        return loss * (args.loss_weights.get(task, 1.0) * weight)"""},
     "which reads the option"),
    (12, {(MT, "batch_loss"): """
        labels = batch["labels"].to(args.device)
        return tasks.task_loss(task, args)(task_output(net, task, batch, args), labels) * args.loss_weights.get(task, 1.0) * weight"""},
     "without its second term"),
    (12, {(MT, "batch_loss"): """
        labels = batch["labels"].to(args.device)
        loss = tasks.task_loss(task, args)(task_output(net, task, batch, args), labels)
        aux = tasks.aux_weight(task, args)
        if aux:
            loss = loss + aux_output(model, task, batch, args)
        return loss * (args.loss_weights.get(task, 1.0) * weight)"""}, "without its weight"),
    (12, {(MT, "batch_loss"): """
        labels = batch["labels"].to(args.device)
        loss = tasks.task_loss(task, args)(task_output(net, task, batch, args), labels)
        aux = tasks.aux_weight(task, args)
        if aux:
            loss = loss + aux * aux_output(model, task, batch, args)
        return (loss * (args.loss_weights.get(task, 1.0) * weight)).detach()"""}, "cannot differentiate"),
]


def rounds() -> list[list[tuple[int, dict, str]]]:
    """Mistakes of different steps grouped: round k holds the k-th mistake of each step."""
    by_step: dict[int, list] = {}
    for m in MISTAKES:
        by_step.setdefault(m[0], []).append(m)
    return [[ms[k] for ms in by_step.values() if k < len(ms)] for k in range(max(map(len, by_step.values())))]


@pytest.mark.parametrize("round_", rounds(), ids=[f"round{k}" for k in range(len(rounds()))])
def test_each_known_mistake_loses_points_with_a_hint_that_names_it(round_, tmp_path):
    bodies = {key: body for _, mutation, _ in round_ for key, body in mutation.items()}
    steps = [s for s, _, _ in round_]
    results = {r.step.number: r for r in grade(with_bodies(tmp_path / "tree", bodies), steps=steps, jobs=2, seed=SEED)}
    assert_stored_verdicts_equal_live(results, tmp_path)
    problems = []
    for step, mutation, words in round_:
        r = results[step]
        if r.score >= r.step.points:
            problems.append(f"step {step}: full marks for {list(mutation.values())[0].strip()[:80]!r}")
        elif words.lower() not in r.hint.lower():
            problems.append(f"step {step}: hint {r.hint!r} does not name the mistake ({words!r})\n{r.output()}")
    assert not problems, "\n".join(problems)


def assert_stored_verdicts_equal_live(results: dict, tmp_path) -> None:
    """The release's stored public checks, written on the same seed, judge the same answers exactly
    as the live producers did: every test's outcome, message and mistake id."""
    public = tmp_path / "public"
    write_public(public, sorted(results), SEED)
    for n, r in results.items():
        assert r.answer is not None, f"step {n} gave no answer:\n{r.output()}"
        assert judge(n, stored_material(n, public), *r.answer) == r.tests, f"step {n}: stored and live verdicts differ"


def test_one_root_cause_gives_one_hint(tmp_path):
    """A 1/head_size scaling fails every attention test of step 1; only the first one guesses the
    mistake, the tests built on it say so."""
    body = "return torch.softmax(q @ k.transpose(-2, -1) / self.head_size + (0 if mask is None else mask), -1) @ v"
    (r,) = grade(with_bodies(tmp_path / "tree", {(A, ATT): body}), steps=[1], seed=SEED)
    failed = {t.name: t for t in r.tests if t.outcome != "passed"}
    assert set(failed) == {"no_mask", "padding", "forward", "dropout"}, r.output()
    assert "scaled by 1/head_size" in failed["no_mask"].message and failed["no_mask"].mistake == "step01.scale_head_size"
    for name in ("padding", "forward", "dropout"):
        assert failed[name].message.startswith("fix the first failure first"), r.output()
        assert failed[name].mistake is None
    assert r.score == 10 * 1 / 5  # scoring is unchanged: only the mask test passes


@pytest.mark.parametrize("bodies", [ALT_A, ALT_B], ids=["einsum-and-formulas", "loops-and-explicit-moments"])
def test_honest_implementations_in_another_style_get_full_marks(bodies, tmp_path):
    every = [s.number for s in STEPS]  # step 12 too (the larger-piece assignment's)
    by_step = {r.step.number: r for r in grade(with_bodies(tmp_path / "tree", bodies), steps=every, jobs=2, seed=SEED)}
    assert_stored_verdicts_equal_live(by_step, tmp_path)
    results = list(by_step.values())
    lost = [r.output() for r in results if r.score != r.step.points]
    assert not lost, "\n\n".join(lost)
    assert sum(r.score for r in results) == sum(s.points for s in STEPS)
