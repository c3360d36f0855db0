"""Build data/code_corpus.npz: Python standard-library source with per-character syntax labels.

    .venv/bin/python scripts/build_code_corpus.py            # writes data/code_corpus.npz
    .venv/bin/python scripts/build_code_corpus.py --out /tmp/corpus.npz

The 58 files below (pure-ASCII top-level modules of 15-60 kB of the CPython 3.11 standard
library, PSF licence) are read from this interpreter's stdlib folder (``sysconfig``); the
text differs between Python releases, so the script refuses another minor version unless
``--any-python`` is given (the file then no longer matches data/SHA256SUMS). Every 10th file
from the 4th is the validation split, every 10th from the 8th the test split (split by file,
so no file is on two sides). Labels come from ``hlviz.datasets.python_syntax_labels``
(``tokenize``). The output is deterministic: the same interpreter writes the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import platform
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hlviz.datasets import python_syntax_labels  # noqa: E402

PYTHON = "3.11"
FILES = (
    "_collections_abc.py",
    "_strptime.py",
    "aifc.py",
    "asyncore.py",
    "base64.py",
    "bdb.py",
    "calendar.py",
    "cgi.py",
    "codecs.py",
    "compileall.py",
    "configparser.py",
    "contextlib.py",
    "csv.py",
    "dataclasses.py",
    "dis.py",
    "fileinput.py",
    "gettext.py",
    "gzip.py",
    "imaplib.py",
    "mimetypes.py",
    "modulefinder.py",
    "nntplib.py",
    "ntpath.py",
    "os.py",
    "pathlib.py",
    "pkgutil.py",
    "platform.py",
    "plistlib.py",
    "poplib.py",
    "posixpath.py",
    "pprint.py",
    "profile.py",
    "pstats.py",
    "random.py",
    "selectors.py",
    "shutil.py",
    "site.py",
    "smtpd.py",
    "smtplib.py",
    "socket.py",
    "socketserver.py",
    "ssl.py",
    "sunau.py",
    "sysconfig.py",
    "telnetlib.py",
    "tempfile.py",
    "textwrap.py",
    "threading.py",
    "tokenize.py",
    "trace.py",
    "traceback.py",
    "tracemalloc.py",
    "uuid.py",
    "warnings.py",
    "wave.py",
    "weakref.py",
    "webbrowser.py",
    "zipimport.py",
)


def split_of(index: int) -> str:
    return {3: "validation", 7: "test"}.get(index % 10, "train")


def build() -> dict[str, np.ndarray]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts, labels = [], {}
    for name in FILES:
        raw = (stdlib / name).read_bytes()
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            sys.exit(f"{stdlib / name} is not pure ASCII in this Python; pin another file list")
        texts.append(text)
        for key, value in python_syntax_labels(text).items():
            if key != "in_string":  # derived from "string" when loading
                labels.setdefault(key, []).append(value)
    text = "".join(texts)
    starts = np.cumsum([0] + [len(t) for t in texts[:-1]])
    vocab = "".join(sorted(set(text)))
    sources = [hashlib.sha256((stdlib / n).read_bytes()).hexdigest() for n in FILES]
    return {
        "text": np.frombuffer(text.encode("ascii"), dtype=np.uint8),
        **{k: np.concatenate(v) for k, v in labels.items()},
        "file_starts": starts.astype(np.int64),
        "file_names": np.array(FILES),
        "file_split": np.array([split_of(i) for i in range(len(FILES))]),
        "file_sha256": np.array(sources),
        "vocab": np.array(vocab),
        "python": np.array(platform.python_version()),
    }


def write(arrays: dict[str, np.ndarray], out: Path) -> None:
    """A compressed .npz with fixed timestamps, so the same arrays give the same bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buffer.getvalue(), compresslevel=9)


def update_sums(out: Path) -> str:
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    sums = out.parent / "SHA256SUMS"
    lines = [
        line
        for line in (sums.read_text().splitlines() if sums.exists() else [])
        if line.split()[-1].lstrip("*") != out.name
    ]
    sums.write_text("\n".join([*lines, f"{digest}  {out.name}"]) + "\n")
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "code_corpus.npz")
    parser.add_argument("--any-python", action="store_true", help="allow another Python")
    args = parser.parse_args()
    version = ".".join(platform.python_version_tuple()[:2])
    if version != PYTHON and not args.any_python:
        sys.exit(f"the pinned corpus comes from Python {PYTHON}, this is {version}")
    arrays = build()
    write(arrays, args.out)
    n = len(arrays["text"])
    splits = {s: 0 for s in ("train", "validation", "test")}
    bounds = np.append(arrays["file_starts"], n)
    for i, s in enumerate(arrays["file_split"]):
        splits[str(s)] += int(bounds[i + 1] - bounds[i])
    print(f"{len(FILES)} files, {n:,} characters, vocab {len(arrays['vocab'].item())}: {splits}")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    if args.out.resolve() == (ROOT / "data" / "code_corpus.npz").resolve():
        print(f"sha256 {update_sums(args.out)} recorded in data/SHA256SUMS")


if __name__ == "__main__":
    main()
