"""The student handout: the release's README.md (the assignment) and PROJECT.md (the project as a student
sees it). Instructors only: make_student.py calls readme() and project(); the release gets their text.

Everything that can drift is read, not written here: the steps, points and what to implement from
course/steps.py, the signatures and docstrings of the fenced functions from the code (ast), the test
names from the verdicts and the passing score line from course.grade's own table. What is written here:
the background of each step (BACKGROUND, with its papers) and the results measured on the release
with every step solved (RESULTS; commands and logs in docs/results/release/).
"""
from __future__ import annotations

import ast
from pathlib import Path

from .compare import TestResult
from .grade import VERDICTS, StepResult, format_table
from .steps import STEPS, Step
from .submit import PREDICTION_FILES, graded_files

REPO = Path(__file__).resolve().parents[1]

# key -> (title, authors, year, link)
PAPERS = {
    "bert": ("BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
             "Devlin, Chang, Lee and Toutanova", 2018, "https://arxiv.org/abs/1810.04805"),
    "transformer": ("Attention Is All You Need", "Vaswani et al.", 2017, "https://arxiv.org/abs/1706.03762"),
    "adam": ("Adam: A Method for Stochastic Optimization", "Kingma and Ba", 2015, "https://arxiv.org/abs/1412.6980"),
    "adamw": ("Decoupled Weight Decay Regularization", "Loshchilov and Hutter", 2019,
              "https://arxiv.org/abs/1711.05101"),
    "sbert": ("Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks", "Reimers and Gurevych", 2019,
              "https://arxiv.org/abs/1908.10084"),
    "pcgrad": ("Gradient Surgery for Multi-Task Learning", "Yu et al.", 2020, "https://arxiv.org/abs/2001.06782"),
    "bam": ("BAM! Born-Again Multi-Task Networks for Natural Language Understanding", "Clark et al.", 2019,
            "https://arxiv.org/abs/1907.04829"),
    "ganbert": ("GAN-BERT: Generative Adversarial Learning for Robust Text Classification with a Bunch of "
                "Labeled Examples", "Croce, Castellucci and Basili", 2020,
                "https://aclanthology.org/2020.acl-main.191 (ACL 2020)"),
}

# step -> (a few sentences of background, the papers it comes from)
BACKGROUND: dict[int, tuple[str, list[str]]] = {
    1: ("BERT's encoder is the Transformer's: each head projects every token to a query, a key and a value, "
        "scores each query against every key by a dot product scaled by 1/sqrt(head_size), turns the scores "
        "into weights with a softmax over the keys and averages the values with them. Batches are padded to "
        "one length, so a (B, T) mask of 1 (real) / 0 (padding) becomes an additive mask: a very negative "
        "number on the padded keys' scores gives them ~0 weight. BERT applies dropout to the attention "
        "probabilities. Splitting the heads and merging them back is given in `SelfAttention.forward`.",
        ["transformer", "bert"]),
    2: ("A BERT layer wraps attention and a two-layer feed-forward network (GELU in between) in residual "
        "connections with the Transformer's original post-LayerNorm order: the LayerNorm comes after the "
        "residual sum, `x = LN(x + Dropout(attn(x)))`, then `x = LN(x + Dropout(FFN(x)))`. The grader runs "
        "your layer on a stand-in attention, so this step does not depend on step 1.",
        ["transformer", "bert"]),
    3: ("BERT's input representation is the sum of three learned embeddings: the word piece, its position "
        "(0 .. T-1) and its segment (token type 0 for the first sentence, 1 for the second; all 0 when none "
        "is given), followed by LayerNorm and dropout.", ["bert"]),
    4: ("The pooler turns the final hidden state of the first token, [CLS], into a sentence vector: a dense "
        "layer followed by tanh. The rest of `BertModel.forward` (embeddings, then the layers) is given; the "
        "whole-model tests of this step run your steps 1-3 too.", ["bert"]),
    5: ("There is nothing new to write: the given `BertModel.from_pretrained` and `save_pretrained` load "
        "real checkpoints (the Hugging Face and the original Google layouts) into your model. This step "
        "checks that your steps 1-4 reproduce a real BERT, all-MiniLM-L6-v2, to the checker's tolerance.",
        ["bert"]),
    6: ("Adam keeps running means of the gradient (m) and of its square (v), corrects their bias towards "
        "zero in the first steps, and steps by m / (sqrt(v) + eps). AdamW decouples the weight decay: it "
        "shrinks the weights themselves, p -= lr * weight_decay * p, instead of adding the decay to the "
        "gradient, where Adam's per-parameter step size would rescale it. The module docstring of "
        "`minbert/optimizer.py` gives the update order "
        "the grader expects (bias correction folded into the step size, eps added without correction, the "
        "decay applied after the Adam step).", ["adam", "adamw"]),
    7: ("A sentence classifier pools the encoder's output into one vector and applies a linear layer: the "
        "[CLS] vector, the pooler output, or the mean of the real tokens' vectors (the padding must not "
        "count, and an all-padding row must not give 0/0). SST-5 has five sentiment classes; the head "
        "returns logits, and cross-entropy does the softmax.", ["bert", "sbert"]),
    8: ("The multitask model shares one encoder between three heads. Paraphrase detection on two sentence "
        "vectors u and v uses Sentence-BERT's features [u, v, |u - v|, u * v]; similarity is scored on the "
        "STS scale 0-5 as 5 * relu(cos(u, v)). The losses: cross-entropy for SST's five classes, binary "
        "cross-entropy with logits for Quora, mean squared error for the STS score.", ["sbert", "bert"]),
    9: ("When two tasks' gradients conflict (a negative dot product), a step along their sum can hurt one of "
        "them. PCGrad projects each task's gradient onto the normal plane of every other task's gradient it "
        "conflicts with, visiting the others in a random order, and always against their original "
        "gradients; gradients that do not conflict are left alone (Algorithm 1 of the paper).", ["pcgrad"]),
    10: ("Born-again multi-task distillation: single-task teachers label the training set, and the multitask "
         "student learns from a mix of the gold label and the teacher's output. Teacher annealing moves the "
         "weight of the gold label, lambda, linearly from 0 to 1 over training, so the student first imitates "
         "the teachers and ends on the gold labels. The losses are the tasks' losses on soft targets.",
         ["bam"]),
    11: ("GAN-BERT adds a generator of fake sentence vectors and makes the classifier a discriminator over "
         "k + 1 classes, the k real ones and 'fake', so unlabelled sentences help: the discriminator learns "
         "to tell real from fake, the generator to fool it and to match the real vectors' mean features. "
         "The losses here are written from p_fake, the softmax's last column, computed in log space so that "
         "1 - p_fake never rounds to 0. The AC-GAN variant also asks the discriminator for the fake rows' "
         "intended classes.", ["ganbert"]),
    12: ("The training step of the multitask model: the loop draws a batch of one task, asks for its loss, "
         "differentiates it (`loss.backward()`, or PCGrad's per-task gradients, with the fp16 loss scale and "
         "--accumulate's micro-batches applied around it) and steps the optimizer. You write the loss the loop "
         "differentiates, `batch_loss`: the task's training loss of its head output against the labels (the "
         "options choose it: --sts-loss cosent swaps STS's MSE for CoSENT, --rdrop uses R-Drop's), plus the "
         "task's second loss when an option turns it on (--quora-mnrl), times the task's --loss-weights and the "
         "batch's weight from its data stream. The grader checks the value under each option and the gradient "
         "it sends back into the head's weights, on a stand-in model.", ["bert", "sbert"]),
}

# Measured on the release with every step solved (make_student, then make_student --solve), run by an
# interpreter without the instructors' tree, beside the same command in the solution repository (its fast
# paths): docs/results/release/README.md has the commands and the logs. AMD EPYC (AVX512-BF16), 2 cores
# shared with other work, load average about 2.
RESULTS = {
    "machine": "AMD EPYC, 2 cores shared with other work, load average about 2",
    "quick": {  # training/run_multitask.py --preset quick --device cpu: 1 epoch, 800 examples per task, 75 steps
        "release": {"wall_s": 44.5, "train_s": 30, "sst": 0.2700, "quora": 0.6633, "sts": 0.8580, "overall": 0.6208},
        "solution": {"wall_s": 41.1, "train_s": 27, "sst": 0.2733, "quora": 0.6733, "sts": 0.8596,
                     "overall": 0.6255},
    },
    "grade": {"unsolved": {"wall_s": 12.7, "points": 0}, "solved": {"wall_s": 14.1, "points": 110}},
    "pytest_unsolved": {"failed": 11, "passed": 122, "skipped": 14, "seconds": 14.3},
    "pytest_solved": {"failed": 0, "passed": 133, "skipped": 14, "seconds": 19.3},
}

PY = ".venv/bin/python"


def cite(key: str) -> str:
    title, authors, year, link = PAPERS[key]
    return f"{authors} {year}, *{title}*, {link}"


def signatures(fences: list, root: Path = REPO) -> dict[tuple[str, str | None, str], str]:
    """(path, class or None, function) -> the function's signature and docstring as Python source, for
    the function enclosing each fence, read from the code in `root` with ast. A method's source starts
    with its class line (`class SelfAttention(nn.Module):`)."""
    found = {}
    for f in fences:
        tree = ast.parse((root / f.path).read_text(encoding="utf-8"))
        for owner, node in _functions(tree):
            if node.lineno <= f.begin <= node.end_lineno and node.name == f.function:
                head = [f"class {owner.name}({', '.join(ast.unparse(b) for b in owner.bases)}):"] if owner else []
                found[(f.path, owner and owner.name, node.name)] = "\n".join(
                    head + [_signature_source(node, "    " if owner else "")])
    return found


def qualified(fence, sigs: dict) -> str:
    """`SelfAttention.attention` for a method's fence, `mean_pool` for a function's."""
    owner = next((o for (p, o, name) in sigs if p == fence.path and name == fence.function and o), None)
    return f"{owner}.{fence.function}" if owner else str(fence.function)


def _functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield None, node
        elif isinstance(node, ast.ClassDef):
            yield from ((node, sub) for sub in node.body if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _signature_source(node: ast.FunctionDef, indent: str) -> str:
    decorators = [f"{indent}@{ast.unparse(d)}" for d in node.decorator_list]
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    doc = ast.get_docstring(node)
    doc_lines = [(indent + "    " + line).rstrip() for line in doc.splitlines()] if doc else []
    if doc_lines:
        doc_lines[0] = doc_lines[0].replace(indent + "    ", indent + '    """', 1)
        doc_lines[-1] += '"""'
    body = doc_lines + [f"{indent}    ..."]
    return "\n".join(decorators + [f"{indent}def {node.name}({ast.unparse(node.args)}){returns}:"] + body)


def passing_line(step: Step) -> str:
    """The score table's row for this step with every test passed, by course.grade's own formatter."""
    tests = [TestResult(name, "passed") for name in VERDICTS[step.number][1]]
    return format_table([StepResult(step, "passed", tests)]).splitlines()[1].rstrip()


def step_section(step: Step, fences: list, sigs: dict) -> list[str]:
    text, papers = BACKGROUND[step.number]
    mine = [f for f in fences if f.step == step.number]
    if any(f.large for f in mine):  # the larger-piece assignment: the heads' split and merge are the student's too
        text = text.replace("Splitting the heads and merging them back is given in `SelfAttention.forward`.",
                            "You also split the heads and merge them back: `SelfAttention.split_heads` and the "
                            "whole `SelfAttention.forward`.")
    out = [f"## Step {step.number}: {step.name} ({step.points:g} points)", "", text, "",
           "Paper" + ("s" if len(papers) > 1 else "") + ": " + "; ".join(cite(p) for p in papers) + ".", ""]
    if mine:
        out += ["**Write** (replace each `raise NotImplementedError(\"step "
                f"{step.number}: ...\")`):", ""]
        for f in mine:
            out.append(f"- `{f.path}`, `{qualified(f, sigs)}`: {f.label.split(': ', 1)[-1]}")
        out += ["", "```python"]
        for path in dict.fromkeys(f.path for f in mine):
            out.append(f"# {path}")
            for (p, owner, name), source in sigs.items():
                if p == path and any(f.path == p and f.function == name for f in mine):
                    out += [source, ""]
        out[-1:] = ["```", ""]
    else:
        out += ["**Write**: nothing new; this step grades your steps 1-4 together.", ""]
    out += ["**Check** it:", "", "<!-- run -->", "```bash",
            f"{PY} -m course.grade --steps {step.number}",
            f"{PY} -m pytest tests/graded -k step{step.number:02d}",
            "```", "",
            f"and, to stop in your code at its first exception, `{PY} -m pytest tests/graded "
            f"-k step{step.number:02d} --pdb --raise`.", "",
            f"**Correct** when the score table's row reads (tests: {', '.join(VERDICTS[step.number][1])}):", "",
            "```text", passing_line(step), "```", ""]
    return out


def readme(fences: list, has_project_readme: bool = True, root: Path = REPO, steps: list[Step] | None = None) -> str:
    """The release's README.md: the assignment. `fences` are make_student's (the code removed); `steps`
    the steps students write (default: all of course/steps.py)."""
    steps = STEPS if steps is None else steps
    sigs = signatures(fences, root)
    total = sum(s.points for s in steps)
    q, g, t = RESULTS["quick"], RESULTS["grade"], RESULTS["pytest_unsolved"]
    rows = []
    for s in steps:
        where = list(dict.fromkeys(f"`{f.path}`: " + ", ".join(f"`{qualified(h, sigs)}`" for h in fences
                                   if h.step == s.number and h.path == f.path) for f in fences if f.step == s.number))
        rows.append(f"| {s.number} | {s.name} | {s.points:g} | {'; '.join(where) or 'nothing new (needs 1-4)'} |")
    parts = ["# minBERT assignment", "",
             f"You write BERT by hand in PyTorch, then the heads, the losses and the optimizer that fine-tune it "
             f"on three tasks at once, then three research extensions: {len(steps)} steps, {total:g} points. "
             "Each step is a few functions of the project whose bodies are `raise NotImplementedError(\"step N: "
             "...\")`: keep the signatures, replace the raise with your code. Steps 1-5 build the model and "
             "step 5 runs it whole; " + ("steps 6-12 use no model (step 12 a stand-in) " if any(s.number == 12 for s in steps) else "steps 6-11 use no model ") + "and can be done in any order.", "",
             "## Set up", "",
             "One command makes `.venv` with torch (CPU), tokenizers and the pretrained checkpoint:", "",
             "<!-- run -->", "```bash", "bash setup.sh", f"{PY} -m course.grade", "```", "",
             f"Run everything with `{PY}` (or activate it: `. .venv/bin/activate`). Before you write anything "
             f"the grade is 0 / {total:g}, each step failing with its NotImplementedError.", "",
             "| step | name | points | write |", "|---|---|---|---|", *rows, f"| | **total** | **{total:g}** | |", ""]
    for k, s in enumerate(steps):
        # CI runs the marked blocks (tests/test_docs_run.py): the first step's check block stands for all of
        # them (they differ only in the step number; all 11 cost ~2 min on 2 cores), and the grading block
        # below runs every step's grade and graded test.
        parts += [line for line in step_section(s, fences, sigs) if k == 0 or line != "<!-- run -->"]
    parts += ["## Grading, and what the tests run", "",
              "`course.grade` runs each step in a separate process on the stored public inputs (course/public/) and "
              "scores it: points x (tests passed / tests in the step). A crash or a hang costs only that step. "
              "When a test builds on one that failed, it says \"fix the first failure first\". The course's "
              "autograder grades the same way on fresh secret inputs.", "",
              "<!-- run -->", "```bash", f"{PY} -m course.grade", f"{PY} -m pytest -q", "```", "",
              "`pytest -q` runs `tests/graded` (one test per step, on the same stored public inputs, "
              "failing until that step is done) and the unit tests shipped with the release (the data loaders, "
              "batching, the data download, the CPU pin), which do not depend on any step. As handed out, it "
              f"gives {t['failed']} failed (the {len(steps)} steps), {t['passed']} passed and {t['skipped']} "
              f"skipped in {t['seconds']:g} s; with every step done, {RESULTS['pytest_solved']['passed']} passed and "
              f"{RESULTS['pytest_solved']['skipped']} skipped (measured).", "",
              "## This release: your code is the code that runs", "",
              "The trainers run on what you write: your attention, your layer, your AdamW. The project's fast "
              "paths (PyTorch's fused attention, skipping padded tokens, a fused AdamW kernel) would compute "
              "those steps for you, so this release leaves them out, and its defaults are "
              "`--attn manual --no-unpad --adamw graded`. Asking for a fast path (`--attn sdpa`, `--unpad`, "
              "`--adamw fused`) falls back to your code and says so once.", "",
              f"Measured once every step is solved ({RESULTS['machine']}): `--preset quick` trains in "
              f"{q['release']['train_s']} s ({q['release']['wall_s']:g} s in all) against "
              f"{q['solution']['train_s']} s ({q['solution']['wall_s']:g} s) for the project's fast paths; "
              f"`course.grade` takes {g['unsolved']['wall_s']:g} s as handed out and "
              f"{g['solved']['wall_s']:g} s when done. PROJECT.md has the scores.", "",
              "## Submit", "",
              "<!-- run -->", "```bash", f"{PY} -m course.submit", "```", "",
              "writes `submission.zip` with exactly the graded files, plus the prediction files the trainers "
              "wrote in `predictions/` if there are any. It refuses a tree with a graded file missing and "
              "warns about a step still unfinished. Upload the zip as it is. The graded files:", ""]
    parts += [f"- `{rel}`" for rel in graded_files(steps=steps)]
    parts += ["", "and the prediction files, when present: " + ", ".join(f"`{p}`" for p in PREDICTION_FILES) + ".",
              "", "## Rules", "",
              "- Write code only in the graded files; do not edit `tests/` or `course/`. Helper functions of your "
              "own in the graded files are fine.",
              "- No `transformers` (nor `sentence_transformers`), and none of its code copied: the point is to "
              "write BERT yourself.",
              "- No library call that does the step for you. While a step is graded these raise an error that "
              "fails the test (`course/guard.py`): `F.scaled_dot_product_attention` and `nn.MultiheadAttention` "
              "in step 1; `torch.optim.Adam`, `torch.optim.AdamW`, their functions and torch's fused Adam/AdamW "
              "kernels in step 6; importing `transformers` in every step. `torch.softmax`, `torch.matmul`, `@`, "
              "`torch.einsum`, `F.linear`, `F.layer_norm`, `F.dropout`, `F.cross_entropy` and the like are fine.",
              "- Your own work: discuss ideas, but do not share or copy code.", "",
              "## FAQ", "", *FAQ]
    if has_project_readme:
        parts += ["What you are building, the commands to train and predict once done and the results to expect: "
                  "PROJECT.md.", ""]
    return "\n".join(parts)


FAQ = [
    "**My step passes locally but loses points on the autograder.** Locally every student gets the same "
    "stored inputs (course/public/); the autograder draws fresh secret ones, of the same shapes. Code that "
    "special-cases the public values, hard-codes a size (T, C, the number of heads) or breaks when a row is "
    "all padding passes here and fails there. Test your function on your own random inputs too.", "",
    "**What does \"fix the first failure first\" mean?** Some tests build on others (step 1's `forward` "
    "builds on `padding`, which builds on `no_mask`). When the one they build on fails, they fail too and "
    "say so instead of guessing a mistake of their own: fix the test they name and they usually pass.", "",
    "**Why is training slower than the project's numbers?** The release runs the teaching path, your code: "
    "no fused attention, no unpadding (padded tokens are computed too), no fused AdamW. The quick preset's "
    "measured times are above, beside the project's fast paths on the same machine.", "",
    "**Can I add helper functions?** Yes, in the graded files (they are what you submit); a helper in "
    "another file is not submitted and the autograder will not find it.", "",
    "**Where are the data files?** `--data-dir`, else `$MINBERT_DATA_DIR`, else `../shared/data` beside this "
    "folder (the course's CSV files). `python data/download.py --help` fetches them where you have internet. "
    "The grader needs no data files.", "",
    f"**How do I debug with pdb?** `{PY} -m pytest tests/graded -k step01 --pdb --raise` stops in your code at "
    "its first exception; without `--raise` an exception is reported as the test's failure, as the grader "
    "does. `breakpoint()` in your code works too (add `-s` to see the prompt).", "",
    "**Do I need a GPU?** No: the grader and the trainers' defaults run on the CPU, and every figure here was "
    "measured on a 2-core CPU.", "",
]


def project() -> str:
    """The release's PROJECT.md: what students build, how to run it once done, what to expect."""
    q = RESULTS["quick"]
    row = lambda name, r: (f"| {name} | {r['sst']:.3f} | {r['quora']:.3f} | {r['sts']:.3f} | {r['overall']:.3f} | "
                           f"{r['train_s']} s ({r['wall_s']:g} s) |")
    return "\n".join([
        "# minBERT: the project you are building", "",
        "Once the steps of README.md are done, this folder is a complete BERT, written by you, that loads real "
        "pretrained weights and fine-tunes on three tasks at once, the CS224N default final project:", "",
        "- **the model** (steps 1-5): embeddings, multi-head self-attention, the post-LN Transformer layer, the "
        "pooler, and the given loader that reads the pretrained all-MiniLM-L6-v2 (6 layers, hidden size 384, "
        "22M parameters, shipped inside a PyPI package: nothing is downloaded at run time) into your model;",
        "- **the optimizer** (step 6): AdamW, which fine-tunes every weight;",
        "- **the heads** (steps 7-8): SST-5 sentiment (five classes) on a pooled sentence vector, Quora paraphrase "
        "detection and STS similarity (a 0-5 score) on sentence pairs, with their losses;",
        "- **multitask training**: `training/run_multitask.py` trains one shared encoder on the three tasks, "
        "evaluates on dev after every epoch, keeps the best checkpoint and writes the course's prediction files;",
        "- **three research extensions** (steps 9-11): PCGrad gradient surgery between the tasks "
        "(`--pcgrad`), BAM! distillation from single-task teachers with teacher annealing "
        "(`training/run_distill.py`), and GAN-BERT's semi-supervised training with few labels "
        "(`training/run_gan.py`).", "",
        "## Train and predict, once done", "",
        "```bash",
        f"{PY} training/run_multitask.py --preset quick      # a smoke run: under a minute",
        f"{PY} training/run_multitask.py                     # the full run: runs/multitask/best/, predictions/",
        f"{PY} training/run_multitask.py --pcgrad            # step 9: one batch per task, PCGrad-projected",
        f"{PY} training/run_predict.py --run runs/multitask/best --task sst \"A gripping, funny film.\"",
        f"{PY} training/run_classifier.py --task sst --mode finetune   # SST-5 alone",
        f"{PY} training/run_distill.py all --preset quick    # step 10: teachers, then the annealed student",
        f"{PY} training/run_gan.py --task sst --method gan --labelled 0.05 --seed 1   # step 11",
        f"{PY} -m course.submit                              # the zip to upload, with the prediction files",
        "```", "",
        "Each script's `--help` explains every option. The data is read from `--data-dir`, `$MINBERT_DATA_DIR` "
        "or `../shared/data` beside this folder.", "",
        "## Results to expect", "",
        f"Measured on this release with every step solved, on a CPU ({RESULTS['machine']}), beside the same "
        "command in the project's solution, which has the fast paths (fused attention, unpadding, fused AdamW) "
        "this release leaves out. `--preset quick --device cpu`: one epoch on 800 training examples per task, "
        "75 steps, scored on 300 dev examples per task:", "",
        "| code | SST acc | Quora acc | STS Pearson | overall | training (whole run) |", "|---|---|---|---|---|---|",
        row("this release, solved", q["release"]), row("the project's fast paths", q["solution"]), "",
        "The quick preset is a smoke test, not a result: small subsets, one epoch. The full default run (every "
        "training example, several epochs) was not measured on this release, so no figure is given for it.", ""])
