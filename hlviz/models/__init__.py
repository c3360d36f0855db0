"""Reference models for the tutorials, and helpers to train and evaluate them.

>>> from hlviz.models import DigitsCNN, train_digits_cnn
>>> DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from .cnn import SmallCNN, load_small_cnn
from .digits import DigitsCNN, train_digits_cnn
from .gpt import CharGPT, load_char_gpt
from .mlp import MLP, TrainResult, count_parameters, train_full_batch
from .rnn import CharLSTM, load_char_lstm
from .training import accuracy, predict, train_classifier

__all__ = [
    "MLP",
    "CharGPT",
    "CharLSTM",
    "DigitsCNN",
    "SmallCNN",
    "TrainResult",
    "accuracy",
    "count_parameters",
    "load_char_gpt",
    "load_char_lstm",
    "load_small_cnn",
    "predict",
    "train_classifier",
    "train_digits_cnn",
    "train_full_batch",
]
