"""GAN-BERT (Croce et al. 2020, "GAN-BERT: Generative Adversarial Learning for Robust Text
Classification with a Bunch of Labeled Examples") and its auxiliary-classifier variant.

Semi-supervised classification with few labels. A generator G turns noise into fake *sentence
embeddings* (vectors the size of BERT's hidden state, not text); a discriminator D reads real
embeddings (BERT's [CLS]/pooled vector) and fake ones and outputs k + 1 logits: the k real classes
and one "fake" class (the semi-supervised GAN of Salimans et al. 2016). Unlabelled sentences still
teach D (and BERT) what real data looks like: they must not be called fake. At test time the
classifier is D's k real-class logits.

    discriminator:  CE(real class | labelled)  - log(1 - p_fake(real))  - log p_fake(fake)
    generator:      - log(1 - p_fake(fake))  +  || mean f(real) - mean f(fake) ||^2   (feature matching)

AC-GAN-BERT applies Odena et al. 2017 ("Conditional Image Synthesis with Auxiliary Classifier GANs"):
G also gets a class label y (noise + label embedding), and both players add CE(D's class logits on
G(z, y), y): D learns to classify fakes into the class they were generated for, G to produce fakes
of that class. Generated embeddings are then class-conditioned instead of one undifferentiated cloud.

Each loss updates only its own player (training/loop.backward). The public PyTorch port of GAN-BERT
calls backward() of both losses on one graph, so the generator's loss also moves D and BERT.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import binom, binomtest


class Generator(nn.Module):
    """noise (B, noise_dim) [+ class labels (B,)] -> fake sentence embeddings (B, hidden_size).
    GAN-BERT's generator: one hidden layer, LeakyReLU(0.2), dropout 0.1. num_classes > 0 makes it
    conditional (AC-GAN): the label's embedding is concatenated to the noise."""

    def __init__(self, noise_dim: int, hidden_size: int, num_classes: int = 0, mlp_hidden: int | None = None,
                 dropout: float = 0.1):
        super().__init__()
        if noise_dim < 1 or hidden_size < 1:
            raise ValueError(f"noise_dim and hidden_size must be positive, got {noise_dim} and {hidden_size}")
        self.noise_dim, self.num_classes = noise_dim, num_classes
        self.label_embedding = nn.Embedding(num_classes, noise_dim) if num_classes > 0 else None
        width = mlp_hidden or hidden_size
        inputs = noise_dim * (2 if num_classes > 0 else 1)
        self.net = nn.Sequential(nn.Linear(inputs, width), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                                 nn.Linear(width, hidden_size))

    def sample_noise(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, noise_dim) uniform in [0, 1), as in GAN-BERT."""
        return torch.rand(n, self.noise_dim, generator=generator).to(device or "cpu")

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.noise_dim:
            raise ValueError(f"noise must be (B, {self.noise_dim}), got {tuple(z.shape)}")
        if self.label_embedding is None:
            if labels is not None:
                raise ValueError("this generator is unconditional (num_classes=0); build it with num_classes=k "
                                 "to condition on labels")
            return self.net(z)  # (B, C)
        if labels is None or labels.shape != z.shape[:1]:
            raise ValueError(f"a conditional generator needs labels (B,) = ({z.shape[0]},), got "
                             f"{None if labels is None else tuple(labels.shape)}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}, got {labels.tolist()}")
        return self.net(torch.cat([z, self.label_embedding(labels)], dim=-1))  # (B, 2 noise) -> (B, C)


class Discriminator(nn.Module):
    """Sentence embeddings (B, hidden_size) -> (features (B, mlp_hidden), logits (B, k + 1)); the
    last logit is "fake". GAN-BERT's discriminator: input dropout, one LeakyReLU hidden layer (the
    features used for feature matching), a linear output layer."""

    def __init__(self, hidden_size: int, num_classes: int, mlp_hidden: int | None = None, dropout: float = 0.1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 real classes, got {num_classes}")
        self.num_classes = num_classes
        width = mlp_hidden or hidden_size
        self.features = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, width), nn.LeakyReLU(0.2),
                                      nn.Dropout(dropout))
        self.out = nn.Linear(width, num_classes + 1)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(h)  # (B, width)
        return f, self.out(f)  # (B, width), (B, k + 1)


def _log_p_fake(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_fake, log(1 - p_fake)), each (B,), from (B, k + 1) logits without ever forming
    1 - p (which rounds to 0 when D is confident, where the port needs its + 1e-8). Part of step 11:
    the losses below are written with it."""
    # BEGIN SOLUTION
    total = torch.logsumexp(logits, dim=-1)  # (B,)
    return logits[:, -1] - total, torch.logsumexp(logits[:, :-1], dim=-1) - total
    # END SOLUTION


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the k real classes (logits[:, :k]) on the labelled rows only (mean over
    them); 0 when the batch has none. logits (B, k + 1), labels (B,), labelled (B,) bool."""
    # BEGIN SOLUTION
    if not labelled.any():
        return logits.sum() * 0.0  # keeps the graph (and the device), contributes nothing
    return F.cross_entropy(logits[labelled, :-1].float(), labels[labelled])
    # END SOLUTION


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, labels: torch.Tensor,
                       labelled: torch.Tensor, fake_labels: torch.Tensor | None = None) -> torch.Tensor:
    """D's loss: supervised_loss(real) - mean log(1 - p_fake(real)) - mean log p_fake(fake), where
    p_fake = softmax(logits)[:, -1]. AC-GAN (fake_labels (B_fake,) given): + CE(fake_logits[:, :k],
    fake_labels). real_logits (B, k + 1), fake_logits (B_fake, k + 1), labels/labelled (B,)."""
    # BEGIN SOLUTION
    _, log_not_fake_real = _log_p_fake(real_logits.float())
    log_fake_fake, _ = _log_p_fake(fake_logits.float())
    loss = supervised_loss(real_logits, labels, labelled) - log_not_fake_real.mean() - log_fake_fake.mean()
    if fake_labels is not None:
        loss = loss + F.cross_entropy(fake_logits[:, :-1].float(), fake_labels)
    return loss
    # END SOLUTION


def generator_loss(fake_logits: torch.Tensor, real_features: torch.Tensor, fake_features: torch.Tensor,
                   fake_labels: torch.Tensor | None = None) -> torch.Tensor:
    """G's loss: -mean log(1 - p_fake(fake)) + feature matching, the squared difference of the
    batch-mean D features of real and fake rows averaged over the feature dimension (GAN-BERT's
    code; Salimans et al.'s squared L2 norm / width). real_features are detached: the real side is
    a fixed target for G. AC-GAN: + CE(fake_logits[:, :k], fake_labels)."""
    # BEGIN SOLUTION
    _, log_not_fake = _log_p_fake(fake_logits.float())
    matching = (real_features.detach().float().mean(dim=0) - fake_features.float().mean(dim=0)).pow(2).mean()
    loss = -log_not_fake.mean() + matching
    if fake_labels is not None:
        loss = loss + F.cross_entropy(fake_logits[:, :-1].float(), fake_labels)
    return loss
    # END SOLUTION


def gan_losses(G: Generator, D: Discriminator, h_real: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor,
               fake_labels: torch.Tensor | None = None, noise: torch.Tensor | None = None,
               d_classifies_fakes: bool = True) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """One GAN-BERT / AC-GAN-BERT forward: B fakes for B real rows, one D pass over [real; fake].
    Returns (d_loss, g_loss, stats). h_real (B, C): real embeddings, still attached to the encoder's
    graph when the encoder trains. fake_labels: AC-GAN class per fake (B,). d_classifies_fakes=False
    (AC-GAN only): D's class logits learn from real rows alone, as GAN-BERT's do, while G keeps its
    class loss; D can then no longer carve out class regions of its own for the fakes, so G's class
    loss can only be met inside the real sentences' class regions (the fix tried in issue 19)."""
    B = h_real.shape[0]
    z = G.sample_noise(B, h_real.device) if noise is None else noise  # (B, noise_dim)
    fake = G(z, fake_labels)  # (B, C)
    features, logits = D(torch.cat([h_real, fake.to(h_real.dtype)], dim=0))  # (2B, width), (2B, k + 1)
    d_loss = discriminator_loss(logits[:B], logits[B:], labels, labelled, fake_labels if d_classifies_fakes else None)
    g_loss = generator_loss(logits[B:], features[:B], features[B:], fake_labels)
    with torch.no_grad():
        acc = (logits[:B][labelled, :-1].argmax(-1) == labels[labelled]).float().mean() if labelled.any() else None
        p_fake = torch.softmax(logits.float(), dim=-1)[:, -1]  # (2B,)
    stats = {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "p_fake_real": p_fake[:B].mean().item(),
             "p_fake_fake": p_fake[B:].mean().item()}
    return d_loss, g_loss, stats if acc is None else {**stats, "train_acc": acc.item()}


def spread(x: torch.Tensor) -> float:
    """Mean squared distance of the rows of x (N, C) to their centroid = trace of the (biased)
    covariance; 0 for a collapsed set (every row the same vector)."""
    if x.shape[0] < 2:
        return float("nan")
    return (x - x.mean(dim=0)).pow(2).sum(dim=-1).mean().item()


def collapse_ratios(real: torch.Tensor, real_labels: torch.Tensor, fake: torch.Tensor, fake_labels: torch.Tensor,
                    num_classes: int) -> dict[str, float]:
    """Per class c: spread(fakes of class c) / spread(reals of class c); "all": over every row.
    About 1: the fakes vary like real sentences; near 0: mode collapse (one vector per class).
    fake_labels are the conditioning labels (AC-GAN) or D's predicted classes (GAN-BERT)."""
    out = {}
    for c in range(num_classes):
        r, f = real[real_labels == c], fake[fake_labels == c]
        if len(r) >= 2 and len(f) >= 2:
            out[f"class_{c}"] = spread(f) / max(spread(r), 1e-12)
    out["all"] = spread(fake) / max(spread(real), 1e-12)
    per_class = [v for k, v in out.items() if k.startswith("class_")]
    out["mean_per_class"] = sum(per_class) / len(per_class) if per_class else float("nan")
    return out


# ---- is the generator class-conditioned? A probe trained on real embeddings judges the fakes ----
# The judge is a separate classifier, not D: AC-GAN trains D (and G) to put fakes into their
# conditioning class, so D's own logits can agree with G on fakes that look like no real sentence of
# that class. A probe fitted only on real embeddings and real labels has never seen a fake.

def fit_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int = 300, lr: float = 0.1,
              weight_decay: float = 1e-3) -> dict[str, torch.Tensor]:
    """Multinomial logistic regression on real embeddings x (N, C) with labels y (N,): features
    standardised with x's own mean and std, then `steps` full-batch Adam steps on cross-entropy +
    weight_decay * ||W||^2 from zero weights (deterministic). Returns the plain tensors of the probe."""
    if x.dim() != 2 or y.shape != x.shape[:1]:
        raise ValueError(f"fit_probe needs x (N, C) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"probe labels must lie in 0..{num_classes - 1}, got {y.min().item()}..{y.max().item()}")
    x = x.detach().float().cpu()
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)  # (C,), (C,)
    z = (x - mean) / std  # (N, C)
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=lr)
    with torch.enable_grad():  # the report that calls this runs under no_grad
        for _ in range(steps):
            loss = F.cross_entropy(z @ weight + bias, y.cpu()) + weight_decay * weight.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"mean": mean, "std": std, "weight": weight.detach(), "bias": bias.detach()}


def probe_predict(probe: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The probe's class (N,) for embeddings x (N, C)."""
    z = (x.detach().float().cpu() - probe["mean"]) / probe["std"]  # (N, C)
    return (z @ probe["weight"] + probe["bias"]).argmax(dim=-1)


def conditioning_score(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict:
    """How often the probe's class `predicted` (N,) equals the class `target` (N,) a sample was
    generated for, with the exact (Clopper-Pearson) 95% interval of that rate, and chance = 1/k with
    the central 95% range of the rate a label-blind generator would get (Binomial(N, 1/k) / N).
    Also per class: the rate, and the share of all samples the probe puts in that class."""
    n, k = len(target), num_classes
    if n < 1 or predicted.shape != target.shape:
        raise ValueError(f"need predicted and target of the same shape (N >= 1,), got {tuple(predicted.shape)} "
                         f"and {tuple(target.shape)}")
    hits = int((predicted == target).sum())
    ci = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="exact")
    per_class, share = {}, {}
    for c in range(k):
        rows = target == c
        if rows.any():
            per_class[f"class_{c}"] = float((predicted[rows] == c).float().mean())
        share[f"class_{c}"] = float((predicted == c).float().mean())
    return {"accuracy": hits / n, "hits": hits, "n": n, "ci_low": float(ci.low), "ci_high": float(ci.high),
            "chance": 1 / k, "chance_low": float(binom.ppf(0.025, n, 1 / k)) / n,
            "chance_high": float(binom.ppf(0.975, n, 1 / k)) / n, "above_chance": bool(ci.low > 1 / k),
            "per_class": per_class, "predicted_share": share}
