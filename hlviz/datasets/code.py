"""Python source code with exact per-character syntax labels (the RNN and transformer tracks).

>>> labels = python_syntax_labels("f(a, 'x)')  # c\\n")
>>> labels["depth"].tolist()[:10], labels["string"].tolist()[5:9], labels["comment"].tolist()[-4:]
([0, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0])

Re-exported by :mod:`hlviz.datasets` (``hlviz.datasets.code_corpus``,
``hlviz.datasets.python_syntax_labels``, ``hlviz.datasets.CodeCorpus``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import DataFileError, OptionError

__all__ = [
    "CODE_CORPUS_FILE",
    "CODE_LABELS",
    "STRING_KINDS",
    "CodeCorpus",
    "code_corpus",
    "python_syntax_labels",
]

CODE_CORPUS_FILE = "code_corpus.npz"
CODE_LABELS = ("depth", "string", "in_string", "comment", "indent", "column")
STRING_KINDS = ("none", "single", "double", "triple_single", "triple_double")
_REBUILD = "python scripts/build_code_corpus.py"
_SPLITS = ("train", "validation", "test", "all")


def _string_kind(token: str) -> int:
    body = token.lstrip("rRbBuUfF")
    for kind, quote in ((4, '"""'), (3, "'''"), (2, '"'), (1, "'")):
        if body.startswith(quote):
            return kind
    return 0


def python_syntax_labels(source: str) -> dict[str, np.ndarray]:
    """Per-character syntax labels of Python ``source``, from the ``tokenize`` module.

    >>> lab = python_syntax_labels("x = [1, (2)]\\n")
    >>> lab["depth"].tolist()
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 1, 0]

    Returns name -> ``(len(source),)`` integer array, one value per character:

    * ``depth``: how many brackets ``( [ {`` enclose the character; a bracket belongs to the
      pair it opens or closes (``(`` and ``)`` are at depth 1). Brackets inside strings and
      comments do not count (they are not ``OP`` tokens).
    * ``string``: the kind of string literal the character belongs to, an index into
      :data:`STRING_KINDS` (0 none, 1 ``'...'``, 2 ``"..."``, 3 ``'''...'''``, 4 ``\"\"\"...\"\"\"``);
      prefixes (``f``, ``r``, ``b``) and the quotes themselves are inside. On Python 3.11 an
      f-string is one ``STRING`` token; on 3.12+ its ``{...}`` parts are also labelled as string.
    * ``in_string``: ``string > 0`` as 0/1.
    * ``comment``: 1 from ``#`` to the end of its line (the newline itself is outside).
    * ``indent``: the block level (number of active ``INDENT`` tokens) of the logical line the
      character belongs to; continuation lines and multi-line strings keep the level of the
      line they continue; a comment-only line has the level in force when it is read.
    * ``column``: the character's 0-based column within its physical line.

    Raises :class:`~hlviz.errors.OptionError` when ``source`` does not tokenize.
    """
    import tokenize

    if not isinstance(source, str):
        raise OptionError(f"source must be a str of Python code, got {type(source).__name__}.")
    n = len(source)
    lines = [line + "\n" for line in source.split("\n")]  # rows as tokenize reads them
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    lengths = np.array([len(line) for line in lines], dtype=np.int64)
    starts = np.zeros(len(lines) + 2, dtype=np.int64)  # starts[r - 1]: offset of row r
    starts[1 : len(lines) + 1] = np.cumsum(lengths)
    starts[len(lines) + 1] = n
    string = np.zeros(n, dtype=np.uint8)
    comment = np.zeros(n, dtype=np.uint8)
    steps = np.zeros(n + 1, dtype=np.int32)  # depth changes; cumsum gives the depth
    row_indent = np.full(len(lines) + 2, -1, dtype=np.int64)
    fstart, fend = getattr(tokenize, "FSTRING_START", -1), getattr(tokenize, "FSTRING_END", -1)
    level, fstrings = 0, []

    def offset(pos: tuple[int, int]) -> int:
        return int(starts[min(pos[0], len(lines) + 1) - 1] + pos[1])

    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.INDENT:
                level += 1
                continue
            if tok.type == tokenize.DEDENT:
                level -= 1
                continue
            if tok.type == tokenize.ENDMARKER:
                break
            for row in range(tok.start[0], min(tok.end[0], len(lines)) + 1):
                if row_indent[row] < 0:
                    row_indent[row] = level
            a, b = offset(tok.start), min(offset(tok.end), n)
            if tok.type == tokenize.STRING and not fstrings:
                string[a:b] = _string_kind(tok.string)
            elif tok.type == fstart:
                fstrings.append((a, _string_kind(tok.string)))
            elif tok.type == fend:
                begin, kind = fstrings.pop()
                if not fstrings:
                    string[begin:b] = kind
            elif tok.type == tokenize.COMMENT:
                comment[a:b] = 1
            elif tok.type == tokenize.OP and not fstrings:
                if tok.string in ("(", "[", "{"):
                    steps[a] += 1
                elif tok.string in (")", "]", "}"):
                    steps[b] -= 1
    except (tokenize.TokenError, SyntaxError) as exc:
        raise OptionError(
            f"source is not valid Python and cannot be tokenized ({exc}); give complete "
            "statements (closed brackets and strings)."
        ) from None
    rows = np.repeat(np.arange(len(lines)), lengths)  # 0-based row of every character
    known = row_indent[1 : len(lines) + 1]
    for i in range(len(known)):  # rows without a token keep the level of the row above
        if known[i] < 0:
            known[i] = known[i - 1] if i else 0
    return {
        "depth": np.cumsum(steps)[:n].astype(np.int16),
        "string": string,
        "in_string": (string > 0).astype(np.uint8),
        "comment": comment,
        "indent": known[rows].astype(np.uint8),
        "column": (np.arange(n) - starts[rows]).astype(np.int16),
    }


@dataclass(frozen=True, eq=False)  # arrays do not compare to one bool
class CodeCorpus:
    """One split of the Python code corpus: text, aligned per-character labels, file ids.

    ``text`` is a ``str`` of ``N`` characters; ``labels`` maps each name of
    :data:`CODE_LABELS` to an ``(N,)`` integer array (see :func:`python_syntax_labels`);
    ``file_ids`` ``(N,)`` gives the index into ``files`` of each character's source file
    (use it as ``groups=`` so one file stays on one side of a probe's split); ``vocab`` is the
    character set of the whole corpus (the same for every split), and :meth:`encode` maps
    text to ``(N,)`` int64 ids into it.
    """

    text: str
    labels: dict[str, np.ndarray]
    file_ids: np.ndarray
    files: tuple[str, ...]
    vocab: str
    split: str
    python: str

    def __len__(self) -> int:
        return len(self.text)

    def __repr__(self) -> str:
        return (
            f"CodeCorpus({self.split!r}: {len(self.text):,} characters from {len(self.files)} "
            f"files, vocab {len(self.vocab)}, labels {', '.join(self.labels)}; Python "
            f"{self.python} standard library)"
        )

    def encode(self, text: str | None = None) -> torch.Tensor:
        """Character ids ``(len(text),)`` int64 (default: the whole split's text).

        >>> corpus = hlviz.datasets.code_corpus("test")
        >>> corpus.decode(corpus.encode("def f():")) == "def f():"
        True
        """
        text = self.text if text is None else text
        table = np.full(256, -1, dtype=np.int64)
        table[np.frombuffer(self.vocab.encode("ascii"), dtype=np.uint8)] = np.arange(
            len(self.vocab)
        )
        raw = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)
        ids = table[raw]
        if (ids < 0).any() or not text.isascii():
            bad = sorted({c for c in text if c not in self.vocab})
            raise OptionError(
                f"text has characters outside the corpus vocabulary: {bad[:10]}; the model "
                "knows only the characters of `corpus.vocab`."
            )
        return torch.from_numpy(ids)

    def decode(self, ids: Any) -> str:
        """The text of a sequence of character ids (a tensor, array or list)."""
        ids = np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids, dtype=np.int64).reshape(-1)
        return "".join(self.vocab[i] for i in ids)

    def window_index(self, length: int, count: int | None = None) -> np.ndarray:
        """Character positions ``(count, length)`` of ``count`` windows spread over the text.

        >>> corpus = hlviz.datasets.code_corpus("test")
        >>> index = corpus.window_index(100, 3)
        >>> index.shape, int(index[0, 0]), corpus.text[index[1, 0]] == corpus.text[int(index[1, 0])]
        ((3, 100), 0, True)

        The windows do not overlap: they start at multiples of ``length``, evenly spaced from
        the start to the end of the split (all non-overlapping windows when ``count`` is
        ``None``). Index labels with it: ``corpus.labels["depth"][index]``.
        """
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= len(self):
            raise OptionError(f"length must be an int between 1 and {len(self)}, got {length!r}.")
        most = len(self) // length
        count = most if count is None else count
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= most:
            raise OptionError(
                f"count must be an int between 1 and {most} for windows of {length}, got {count!r}."
            )
        starts = np.linspace(0, most - 1, count).round().astype(np.int64) * length
        return starts[:, None] + np.arange(length)

    def windows(self, length: int, count: int | None = None) -> torch.Tensor:
        """The ids of the windows of :meth:`window_index`: ``(count, length)`` int64."""
        index = self.window_index(length, count)
        return self.encode()[torch.from_numpy(index)]


def code_corpus(split: str = "train", *, path: Any = None) -> CodeCorpus:
    """Python standard-library source (PSF licence), split by file, with syntax labels.

    >>> test = hlviz.datasets.code_corpus("test")
    >>> len(test.text) == len(test.labels["depth"]) == len(test.file_ids)
    True

    ``split``: ``"train"``, ``"validation"``, ``"test"`` or ``"all"``. Reads
    ``data/code_corpus.npz`` after checking its sha256 (``data/SHA256SUMS``); ``path`` reads
    another file written by ``scripts/build_code_corpus.py --out`` (not checked). A missing
    or damaged file raises :class:`~hlviz.errors.DataFileError` naming the rebuild command.
    """
    from pathlib import Path

    if split not in _SPLITS:
        raise OptionError(f"split must be one of {', '.join(map(repr, _SPLITS))}, got {split!r}.")
    if path is None:
        from .files import verified_data_file

        path = verified_data_file(CODE_CORPUS_FILE, _REBUILD)
    elif not Path(path).is_file():
        raise DataFileError(f"no corpus file at {path}; write one with `{_REBUILD} --out {path}`.")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    text = arrays["text"].tobytes().decode("ascii")
    starts = arrays["file_starts"].astype(np.int64)
    file_split = arrays["file_split"].astype(str)
    names = tuple(arrays["file_names"].astype(str))
    keep = [i for i in range(len(names)) if split == "all" or file_split[i] == split]
    bounds = np.append(starts, len(text))
    index = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in keep])
    file_ids = np.repeat(np.arange(len(keep)), [bounds[i + 1] - bounds[i] for i in keep])
    labels = {k: arrays[k][index] for k in CODE_LABELS if k != "in_string"}
    labels["in_string"] = (labels["string"] > 0).astype(np.uint8)
    labels = {k: labels[k] for k in CODE_LABELS}
    return CodeCorpus(
        text="".join(text[bounds[i] : bounds[i + 1]] for i in keep),
        labels=labels,
        file_ids=file_ids.astype(np.int16),
        files=tuple(names[i] for i in keep),
        vocab=str(arrays["vocab"].item()),
        split=split,
        python=str(arrays["python"].item()),
    )
