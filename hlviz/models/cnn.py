"""A small Fashion-MNIST CNN with readable layer names, and loaders for its shipped checkpoints.

>>> from hlviz.models.cnn import SmallCNN, load_small_cnn
>>> model = load_small_cnn(seed=0)               # safetensors, checksum verified
>>> model(torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 10])
>>> hlviz.layer_names(model)[:4]
['features', 'features.block1', 'features.block1.conv', 'features.block1.bn']

Layers (output shapes for a batch of N images of 28x28; receptive field of one unit)::

    features.block1.conv  Conv2d 1->16, 3x3, pad 1   (N, 16, 28, 28)   3x3 pixels
    features.block1.pool  MaxPool2d(2)               (N, 16, 14, 14)   4x4
    features.block2.conv  Conv2d 16->32, 3x3, pad 1  (N, 32, 14, 14)   8x8
    features.block2.pool  MaxPool2d(2)               (N, 32, 7, 7)     10x10
    features.block3.conv  Conv2d 32->64, 3x3, pad 1  (N, 64, 7, 7)     18x18
    features.block4.conv  Conv2d 64->64, 3x3, pad 1  (N, 64, 7, 7)     26x26
    features.block4.pool  MaxPool2d(2)               (N, 64, 3, 3)     30x30
    head.pool             AdaptiveAvgPool2d(1)       (N, 64, 1, 1)
    head.flatten / head.fc  Linear 64->10            (N, 10)  logits

Each block is ``conv -> bn -> relu`` (+ ``pool`` in blocks 1, 2 and 4); ``relu`` is not
in-place, so hooks on ``conv``, ``bn`` and ``relu`` see three different tensors.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..errors import OptionError
from ._checkpoint import load_float16

__all__ = ["CHECKPOINT_STEPS", "SmallCNN", "checkpoint_name", "load_small_cnn"]

CHECKPOINT_SEEDS = (0, 1)
#: points in training shipped for seed 0 (epochs done); other seeds ship only "final"
CHECKPOINT_STEPS = ("epoch0", "epoch1", "epoch3", "final")
_REBUILD = "python scripts/train_cnn.py"


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    parts = OrderedDict(
        conv=nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        bn=nn.BatchNorm2d(c_out),
        relu=nn.ReLU(),
    )
    if pool:
        parts["pool"] = nn.MaxPool2d(2)
    return nn.Sequential(parts)


class SmallCNN(nn.Module):
    """Four conv blocks and a linear head for ``(N, 1, 28, 28)`` images; returns ``(N, 10)`` logits.

    >>> SmallCNN()(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 10])

    ``widths`` are the channels of the four blocks (16, 32, 64, 64: about 60,000
    parameters). The head averages the last feature map over space, so the model also
    takes larger images (feature visualisation may use them).
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int, int] = (16, 32, 64, 64)):
        super().__init__()
        if (
            not isinstance(widths, (tuple, list))
            or len(widths) != 4
            or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)
        ):
            raise OptionError(
                f"widths must be four positive ints (channels of blocks 1-4), got {widths!r}; "
                "e.g. widths=(16, 32, 64, 64)."
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise OptionError(f"num_classes must be an int >= 2, got {num_classes!r}.")
        self.widths = tuple(widths)
        c1, c2, c3, c4 = widths
        self.features = nn.Sequential(
            OrderedDict(
                block1=_block(1, c1, pool=True),
                block2=_block(c1, c2, pool=True),
                block3=_block(c2, c3, pool=False),
                block4=_block(c3, c4, pool=True),
            )
        )
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                fc=nn.Linear(c4, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1:
            raise OptionError(
                f"SmallCNN expects grey images of shape (N, 1, H, W), got {tuple(x.shape)}; "
                "add the channel axis with x.unsqueeze(1)."
            )
        return self.head(self.features(x))


def checkpoint_name(seed: int = 0, step: str = "final") -> str:
    """File name in ``data/`` of the checkpoint of ``seed`` after ``step``.

    >>> checkpoint_name(0, "epoch1")
    'fashion_cnn_seed0_epoch1.safetensors'

    Shipped: seeds 0 and 1 at ``"final"``; seed 0 also at ``"epoch0"`` (the random
    initialisation), ``"epoch1"`` and ``"epoch3"``.
    """
    if isinstance(seed, bool) or seed not in CHECKPOINT_SEEDS:
        raise OptionError(
            f"no shipped checkpoint for seed={seed!r}: seeds {list(CHECKPOINT_SEEDS)} ship; "
            f"train another with `{_REBUILD} --seeds {seed}`."
        )
    if step not in CHECKPOINT_STEPS or (seed != 0 and step != "final"):
        steps = list(CHECKPOINT_STEPS) if seed == 0 else ["final"]
        raise OptionError(
            f"no shipped checkpoint for seed={seed}, step={step!r}: steps {steps} ship for this "
            "seed (the training-dynamics steps exist for seed 0)."
        )
    return f"fashion_cnn_seed{seed}_{step}.safetensors"


def load_small_cnn(
    seed: int = 0, step: str = "final", *, path: str | Path | None = None, device: str | None = None
) -> SmallCNN:
    """The shipped :class:`SmallCNN` of ``seed`` after ``step``, in eval mode.

    >>> model = load_small_cnn(seed=1)
    >>> model.training
    False

    Reads ``data/fashion_cnn_seed{seed}_{step}.safetensors`` with ``safetensors`` (no
    pickle), after checking its sha256 against ``data/SHA256SUMS``; a missing or damaged
    file raises :class:`~hlviz.errors.DataFileError` naming the command that rebuilds it.
    Weights are stored as float16 and returned as float32; the file's metadata holds the
    widths and the test accuracy measured when it was written (``model.meta``). ``path``
    reads a checkpoint written elsewhere by ``scripts/train_cnn.py`` instead (no checksum).
    """
    return load_float16(
        SmallCNN,
        path,
        checkpoint=checkpoint_name(seed, step) if path is None else Path(path).name,
        rebuild=_REBUILD,
        device=device,
        config=lambda meta: {"widths": tuple(json.loads(meta.get("widths", "[16, 32, 64, 64]")))},
        unstored=("num_batches_tracked",),
    )
