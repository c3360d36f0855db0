"""Words and word pieces: align a sentence's words to a tokenizer's pieces, and back to rows.

>>> from hlviz.datasets.text import align_words, word_spans
>>> spans = word_spans(["Unbelievable", "!"], [False, False])
>>> spans
[(0, 12), (12, 13)]
>>> # offsets of "[CLS] un ##bel ##ievable ! [SEP]" (special tokens have (0, 0))
>>> align_words(spans, [(0, 0), (0, 2), (2, 5), (5, 12), (12, 13), (0, 0)])
[(1, 3), (4, 1)]

A probing corpus labels *words* (a parser's tokens), a transformer sees *word pieces*.
:func:`align_words` gives each word the position of its first piece (the row a probe reads)
and its number of pieces, from the character offsets a fast tokenizer returns
(``return_offsets_mapping=True``). :func:`word_token_rows` maps the words of a corpus to the
token rows of :func:`hlviz.collect` with ``tokens=True`` (columns ``sequence``, ``position``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import OptionError, ShapeMismatchError

__all__ = ["align_words", "sentence_texts", "word_spans", "word_token_rows"]


def word_spans(words: Sequence[str], space_after: Sequence[bool]) -> list[tuple[int, int]]:
    """Character ``(start, end)`` of each word in ``"".join(w + " " * s for w, s in ...)``.

    >>> word_spans(["A", "cat", "."], [True, False, False])
    [(0, 1), (2, 5), (5, 6)]
    """
    if len(words) != len(space_after):
        raise ShapeMismatchError(
            f"{len(words)} words but {len(space_after)} space_after flags: give one per word."
        )
    spans, start = [], 0
    for word, space in zip(words, space_after):
        spans.append((start, start + len(word)))
        start += len(word) + (1 if space else 0)
    return spans


def align_words(
    spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``(first_piece, n_pieces)`` of each word, from word and piece character spans.

    >>> align_words([(0, 6)], [(0, 0), (0, 3), (3, 6), (0, 0)])   # "[CLS] can ##not [SEP]"
    [(1, 2)]

    ``spans``: each word's ``(start, end)`` characters; ``offsets``: each piece's, as a
    fast tokenizer's ``offset_mapping`` gives them (special tokens ``(0, 0)`` are skipped).
    A piece belongs to the word in which it starts; ``first_piece`` is the piece's position
    in the input (``[CLS]`` is 0). A word whose characters are all inside a piece that
    starts in an earlier word (spaCy's ``can|not`` against one piece ``cannot``) gets
    ``(-1, 0)``: it has no piece of its own to probe.
    """
    starts = [
        (position, int(start))
        for position, (start, end) in enumerate(offsets)
        if int(end) > int(start)
    ]
    result = []
    for word_start, word_end in spans:
        mine = [p for p, s in starts if word_start <= s < word_end]
        result.append((mine[0], len(mine)) if mine else (-1, 0))
    return result


def sentence_texts(corpus: Any) -> dict[int, str]:
    """The text of every sentence of a word table (``sentence_id``, ``word``, ``space_after``).

    >>> import pandas as pd
    >>> words = pd.DataFrame({"sentence_id": [7, 7, 7], "word": ["Hi", "there", "!"],
    ...                       "space_after": [1, 0, 0]})
    >>> sentence_texts(words)
    {7: 'Hi there!'}
    """
    missing = {"sentence_id", "word", "space_after"} - set(corpus.columns)
    if missing:
        raise OptionError(
            f"the word table lacks columns {sorted(missing)}; pass the DataFrame of "
            "hlviz.datasets.probing_corpus() (or a subset of its rows)."
        )
    texts: dict[int, list[str]] = {}
    for sid, word, space in zip(corpus["sentence_id"], corpus["word"], corpus["space_after"]):
        texts.setdefault(int(sid), []).append(str(word) + (" " if int(space) else ""))
    return {sid: "".join(parts).rstrip(" ") for sid, parts in texts.items()}


def word_token_rows(
    corpus: Any, sequence: Any, position: Any, sentence_ids: Sequence[int] | None = None
) -> np.ndarray:
    """For each word of ``corpus``, the token row that holds its first word piece (or -1).

    >>> import pandas as pd
    >>> words = pd.DataFrame({"sentence_id": [3, 3, 5], "first_piece": [1, -1, 1]})
    >>> # token rows of collect(tokens=True): [CLS] w [SEP] for sentence 3, then for 5
    >>> word_token_rows(words, [0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]).tolist()
    [1, -1, 4]

    ``sequence``, ``position``: ``(rows,)`` columns of the token rows (a store's
    ``columns["sequence"]`` and ``columns["position"]``). ``sentence_ids``: the sentence
    fed as each sequence, in order (default: the corpus's sentence ids in order of first
    appearance, i.e. the order of :func:`sentence_texts`). Words without a piece of their
    own (``first_piece == -1``) get -1. A word whose piece is not among the rows (a
    truncated or missing sentence) raises :class:`~hlviz.errors.ShapeMismatchError`.
    """
    sequence, position = np.asarray(sequence), np.asarray(position)
    if sequence.shape != position.shape or sequence.ndim != 1:
        raise ShapeMismatchError(
            f"sequence and position must be 1-D columns of one length, got shapes "
            f"{sequence.shape} and {position.shape}."
        )
    if sentence_ids is None:
        sentence_ids = list(dict.fromkeys(int(s) for s in corpus["sentence_id"]))
    order = {int(sid): i for i, sid in enumerate(sentence_ids)}
    row_of = {(int(s), int(p)): r for r, (s, p) in enumerate(zip(sequence, position))}
    rows = np.full(len(corpus), -1, dtype=np.int64)
    for i, (sid, piece) in enumerate(zip(corpus["sentence_id"], corpus["first_piece"])):
        if int(piece) < 0:
            continue
        if int(sid) not in order:
            raise ShapeMismatchError(
                f"sentence {int(sid)} of the corpus is not in sentence_ids (given "
                f"{len(order)} ids); pass the ids of the sentences you encoded, in order."
            )
        key = (order[int(sid)], int(piece))
        if key not in row_of:
            raise ShapeMismatchError(
                f"sentence {int(sid)} (sequence {key[0]}) has no token row at position "
                f"{key[1]}: was it truncated or left out of the batch? Encode every sentence "
                "of the corpus rows in full, in the order of sentence_ids."
            )
        rows[i] = row_of[key]
    return rows
