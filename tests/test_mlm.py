"""Masked-LM pre-training (training/methods/mlm.py, training/run_mlm.py): the head against transformers'
BertForMaskedLM, the tied decoder, BERT's masking rates against the binomial, learning, and the
checkpoint folder the script writes."""
import json
import math
from pathlib import Path

import pytest
import torch
from scipy.stats import binom

from minbert import BertConfig, BertModel, Tokenizer
from minbert.checkpoint import hf_to_minbert, minbert_to_hf, read_weights
from reference import HAVE_TRANSFORMERS, TINY, tiny_inputs
from reliability_cases import FIXTURE_DATA
from training import run_mlm
from training.engine.loop import Loop, Phase, Player, Report, fit
from training.methods.mlm import IGNORE, MaskedLM, mask_tokens, mlm_loss
from training.engine.optim import param_groups

needs_transformers = pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="transformers not installed")
FALSE_ALARM = 1e-6  # chance that a correct masker fails one of the binomial bounds below


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random (LayerNorm gains, biases too), so a piece left out changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@needs_transformers
@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_head_logits_match_transformers_bert_for_masked_lm(act):
    from transformers import BertConfig as HFConfig
    from transformers import BertForMaskedLM
    hf = BertForMaskedLM(HFConfig(**TINY, hidden_act=act)).eval()
    randomize_(hf, seed=1)  # tied in transformers too: the decoder moves with the embeddings
    torch.manual_seed(0)
    model = MaskedLM(BertModel(BertConfig(**TINY, hidden_act=act))).eval()
    # the reference's weights copied into ours: encoder by the checkpoint table, head by its HF names
    # (BertForMaskedLM has no pooler: ours keeps its own, which the logits never read)
    hf_state = dict(hf.state_dict(), **{k: v for k, v in minbert_to_hf(model.encoder.state_dict(),
                                                                      model.encoder.config).items() if "pooler" in k})
    model.encoder.load_state_dict(hf_to_minbert(hf_state, model.encoder))
    head = {"dense.weight": "transform.dense.weight", "dense.bias": "transform.dense.bias",
            "ln.weight": "transform.LayerNorm.weight", "ln.bias": "transform.LayerNorm.bias", "bias": "bias"}
    with torch.no_grad():
        for ours, theirs in head.items():
            model.head.get_parameter(ours).copy_(hf_state[f"cls.predictions.{theirs}"])
    inputs = tiny_inputs(seed=2)
    with torch.no_grad():
        expected = hf(**inputs).logits  # (B, T, V)
        got = model(**inputs)
        where = inputs["attention_mask"].bool() & (torch.arange(inputs["input_ids"].shape[1]) % 2 == 0)
        got_where = model(**inputs, where=where)  # (N, V): the rows of the chosen positions
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_where, expected[where], atol=1e-5, rtol=1e-5)


def test_decoder_shares_storage_with_word_embeddings():
    torch.manual_seed(0)
    model = MaskedLM(BertModel(BertConfig(**TINY)))
    emb = model.encoder.embeddings.word_embeddings.weight
    assert model.head.decoder.weight is emb
    assert model.head.decoder.weight.data_ptr() == emb.data_ptr()
    # one set of weights: an optimizer step on the embeddings moves the decoder, and the optimizer
    # holds the matrix once
    groups = param_groups(model.encoder, {"mlm": model.head}, lr=1e-3)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))
    inputs = tiny_inputs(seed=1)
    labels = torch.where(inputs["attention_mask"].bool(), inputs["input_ids"], IGNORE)
    mlm_loss(model, inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"], labels).backward()
    before = emb.detach().clone()
    torch.optim.SGD(params, lr=1.0).step()
    assert not torch.equal(emb, before)
    assert torch.equal(model.head.decoder.weight, emb) and model.head.decoder.weight.data_ptr() == emb.data_ptr()


def bounds(n: int, p: float) -> tuple[float, float]:
    """The central interval that Binomial(n, p) leaves with probability FALSE_ALARM."""
    return binom.interval(1 - FALSE_ALARM, n, p)


def test_masking_rates_follow_their_definition_and_spare_special_tokens():
    V, CLS, SEP, PAD, MASK = 1000, 101, 102, 0, 103
    g = torch.Generator().manual_seed(0)
    B, T = 2000, 40  # ~37k candidate tokens: a rate 10% off its definition lands 8 sd out
    lengths = torch.randint(3, T + 1, (B,), generator=g)
    real = torch.arange(T)[None, :] < lengths[:, None]  # (B, T)
    ids = torch.randint(104, V, (B, T), generator=g)  # ordinary tokens only, none equal to [MASK]
    ids[:, 0] = CLS
    ids[torch.arange(B), lengths - 1] = SEP
    ids[~real] = PAD
    attention = real.long()
    rate = 0.15
    inputs, labels = mask_tokens(ids, attention, [CLS, SEP, PAD], MASK, V, torch.Generator().manual_seed(1), rate)
    chosen = labels != IGNORE
    candidates = real & (ids != CLS) & (ids != SEP)
    assert not (chosen & ~candidates).any(), "a [CLS], [SEP] or padding position was chosen"
    assert torch.equal(inputs[~chosen], ids[~chosen]), "a position that was not chosen was changed"
    assert torch.equal(labels[chosen], ids[chosen]), "the labels must be the original tokens"
    n, k = int(candidates.sum()), int(chosen.sum())
    lo, hi = bounds(n, rate)
    assert lo <= k <= hi, f"{k} of {n} tokens chosen, outside [{lo}, {hi}] for rate {rate}"
    # Of the chosen: [MASK] with 0.8, a random token of V with 0.1 (which can itself be [MASK] or the
    # original token, each 1 / V of the time), unchanged with 0.1.
    got = inputs[chosen]
    orig = ids[chosen]
    observed = {"[MASK]": int((got == MASK).sum()), "unchanged": int((got == orig).sum())}
    observed["another token"] = k - sum(observed.values())
    p = {"[MASK]": 0.8 + 0.1 / V, "unchanged": 0.1 + 0.1 / V, "another token": 0.1 * (1 - 2 / V)}
    for what, count in observed.items():
        lo, hi = bounds(k, p[what])
        assert lo <= count <= hi, f"{what}: {count} of {k} chosen tokens, outside [{lo}, {hi}] (p = {p[what]:.4f})"
    # the random tokens come from the whole vocabulary, not only from the ids the batch holds (>= 104)
    assert got[(got != MASK) & (got != orig)].min() < 104
    # seeded: the same generator state gives the same corruption
    again = mask_tokens(ids, attention, [CLS, SEP, PAD], MASK, V, torch.Generator().manual_seed(1), rate)
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def fixed_batch_loss(model: MaskedLM, batch: dict, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(mlm_loss(model, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], labels))


def test_a_few_steps_on_a_tiny_corpus_lower_the_loss(tiny_checkpoint):
    torch.manual_seed(0)
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    model = MaskedLM(BertModel.from_pretrained(tiny_checkpoint))
    sentences = ["the cat sat on the mat .", "a dog ran in the park .", "the film was a great joy .",
                 "how do i learn python ?", "the movie was dull and long ."]
    batch = tok(sentences)
    mask_id = tok.backend.token_to_id("[MASK]")
    special = [tok.cls_id, tok.sep_id, tok.pad_id]
    g = torch.Generator().manual_seed(0)
    held_inputs, held_labels = mask_tokens(batch["input_ids"], batch["attention_mask"], special, mask_id,
                                           tok.vocab_size, torch.Generator().manual_seed(99))
    held = dict(batch, input_ids=held_inputs)
    before = fixed_batch_loss(model, held, held_labels)
    opt = torch.optim.AdamW(param_groups(model.encoder, {"mlm": model.head}, lr=3e-3))

    def losses(_):
        ids, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], special, mask_id, tok.vocab_size, g)
        return {"mlm": mlm_loss(model, ids, batch["attention_mask"], batch["token_type_ids"], labels)}

    fit(Loop(model, [Player(opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), list(model.parameters()))],
             [Phase("mlm", {"mlm": 1}, 40)], losses, report=Report(say=lambda *a: None)))
    after = fixed_batch_loss(model, held, held_labels)
    # lower than where it started, and than log V: the loss of a model that knows nothing of the words
    assert after < before and after < math.log(tok.vocab_size), (before, after)


@needs_transformers
def test_run_mlm_writes_a_checkpoint_with_the_trained_encoder(tiny_checkpoint, tmp_path, monkeypatch):
    from transformers import BertModel as HFBert
    saved = {}
    real_write = run_mlm.write_checkpoint

    def spy(encoder, tok, out, record):  # the encoder as it is when the script saves it
        saved.update({k: v.detach().clone() for k, v in encoder.state_dict().items()})
        real_write(encoder, tok, out, record)

    monkeypatch.setattr(run_mlm, "write_checkpoint", spy)
    out = tmp_path / "mlm-ckpt"
    record = run_mlm.main(["--model", str(tiny_checkpoint), "--data-dir", str(FIXTURE_DATA), "--steps", "12",
                           "--batch-size", "4", "--lr", "1e-3", "--log-every", "3", "--device", "cpu", "--amp", "none",
                           "--threads", "1", "--out", str(out)])
    assert record["steps"] == 12 and len(record["curve"]) == 4
    info = json.loads((out / "mlm.json").read_text())
    assert info["steps"] == 12 and info["options"]["steps"] == 12
    hf, loading = HFBert.from_pretrained(out, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"], loading
    ours = BertModel.from_pretrained(out)
    initial = BertModel.from_pretrained(tiny_checkpoint).state_dict()
    written = hf_to_minbert(read_weights(out), ours)
    for name, value in saved.items():
        torch.testing.assert_close(written[name], value, rtol=0, atol=0)
        torch.testing.assert_close(ours.state_dict()[name], value, rtol=0, atol=0)
        if name.startswith("pooler."):  # MLM never reads the pooler: frozen
            assert torch.equal(value, initial[name]), f"{name} changed"
        else:
            assert not torch.equal(value, initial[name]), f"{name} is the initial checkpoint's: not trained"
    assert Tokenizer.from_pretrained(out).vocab_size == Tokenizer.from_pretrained(tiny_checkpoint).vocab_size
    assert not any(Path(out).glob("*head*")), "the folder holds the encoder only"


def test_run_mlm_reads_the_training_files_only(tiny_checkpoint, tmp_path):
    """Dev and test sentences never enter the corpus; every distinct training sentence does."""
    from data.datasets import load_task
    args = run_mlm.parse_args(["--model", str(tiny_checkpoint), "--data-dir", str(FIXTURE_DATA), "--steps", "1",
                               "--device", "cpu"])
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    corpus = {tok.decode([int(i) for i in e["input_ids"]]) for e in run_mlm.training_sentences(args, tok)}

    def texts(split):
        out = set()
        for name, columns in (("sst", ["sentence"]), ("quora", ["sentence1", "sentence2"]),
                              ("sts", ["sentence1", "sentence2"])):
            for ex in load_task(name, split, FIXTURE_DATA)[0]:
                out |= {tok.decode(tok.encode_ids([ex[c]], max_length=128)[0][0]) for c in columns}
        return out

    assert corpus == texts("train")
    assert not (texts("dev") | texts("test")) - texts("train") & corpus


@pytest.mark.parametrize("argv, message", [
    ([], "--minutes M"),
    (["--steps", "0"], "--steps 0: must be at least 1"),
    (["--minutes", "-1"], "--minutes -1.0: must be more than 0"),
    (["--steps", "5", "--warmup-steps", "9"], "--warmup-steps 9 is more than --steps 5"),
    (["--steps", "5", "--mask-rate", "1.5"], "--mask-rate 1.5: must be between 0 and 1"),
])
def test_run_mlm_bad_options_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        run_mlm.parse_args(argv + ["--device", "cpu"])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_run_mlm_refuses_a_folder_that_holds_files(tiny_checkpoint, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x.txt").write_text("mine")
    with pytest.raises(SystemExit, match="already holds files; pass --overwrite"):
        run_mlm.main(["--model", str(tiny_checkpoint), "--data-dir", str(FIXTURE_DATA), "--steps", "1",
                      "--device", "cpu", "--out", str(out)])
