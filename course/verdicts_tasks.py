"""The public comparisons of steps 6-12 (the optimizer, the heads, the training losses and step): the
runner's outputs against the expected tensors (`e`: the references and each known mistake's outputs,
from the instructors' producer or the release's stored public checks). Nothing here computes a
reference. `depends`: which test builds on which (a dependant of a failed test says so)."""
from __future__ import annotations

from .compare import Judge, matches

ADAMW_CASES = ["first_step_corrected", "first_step_uncorrected", "without_decay", "decoupled_decay", "small_gradients",
               "long_run"]


def judge_6(t, spec, j: Judge):
    for c, case in enumerate(spec["cases"]):
        name = case["name"]
        for i in range(len(case["groups"])):
            if not j.close(name, f"parameter {i} after {case['steps']} AdamW step(s)", j.got(name, f"p{i}"),
                           f"{name}.p{i}",
                           "m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2; step = lr * sqrt(1 - b2^t) / (1 - b1^t) (lr "
                           "when correct_bias is off); p -= step * m / (sqrt(v) + eps); then p -= lr * weight_decay * p. "
                           "Read lr, betas, eps, weight_decay and correct_bias from the parameter's group.",
                           atol=1e-5, rtol=1e-4):
                break


def judge_7(t, spec, j: Judge):
    j.close("mean", "mean_pool(h, mask)", j.got("mean"), "mean.y",
            "Average over the tokens whose mask is 1 only: sum them and divide by their count, per row.")
    j.close("poisoned", "mean_pool with nan/inf at padded positions", j.got("poisoned"), "poisoned.y",
            "h * mask keeps nan (nan * 0 = nan): zero the padded positions with masked_fill or torch.where.",
            mistake="step07.nan_kept")
    j.close("empty_row", "mean_pool with an all-padding row 2", j.got("empty_row"), "empty_row.y",
            "An empty row must pool to zeros, not 0/0 = nan: clamp the token count to at least 1.",
            mistake="step07.empty_row_nan")
    vectors = {"cls": "first token", "mean": "masked mean", "pooler": "pooler_output"}
    for pooling, what in vectors.items():
        j.close(f"head_{pooling}", f"SentimentHead(pooling={pooling!r}) logits", j.got(f"head_{pooling}"),
                f"head_{pooling}.y", f"pooling={pooling!r}: self.classifier applied to the {what} vector.")


def judge_8(t, spec, j: Judge):
    j.close("pair_features", "pair_features(u, v)", j.got("pair_features"), "pair_features.y",
            "The layout is [u, v, |u - v|, u * v] along the last dim, shape (B, 4C).")
    j.close("cosine", "cosine_score(u, v)", j.got("cosine"), "cosine.y", "Expected 5 * relu(cos(u, v)) per row, shape (B,).")
    j.close("cosine_extremes", "cosine_score of (parallel, orthogonal, opposite) pairs", j.got("cosine_extremes"),
            "cosine_extremes.y", "Parallel vectors score 5; orthogonal and opposite ones 0.")
    what = {"sst": "cross-entropy on the 5 logits", "quora": "binary cross-entropy on the logit (labels 0/1 as floats)",
            "sts": "mean squared error between score and label"}
    for task, loss in what.items():
        j.close(f"loss_{task}", f"loss_from_output({task!r}, ...)", j.got(f"loss_{task}"), f"loss_{task}.y",
                f"The {task} loss is the {loss}, averaged over the batch.")


def judge_9(t, spec, j: Judge):
    hint = ("g_i := g_i - (g_i . g_j) / ||g_j||^2 * g_j when g_i . g_j < 0, always with the ORIGINAL g_j "
            "(not its projected version).")
    for case in ("no_conflict", "pair"):
        j.close(case, "the input gradients after project_conflicting", j.got(case, "inputs"), f"{case}.y",
                "project_conflicting changed its inputs: work on a copy (g.clone()); projecting in place also "
                "makes later projections use a projected g_j instead of the original.", expected=t[case],
                mistake="step09.inputs_changed")
    j.close("no_conflict", "projected gradients when no pair conflicts", j.got("no_conflict"), "no_conflict.y",
            "Only a pair with a negative dot product is projected.")
    j.close("pair", "projected gradients of a conflicting pair", j.got("pair"), "pair.y", hint)
    j.close("sum", "pcgrad_project of three gradients", j.got("sum"), "sum.y",
            "Task 0 and 1 conflict, task 2 is orthogonal to both and must stay as it is; the result is the sum.")
    j.close("inputs_unchanged", "the input gradients after project_conflicting", j.got("inputs_unchanged"),
            "inputs_unchanged.y", "Work on a copy (g.clone()): the caller's gradients must not change.",
            mistake="step09.inputs_changed")
    runs, again = j.got("order", "y"), j.got("order", "again")
    outcomes = j.e["order.outcomes"]  # (tasks, orders, D): every visiting order's result
    if runs is None or again is None or not j.check(
            "order", runs.shape == (spec["draws"], *outcomes.shape[::2]),
            f"project_conflicting must return one (D,) gradient per task; got {tuple(runs.shape[1:])} per call"):
        return
    seen_orders = set()
    for draw in runs:
        for i in range(outcomes.shape[0]):
            hit = [k for k, o in enumerate(outcomes[i]) if matches(draw[i], o, 1e-5)]
            if not hit:
                j.fail("order", f"task {i}'s projected gradient matches no visiting order of the other tasks. {hint}")
                return
            seen_orders.add((i, hit[0]))
    if not j.check("order", len(seen_orders) > outcomes.shape[0],
                   f"a fixed visiting order: over {spec['draws']} calls with different generators every task visited "
                   f"the others in the same order. PCGrad shuffles the order for each task: torch.randperm(K, "
                   f"generator=generator)", "step09.fixed_order"):
        return
    j.check("order", matches(again, runs[0], 1e-6),
            "the visiting order must come from the `generator` argument: the same seed must give the same result",
            "step09.order_not_from_generator")


def judge_10(t, spec, j: Judge):
    expected, got = j.e["lambda.y"], j.got("lambda")
    if got is not None and got.shape == expected.shape and not matches(got, expected, 1e-9):
        bad = int((got.double() - expected).abs().argmax())
        s, n = spec["lambda_cases"][bad]
        j.fail("lambda", f"annealed_lambda({s}, {n}) is {got[bad].item():.6g} but expected {expected[bad].item():.6g}: "
                         "lambda = step / total_steps clamped to [0, 1] (0 at step 0, pure teacher; 1 from total_steps on)")
    j.close("lambda", "annealed_lambda over the cases", got, "lambda.y", "lambda = step / total_steps clamped to [0, 1].")
    for task in ("sst", "quora", "sts"):
        for k, lam in enumerate(spec["lambdas"]):
            if not j.close(f"targets_{task}", f"mixed_targets({task!r}, gold, teacher, lam={lam})",
                           j.got(f"targets_{task}", f"lam{k}"), f"targets_{task}.lam{k}",
                           f"A {task} target is lam * gold + (1 - lam) * teacher"
                           + (" with gold one-hot (B, 5)" if task == "sst" else " (gold as float)") + "."):
                break
    j.close("loss_sst", "distill_loss('sst', logits, target)", j.got("loss_sst"), "loss_sst.y",
            "Soft cross-entropy: -sum_c target_c * log_softmax(logits)_c per row, then the mean over the rows.")
    j.close("loss_quora", "distill_loss('quora', logits, target)", j.got("loss_quora"), "loss_quora.y",
            "Binary cross-entropy with logits against the soft probability target.")
    j.close("loss_sts", "distill_loss('sts', scores, target)", j.got("loss_sts"), "loss_sts.y",
            "Mean squared error between the predicted scores and the mixed target scores; a scalar.")


def judge_11(t, spec, j: Judge):
    j.close("supervised", "supervised_loss(logits, labels, labelled)", j.got("supervised"), "supervised.y",
            "Expected the mean cross-entropy of logits[labelled, :k] against labels[labelled].")
    j.close("supervised_none", "supervised_loss with no labelled row", j.got("supervised_none"), "supervised_none.y",
            "A batch without labelled rows has no supervised term: return a zero tensor (not 0/0 = nan).",
            mistake="step11.no_labelled_nan")
    j.close("d_unsupervised", "discriminator_loss with no labelled rows", j.got("d_unsupervised"), "d_unsupervised.y",
            "D's loss is -mean log(1 - p_fake(real)) - mean log p_fake(fake), p_fake = softmax(logits)[:, -1].")
    j.close("d_supervised", "discriminator_loss with labelled rows", j.got("d_supervised"), "d_supervised.y",
            "D's loss = supervised_loss(real_logits, labels, labelled) + the two unsupervised terms.")
    j.close("d_ac", "discriminator_loss with fake_labels (AC-GAN)", j.got("d_ac"), "d_ac.y",
            "With fake_labels, add CE(fake_logits[:, :k], fake_labels).")
    j.close("g_adversarial", "generator_loss with real features == fake features", j.got("g_adversarial"),
            "g_adversarial.y", "With identical features G's loss is its adversarial term -mean log(1 - p_fake(fake)).")
    j.close("g_matching", "generator_loss (6 real rows, 7 fakes, 5 features)", j.got("g_matching"), "g_matching.y",
            "Feature matching: mean over the features of (mean real features - mean fake features)^2.")
    j.close("g_ac", "generator_loss with fake_labels (AC-GAN)", j.got("g_ac"), "g_ac.y",
            "With fake_labels, add CE(fake_logits[:, :k], fake_labels).")
    real_grad, fake_grad = j.got("g_gradients", "real"), j.got("g_gradients", "fake")
    if real_grad is None or fake_grad is None:
        return
    if j.check("g_gradients", real_grad.shape == t["real_f"].shape and float(real_grad.abs().max()) == 0.0,
               "real_features got a gradient: the real side is a fixed target for G; use real_features.detach()",
               "step11.real_not_detached"):
        j.close("g_gradients", "the gradient of generator_loss with respect to fake_features", fake_grad,
                "g_gradients.fake", "The fake features must get the feature-matching gradient.")


def judge_12(t, spec, j: Judge):
    j.close("sst", "batch_loss('sst', ...) with the default options", j.got("sst"), "sst.y",
            "The sst training loss is tasks.task_loss('sst', args) of the head output task_output(net, 'sst', batch, "
            "args) against batch['labels'] (on args.device).")
    j.close("weighted", f"batch_loss('quora', ..., weight={spec['weight']}) with --loss-weights "
                        f"quora={spec['loss_weight']}", j.got("weighted"), "weighted.y",
            "Multiply the loss by the task's weight args.loss_weights.get(task, 1.0) and by the batch's weight.")
    j.close("sts_cosent", "batch_loss('sts', ...) with --sts-loss cosent", j.got("sts_cosent"), "sts_cosent.y",
            "The training loss is the one the options pick: tasks.task_loss(task, args).")
    j.close("mnrl", f"batch_loss('quora', ...) with --quora-mnrl {spec['mnrl']}", j.got("mnrl"), "mnrl.y",
            "With a second loss on, add tasks.aux_weight(task, args) x aux_output(model, task, batch, args).")
    j.close("gradient", "the gradient of batch_loss('sst', ...) with respect to the sst head's weights",
            j.got("gradient", "W"), "gradient.W",
            "The loss must reach the head's weights through the head output: no detach, no argmax, no .item().")


STEPS = {6: (judge_6, ADAMW_CASES, {name: ["first_step_corrected"] for name in ADAMW_CASES[2:]}),
         7: (judge_7, ["mean", "poisoned", "empty_row", "head_cls", "head_mean", "head_pooler"],
             {"poisoned": ["mean"], "empty_row": ["mean"], "head_mean": ["mean"]}),
         8: (judge_8, ["pair_features", "cosine", "cosine_extremes", "loss_sst", "loss_quora", "loss_sts"],
             {"cosine_extremes": ["cosine"]}),
         9: (judge_9, ["no_conflict", "pair", "sum", "inputs_unchanged", "order"], {"sum": ["pair"], "order": ["pair"]}),
         10: (judge_10, ["lambda", "targets_sst", "targets_quora", "targets_sts", "loss_sst", "loss_quora", "loss_sts"],
              {}),
         11: (judge_11, ["supervised", "supervised_none", "d_unsupervised", "d_supervised", "d_ac", "g_adversarial",
                         "g_matching", "g_ac", "g_gradients"],
              {"d_supervised": ["supervised", "d_unsupervised"], "d_ac": ["d_supervised"], "g_matching": ["g_adversarial"],
               "g_ac": ["g_matching"]}),
         12: (judge_12, ["sst", "weighted", "sts_cosent", "mnrl", "gradient"],
              {"weighted": ["sst"], "sts_cosent": ["sst"], "mnrl": ["sst"], "gradient": ["sst"]})}
