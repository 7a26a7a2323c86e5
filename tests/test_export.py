"""training/run_export.py: the exported folder loads in transformers and sentence-transformers, and
their outputs are the run's own (fp32 tolerance).

References: transformers' BertModel / BertTokenizer and sentence-transformers' SentenceTransformer,
both test-only dependencies. The run is the embedded all-MiniLM-L6-v2 with fresh heads (real
weights give cosines spread over [0, 1], unlike a random tiny model), saved with save_run.
"""
import json

import numpy as np
import pytest
import torch

from heads.multitask_bert import MultitaskBert
from minbert import BertModel, Tokenizer
from training import run_export, run_predict

transformers = pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")

MAX_LENGTH = 16  # short, so the long sentences below are truncated: the export must truncate alike
PAIRS = [("A man is playing a guitar.", "Someone plays music on a stage."),
         ("A cat sleeps on the warm windowsill.", "The stock market fell sharply on Tuesday."),
         ("Three children are building a large sandcastle on the beach while their parents watch from deck chairs.",
          "Kids build a sandcastle by the sea, and the adults sit nearby, watching them and reading."),
         ("How do I learn to cook rice?", "What is the best way to cook rice?"),
         ("Ünïcode àccents stay.", "Unicode accents stay.")]


def make_run(tmp_path, sts_mode: str):
    torch.manual_seed(0)
    model = MultitaskBert(BertModel.from_pretrained("all-MiniLM-L6-v2"), pair_mode="cross", sts_mode=sts_mode).eval()
    tok = Tokenizer.from_pretrained("all-MiniLM-L6-v2")
    options = {"tasks": ["sst", "quora", "sts"], "max_length": MAX_LENGTH, "model": "all-MiniLM-L6-v2", "epochs": 3}
    dev = {"sst": 0.48, "quora": 0.86, "sts": 0.88, "overall": 0.76}  # any numbers: the card must show them
    model.save_run(tmp_path / "run" / "best", tok, options, dev, 3)
    return tmp_path / "run" / "best", model, tok


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    run, model, tok = make_run(tmp, "cosine")
    out = run_export.main(["--run", str(run), "--out", str(tmp / "exported")])
    return run, model, tok, out


def test_transformers_loads_the_export_with_no_missing_or_unexpected_key(exported):
    run, model, tok, out = exported
    hf, info = transformers.AutoModel.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    sentences = [s for pair in PAIRS for s in pair]
    assert hf_tok(sentences)["input_ids"] == [ids for ids, _ in tok.encode_ids(sentences)]
    batch = tok(sentences)
    with torch.no_grad():
        theirs = hf.eval()(**batch).last_hidden_state
        ours = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])["last_hidden_state"]
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(theirs[mask], ours[mask], atol=1e-5, rtol=1e-5)


def test_sentence_transformers_vectors_and_cosines_are_the_sts_heads(exported, capsys):
    run, model, tok, out = exported
    st = sentence_transformers.SentenceTransformer(str(out), device="cpu")
    a, b = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    u = st.encode(a, convert_to_tensor=True)
    v = st.encode(b, convert_to_tensor=True)
    with torch.no_grad():
        ours_u = model.embed(tok(a, max_length=MAX_LENGTH))
        head = model.predict_similarity(tok(a, max_length=MAX_LENGTH), tok(b, max_length=MAX_LENGTH))
    torch.testing.assert_close(u, ours_u, atol=1e-5, rtol=1e-5)
    st_score = 5 * torch.nn.functional.cosine_similarity(u, v).clamp(min=0)
    assert st_score.std() > 0.5  # the pairs span the scale, so the comparison means something
    torch.testing.assert_close(st_score, head, atol=1e-4, rtol=0)
    capsys.readouterr()
    sentences = [s for pair in PAIRS for s in pair]
    predicted = run_predict.main(["--run", str(run), "--task", "sts", "--device", "cpu", *sentences])
    torch.testing.assert_close(predicted["outputs"], st_score, atol=1e-4, rtol=0)


def test_the_model_card_names_base_data_scores_and_licence(exported):
    run, model, tok, out = exported
    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card and "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    for needle in ("ids-sst-train.csv", "quora-train.csv", "sts-train.csv", "| overall | 0.7600 |",
                   "cosines of these vectors are that head's", '"max_length": 16'):
        assert needle in card, needle
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == MAX_LENGTH


def test_a_run_without_the_cosine_sts_head_says_its_vectors_are_plain_mean_pooling(tmp_path):
    run, model, tok = make_run(tmp_path, "regressor")
    out = run_export.main(["--run", str(run), "--out", str(tmp_path / "exported")])
    card = (out / "README.md").read_text()
    assert "--sts-mode regressor" in card and "NOT what the run's STS head scores" in card
    hf, info = transformers.AutoModel.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()


def test_export_refuses_a_folder_that_holds_files(exported, tmp_path):
    run = exported[0]
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="already holds files; pass --overwrite"):
        run_export.main(["--run", str(run), "--out", str(tmp_path)])
    run_export.main(["--run", str(run), "--out", str(tmp_path), "--overwrite"])
    assert (tmp_path / "keep.txt").read_text() == "mine" and (tmp_path / "config.json").is_file()
