"""Few labels, many unlabelled sentences: plain classifier vs GAN-BERT vs AC-GAN-BERT (training/methods/gan.py).

    python training/run_gan.py --task sst --method gan --labelled 0.05 --seed 1
    python training/run_gan.py --task sst --sweep --seeds 1,2,3 --freeze-encoder     # the whole grid
    python training/run_gan.py --task sst --sweep --seeds 1 --out-dir runs/s1          # one seed per core ...
    python training/run_gan.py --task sst --merge runs/s1/sweep.json runs/s2/sweep.json --out-dir runs/all
    python training/run_gan.py --task cfimdb --method acgan --labelled 0.1 --embeddings-plot
    python training/run_gan.py --help

A seeded fraction of the training set keeps its labels (the same examples as
`run_classifier.py --labelled-fraction`); the rest is used without labels. Every method gets the
same budget (--steps steps of --batch-size labelled examples) and the same classifier, the
discriminator's k real-class logits:
  plain : cross-entropy on the labelled batch only
  gan   : GAN-BERT (Croce et al. 2020), adding unlabelled and generated embeddings
  acgan : GAN-BERT with a class-conditioned generator and an auxiliary classifier (Odena et al. 2017)
The collapse ratio printed per GAN run: the spread of the generated embeddings of each class over
that of the real ones (1: as varied as real sentences, 0: collapsed). The conditioning score printed
per GAN run: a logistic-regression probe fitted on real train embeddings and their labels classifies
--probe-fakes generated samples per class; the score is how often it names the class a sample was
generated for (acgan: its conditioning label; gan has no label, so labels drawn at random: a control
that must sit at chance 1/k), with a 95% interval, chance's 95% range and the probe's own dev accuracy.
Details, outputs and results: docs/RESULTS_METHODS.md, section 3.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from data.batching import clamp_max_length, collate, to_device
from heads.sentiment import SentimentHead
from minbert import AdamW, BertModel, Tokenizer
from training.engine import checkpointing
from training.methods import gan_plots
from training.multitask import tasks
from training.methods.gan import (Discriminator, Generator, collapse_ratios, conditioning_score, fit_probe, gan_losses,
                          probe_predict, supervised_loss)
from training.engine.loop import Guard, Loop, Phase, Player, Precision, Report, fit, smooth
from training.multitask.recipe import autocast
from training.engine.optim import param_groups, warmup_linear
from training.multitask.options import add_shared, amp_problems, auto_amp, device_problems
from training.multitask.splits import NUM_CLASSES, labelled_subset, load_sentences
from training.engine.streams import TaskStream

METHODS = ("plain", "gan", "acgan")
FRACTIONS = "0.01,0.02,0.05,0.1,0.2,0.5,1.0"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("experiment")
    add_shared(g, "--task")
    g.add_argument("--method", choices=METHODS, default="gan", help="single run: plain, gan (GAN-BERT) or acgan")
    g.add_argument("--labelled", type=float, default=0.1, help="single run: fraction of training examples with labels")
    g.add_argument("--seed", type=int, default=1, help="single run: labelled subset, init, batches, noise")
    g.add_argument("--sweep", action="store_true", help="run every --fractions x --methods x --seeds combination")
    g.add_argument("--fractions", default=FRACTIONS, help="sweep: comma-separated labelled fractions")
    g.add_argument("--methods", default=",".join(METHODS), help="sweep: comma-separated methods")
    g.add_argument("--seeds", default="1,2,3", help="sweep: comma-separated seeds")
    g.add_argument("--merge", nargs="+", metavar="SWEEP_JSON",
                   help="report sweeps run apart (e.g. one seed per core) as one: their runs, the table, the PNG")
    g.add_argument("--embeddings-plot", action="store_true", help="gan/acgan: PNG of real vs generated embeddings")
    g.add_argument("--projection", choices=["pca", "tsne"], default="pca",
                   help="2-D projection (tsne needs scikit-learn)")
    g.add_argument("--plot-samples", type=int, default=1000, help="real and generated points in the embeddings plot")
    g.add_argument("--probe-train", type=int, default=4000,
                   help="gan/acgan: real train sentences the conditioning probe is fitted on (0: all of them)")
    g.add_argument("--probe-fakes", type=int, default=1000,
                   help="gan/acgan: generated samples per class that the conditioning probe classifies")
    g.add_argument("--probe-steps", type=int, default=300, help="full-batch steps fitting the probe")
    g = p.add_argument_group("data and model")
    add_shared(g, "--data-dir", "--model", "--limit-train", "--limit-eval", "--max-length", "--skip-bad-rows",
               max_length=128)
    g.add_argument("--pooling", choices=["cls", "mean", "pooler"], default="mean",
                   help="real sentence embedding (mean: all-MiniLM-L6-v2 was trained on it; frozen [CLS] is weak)")
    g.add_argument("--freeze-encoder", action="store_true",
                   help="keep BERT fixed (eval mode) and embed every sentence once")
    g.add_argument("--noise-dim", type=int, default=100, help="generator input size (GAN-BERT: 100, uniform noise)")
    g.add_argument("--gan-hidden", type=int, help="hidden width of G and D (default: the encoder's hidden size)")
    g.add_argument("--dropout", type=float, default=0.1, help="dropout in G and D")
    g.add_argument("--acgan-d-classes", choices=["all", "real"], default="all",
                   help="acgan: rows D's class loss learns from: all (real and generated, Odena et al.) or "
                        "real only (G keeps its class loss, so it must aim at the real class regions)")
    g = p.add_argument_group("budget and optimisation (identical for every method)")
    g.add_argument("--steps", type=int, default=500, help="optimizer steps per run")
    g.add_argument("--batch-size", type=int, default=32, help="labelled examples per step (cycled)")
    g.add_argument("--unlabelled-batch-size", type=int,
                   help="gan/acgan: unlabelled examples per step (default: --batch-size)")
    g.add_argument("--lr", type=float, default=5e-5, help="encoder learning rate (GAN-BERT: 5e-5); unused when frozen")
    g.add_argument("--head-lr", type=float, default=1e-4, help="learning rate of D (and of G unless --g-lr)")
    g.add_argument("--g-lr", type=float,
                   help="learning rate of G (default: --head-lr). Below D's, the two time-scale update rule "
                        "(Heusel et al. 2017): D keeps up with G, so G cannot park its samples where D calls them real")
    add_shared(g, "--warmup", "--clip", "--adamw", "--accumulate", warmup=0.1)  # --clip: per player
    g = p.add_argument_group("run")
    add_shared(g, "--device", "--threads")
    add_shared(g, "--amp", amp="none")  # both players' losses share the fp16 scale
    g.add_argument("--log-every", type=int, default=100, help="steps between loss lines")
    g.add_argument("--out-dir", default="runs/gan", help="JSON records, plots, predictions of a single run")
    g.add_argument("--json", help="path of the JSON record (default: OUT_DIR/result.json or OUT_DIR/sweep.json)")
    args = p.parse_args(argv)
    try:
        args.fractions = [float(f) for f in args.fractions.split(",") if f]
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError as e:
        p.error(f"--fractions / --seeds: {e}")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if bad := [m for m in args.methods if m not in METHODS]:
        p.error(f"--methods: unknown {bad}; choose from {','.join(METHODS)}")
    if not all(0 < f <= 1 for f in [*args.fractions, args.labelled]):
        p.error("labelled fractions must lie in (0, 1]")
    if min(args.steps, args.batch_size, args.plot_samples, args.probe_fakes, args.probe_steps, args.accumulate) < 1:
        p.error("--steps, --batch-size, --plot-samples, --probe-fakes, --probe-steps and --accumulate must be at least 1")
    if found := device_problems(args.device):
        p.error(found[0])
    args.amp = auto_amp(args.device) if args.amp == "auto" else args.amp
    if found := amp_problems(args.amp, args.device):
        p.error(found[0])
    if args.probe_train < 0:
        p.error("--probe-train must be 0 (every training sentence) or positive")
    args.unlabelled_batch_size = args.unlabelled_batch_size or args.batch_size
    if args.g_lr is not None and args.g_lr < 0:
        p.error("--g-lr must be 0 or more")
    args.g_lr = args.head_lr if args.g_lr is None else args.g_lr
    return args


@torch.no_grad()
def embed_all(encoder: BertModel, encoded: list[dict], pad_id: int, pooling: str, device) -> torch.Tensor:
    """Sentence embeddings (N, C) of every encoded example in eval mode, row i for example i."""
    encoder.eval()  # called before training (the cache) or after it
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))  # little padding
    out = torch.zeros(len(encoded), encoder.config.hidden_size)
    for start in range(0, len(order), 128):
        idx = order[start:start + 128]
        out[idx] = pool(encoder, collate([encoded[i] for i in idx], pad_id)["inputs"], pooling, device).float().cpu()
    return out


def pool(encoder: BertModel, inputs: dict, pooling: str, device) -> torch.Tensor:
    """Sentence vectors (B, C), pooled as the sentiment head pools them: SentimentHead itself (the
    course's step 7) with its classifier taken off."""
    inputs = to_device(inputs, device)
    out = encoder(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
    with torch.random.fork_rng(devices=[]):  # building the head's classifier must not move the run's random stream
        head = SentimentHead(encoder.config.hidden_size, pooling=pooling)
    head.classifier = torch.nn.Identity()
    return head(out["last_hidden_state"], inputs["attention_mask"], pooler_output=out["pooler_output"])


def load(args) -> dict:
    """Tokenizer, pristine encoder, encoded splits and, with --freeze-encoder, cached embeddings."""
    print(f"loading {args.model} and {args.task} ...")
    tok = Tokenizer.from_pretrained(args.model)
    args.max_length = clamp_max_length(args.max_length, tok)
    encoder = BertModel.from_pretrained(args.model, attn_implementation="sdpa").to(args.device)
    data = load_sentences(args, tok)
    env = {"tok": tok, "encoder": encoder, "data": data, "k": NUM_CLASSES[args.task],
           "labels": torch.tensor([e["label"] for e in data["train"]])}
    if args.freeze_encoder:
        print("embedding every sentence once (frozen encoder) ...")
        env["cache"] = {s: embed_all(encoder, data[s], tok.pad_id, args.pooling, args.device) for s in data}
    return env


def run_one(args, env: dict, method: str, fraction: float, seed: int, write_files: bool = False) -> dict:
    t0 = time.time()
    torch.manual_seed(seed)
    k, data, tok, train_labels = env["k"], env["data"], env["tok"], env["labels"]
    cached = env.get("cache")
    encoder = None if cached else copy.deepcopy(env["encoder"]).train()  # every run starts from the checkpoint
    C = env["encoder"].config.hidden_size
    D = Discriminator(C, k, args.gan_hidden, args.dropout).to(args.device)
    G = Generator(args.noise_dim, C, k if method == "acgan" else 0, args.gan_hidden, args.dropout).to(args.device)
    n = len(data["train"])
    labelled = labelled_subset(n, fraction, seed)
    unlabelled = sorted(set(range(n)) - set(labelled))
    use_unlabelled = method != "plain" and unlabelled

    if encoder is not None:
        groups = param_groups(encoder, {"D": D}, lr=args.lr, head_lr=args.head_lr)
        d_params = [p for p in encoder.parameters() if p.requires_grad] + list(D.parameters())
    else:
        groups, d_params = [{"params": list(D.parameters()), "lr": args.head_lr}], list(D.parameters())
    d_opt = AdamW(groups, lr=args.head_lr, weight_decay=0.01, fused=args.adamw == "fused")
    g_opt = AdamW(G.parameters(), lr=args.g_lr, fused=args.adamw == "fused")
    warm = int(args.warmup * args.steps)
    players = [Player(d_opt, warmup_linear(d_opt, warm, args.steps), d_params)]
    if method != "plain":
        players.append(Player(g_opt, warmup_linear(g_opt, warm, args.steps), list(G.parameters())))
    # Plain shuffled passes over the labelled and the unlabelled examples, both from one generator.
    rng = np.random.default_rng([seed, 7])

    def stream(indices: list[int], batch_size: int) -> TaskStream:
        def order(epoch: int) -> list[list[int]]:
            perm = rng.permutation(indices).tolist()
            return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
        return TaskStream(data["train"], batch_size, tok.pad_id, seed, order=order)

    lab_stream = stream(labelled, args.batch_size)
    unl_stream = stream(unlabelled, args.unlabelled_batch_size) if use_unlabelled else None

    def embeddings(split: str, idx: list[int] | None = None, train: bool = False) -> torch.Tensor:  # (N or len(idx), C)
        if cached is not None:
            return (cached[split] if idx is None else cached[split][idx]).to(args.device)
        rows = data[split] if idx is None else [data[split][i] for i in idx]
        if train:  # the encoder in train mode, on the autograd graph
            return pool(encoder, collate(rows, tok.pad_id)["inputs"], args.pooling, args.device)
        return embed_all(encoder, rows, tok.pad_id, args.pooling, args.device)

    stats: dict = {}

    def losses(_) -> dict:
        with autocast(args)():
            return step_losses()

    def step_losses() -> dict:
        li = lab_stream.next_indices()[0]
        idx = li + (unl_stream.next_indices()[0] if unl_stream else [])
        h = embeddings("train", idx, train=True)  # (B, C)
        y = train_labels[idx].to(args.device)
        mask = torch.arange(len(idx), device=args.device) < len(li)  # (B,) True on the labelled rows
        if method == "plain":
            return {"d_loss": supervised_loss(D(h)[1], y, mask)}
        fake_y = torch.randint(0, k, (len(idx),), device=args.device) if method == "acgan" else None
        d_loss, g_loss, step_stats = gan_losses(G, D, h, y, mask, fake_labels=fake_y,
                                               d_classifies_fakes=args.acgan_d_classes == "all")
        stats.update(step_stats)
        return {"d_loss": d_loss, "g_loss": g_loss}

    # The record's log: the losses and GAN statistics smoothed as the loop smooths its running losses
    # (engine/loop.py smooth), with a shorter memory than the multitask default's 0.98.
    report = Report(log_every=args.log_every, smoothing=0.9, desc=f"{method} {fraction:g} seed {seed} ")
    log, running = [], {}

    def on_step(step: int, values: dict) -> None:
        smooth(running, stats or values, report.smoothing)
        if step % args.log_every == 0 or step == args.steps:
            log.append({"step": step, **{key: round(v, 4) for key, v in running.items()}})

    fit(Loop(encoder or D, players, [Phase(method, {method: args.steps}, args.steps, seed=seed)], losses,
             train_mode=lambda: None, on_step=on_step, clip=args.clip,
             guard=Guard("skip" if args.amp != "none" else "stop", max_skips=20), report=report,
             precision=Precision.of(args.amp, args.device, args.accumulate)))

    # ---- evaluation: the discriminator's k real-class logits are the classifier ----
    D.eval()
    G.eval()
    h_eval = {s: embeddings(s) for s in ("dev", "test")}  # (N_s, C); dev is reused by the conditioning probe
    with torch.no_grad():
        preds = {s: D(h.to(args.device))[1][:, :-1].argmax(-1).cpu().numpy() for s, h in h_eval.items()}
    gold = np.array([e["label"] for e in data["dev"]])
    record = {"method": method, "fraction": fraction, "seed": seed, "labelled": len(labelled),
              **({"acgan_d_classes": args.acgan_d_classes} if method == "acgan" else {}),
              **({"head_lr": args.head_lr, "g_lr": args.g_lr} if method != "plain" else {}),
              "unlabelled": len(unlabelled) if use_unlabelled else 0, "dev_acc": float((preds["dev"] == gold).mean()),
              "steps": args.steps, "log": log, "seconds": round(time.time() - t0, 1)}
    if method != "plain":  # only sampled train rows: embedding all of SST with a live encoder is slow
        record["collapse"], record["conditioning"] = embedding_report(
            args, env, G, D, lambda idx: embeddings("train", idx), (h_eval["dev"], torch.from_numpy(gold)), method,
            fraction, seed)
    if write_files:
        for s in ("dev", "test"):
            tasks.write_predictions(Path(args.out_dir) / "predictions" / f"{args.task}-{s}-output.csv", "sst",
                                    [e["id"] for e in data[s]], preds[s])
    print(f"  {method:>5}  labelled {fraction:>5.0%} ({len(labelled)})  seed {seed}: dev accuracy "
          f"{record['dev_acc']:.4f}  ({record['seconds']:.0f} s)")
    return record


@torch.no_grad()
def embedding_report(args, env, G: Generator, D: Discriminator, real_fn, dev: tuple[torch.Tensor, torch.Tensor],
                     method: str, fraction: float, seed: int) -> tuple[dict, dict]:
    """(collapse ratios, conditioning score) of generated vs real train embeddings (real_fn(indices)
    -> (m, C)), and optionally their 2-D picture. For the collapse ratios and the picture, generated
    rows are grouped by their conditioning class (acgan) or by D's predicted class (gan). dev:
    (embeddings (N, C), labels (N,)) on which the probe's own accuracy is measured."""
    gen = torch.Generator().manual_seed(seed)
    n = len(env["labels"])
    m = min(args.plot_samples, n)
    m_probe = min(max(m, args.probe_train or n), n)
    # One permutation: its first m rows are the collapse/plot sample, its first m_probe the probe's.
    pick_all = torch.randperm(n, generator=gen)[:m_probe].tolist()
    real_all, real_y_all = real_fn(pick_all).float().cpu(), env["labels"][pick_all]  # (m_probe, C), (m_probe,)
    real, real_y = real_all[:m], real_y_all[:m]  # (m, C), (m,)
    z = G.sample_noise(m, args.device, generator=gen)
    fake_y = torch.randint(0, env["k"], (m,), generator=gen).to(args.device) if method == "acgan" else None
    fake = G(z, fake_y).float()  # (m, C)
    if fake_y is None:
        fake_y = D(fake)[1][:, :-1].argmax(-1)
    fake, fake_y = fake.cpu(), fake_y.cpu()
    ratios = collapse_ratios(real, real_y, fake, fake_y, env["k"])
    print(f"    collapse ({method}): generated/real spread, all {ratios['all']:.3f}, mean per class "
          f"{ratios['mean_per_class']:.3f}  (1: as varied as real sentences, 0: collapsed)")
    if args.embeddings_plot:
        xy, how = gan_plots.project_2d(torch.cat([real, fake]).numpy(), args.projection, seed)
        path = Path(args.out_dir) / f"embeddings-{args.task}-{method}-{fraction:g}-seed{seed}.png"
        coloured_by = "conditioning class" if method == "acgan" else "D's predicted class"
        title = f"{method}, {fraction:.0%} labelled, {how}\ngenerated coloured by {coloured_by}"
        if gan_plots.plot_embeddings(xy[:m], real_y.numpy(), xy[m:], fake_y.numpy(), path, title, env["k"]):
            print(f"    wrote {path}")
    conditioning = probe_conditioning(args, env["k"], G, D, real_all, real_y_all, dev, method, gen)
    return ratios, conditioning


@torch.no_grad()
def probe_conditioning(args, k: int, G: Generator, D: Discriminator, real: torch.Tensor, real_y: torch.Tensor,
                       dev: tuple[torch.Tensor, torch.Tensor], method: str, gen: torch.Generator) -> dict:
    """Fit the probe on real train embeddings (N, C) and labels (N,), then score --probe-fakes
    generated samples per class (gan.conditioning_score). acgan: each sample's target is its
    conditioning label. gan: G takes no label, so the targets are drawn uniformly at random: the
    same rate measured on a label-blind generator, which must land in chance's range."""
    probe = fit_probe(real, real_y, k, steps=args.probe_steps)
    probe_dev = float((probe_predict(probe, dev[0]) == dev[1]).float().mean())
    target = torch.arange(k).repeat_interleave(args.probe_fakes)  # (k * probe_fakes,) n per class
    z = G.sample_noise(len(target), args.device, generator=gen)
    if method == "acgan":
        fake = G(z, target.to(args.device))  # (k * probe_fakes, C)
    else:
        fake = G(z)
        target = torch.randint(0, k, (len(target),), generator=gen)  # no label to honour: a chance control
    score = conditioning_score(probe_predict(probe, fake), target, k)
    # D's own class logits on the same samples: what AC-GAN trained G against, so no independent judge
    d_acc = float((D(fake.float())[1][:, :-1].argmax(-1).cpu() == target).float().mean())
    score.update({"target": "conditioning class" if method == "acgan" else "random class", "probe": "logistic",
                  "probe_train_rows": len(real_y), "probe_dev_acc": probe_dev, "discriminator_accuracy": d_acc})
    print(f"    conditioning ({method}): the probe puts {score['accuracy']:.3f} [{score['ci_low']:.3f}, "
          f"{score['ci_high']:.3f}] of {score['n']} generated samples in their {score['target']}; chance "
          f"{score['chance']:.3f} [{score['chance_low']:.3f}, {score['chance_high']:.3f}]; probe dev accuracy "
          f"{probe_dev:.3f}; D's own class logits agree {d_acc:.3f}")
    return score


def variant(r: dict) -> str:
    """A run's row label: its method, plus the options that make it a different method (never averaged in)."""
    label = r["method"] + (" (D: real classes)" if r.get("acgan_d_classes") == "real" else "")
    if r.get("g_lr", r.get("head_lr")) != r.get("head_lr"):  # records from before --g-lr have neither
        label += f" (G lr {r['g_lr']:g})"
    return label


def summarize(records: list[dict]) -> dict:
    """{method: {fraction: {"mean", "std", "n"}}} of dev accuracy over seeds (std: population, ddof 0);
    GAN methods also "conditioning_mean"/"conditioning_std", the conditioning score, and
    "collapse_mean"/"collapse_std", the mean-per-class collapse ratio, over the same seeds."""
    out: dict = {}
    for r in records:
        out.setdefault(variant(r), {}).setdefault(f"{r['fraction']:g}", []).append(r)
    summary: dict = {}
    for m, by in out.items():
        for f, runs in by.items():
            acc = [r["dev_acc"] for r in runs]
            row = {"mean": float(np.mean(acc)), "std": float(np.std(acc)), "n": len(acc)}
            if all("conditioning" in r for r in runs):
                cond = [r["conditioning"]["accuracy"] for r in runs]
                row.update(conditioning_mean=float(np.mean(cond)), conditioning_std=float(np.std(cond)))
            if all("collapse" in r for r in runs):
                spread = [r["collapse"]["mean_per_class"] for r in runs]
                row.update(collapse_mean=float(np.mean(spread)), collapse_std=float(np.std(spread)))
            summary.setdefault(m, {})[f] = row
    return summary


def merged_runs(paths: list[str]) -> list[dict]:
    """The runs of several sweep records; a clear exit on a missing or non-sweep file or a run given twice."""
    records, seen = [], {}
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"--merge: cannot read {path}: {e}")
        if not record.get("sweep"):
            raise SystemExit(f"--merge: {path} is not a sweep record (run_gan.py --sweep writes sweep.json)")
        for r in record["runs"]:
            key = (variant(r), r["fraction"], r["seed"])
            if key in seen:
                raise SystemExit(f"--merge: {key[0]} {key[1]:g} seed {key[2]} is in both {seen[key]} and {path}")
            seen[key] = path
            records.append(r)
    return records


def sweep_report(args, records: list[dict], out_dir: Path) -> dict:
    """The sweep's record: its runs, their mean/std per method and fraction (printed), and the PNG."""
    summary = summarize(records)
    print(f"\n{'labelled':>9} " + " ".join(f"{m:>15}" for m in summary))
    for f in sorted({f for by in summary.values() for f in by}, key=float):
        print(f"{float(f):>9.0%} " + " ".join(
            f"{by[f]['mean']:>8.4f}+-{by[f]['std']:.3f}" if f in by else f"{'':>15}" for by in summary.values()))
    gans = {m: by for m, by in summary.items() if any("collapse_mean" in v for v in by.values())}
    if gans:  # 1: as varied as real sentences, 0: collapsed; chance of the conditioning score: 1/k
        print(f"\n{'labelled':>9} " + " ".join(f"{m[:24]:>24}" for m in gans) + "   (collapse | conditioning)")
        for f in sorted({f for by in gans.values() for f in by}, key=float):
            print(f"{float(f):>9.0%} " + " ".join(
                f"{by[f].get('collapse_mean', float('nan')):>11.3f} | {by[f].get('conditioning_mean', float('nan')):.3f}"
                if f in by else f"{'':>24}"
                for by in gans.values()))
    steps = sorted({r.get("steps", args.steps) for r in records})
    png = gan_plots.plot_sweep(summary, out_dir / f"sweep-{args.task}.png",
                           f"{args.task}: dev accuracy vs labelled data ({'/'.join(map(str, steps))} steps)")
    if png:
        print(f"wrote {png}")
    return {"script": "run_gan", "sweep": True, "options": vars(args), "summary": summary, "runs": records}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.merge:  # sweeps run apart (one per core or machine), reported as one; no model needed
        result = sweep_report(args, merged_runs(args.merge), out_dir)
    elif args.sweep:
        env = load(args)
        runs = [(m, f, s) for f in args.fractions for m in args.methods for s in args.seeds]
        print(f"sweep: {len(runs)} runs of {args.steps} steps")
        result = sweep_report(args, [run_one(args, env, m, f, s) for m, f, s in runs], out_dir)
    else:
        env = load(args)
        result = {"script": "run_gan", "sweep": False, "options": vars(args),
                  **run_one(args, env, args.method, args.labelled, args.seed, write_files=True)}
    result["wall_seconds"] = round(time.time() - t0, 1)
    path = Path(args.json) if args.json else out_dir / ("sweep.json" if args.sweep or args.merge else "result.json")
    checkpointing.atomic_write(path, json.dumps(result, indent=2))
    print(f"record in {path} ({result['wall_seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
