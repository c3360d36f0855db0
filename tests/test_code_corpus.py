"""The Python code corpus: labels against hand-worked snippets, the shipped file, the loader."""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import hlviz
from hlviz.datasets import code_corpus, python_syntax_labels
from hlviz.errors import DataFileError, OptionError

ROOT = Path(__file__).resolve().parents[1]


def digits(labels, key):
    return "".join(str(int(v)) for v in labels[key])


def test_nested_brackets_and_brackets_inside_strings():
    src = 'a = f(x[1], {2: "("})\n'
    lab = python_syntax_labels(src)
    # a = f ( x [ 1 ] ,   { 2 :   " ( " } ) \n
    assert digits(lab, "depth") == "0000011222112222222210"
    assert digits(lab, "string") == "0000000000000000222000"
    assert lab["in_string"].tolist() == [int(v > 0) for v in lab["string"]]


def test_triple_quoted_string_spanning_lines_keeps_its_line_indent():
    src = 'def f():\n    s = """a\n\'b\'\n"""\n    return s\n'
    lab = python_syntax_labels(src)
    start, end = src.index('"""'), src.rindex('"""') + 3
    assert set(lab["string"][start:end].tolist()) == {4}
    assert lab["string"][:start].sum() == 0 and lab["string"][end:].sum() == 0
    # the string's lines belong to the indented logical line that opened it
    assert set(lab["indent"][src.index("    s") : end].tolist()) == {1}
    assert lab["indent"][src.index("return")] == 1 and lab["indent"][0] == 0
    assert lab["column"][src.index("'b'")] == 0 and lab["column"][src.index("a\n")] == 11


def test_string_kinds_prefixes_and_fstrings():
    src = "x = ['a', \"b\", '''c''', r\"d\", f'{y!r}', b\"\"\"e\"\"\"]\n"
    lab = python_syntax_labels(src)
    kinds = {}
    for token in ("'a'", '"b"', "'''c'''", 'r"d"', "f'{y!r}'", 'b"""e"""'):
        i = src.index(token)
        kinds[token] = set(lab["string"][i : i + len(token)].tolist())
    assert kinds == {
        "'a'": {1},
        '"b"': {2},
        "'''c'''": {3},
        'r"d"': {2},
        "f'{y!r}'": {1},
        'b"""e"""': {4},
    }
    # the braces of the f-string are string content, not brackets (Python 3.11 tokenize)
    i = src.index("f'")
    assert set(lab["depth"][i : i + 8].tolist()) == {1}


def test_comments_containing_quotes_and_brackets():
    src = 'x = (1,  # it\'s "q" (\n     2)\n'
    lab = python_syntax_labels(src)
    hash_at, nl = src.index("#"), src.index("\n")
    assert lab["comment"].tolist() == [int(hash_at <= i < nl) for i in range(len(src))]
    assert lab["string"].sum() == 0  # quotes in a comment open no string
    assert lab["depth"][hash_at:nl].tolist() == [1] * (nl - hash_at)  # "(" in the comment: no
    assert lab["depth"][src.index("2)")] == 1 and lab["depth"][-1] == 0


def test_continuation_lines_keep_indent_and_restart_columns():
    src = "if a:\n    y = 1 + \\\n  2\n    z = [3,\n4]\nw = 0\n"
    lab = python_syntax_labels(src)
    assert lab["indent"][src.index("  2")] == 1  # backslash continuation of an indented line
    assert lab["indent"][src.index("4]")] == 1  # bracket continuation
    assert lab["indent"][src.index("w")] == 0
    assert lab["column"][src.index("2\n")] == 2 and lab["column"][src.index("4]")] == 0
    assert lab["depth"][src.index("\n4")] == 1 and lab["depth"][src.index("]")] == 1
    assert lab["column"][src.index("\\")] == 12


def test_labels_have_one_value_per_character_and_small_dtypes():
    src = "print('hi')"  # no final newline
    lab = python_syntax_labels(src)
    assert set(lab) == set(hlviz.datasets.CODE_LABELS)
    assert all(v.shape == (len(src),) for v in lab.values())
    assert all(v.dtype.itemsize <= 2 for v in lab.values())


def test_labels_reject_bad_source():
    with pytest.raises(OptionError, match="cannot be tokenized"):
        python_syntax_labels("x = (1,\n")
    with pytest.raises(OptionError, match="must be a str of Python code, got bytes"):
        python_syntax_labels(b"x = 1")


@pytest.fixture(scope="module")
def splits():
    return {s: code_corpus(s) for s in ("train", "validation", "test", "all")}


def test_splits_partition_the_corpus_by_file(splits):
    files = [set(splits[s].files) for s in ("train", "validation", "test")]
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    assert set.union(*files) == set(splits["all"].files) and len(splits["all"].files) == 58
    assert sum(len(splits[s]) for s in ("train", "validation", "test")) == len(splits["all"])
    assert 1_000_000 < len(splits["all"]) < 2_000_000
    assert len({splits[s].vocab for s in splits}) == 1
    test = splits["test"]
    assert len(test.text) == len(test.file_ids) == len(test.labels["column"])
    assert test.file_ids.max() == len(test.files) - 1
    assert "CodeCorpus('test': 206,895 characters from 6 files, vocab 96" in repr(test)


def test_shipped_labels_match_the_labeller_and_the_files(splits):
    test = splits["test"]
    first = test.text[: int(np.argmax(test.file_ids == 1))]
    fresh = python_syntax_labels(first)
    for key, values in fresh.items():
        assert np.array_equal(values, test.labels[key][: len(first)]), key
    if platform.python_version() == test.python:  # the same interpreter: the same source
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        assert (stdlib / test.files[0]).read_text() == first


def test_encode_decode_and_windows(splits):
    test = splits["test"]
    ids = test.encode()
    assert ids.dtype.is_floating_point is False and len(ids) == len(test)
    assert test.decode(ids[:200]) == test.text[:200]
    w = test.windows(100, 3)
    middle = int(np.round((len(test) // 100 - 1) / 2)) * 100  # first, middle, last window
    assert tuple(w.shape) == (3, 100) and test.decode(w[1]) == test.text[middle : middle + 100]
    assert test.window_index(100, 3)[2, -1] == len(test) // 100 * 100 - 1
    assert np.array_equal(test.window_index(3), np.arange(len(test) // 3 * 3).reshape(-1, 3))
    with pytest.raises(OptionError, match="outside the corpus vocabulary: \\['\xe9'\\]"):
        test.encode("caf\xe9")
    with pytest.raises(OptionError, match="length must be an int between 1 and 206895, got 0"):
        test.windows(0)
    with pytest.raises(OptionError, match="count must be an int between 1 and 2 for windows"):
        test.windows(100_000, 3)


def test_loader_rejects_a_bad_split():
    with pytest.raises(OptionError, match="split must be one of 'train', 'validation', 'test'"):
        code_corpus("valid")


def test_loader_checks_the_checksum_and_says_how_to_rebuild(tmp_path, monkeypatch):
    shutil.copy(ROOT / "data" / "SHA256SUMS", tmp_path / "SHA256SUMS")
    monkeypatch.setattr("hlviz.datasets.files.data_dir", lambda: tmp_path)
    with pytest.raises(DataFileError, match=r"missing.*scripts/build_code_corpus\.py"):
        code_corpus("test")
    damaged = bytearray((ROOT / "data" / "code_corpus.npz").read_bytes())
    damaged[1000] ^= 0xFF
    (tmp_path / "code_corpus.npz").write_bytes(bytes(damaged))
    with pytest.raises(DataFileError, match=r"damaged or stale.*scripts/build_code_corpus\.py"):
        code_corpus("test")
    with pytest.raises(DataFileError, match="no corpus file at"):
        code_corpus("test", path=tmp_path / "nope.npz")


def _same_stdlib() -> bool:
    with np.load(ROOT / "data" / "code_corpus.npz") as z:
        names, sums = z["file_names"].astype(str), z["file_sha256"].astype(str)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return all(
        (stdlib / n).is_file() and hashlib.sha256((stdlib / n).read_bytes()).hexdigest() == s
        for n, s in zip(names, sums, strict=True)
    )


@pytest.mark.skipif(
    not _same_stdlib(), reason="this interpreter's stdlib is not the one the corpus was built from"
)
def test_builder_is_deterministic(tmp_path):
    out = tmp_path / "corpus.npz"
    run = subprocess.run(
        [sys.executable, ROOT / "scripts" / "build_code_corpus.py", "--out", out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "58 files, 1,759,188 characters" in run.stdout
    assert out.read_bytes() == (ROOT / "data" / "code_corpus.npz").read_bytes()
    again = code_corpus("test", path=out)
    assert again.text == code_corpus("test").text
