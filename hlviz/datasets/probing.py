"""English sentences with silver word labels (transformer track), built by
``scripts/build_probing_corpus.py`` from WordNet examples labelled by spaCy.
"""

from __future__ import annotations

from ..errors import DataFileError, OptionError
from .files import verified_data_file

__all__ = ["PROBING_CORPUS", "probing_corpus"]

# --- English sentences with silver word labels (transformer track): scripts/build_probing_corpus.py ---
PROBING_CORPUS = "probing_corpus.tsv"
_PROBING_REBUILD = "python scripts/build_probing_corpus.py"
_PROBING_COLUMNS = {
    "sentence_id": "int64",
    "word_index": "int64",
    "word": "str",
    "space_after": "int64",
    "upos": "str",
    "dep": "str",
    "depth": "int64",
    "supersense": "str",
    "first_piece": "int64",
    "n_pieces": "int64",
}


def probing_corpus(sentences: int | None = None):
    """WordNet example sentences, one row per word with silver labels, as a ``pandas.DataFrame``.

    >>> words = hlviz.datasets.probing_corpus()
    >>> len(words), words["sentence_id"].nunique()
    (19244, 2000)
    >>> print(words.loc[2, ["word", "upos", "dep", "depth", "supersense", "first_piece"]].to_dict())
    {'word': 'window', 'upos': 'NOUN', 'dep': 'pobj', 'depth': 2, 'supersense': 'noun.artifact', 'first_piece': 3}

    Columns: ``sentence_id``, ``word_index``, ``word``, ``space_after`` (1 when a space
    follows; :func:`hlviz.datasets.text.sentence_texts` rebuilds the text), ``upos``, ``dep`` and
    ``depth`` (spaCy ``en_core_web_sm``: universal POS, dependency relation, steps to the
    root), ``supersense`` (WordNet lexname of nouns, else ``"none"``), ``first_piece`` and
    ``n_pieces`` (the word's first MiniLM word piece, ``[CLS]`` being 0; -1 and 0 for a word
    without a piece of its own). ``sentences``: keep only the first ``sentences`` sentences.
    Read from ``data/probing_corpus.tsv`` after checking its sha256; no spaCy needed.
    """
    import pandas as pd

    if sentences is not None and (
        isinstance(sentences, bool) or not isinstance(sentences, int) or sentences < 1
    ):
        raise OptionError(
            f"sentences must be a positive int (how many sentences to keep) or None for all "
            f"2,000, got {sentences!r}."
        )
    path = verified_data_file(PROBING_CORPUS, _PROBING_REBUILD)
    words = pd.read_csv(path, sep="\t", dtype=_PROBING_COLUMNS, keep_default_na=False)
    if list(words.columns) != list(_PROBING_COLUMNS):
        raise DataFileError(
            f"{path} has columns {list(words.columns)}, expected {list(_PROBING_COLUMNS)}; "
            f"rebuild it with `{_PROBING_REBUILD}`."
        )
    if sentences is not None:
        words = words[words["sentence_id"] < sentences].reset_index(drop=True)
    return words
