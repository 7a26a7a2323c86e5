"""Checkpoint I/O: HF layouts, legacy .bin, refusal of code-running pickles, one clear key error,
save_pretrained read back by transformers, and hub names against a local server on 127.0.0.1."""
import hashlib
import http.server
import json
import os
import pickle
import threading
from pathlib import Path

import pytest
import torch

from minbert import BertConfig, BertModel, CheckpointError, CheckpointNotFound
from minbert.checkpoint import minbert_to_hf, read_weights
from minbert.hub import resolve
from minbert.safetensors import save_safetensors
from reference import HAVE_TRANSFORMERS, TINY, tiny_inputs


def write_checkpoint(d: Path, model: BertModel, mutate=None, fmt: str = "safetensors") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(model.config.to_dict()))
    sd = minbert_to_hf(model.state_dict(), model.config)
    if mutate:
        sd = mutate(sd)
    if fmt == "safetensors":
        save_safetensors(sd, d / "model.safetensors")
    else:
        torch.save(sd, d / "pytorch_model.bin")
    return d


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return BertModel(BertConfig(**TINY)).eval()


def outputs(model):
    with torch.no_grad():
        return model(**tiny_inputs())["last_hidden_state"]


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_load_round_trip_gives_identical_outputs(tmp_path, tiny_model, fmt):
    loaded = BertModel.from_pretrained(write_checkpoint(tmp_path, tiny_model, fmt=fmt))
    assert torch.equal(outputs(loaded), outputs(tiny_model))


def test_google_bert_layout_loads(tmp_path, tiny_model):
    """bert-base-uncased's file: "bert." prefix, LayerNorm gamma/beta, cls.* heads, position_ids."""
    def google(sd):
        out = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in sd.items()}
        out["cls.predictions.bias"] = torch.zeros(TINY["vocab_size"])
        out["cls.seq_relationship.weight"] = torch.zeros(2, TINY["hidden_size"])
        out["bert.embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"])[None]
        return out
    loaded = BertModel.from_pretrained(write_checkpoint(tmp_path, tiny_model, google, fmt="bin"))
    assert torch.equal(outputs(loaded), outputs(tiny_model))


def test_missing_unexpected_and_misshaped_keys_are_listed_in_one_error(tmp_path, tiny_model):
    def damage(sd):
        del sd["encoder.layer.1.attention.self.key.bias"]
        del sd["pooler.dense.weight"]
        sd["encoder.layer.0.extra.weight"] = torch.zeros(2)
        sd["encoder.layer.0.output.dense.weight"] = torch.zeros(3, 3)
        return sd
    with pytest.raises(CheckpointError) as e:
        BertModel.from_pretrained(write_checkpoint(tmp_path, tiny_model, damage))
    msg = str(e.value)
    assert "2 missing" in msg and "encoder.layer.1.attention.self.key.bias" in msg and "pooler.dense.weight" in msg
    assert "1 unexpected" in msg and "encoder.layer.0.extra.weight" in msg
    assert "1 mis-shaped" in msg and "encoder.layer.0.output.dense.weight (3, 3)" in msg


def test_vocab_size_mismatch_between_config_and_weights_is_reported(tmp_path, tiny_model):
    d = write_checkpoint(tmp_path, tiny_model)
    cfg = json.loads((d / "config.json").read_text())
    cfg["vocab_size"] = 120
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="embeddings.word_embeddings.weight"):
        BertModel.from_pretrained(d)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tmp_path, tiny_model):
    d = write_checkpoint(tmp_path, tiny_model)
    (d / "model.safetensors").unlink()
    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"embeddings.word_embeddings.weight": Exploit()}, f)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        read_weights(d)


def test_truncated_safetensors_gives_value_error_naming_the_file(tmp_path, tiny_model):
    d = write_checkpoint(tmp_path, tiny_model)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ValueError, match="model.safetensors"):
        BertModel.from_pretrained(d)


def test_missing_config_and_wrong_architecture_are_clear(tmp_path, tiny_model):
    d = write_checkpoint(tmp_path, tiny_model)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(dict(cfg, model_type="gpt2")))
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        BertModel.from_pretrained(d)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        BertModel.from_pretrained(d)


@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="transformers not installed")
def test_save_pretrained_is_loadable_by_transformers(tmp_path, tiny_model):
    from transformers import BertModel as HFBert
    tiny_model.save_pretrained(tmp_path)
    hf = HFBert.from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf(**tiny_inputs()).last_hidden_state
    torch.testing.assert_close(outputs(tiny_model), ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(outputs(BertModel.from_pretrained(tmp_path)), outputs(tiny_model))


@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="transformers not installed")
def test_config_json_is_what_transformers_writes_without_runtime_switches(tmp_path):
    from transformers import BertConfig as HFConfig
    from transformers import BertModel as HFBert
    HFBert(HFConfig(**TINY)).save_pretrained(tmp_path / "theirs")
    theirs = json.loads((tmp_path / "theirs" / "config.json").read_text())
    model = BertModel(BertConfig(**TINY), attn_implementation="sdpa", unpad=True)  # runtime switches on
    model.save_pretrained(tmp_path / "ours")
    ours = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert set(ours) <= set(theirs), f"keys transformers does not write: {sorted(set(ours) - set(theirs))}"
    assert {k: theirs[k] for k in ours} == ours
    loaded = BertModel.from_pretrained(tmp_path / "ours")  # the switches come back at their defaults
    assert (loaded.attn_implementation, loaded.unpad) == ("manual", False)


def test_bad_attn_implementation_is_a_clear_error(tmp_path, tiny_model):
    d = write_checkpoint(tmp_path, tiny_model)
    for build in (lambda: BertModel(BertConfig(**TINY), attn_implementation="flash"),
                  lambda: BertModel.from_pretrained(d, attn_implementation="flash")):
        with pytest.raises(ValueError, match="attn_implementation must be 'manual' .* or 'sdpa' .*'flash'"):
            build()


def test_unknown_local_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(CheckpointNotFound, match="does not exist"):
        resolve(str(tmp_path / "nope" / "model"))


# ---- hub names: a fake hub on 127.0.0.1 speaking the resolve/ protocol huggingface_hub uses ----

class FakeHub(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, *args):
        pass

    def _serve(self, body: bool):
        parts = self.path.split("?")[0].strip("/").split("/")  # org/name/resolve/main/file
        name = parts[-1]
        data = self.files.get(name) if "resolve" in parts else None
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = hashlib.sha256(data).hexdigest()
        self.send_response(200)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)


@pytest.fixture
def fake_hub(tmp_path, tiny_model):
    src = write_checkpoint(tmp_path / "src", tiny_model)
    FakeHub.files = {p.name: p.read_bytes() for p in src.iterdir()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_hub_name_is_downloaded_from_the_endpoint(tmp_path, fake_hub, tiny_model, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    d = resolve("someone/tiny-bert", cache_dir=str(tmp_path / "cache"), endpoint=fake_hub)
    assert (d / "config.json").is_file() and (d / "model.safetensors").is_file()
    assert not (d / "pytorch_model.bin").exists(), "safetensors present: the pickle must not be fetched"
    assert torch.equal(outputs(BertModel.from_pretrained(d)), outputs(tiny_model))


def test_offline_hub_name_gives_an_error_that_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused, like an offline machine
    with pytest.raises(CheckpointNotFound) as e:
        resolve("bert-base-uncased", cache_dir=str(tmp_path), endpoint=f"http://127.0.0.1:{port}")
    msg = str(e.value)
    assert "bert-base-uncased" in msg and "offline" in msg and "directory" in msg
