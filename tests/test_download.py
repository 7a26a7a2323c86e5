"""data/download.py against a local http.server: both Quora releases, corrupted files, atomic
writes, offline errors. Every served file is built here from hand-written rows."""
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
from data.download import CHECKSUMS, COURSE_CHECKSUMS, DownloadError, download_all, main, sha256_file

REPO = Path(__file__).resolve().parents[1]
COURSE = Path(__file__).resolve().parent / "fixtures" / "data" / "course"
SHARED = REPO.parent / "shared" / "data"
FIXTURE_SUMS = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in COURSE.glob("*.csv")}
QUORA_HEADER = "\tid\tsentence1\tsentence2"
QUESTIONS = [  # hand-written, combined below into as many distinct pairs as a release needs
    ("How do I keep basil alive indoors?", "What helps a basil plant grow inside?", "1.0"),
    ("Is a kayak harder to steer than a canoe?", "How do I paint a canoe?", "0.0"),
    ("Why do owls hoot at night?", "What makes owls call after dark?", "1.0"),
    ("Can I learn the cello at forty?", "Which glue fixes a cracked cello?", "0.0"),
]


def quora_file(n: int, labelled: bool, tag: str) -> str:
    """n distinct pairs in the course's Quora format (CRLF, float labels)."""
    lines = [QUORA_HEADER + ("\tis_duplicate" if labelled else "")]
    for i in range(n):
        a, b, label = QUESTIONS[i % len(QUESTIONS)]
        row = f"{i}\t{tag}{i:07d}\t{a} ({i})\t{b} ({i})" + (f"\t{label}" if labelled else "")
        lines.append(row)
    return "\r\n".join(lines) + "\r\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    """The folder the server serves:
    shared/   this project's release: the hand-written fixture files (12 files);
    course/   the course's release of the Quora files: a dev file (its checksum is patched into
              the table by the tests, the real one cannot be served), and a training and a test
              file whose checksums the table does not have, with just enough rows;
    corrupt/  Quora files that must be refused."""
    root = tmp_path_factory.mktemp("served")
    (root / "shared").mkdir()
    for p in COURSE.glob("*.csv"):
        (root / "shared" / p.name).write_bytes(p.read_bytes())
    course = root / "course"
    course.mkdir()
    (course / "quora-dev.csv").write_text(quora_file(6, True, "dv"), newline="")
    (course / "quora-train.csv").write_text(
        quora_file(download.MIN_ROWS["quora-train.csv"], True, "tr"), newline="")
    (course / "quora-test-student.csv").write_text(
        quora_file(download.MIN_ROWS["quora-test-student.csv"], False, "te"), newline="")
    bad = root / "corrupt"
    bad.mkdir()
    dev = bytearray((course / "quora-dev.csv").read_bytes())
    dev[-10] ^= 1  # one flipped bit in the course's dev file
    (bad / "quora-dev.csv").write_bytes(bytes(dev))
    train = (course / "quora-train.csv").read_bytes().decode().split("\r\n")
    train[500] = train[500].rsplit("\t", 1)[0]  # a row that lost its label (line 501)
    (bad / "quora-train.csv").write_text("\r\n".join(train), newline="")
    test = (course / "quora-test-student.csv").read_bytes().decode()
    (bad / "quora-test-student.csv").write_text(test[:len(test) // 2].rsplit("\r\n", 1)[0] + "\r\n",
                                                newline="")  # cut short at a line end
    return root


@pytest.fixture(scope="module")
def server_root(served):
    """Serve `served` on an ephemeral 127.0.0.1 port (loopback only); yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server(server_root, monkeypatch):
    """The shared/ release, with the table's checksums those of the hand-written files."""
    monkeypatch.setattr(download, "CHECKSUMS", dict(FIXTURE_SUMS))
    return server_root + "/shared/"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def closed_port() -> int:
    """A port nothing listens on (bound then released), for connection-refused errors."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".") or p.suffix == ".part"]


QUORA = ["quora-train.csv", "quora-dev.csv", "quora-test-student.csv"]


# ----------------------------------------------------------------------------- both Quora releases

def test_real_table_knows_both_quora_dev_releases():
    assert COURSE_CHECKSUMS == {
        "quora-dev.csv": "bfa3cc954a9ba300ae776a980141de65f622a3c1b97e3fd905d63245bc36d5ad"}
    assert set(download.known_checksums("quora-dev.csv")) == {
        CHECKSUMS["quora-dev.csv"], COURSE_CHECKSUMS["quora-dev.csv"]}
    # the two course files whose checksums are unknown are checked by structure, nothing else
    assert set(download.MIN_ROWS) == {"quora-train.csv", "quora-test-student.csv"}


def test_course_release_is_accepted(served, server_root, server, tmp_path, monkeypatch, capsys):
    course = served / "course"
    monkeypatch.setitem(download.COURSE_CHECKSUMS, "quora-dev.csv",
                        sha((course / "quora-dev.csv").read_bytes()))
    rc = main(["--base-url", server_root + "/course", "--out", str(tmp_path), "--tasks", "quora"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for name in QUORA:
        assert (tmp_path / name).read_bytes() == (course / name).read_bytes()
    lines = {name: [ln for ln in out.splitlines() if f"/{name}:" in ln] for name in QUORA}
    assert lines["quora-dev.csv"] == [f"{tmp_path / 'quora-dev.csv'}: downloaded, checksum ok "
                                      f"(the course's release)"]
    for name in ("quora-train.csv", "quora-test-student.csv"):
        (line,) = lines[name]  # one line per file
        digest = sha((course / name).read_bytes())
        assert digest not in CHECKSUMS.values()
        assert f"warning: no checksum known for this version (sha256 {digest})" in line
        assert f"structure checks out ({download.MIN_ROWS[name]:,} rows)" in line
    assert leftovers(tmp_path) == []


def test_course_release_already_present_is_kept(served, server_root, server, tmp_path):
    for name in ("quora-train.csv", "quora-test-student.csv"):
        (tmp_path / name).write_bytes((served / "course" / name).read_bytes())
    messages = []
    download_all(tmp_path, server_root + "/nothing-here", ["quora-train.csv", "quora-test-student.csv"],
                 timeout=5, log=messages.append)
    assert len(messages) == 2 and all("already present, warning: no checksum known" in m for m in messages)


def test_project_release_is_accepted_by_checksum(server, tmp_path):
    messages = []
    got = download_all(tmp_path, server, timeout=5, log=messages.append)
    assert sorted(p.name for p in got) == sorted(all_files()) == sorted(FIXTURE_SUMS)
    for p in got:
        assert p.read_bytes() == (COURSE / p.name).read_bytes()
    assert all(m.endswith("downloaded, checksum ok (this project's data folder)") for m in messages)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name,why", [
    ("quora-dev.csv", "checksum mismatch"),
    ("quora-train.csv", "quora-train.csv is corrupted: quora-train.csv: line 501: row has 4 fields, header has 5"),
    ("quora-test-student.csv", "quora-test-student.csv is corrupted: only 2,"),
])
def test_corrupted_file_is_refused_and_not_saved(served, server_root, server, tmp_path, monkeypatch,
                                                 name, why):
    monkeypatch.setitem(download.COURSE_CHECKSUMS, "quora-dev.csv",
                        sha((served / "course" / "quora-dev.csv").read_bytes()))
    with pytest.raises(DownloadError) as e:
        download_all(tmp_path, server_root + "/corrupt", [name], timeout=5, log=lambda m: None)
    msg = str(e.value)
    assert why in msg and "\n" not in msg
    if name == "quora-dev.csv":  # both known releases are named, and the way out
        got = sha((served / "corrupt" / name).read_bytes())
        assert got in msg and "--no-verify" in msg
        assert all(d in msg for d in download.known_checksums(name))
    assert not (tmp_path / name).exists() and leftovers(tmp_path) == []


def test_main_fails_on_a_corrupted_file_with_one_error_line(served, server_root, server, tmp_path, capsys):
    rc = main(["--base-url", server_root + "/corrupt", "--out", str(tmp_path), "--tasks", "quora"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: quora-train.csv is corrupted") and "Traceback" not in err


def test_second_run_keeps_files_that_already_verify(server, tmp_path):
    download_all(tmp_path, server, timeout=5, log=lambda m: None)
    messages = []
    download_all(tmp_path, server, timeout=5, log=messages.append)
    assert len(messages) == len(FIXTURE_SUMS) and all("already present" in m for m in messages)


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path, monkeypatch):
    monkeypatch.setitem(download.CHECKSUMS, "sts-dev.csv", "0" * 64)
    with pytest.raises(DownloadError) as e:
        download_all(tmp_path, server, files=["sts-dev.csv"], timeout=5, log=lambda m: None)
    msg = str(e.value)
    assert "sts-dev.csv" in msg and "0" * 64 in msg and FIXTURE_SUMS["sts-dev.csv"] in msg
    assert "--no-verify" in msg
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file


def test_failed_download_never_clobbers_an_existing_file(server, tmp_path, monkeypatch):
    (tmp_path / "sts-dev.csv").write_bytes(b"old contents")
    monkeypatch.setitem(download.CHECKSUMS, "sts-dev.csv", "0" * 64)
    with pytest.raises(DownloadError):
        download_all(tmp_path, server, ["sts-dev.csv"], force=True, timeout=5, log=lambda m: None)
    assert (tmp_path / "sts-dev.csv").read_bytes() == b"old contents"
    assert leftovers(tmp_path) == []


def test_no_verify_accepts_any_contents(server, tmp_path, monkeypatch):
    monkeypatch.setitem(download.CHECKSUMS, "sts-dev.csv", "0" * 64)
    download_all(tmp_path, server, ["sts-dev.csv"], verify=False, timeout=5, log=lambda m: None)
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
    rc = main(["--base-url", server, "--out", str(tmp_path), "--tasks", "sts"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(all_files(["sts"]))
    assert f"--data-dir {tmp_path}" in capsys.readouterr().out


def test_main_verifies_by_default(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(download, "CHECKSUMS", CHECKSUMS)  # the real table: the fixtures fail it
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
