"""What the two character-model training scripts do once training ends (shared by
``train_lstm.py`` and ``train_gpt.py``): score, store as float16 with metadata, check the
reloaded file, and record its sha256 when it is the shipped checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from hlviz.datasets import sha256_of
from hlviz.models.rnn import ngram_bits_per_char

ROOT = Path(__file__).resolve().parents[1]


def finish(
    model: torch.nn.Module,
    *,
    args: Any,
    seconds: float,
    corpora: Sequence[Any],
    save: Callable[[torch.nn.Module, Path, dict[str, str]], None],
    load: Callable[[Path], torch.nn.Module],
    checkpoint: str,
    metadata: dict[str, str] | None = None,
    notes: Sequence[str] = (),
) -> None:
    """Score ``model`` (its own ``bits_per_char``) on validation and test (float32, then with its weights rounded to
    float16, which is what the file holds), write it to ``args.out`` with the scores, the
    vocabulary, the corpus sha256 and the training arguments in its metadata, reload it and
    score it again, and update ``data/SHA256SUMS`` when ``args.out`` is the shipped file."""
    train, valid, test = corpora
    model.eval()
    float32 = {
        "test_bits_per_char_float32": model.bits_per_char(test.encode()),
        "validation_bits_per_char_float32": model.bits_per_char(valid.encode()),
    }
    with torch.no_grad():  # measure what the float16 file will hold
        for p in model.parameters():
            p.copy_(p.to(torch.float16).to(torch.float32))
    ids, vocab = train.encode(), len(train.vocab)
    scores = {
        "test_bits_per_char": model.bits_per_char(test.encode()),
        "validation_bits_per_char": model.bits_per_char(valid.encode()),
        **float32,
        "unigram_test_bits_per_char": ngram_bits_per_char(
            ids, test.encode(), order=1, vocab_size=vocab
        ),
        "bigram_test_bits_per_char": ngram_bits_per_char(
            ids, test.encode(), order=2, vocab_size=vocab
        ),
    }
    corpus_file = ROOT / "data" / "code_corpus.npz"
    meta = {
        "vocab": train.vocab,
        "python": train.python,
        "corpus_sha256": sha256_of(corpus_file),
        "training": json.dumps({k: v for k, v in vars(args).items() if k != "out"}),
        "train_seconds": f"{seconds:.0f}",
        **(metadata or {}),
        **{k: f"{v:.4f}" for k, v in scores.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save(model, args.out, meta)
    check = load(args.out).bits_per_char(test.encode())
    print(json.dumps({k: round(v, 4) for k, v in scores.items()}))
    for note in notes:
        print(note)
    print(f"reloaded float16 checkpoint: {check:.4f} bits/char on test; trained in {seconds:.0f}s")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    if args.out.resolve() == (ROOT / "data" / checkpoint).resolve():
        digest = sha256_of(args.out)
        sums = ROOT / "data" / "SHA256SUMS"
        lines = [ln for ln in sums.read_text().splitlines() if ln.split()[-1] != checkpoint]
        sums.write_text("\n".join([*lines, f"{digest}  {checkpoint}"]) + "\n")
        print(f"sha256 {digest} recorded in data/SHA256SUMS")
