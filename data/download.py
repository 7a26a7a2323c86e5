"""
Download the CS224N minBERT data files (SST-5, Quora, STS-B, CFIMDB) and check them.

    python data/download.py --out data-files
    python data/download.py --base-url file:///path/to/course/data --out data-files   # local copy

Stdlib only (plus data/datasets.py, itself stdlib only), so it runs before anything else is
installed. Two releases of the Quora files exist: this project's shared data folder (a re-pooled
31,696-pair training file; dev and test are the two halves of the course's dev set, see the data
README) and the course's own. A file passes when its SHA-256 is one we know. The course's
quora-train.csv and quora-test-student.csv have no checksum known here: such a file is checked by
its structure instead (header, every row parses, a plausible row count) and kept with a one-line
warning that prints its SHA-256. Anything else is refused as corrupted, and never left on disk.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

if __package__:  # imported as data.download (tests, python -m data.download)
    from .datasets import SPLITS, DATASETS, DataError, all_files, load_file, task_file
else:  # run as python data/download.py: Python puts this file's folder first on sys.path
    from datasets import SPLITS, DATASETS, DataError, all_files, load_file, task_file

# Unverified guess at the raw-file location of the course's public starter repository;
# override with --base-url when it moves.
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data"

CHECKSUMS = {  # sha256 of the files in ../shared/data (for SST, STS, CFIMDB: the course's release)
    "ids-sst-train.csv": "03b2b625c090f94a6afd59f114cde5282e2053aab0b101e87ed695d8a0c5b1df",
    "ids-sst-dev.csv": "a186ce94577635fbe10beaaddd50f16cccf6c30973221cefdf90deed2a584bfe",
    "ids-sst-test-student.csv": "bdd5a767faa0c26782117e37767ece154c30d5d04fb8727d09c71e3850a55c7b",
    "quora-train.csv": "6ebf4c8108428ef85a7f4eea66e89b2ac58ed238a39a53b7cfc79f9b7d4c5751",
    "quora-dev.csv": "538303e679a69607ed1b59ef94c9d02b50bfec9ad6364d7e463b52caf059dc56",
    "quora-test-student.csv": "fb22e32e60633a7db6958f24fce49bd99b1f7070b728132ac092a987b8590a72",
    "sts-train.csv": "15d12efc2d656fffb1d61ac1f08ec4227f43925fd16f420c037cbd063699c21b",
    "sts-dev.csv": "ce3cad6f16062586ac7ba462c28b010a9be10c530fd5074165860d7b7ab4e93d",
    "sts-test-student.csv": "dee455745b72e9ca3ff74e7c056bd73e34bad5b8d5641045a2c1e7e131866f47",
    "ids-cfimdb-train.csv": "140fc513045a966109faed46a5c7a898767b96714d71bcb9c15f659129fadcea",
    "ids-cfimdb-dev.csv": "3087f571b66860fe5d035b5a018d08202ad3fd3720e4821c04b2acf6c7ded559",
    "ids-cfimdb-test-student.csv": "7ae611548c9eac879e9ebb406cc9f8ae68ff12f78090e4965af5cbdfa06240f4",
}
COURSE_CHECKSUMS = {  # the course's own release where it differs from the shared folder
    "quora-dev.csv": "bfa3cc954a9ba300ae776a980141de65f622a3c1b97e3fd905d63245bc36d5ad",  # 20,215 lines
}
# Files with a release whose checksum is not known here (the course's), checked by structure:
# the fewest rows a real release can have. The smallest known Quora file has 10,008 rows; the
# bound leaves room for releases we have not seen and still catches a download cut short early.
MIN_ROWS = {"quora-train.csv": 10_000, "quora-test-student.csv": 5_000}
FILE_SPLITS = {task_file(t, s): (t, s) for t in DATASETS for s in SPLITS}  # name -> (task, split)
# Stops a wrong URL from filling the disk: the largest file here is ~5 MB, and the course's Quora
# training file has 4.5x its rows.
MAX_BYTES = 64 * 2**20
CHUNK = 2**16


class DownloadError(RuntimeError):
    """A file could not be fetched or failed its checksum; the message says what to do."""


def known_checksums(name: str) -> dict[str, str]:
    """sha256 -> which release, for every version of `name` we know."""
    known = {CHECKSUMS[name]: "this project's data folder"} if name in CHECKSUMS else {}
    if name in COURSE_CHECKSUMS:
        known[COURSE_CHECKSUMS[name]] = "the course's release"
    return known


def check_structure(path: str | os.PathLike, name: str) -> int:
    """Load `path` as the file `name` with the project's own loader (header columns, every row
    parses, unique ids in dev/test) and check its row count is plausible. Returns the row count;
    raises DownloadError naming what is wrong."""
    task, split = FILE_SPLITS[name]
    try:
        n = len(load_file(path, task, split).examples)
    except DataError as e:  # the message names the temporary file; name the download instead
        raise DownloadError(f"{name} is corrupted: {str(e).replace(str(path), name)}") from None
    if n < MIN_ROWS.get(name, 1):
        raise DownloadError(f"{name} is corrupted: only {n:,} rows, a real release has at least "
                            f"{MIN_ROWS[name]:,} (cut short?)")
    return n


def verify_file(path: str | os.PathLike, name: str, digest: str) -> str:
    """How the file at `path`, to be saved as `name`, with sha256 `digest`, checks out: the line
    to log. Raises DownloadError if it is corrupted (a known name with a checksum we do not know,
    unless its course release has no known checksum and its structure checks out)."""
    known = known_checksums(name)
    if digest in known:
        return f"checksum ok ({known[digest]})"
    if name in MIN_ROWS:
        n = check_structure(path, name)
        return (f"warning: no checksum known for this version (sha256 {digest}); "
                f"its structure checks out ({n:,} rows), kept")
    if not known:
        raise DownloadError(f"{name}: no checksum known for this file name; pass --no-verify")
    expected = "; ".join(f"{d} ({what})" for d, what in known.items())
    raise DownloadError(
        f"{name}: checksum mismatch (got sha256 {digest}, expected {expected}); the download is "
        f"corrupted or a release this project does not know. Retry; re-run with --no-verify to "
        f"keep it anyway.")


def download_file(url: str, dest: str | os.PathLike,
                  check: Callable[[Path, str], str] | None = None,
                  timeout: float = 30.0) -> tuple[Path, str]:
    """Fetch url into dest atomically: stream into a temp file in dest's folder, run
    check(temp_path, sha256) (it raises DownloadError to refuse the file, else returns a line to
    log), then rename, so an interrupted or refused download never leaves a half-written dest
    behind. Returns (dest, check's line); check=None skips the check."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as dest so os.replace is an atomic rename; plain open() (not mkstemp) so
    # the file gets the usual umask permissions instead of 0600.
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        h, size = hashlib.sha256(), 0
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
            for chunk in iter(lambda: r.read(CHUNK), b""):
                size += len(chunk)
                if size > MAX_BYTES:
                    raise DownloadError(f"{url}: larger than {MAX_BYTES >> 20} MiB; "
                                        f"is --base-url right?")
                h.update(chunk)
                out.write(chunk)
        note = check(tmp, h.hexdigest()) if check is not None else ""
        os.replace(tmp, dest)
        return dest, note
    except urllib.error.HTTPError as e:  # before URLError: HTTPError is a subclass
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; check --base-url") from None
    except urllib.error.URLError as e:
        raise DownloadError(
            f"cannot reach {url} ({e.reason}). No network? Copy the course data files by hand "
            f"into {dest.parent} (or any folder) and pass --data-dir DIR to the training "
            f"scripts or set MINBERT_DATA_DIR=DIR.") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise DownloadError(f"{url}: connection failed while reading ({e}); "
                            f"retry or raise --timeout") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_all(out_dir: str | os.PathLike, base_url: str = DEFAULT_BASE_URL,
                 files: list[str] | None = None, verify: bool = True, timeout: float = 30.0,
                 force: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    """Download `files` (default: every data file) from base_url into out_dir, each checked by
    verify_file unless verify=False. Files already present that pass the check are kept unless
    force=True."""
    files = all_files() if files is None else files
    out_dir = Path(out_dir)
    done = []
    for name in files:
        dest = out_dir / name
        check = (lambda path, digest, name=name: verify_file(path, name, digest)) if verify else None
        note = None
        if dest.is_file() and not force:
            try:
                note = check(dest, sha256_file(dest)) if check else ""
            except DownloadError:
                note = None  # present but not a release we accept: fetch it again
        if note is not None:
            log(f"{dest}: already present" + (f", {note}" if note else ""))
        else:
            _, note = download_file(f"{base_url.rstrip('/')}/{name}", dest, check, timeout)
            log(f"{dest}: downloaded" + (f", {note}" if note else ""))
        done.append(dest)
    return done


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python data/download.py",
        description="Download the CS224N minBERT data files (SST-5, Quora, STS-B, CFIMDB) "
                    "and verify them: a known SHA-256 (this project's data folder, or the "
                    "course's release), or, for the course's quora-train.csv and "
                    "quora-test-student.csv whose checksums are not known here, their structure "
                    "(header, every row parses, enough rows; a one-line warning prints the "
                    "SHA-256). A corrupted file is refused and not saved.",
        epilog="Offline? Copy the .csv files by hand into a folder and pass --data-dir DIR to "
               "the training scripts (or set MINBERT_DATA_DIR=DIR). Two Quora releases exist: "
               "the course's, and this project's (a re-pooled training file; dev and test are "
               "the halves of the course's dev set); both are accepted.")
    p.add_argument("--out", default="data-files",
                   help="folder to write the files into, created if needed; the loaders look "
                        "for ./data-files by default (default: %(default)s)")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL,
                   help="URL of the folder holding the files; each file is fetched from "
                        "BASE_URL/NAME. file:///path/to/dir copies a local folder "
                        "(default: %(default)s)")
    p.add_argument("--tasks", nargs="+", choices=sorted(DATASETS), default=None,
                   help="only fetch the train/dev/test files of these tasks (default: all)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip every check and keep whatever the server sends, e.g. an updated "
                        "release whose checksum this script does not know")
    p.add_argument("--force", action="store_true",
                   help="download again even if a file that passes the check is present")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the server before giving up on a file "
                        "(default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    files = all_files(args.tasks or DATASETS)
    try:
        download_all(args.out, args.base_url, files, verify=not args.no_verify,
                     timeout=args.timeout, force=args.force)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"done: use --data-dir {args.out} or export MINBERT_DATA_DIR={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
