"""data/download.py against a local http.server: checksums, atomic writes, offline errors."""
import functools
import hashlib
import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import data.download as download
from data.datasets import all_files
from data.download import CHECKSUMS, DownloadError, download_all, main, sha256_file

REPO = Path(__file__).resolve().parents[1]
COURSE = Path(__file__).resolve().parent / "fixtures" / "data" / "course"
SHARED = REPO.parent / "shared" / "data"
FIXTURE_SUMS = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in COURSE.glob("*.csv")}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """Serve the course fixtures on an ephemeral 127.0.0.1 port; yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(COURSE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A port nothing listens on (bound then released), for connection-refused errors."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".") or p.suffix == ".part"]


def test_download_all_fetches_files_and_verifies_checksums(server, tmp_path):
    messages = []
    got = download_all(tmp_path, server, checksums=FIXTURE_SUMS, timeout=5, log=messages.append)
    assert sorted(p.name for p in got) == sorted(FIXTURE_SUMS)
    for p in got:
        assert p.read_bytes() == (COURSE / p.name).read_bytes()
    assert all("checksum ok" in m for m in messages)
    assert leftovers(tmp_path) == []


def test_second_run_keeps_files_that_already_verify(server, tmp_path):
    download_all(tmp_path, server, checksums=FIXTURE_SUMS, timeout=5, log=lambda m: None)
    messages = []
    download_all(tmp_path, server, checksums=FIXTURE_SUMS, timeout=5, log=messages.append)
    assert len(messages) == len(FIXTURE_SUMS) and all("already present" in m for m in messages)


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    sums = dict(FIXTURE_SUMS, **{"sts-dev.csv": "0" * 64})
    with pytest.raises(DownloadError) as e:
        download_all(tmp_path, server, files=["sts-dev.csv"], checksums=sums, timeout=5,
                     log=lambda m: None)
    msg = str(e.value)
    assert "sts-dev.csv" in msg and "0" * 64 in msg and FIXTURE_SUMS["sts-dev.csv"] in msg
    assert "--no-verify" in msg
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file


def test_failed_download_never_clobbers_an_existing_file(server, tmp_path):
    (tmp_path / "sts-dev.csv").write_bytes(b"old contents")
    sums = {"sts-dev.csv": "0" * 64}
    with pytest.raises(DownloadError):
        download_all(tmp_path, server, checksums=sums, force=True, timeout=5, log=lambda m: None)
    assert (tmp_path / "sts-dev.csv").read_bytes() == b"old contents"
    assert leftovers(tmp_path) == []


def test_no_verify_accepts_any_contents(server, tmp_path):
    sums = {"sts-dev.csv": "0" * 64}
    download_all(tmp_path, server, checksums=sums, verify=False, timeout=5, log=lambda m: None)
    assert (tmp_path / "sts-dev.csv").read_bytes() == (COURSE / "sts-dev.csv").read_bytes()


def test_missing_file_on_server_is_an_http_error(server, tmp_path):
    with pytest.raises(DownloadError, match=r"HTTP 404.*--base-url"):
        download_all(tmp_path, server, files=["nope.csv"], verify=False, timeout=5,
                     log=lambda m: None)
    assert leftovers(tmp_path) == []


def test_oversized_response_is_cut_off(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "MAX_BYTES", 100)
    with pytest.raises(DownloadError, match="larger than"):
        download_all(tmp_path, server, files=["sts-train.csv"], verify=False, timeout=5,
                     log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_says_offline_and_how_to_copy_by_hand(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/data"
    with pytest.raises(DownloadError) as e:
        download_all(tmp_path, url, timeout=5, log=lambda m: None)
    msg = str(e.value)
    assert "cannot reach" in msg and "No network?" in msg
    assert "--data-dir" in msg and "MINBERT_DATA_DIR" in msg
    assert leftovers(tmp_path) == []


def test_main_prints_error_without_traceback_and_fails(tmp_path, capsys):
    rc = main(["--base-url", f"http://127.0.0.1:{closed_port()}", "--out", str(tmp_path),
               "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: cannot reach") and "Traceback" not in err


def test_main_downloads_selected_tasks(server, tmp_path, capsys):
    # the fixtures are not the real files, so their checksums differ: --no-verify
    rc = main(["--base-url", server, "--out", str(tmp_path), "--tasks", "sts", "--no-verify"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(all_files(["sts"]))
    assert f"--data-dir {tmp_path}" in capsys.readouterr().out


def test_main_verifies_by_default(server, tmp_path, capsys):
    rc = main(["--base-url", server, "--out", str(tmp_path), "--tasks", "sst"])
    assert rc == 1 and "checksum mismatch" in capsys.readouterr().err


def test_help_runs_standalone_and_explains_every_option():
    out = subprocess.run([sys.executable, str(REPO / "data" / "download.py"), "--help"],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    parser = download._parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help text"
        assert all(opt in out.stdout for opt in action.option_strings)
    assert "--no-verify" in out.stdout and "Quora" in out.stdout


def test_checksum_table_covers_every_loader_file():
    assert set(CHECKSUMS) == set(all_files())


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")
def test_checksum_table_matches_shared_data():
    for name, digest in CHECKSUMS.items():
        assert sha256_file(SHARED / name) == digest, name
