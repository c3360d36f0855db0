"""Verified data files, image sets, the code corpus, the probing corpus and word alignment."""

from . import code, files, images, probing, text
from .code import (
    CODE_CORPUS_FILE,
    CODE_LABELS,
    STRING_KINDS,
    CodeCorpus,
    code_corpus,
    python_syntax_labels,
)
from .files import data_dir, sha256_of, verified_data_file
from .images import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SUBSET,
    ImageSplit,
    fashion_mnist,
    fashion_mnist_folder,
    load_digits,
    read_fashion_mnist,
)
from .probing import PROBING_CORPUS, probing_corpus
from .text import align_words, sentence_texts, word_spans, word_token_rows

__all__ = [
    "CODE_CORPUS_FILE",
    "CODE_LABELS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SUBSET",
    "PROBING_CORPUS",
    "STRING_KINDS",
    "CodeCorpus",
    "ImageSplit",
    "align_words",
    "code",
    "code_corpus",
    "data_dir",
    "fashion_mnist",
    "fashion_mnist_folder",
    "files",
    "images",
    "load_digits",
    "probing",
    "probing_corpus",
    "python_syntax_labels",
    "read_fashion_mnist",
    "sentence_texts",
    "sha256_of",
    "text",
    "verified_data_file",
    "word_spans",
    "word_token_rows",
]
