"""The probing corpus: words align to MiniLM's word pieces, the shipped file is verified."""

from __future__ import annotations

import shutil

import pytest

import hlviz
from hlviz import datasets
from hlviz.datasets.text import align_words, sentence_texts, word_spans, word_token_rows
from hlviz.errors import DataFileError, OptionError, ShapeMismatchError
from hlviz.models import minilm


@pytest.fixture(scope="module")
def mini():
    return minilm.load()


@pytest.fixture(scope="module")
def corpus():
    return datasets.probing_corpus()


def _align(tokenizer, words, space_after):
    text = "".join(w + (" " if s else "") for w, s in zip(words, space_after))
    encoded = tokenizer(text, return_offsets_mapping=True)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    return align_words(word_spans(words, space_after), encoded["offset_mapping"]), pieces


def test_punctuation_and_split_words_align_to_their_first_piece(mini):
    words = ["Unbelievably", ",", "the", "platypus", "'s", "whiskers", "twitched", "."]
    space = [False, True, True, False, True, True, False, False]
    aligned, pieces = _align(mini.tokenizer, words, space)
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert aligned[0][0] == 1, "the first word starts right after [CLS]"
    for (first, count), word, nxt in zip(aligned, words, [*aligned[1:], (len(pieces) - 1, 0)]):
        assert count >= 1 and first + count == nxt[0], (word, aligned, pieces)
        # the pieces of a word spell the word (uncased tokenizer, ## marks continuations)
        assert "".join(p.removeprefix("##") for p in pieces[first : first + count]) == word.lower()
    assert aligned[1] == (aligned[0][0] + aligned[0][1], 1) and pieces[aligned[1][0]] == ","
    assert aligned[0][1] > 1 and aligned[3][1] > 1, f"split words expected in {pieces}"
    assert pieces[aligned[4][0] : aligned[4][0] + 2] == ["'", "s"]  # spaCy's 's is two pieces
    assert aligned[-1] == (len(pieces) - 2, 1), "the full stop is the piece before [SEP]"


def test_a_word_inside_an_earlier_words_piece_has_no_piece_of_its_own():
    # spaCy splits "cannot" into can|not; a tokenizer may keep one piece "cannot"
    spans = word_spans(["I", "can", "not", "go"], [True, False, True, False])
    offsets = [(0, 0), (0, 1), (2, 8), (9, 11), (0, 0)]
    assert align_words(spans, offsets) == [(1, 1), (2, 1), (-1, 0), (3, 1)]
    with pytest.raises(ShapeMismatchError, match="3 words but 2 space_after"):
        word_spans(["a", "b", "c"], [True, True])


def test_word_token_rows_pick_each_words_first_piece_from_collected_tokens(mini, corpus):
    words = corpus[corpus["sentence_id"].isin([4, 9, 11])]
    texts = sentence_texts(words)
    assert list(texts) == [4, 9, 11]
    store = hlviz.collect(
        mini.model, [mini.encode(list(texts.values()))], "encoder.layer.0", tokens=True
    )
    cols = store.columns
    rows = word_token_rows(words, cols["sequence"][:], cols["position"][:])
    assert (rows >= 0).all() and len(set(rows.tolist())) == len(words)
    ids = mini.tokenizer(list(texts.values()))["input_ids"]
    for (sid, piece), row in zip(words[["sentence_id", "first_piece"]].values, rows):
        seq = list(texts).index(sid)
        assert int(cols["token"][:][row]) == ids[seq][piece]
    with pytest.raises(ShapeMismatchError, match="has no token row at position"):
        word_token_rows(words, cols["sequence"][:][:5], cols["position"][:][:5])
    with pytest.raises(ShapeMismatchError, match="not in sentence_ids"):
        word_token_rows(words, cols["sequence"][:], cols["position"][:], sentence_ids=[4, 9])


def test_shipped_corpus_rebuilds_its_sentences_and_its_alignment(mini, corpus):
    assert len(corpus) == 19244 and corpus["sentence_id"].nunique() == 2000
    assert (
        corpus.groupby("sentence_id")["word_index"]
        .apply(lambda s: list(s) == list(range(len(s))))
        .all()
    )
    assert (corpus.groupby("sentence_id")["depth"].min() == 0).all()  # one root per sentence
    nouns = corpus["upos"] == "NOUN"
    assert corpus.loc[~nouns, "supersense"].eq("none").all()
    assert corpus.loc[nouns, "supersense"].str.startswith("noun.").mean() > 0.95
    sample = corpus[corpus["sentence_id"] < 150]
    texts = sentence_texts(sample)
    for sid, words in sample.groupby("sentence_id"):
        aligned, _ = _align(mini.tokenizer, list(words["word"]), list(words["space_after"]))
        assert aligned == list(zip(words["first_piece"], words["n_pieces"])), texts[sid]


def test_corpus_checksum_is_checked_and_errors_say_how_to_rebuild(tmp_path, monkeypatch):
    assert len(datasets.probing_corpus(sentences=10)["sentence_id"].unique()) == 10
    with pytest.raises(OptionError, match="sentences must be a positive int"):
        datasets.probing_corpus(sentences=0)
    shutil.copy(datasets.data_dir() / "SHA256SUMS", tmp_path / "SHA256SUMS")
    monkeypatch.setattr("hlviz.datasets.files.data_dir", lambda: tmp_path)
    with pytest.raises(DataFileError, match="missing.*build_probing_corpus.py"):
        datasets.probing_corpus()
    original = datasets.data_dir() / "probing_corpus.tsv"
    data = original.read_bytes().replace(b"noun.animal", b"noun.plant_", 1)
    (tmp_path / "probing_corpus.tsv").write_bytes(data)
    with pytest.raises(DataFileError, match="damaged or stale.*build_probing_corpus.py"):
        datasets.probing_corpus()


def test_sentence_texts_needs_the_word_columns():
    import pandas as pd

    with pytest.raises(OptionError, match=r"lacks columns \['space_after'\]"):
        sentence_texts(pd.DataFrame({"sentence_id": [0], "word": ["a"]}))
