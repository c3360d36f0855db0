"""Reference models for the tutorials, and helpers to train and evaluate them.

>>> from hlviz.models import DigitsCNN, train_digits_cnn
>>> DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from .digits import DigitsCNN, train_digits_cnn
from .mlp import MLP, TrainResult, count_parameters, train_full_batch
from .training import accuracy, predict, train_classifier

__all__ = [
    "MLP",
    "DigitsCNN",
    "TrainResult",
    "accuracy",
    "count_parameters",
    "predict",
    "train_classifier",
    "train_digits_cnn",
    "train_full_batch",
]
