"""Step 11: the GAN-BERT losses (supervised_loss, discriminator_loss and generator_loss in
training/gan.py; Croce et al. 2020, AC-GAN terms after Odena et al. 2017). Logits are (B, k + 1): the
k real classes, then "fake". References are written out here with exp/log on the softmax,
independently of your code."""
import torch

from checks import assert_close, likely_mistake
from training.gan import discriminator_loss, generator_loss, supervised_loss

K = 3  # real classes; logits have K + 1 columns


def logits(seed, B):
    return torch.randn(B, K + 1, generator=torch.Generator().manual_seed(seed))


def probs(x):
    e = x.exp()
    return e / e.sum(-1, keepdim=True)  # (B, k + 1)


def p_fake(x):
    return probs(x)[:, -1]  # (B,)


def class_ce(x, labels):
    """Cross-entropy over the k real-class logits x[:, :k], mean over the rows."""
    real = x[:, :K]
    log_p = real - real.exp().sum(-1, keepdim=True).log()
    return -log_p[torch.arange(len(labels)), labels].mean()


def grad_or_zeros(t):
    return t.grad if t.grad is not None else torch.zeros_like(t)


def unsupervised_d(real, fake):
    return -torch.log(1 - p_fake(real)).mean() - torch.log(p_fake(fake)).mean()


def matching(real_f, fake_f):
    return (real_f.mean(0) - fake_f.mean(0)).pow(2).mean()


# Unlabelled rows keep a (valid) label, as in run_gan.py: only `labelled` says which ones may be used.
LABELS = torch.tensor([2, 0, 1, 1, 0, 2])
LABELLED = torch.tensor([True, False, True, False, False, True])
NONE_LABELLED = torch.zeros(6, dtype=torch.bool)
COND = torch.tensor([2, 2, 0, 1, 0, 1, 0])  # AC-GAN: the class each of 7 fakes was generated for


def test_supervised_loss_is_cross_entropy_over_the_real_classes_of_the_labelled_rows():
    x = logits(0, 6)
    got = supervised_loss(x, LABELS, LABELLED)
    hint = likely_mistake(got, {
        "the cross-entropy over ALL rows: keep only the rows where labelled is True":
            lambda: class_ce(x, LABELS),
        "the cross-entropy over all k + 1 logits: leave out the last (fake) column":
            lambda: torch.nn.functional.cross_entropy(x[LABELLED], LABELS[LABELLED]),
        "the sum over the labelled rows instead of the mean":
            lambda: class_ce(x[LABELLED], LABELS[LABELLED]) * int(LABELLED.sum()),
    }, "Expected the mean cross-entropy of logits[labelled, :k] against labels[labelled].")
    assert_close("supervised_loss(logits (6, 4), labels, labelled with 3 True)", got,
                 class_ce(x[LABELLED], LABELS[LABELLED]), hint)


def test_supervised_loss_is_zero_when_no_row_is_labelled():
    x = logits(1, 6)
    got = supervised_loss(x, LABELS, NONE_LABELLED)
    assert_close("supervised_loss with no labelled row", got, torch.tensor(0.0),
                 "A batch of unlabelled sentences has no supervised term: return a zero tensor (the mean over an "
                 "empty selection is 0/0 = nan, which would poison the discriminator's loss).")


def test_discriminator_loss_without_labels_is_the_two_unsupervised_terms():
    real, fake = logits(2, 6), logits(3, 7)
    got = discriminator_loss(real, fake, LABELS, NONE_LABELLED)
    real_term, fake_term = -torch.log(1 - p_fake(real)).mean(), -torch.log(p_fake(fake)).mean()
    hint = likely_mistake(got, {
        "the fake term alone: the unsupervised real term -log(1 - p_fake(real)) is missing": lambda: fake_term,
        "the real term alone: the fake term -log p_fake(fake) is missing": lambda: real_term,
        "-log p_fake(real) - log(1 - p_fake(fake)): the two terms are swapped (D must call real rows real and "
        "fakes fake)": lambda: -torch.log(p_fake(real)).mean() - torch.log(1 - p_fake(fake)).mean(),
        "the sums over the rows instead of the means": lambda: -torch.log(1 - p_fake(real)).sum()
                                                               - torch.log(p_fake(fake)).sum(),
    }, "With no labelled row D's loss is -mean log(1 - p_fake(real)) - mean log p_fake(fake), p_fake = "
       "softmax(logits)[:, -1] (and the supervised term is 0, not nan).")
    assert_close("discriminator_loss with no labelled rows", got, real_term + fake_term,
                 f"{hint} (real term {real_term.item():.4g}, fake term {fake_term.item():.4g})")


def test_discriminator_loss_adds_the_supervised_term_of_the_labelled_rows():
    real, fake = logits(4, 6), logits(5, 7)
    got = discriminator_loss(real, fake, LABELS, LABELLED)
    sup = class_ce(real[LABELLED], LABELS[LABELLED])
    hint = likely_mistake(got, {
        "no supervised term": lambda: unsupervised_d(real, fake),
        "a supervised term over every real row, labelled or not": lambda: unsupervised_d(real, fake)
                                                                          + class_ce(real, LABELS),
    }, "D's loss = supervised_loss(real_logits, labels, labelled) - mean log(1 - p_fake(real)) - mean log p_fake(fake).")
    assert_close("discriminator_loss with 3 labelled rows", got, sup + unsupervised_d(real, fake),
                 f"{hint} (supervised term {sup.item():.4g})")


def test_ac_discriminator_loss_classifies_fakes_into_their_conditioning_class():
    real, fake = logits(6, 6), logits(7, 7)
    got = discriminator_loss(real, fake, LABELS, LABELLED, COND)
    plain = class_ce(real[LABELLED], LABELS[LABELLED]) + unsupervised_d(real, fake)
    aux = class_ce(fake, COND)
    hint = likely_mistake(got, {
        "the loss without the AC-GAN term": lambda: plain,
        "the AC-GAN term over all k + 1 logits: use fake_logits[:, :k]":
            lambda: plain + torch.nn.functional.cross_entropy(fake, COND),
        "the AC-GAN term subtracted": lambda: plain - aux,
    }, "With fake_labels, add CE(fake_logits[:, :k], fake_labels): D learns the class each fake was generated for.")
    assert_close("discriminator_loss with fake_labels (AC-GAN)", got, plain + aux, hint)


def test_generator_adversarial_term_is_minus_log_of_fakes_being_called_real():
    fake = logits(8, 7)
    features = torch.randn(7, 5, generator=torch.Generator().manual_seed(9))
    got = generator_loss(fake, features.clone(), features.clone())  # same features: no feature-matching term
    expected = -torch.log(1 - p_fake(fake)).mean()
    hint = likely_mistake(got, {
        "+mean log p_fake(fake), the saturating minimax form: GAN-BERT's G minimises -log(1 - p_fake(fake))":
            lambda: torch.log(p_fake(fake)).mean(),
        "-mean log p_fake(fake): G wants its fakes called REAL": lambda: -torch.log(p_fake(fake)).mean(),
        "mean log(1 - p_fake(fake)): the sign is wrong": lambda: -expected,
    }, "With identical real and fake features G's loss is its adversarial term -mean log(1 - p_fake(fake)).")
    assert_close("generator_loss with real features == fake features", got, expected, hint)


def test_generator_feature_matching_is_the_squared_distance_of_the_batch_mean_features():
    g = torch.Generator().manual_seed(10)
    fake = logits(11, 7)
    real_f, fake_f = torch.randn(6, 5, generator=g), torch.randn(7, 5, generator=g)  # 6 real rows, 7 fakes
    got = generator_loss(fake, real_f, fake_f)
    adv, fm = -torch.log(1 - p_fake(fake)).mean(), matching(real_f, fake_f)
    hint = likely_mistake(got, {
        "the adversarial term alone: add the feature-matching term": lambda: adv,
        "the SUM over the feature dimension: GAN-BERT averages it": lambda: adv + (real_f.mean(0) - fake_f.mean(0)).pow(2).sum(),
        "|difference| instead of the squared difference": lambda: adv + (real_f.mean(0) - fake_f.mean(0)).abs().mean(),
    }, "Feature matching: mean over the feature dimension of (mean over rows of real_features - mean over rows "
       "of fake_features)^2.")
    assert_close("generator_loss (6 real rows, 7 fakes, 5 features)", got, adv + fm,
                 f"{hint} (adversarial term {adv.item():.4g}, feature matching {fm.item():.4g})")


def test_generator_loss_moves_the_fake_features_but_not_the_real_ones():
    g = torch.Generator().manual_seed(12)
    fake = logits(13, 7)
    real_f = torch.randn(6, 5, generator=g).requires_grad_()
    fake_f = torch.randn(7, 5, generator=g).requires_grad_()
    got = generator_loss(fake, real_f, fake_f)
    assert isinstance(got, torch.Tensor) and got.requires_grad, (
        "generator_loss must return a tensor that depends on fake_features (so G can be trained through it).")
    got.backward()
    leak = 0.0 if real_f.grad is None else real_f.grad.abs().max().item()
    assert leak == 0.0, (
        f"real_features got a gradient (max |grad| {leak:.3g}): the real side is a fixed target for the "
        "generator; use real_features.detach() in the feature-matching term.")
    fake_ref = fake_f.detach().clone().requires_grad_()
    matching(real_f.detach(), fake_ref).backward()
    assert_close("the gradient of generator_loss with respect to fake_features", grad_or_zeros(fake_f), fake_ref.grad,
                 "The fake features must get the feature-matching gradient: (mean real - mean fake)^2 averaged "
                 "over the features, with the batch means taken over the rows.")


def test_ac_generator_loss_asks_for_fakes_of_their_conditioning_class():
    g = torch.Generator().manual_seed(14)
    fake = logits(15, 7)
    real_f, fake_f = torch.randn(6, 5, generator=g), torch.randn(7, 5, generator=g)
    got = generator_loss(fake, real_f, fake_f, COND)
    plain = -torch.log(1 - p_fake(fake)).mean() + matching(real_f, fake_f)
    aux = class_ce(fake, COND)
    hint = likely_mistake(got, {
        "the loss without the AC-GAN term": lambda: plain,
        "the AC-GAN term over all k + 1 logits: use fake_logits[:, :k]":
            lambda: plain + torch.nn.functional.cross_entropy(fake, COND),
        "the AC-GAN term subtracted: G wants D to find the conditioning class": lambda: plain - aux,
    }, "With fake_labels, add CE(fake_logits[:, :k], fake_labels): G learns to generate fakes of that class.")
    assert_close("generator_loss with fake_labels (AC-GAN)", got, plain + aux, hint)
