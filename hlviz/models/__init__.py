"""Reference models for the tutorials, and helpers to train and evaluate them.

>>> from hlviz.models import DigitsCNN, train_digits_cnn
>>> model, history = train_digits_cnn(seed=0)                           # doctest: +SKIP
"""

from .digits import DigitsCNN, train_digits_cnn
from .training import accuracy, predict, train_classifier

__all__ = ["DigitsCNN", "accuracy", "predict", "train_classifier", "train_digits_cnn"]
