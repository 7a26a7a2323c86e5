"""The graded steps: the single source of truth for numbers, names, points and what to implement.

Each step is a probe (course/probes.py, run on the student's code), a verdict (course/checks_*.py, run
by the checker) and the solution fences it grades. A fence is the
block between `# BEGIN SOLUTION` and `# END SOLUTION` comment lines (make_student.py replaces it with
`raise NotImplementedError("step N: ...")`). Its label comes from the text after the marker
(`# BEGIN SOLUTION step 7: mean pooling`) when there is one, otherwise from `fences` below, keyed by
file and enclosing function. Adding a step = a probe, a verdict and one row here.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    number: int
    name: str
    points: float
    description: str                 # one line, for the score table and the student README
    # file -> {enclosing function -> what to implement there}; empty for a step with no code of its own
    fences: dict[str, dict[str, str]] = field(default_factory=dict)


STEPS: list[Step] = [
    Step(1, "Multi-head self-attention", 10,
         "the additive padding mask and softmax(Q K^T / sqrt(head_size) + mask) V with dropout",
         {"minbert/attention.py": {
             "extended_attention_mask": "turn the (B, T) 0/1 padding mask into an additive (B, 1, 1, T) mask",
             "attention": "scaled dot-product attention softmax(q k^T / sqrt(head_size) + mask) v"}}),
    Step(2, "Transformer layer", 10,
         "post-LN residual blocks: LN(x + attention), then LN(x + feed-forward)",
         {"minbert/layer.py": {
             "forward": "post-LN layer: x = LN(x + Dropout(attn(x))); x = LN(x + Dropout(FFN(x)))"}}),
    Step(3, "Embeddings", 10,
         "word + position + token-type embeddings, then LayerNorm and dropout",
         {"minbert/embeddings.py": {
             "forward": "sum word, position and token-type embeddings, then LayerNorm and dropout"}}),
    Step(4, "BertModel and pooler", 10,
         "the pooler tanh(dense([CLS])) and the whole model against the reference",
         {"minbert/model.py": {"forward": "the pooler: tanh of the dense layer applied to the [CLS] vector"}}),
    Step(5, "Loading a pretrained checkpoint", 5,
         "from_pretrained / save_pretrained reproduce the reference outputs (needs steps 1-4)"),
    Step(6, "AdamW", 15,
         "Adam moments, bias correction and decoupled weight decay, per parameter group",
         {"minbert/optimizer.py": {
             "update": "one AdamW update: moments, bias-corrected step, decoupled weight decay"}}),
    Step(7, "Sentiment classifier", 10,
         "masked mean pooling and the SST-5 head on the [CLS], mean or pooler vector",
         {"heads/pooling.py": {"mean_pool": "masked mean over the real tokens (B, T, C) -> (B, C)"},
          "heads/sentiment.py": {"forward": "pool (cls / mean / pooler), then self.classifier -> logits"}}),
    Step(8, "Multitask heads and losses", 10,
         "pair features [u, v, |u - v|, u * v], the cosine similarity score, the three task losses",
         {"heads/paraphrase.py": {"pair_features": "concatenate [u, v, |u - v|, u * v] -> (B, 4C)"},
          "heads/similarity.py": {"cosine_score": "5 * relu(cos(u, v)) -> (B,)"},
          "training/multitask/tasks.py": {"loss_from_output": "cross-entropy (sst), BCE with logits (quora), MSE (sts)"}}),
    Step(9, "PCGrad", 10,
         "project each task gradient off the ones it conflicts with (Yu et al. 2020)",
         {"training/engine/pcgrad.py": {"project_conflicting": "PCGrad: remove each conflicting component, "
                                                        "using the other tasks' original gradients"}}),
    Step(10, "Distillation targets", 10,
         "BAM! teacher annealing: the lambda schedule, gold/teacher mixed targets and the soft losses",
         {"training/methods/distill_targets.py": {
             "annealed_lambda": "lambda = step / total_steps, clamped to [0, 1]",
             "mixed_targets": "lam * gold + (1 - lam) * teacher, gold one-hot (B, 5) for sst",
             "distill_loss": "soft cross-entropy (sst), BCE with logits on soft labels (quora), MSE (sts)"}}),
    Step(11, "GAN-BERT losses", 10,
         "semi-supervised GAN losses: labelled-only cross-entropy, D's real/fake terms, G's adversarial "
         "+ feature matching, the AC-GAN class terms",
         {"training/methods/gan.py": {
             "_log_p_fake": "(log p_fake, log(1 - p_fake)) per row from the k + 1 logits, without forming 1 - p "
                            "(logsumexp)",
             "supervised_loss": "cross-entropy on logits[labelled, :k] (0 when no row is labelled)",
             "discriminator_loss": "supervised - mean log(1 - p_fake(real)) - mean log p_fake(fake) "
                                   "[+ CE(fake_logits[:, :k], fake_labels)]",
             "generator_loss": "-mean log(1 - p_fake(fake)) + feature matching (real features detached) "
                               "[+ CE(fake_logits[:, :k], fake_labels)]"}}),
    Step(12, "The multitask training step", 10,
         "the loss of one batch of a task, which the loop differentiates: the task's training loss (as "
         "--sts-loss picks it), the --quora-mnrl term, the task and stream weights; graded with its gradient",
         {"training/multitask/recipe.py": {
             "batch_loss": "the weighted training loss of one task batch: task_loss(task_output) (or rdrop_loss), "
                           "+ aux_weight * aux_output, x loss_weights[task] x weight"}}),
]


# The larger-piece assignment (`pieces = "large"` in course/assignment.toml, close to CS224N's handout)
# widens steps by these fences; the standard one ships them solved. file -> {function -> (step, what)}.
LARGE: dict[str, dict[str, tuple[int, str]]] = {
    "minbert/attention.py": {"split_heads": (1, "(B, T, C) -> (B, nh, T, hs): view the channels as heads, then "
                                                "put the heads before time"),
                             "forward": (1, "split q, k, v into heads (B, nh, T, hs), call self.attention, merge the "
                                            "heads back to (B, T, C), then self.proj")},
}


# Steps only the larger-piece assignment (course/assignment-large.toml) lists; course/assignment.toml ships them solved.
LARGE_STEPS = (12,)


def is_large(path: str, function: str | None) -> bool:
    return function in LARGE.get(path, {})


def get_steps(numbers: list[int] | None = None) -> list[Step]:
    """The steps with these numbers (all when None), in table order; unknown numbers are an error."""
    if numbers is None:
        return list(STEPS)
    known = {s.number: s for s in STEPS}
    unknown = [n for n in numbers if n not in known]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; the steps are {sorted(known)}")
    return [known[n] for n in sorted(set(numbers))]


def fence_label(path: str, function: str | None, marker_text: str = "") -> tuple[int | None, str]:
    """(step number or None, label) for a fence in `path` inside `function`.

    The marker's own text wins ("step 7: mean pooling"); otherwise the table above; otherwise the
    fence belongs to no step and gets a generic label (tests/test_course.py flags that).
    """
    text = marker_text.strip()
    if text:
        head = text.split(":", 1)[0].split()
        number = int(head[1]) if len(head) == 2 and head[0].lower() == "step" and head[1].isdigit() else None
        return number, text
    for step in STEPS:
        what = step.fences.get(path, {}).get(function or "")
        if what:
            return step.number, f"step {step.number}: {what}"
    if is_large(path, function):
        number, what = LARGE[path][function]
        return number, f"step {number}: {what}"
    return None, f"implement {function or 'this block'} in {path}"

