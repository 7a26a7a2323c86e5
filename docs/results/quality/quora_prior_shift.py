"""Does correcting for the Quora label shift help? quora-train.csv is 45% duplicates, dev/test 37-38%
(../shared/data/README.md). Reads the dev logits that quora_prior_probe.py saved from a full default run's
best/ and compares accuracy at threshold 0 with the prior-shift correction (logit + logit(pi_dev) -
logit(pi_train)), the target prior taken from the labels, the README, or estimated without labels by EM
(Saerens, Latinne & Decaestecker 2002); and the best threshold in hindsight (an upper bound, chosen on dev)."""
import numpy as np

out, y = np.load("/tmp/quora-dev-logits.npy")
y = y.astype(bool)


def logit(p):
    return np.log(p / (1 - p))


pt = 0.45  # quora-train.csv's duplicate rate
print("threshold 0 (as trained):", ((out > 0) == y).mean())
for name, pd in [("dev label prior", y.mean()), ("README 0.375", 0.375)]:
    s = logit(pd) - logit(pt)
    print(f"{name} {pd:.4f}: shift {s:.3f}, accuracy {((out + s > 0) == y).mean():.4f}")
p, pi = 1 / (1 + np.exp(-out)), pt
for it in range(100):  # EM on the unlabelled dev outputs
    w = pi / pt
    q = w * p / (w * p + (1 - pi) / (1 - pt) * (1 - p))
    if abs(q.mean() - pi) < 1e-7:
        break
    pi = q.mean()
s = logit(pi) - logit(pt)
print(f"EM prior {pi:.4f} ({it} iterations): shift {s:.3f}, accuracy {((out + s > 0) == y).mean():.4f}")
ths = np.linspace(-2, 2, 401)
accs = [((out > t) == y).mean() for t in ths]
print(f"best threshold in hindsight {ths[int(np.argmax(accs))]:.2f}: accuracy {max(accs):.4f}")
