"""
Download the CS224N minBERT data files (SST-5, Quora, STS-B, CFIMDB) and check their SHA-256.

    python data/download.py --out data-files
    python data/download.py --base-url file:///path/to/course/data --out data-files   # local copy

Stdlib only, so it runs before anything else is installed. The checksum table holds the files
as this project ships them (the shared data folder). Its Quora files are NOT the course's: the
training file is a re-pooled 31,696-pair set and dev/test are the two halves of the course's
dev set (see the data README), so Quora files fetched from the course repository fail the check;
pass --no-verify to accept them anyway (the loaders read either version).
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

# Unverified guess at the raw-file location of the course's public starter repository;
# override with --base-url when it moves.
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data"

CHECKSUMS = {  # sha256 of the files in ../shared/data
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
TASK_PREFIXES = {"sst": "ids-sst-", "quora": "quora-", "sts": "sts-", "cfimdb": "ids-cfimdb-"}
MAX_BYTES = 64 * 2**20  # the largest file is ~5 MB; stop a wrong URL from filling the disk
CHUNK = 2**16


class DownloadError(RuntimeError):
    """A file could not be fetched or failed its checksum; the message says what to do."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None,
                  timeout: float = 30.0) -> Path:
    """Fetch url into dest atomically: stream into a temp file in dest's folder, check the
    hash, then rename, so an interrupted or corrupt download never leaves a half-written
    dest behind. sha256=None skips the check."""
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
        if sha256 is not None and h.hexdigest() != sha256:
            raise DownloadError(
                f"{dest.name}: checksum mismatch (expected sha256 {sha256}, got "
                f"{h.hexdigest()}); the file at {url} is not the version this project "
                f"expects (the Quora files here differ from the course's). Re-run with "
                f"--no-verify to keep it anyway.")
        os.replace(tmp, dest)
        return dest
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


def download_all(out_dir: str | os.PathLike, base_url: str = DEFAULT_BASE_URL,
                 files: list[str] | None = None, checksums: dict[str, str] | None = None,
                 verify: bool = True, timeout: float = 30.0, force: bool = False,
                 log=print) -> list[Path]:
    """Download `files` (default: every file in `checksums`) from base_url into out_dir.
    Files already present with the right checksum are kept unless force=True."""
    checksums = CHECKSUMS if checksums is None else checksums
    files = list(checksums) if files is None else files
    unknown = [f for f in files if verify and f not in checksums]
    if unknown:
        raise DownloadError(f"no checksum known for {unknown}; pass --no-verify")
    out_dir = Path(out_dir)
    done = []
    for name in files:
        dest = out_dir / name
        expected = checksums.get(name) if verify else None
        if dest.is_file() and not force and (expected is None or sha256_file(dest) == expected):
            log(f"{dest}: already present")
        else:
            download_file(f"{base_url.rstrip('/')}/{name}", dest, expected, timeout)
            log(f"{dest}: downloaded" + (", checksum ok" if expected else ""))
        done.append(dest)
    return done


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python data/download.py",
        description="Download the CS224N minBERT data files (SST-5, Quora, STS-B, CFIMDB) "
                    "and verify their SHA-256 checksums.",
        epilog="Offline? Copy the .csv files by hand into a folder and pass --data-dir DIR to "
               "the training scripts (or set MINBERT_DATA_DIR=DIR). Note: the checksums are of "
               "this project's files, whose Quora files differ from the course release.")
    p.add_argument("--out", default="data-files",
                   help="folder to write the files into, created if needed; the loaders look "
                        "for ./data-files by default (default: %(default)s)")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL,
                   help="URL of the folder holding the files; each file is fetched from "
                        "BASE_URL/NAME. file:///path/to/dir copies a local folder "
                        "(default: %(default)s)")
    p.add_argument("--tasks", nargs="+", choices=sorted(TASK_PREFIXES), default=None,
                   help="only fetch the train/dev/test files of these tasks (default: all)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the SHA-256 checks, e.g. to accept the course's own Quora files "
                        "or an updated release")
    p.add_argument("--force", action="store_true",
                   help="download again even if a file with the right checksum is present")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the server before giving up on a file "
                        "(default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    files = list(CHECKSUMS)
    if args.tasks:
        files = [f for f in files if f.startswith(tuple(TASK_PREFIXES[t] for t in args.tasks))]
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
