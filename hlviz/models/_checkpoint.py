"""Float16 safetensors checkpoints with their constructor config in the header (no pickle).

>>> import tempfile, os
>>> from torch import nn
>>> class Tiny(nn.Linear):
...     def __init__(self, n: int):
...         super().__init__(n, 2)
>>> path = os.path.join(tempfile.mkdtemp(), "tiny.safetensors")
>>> save_float16(Tiny(3), path, {"n": 3}, {"note": "hi"})
>>> model = load_float16(Tiny, path, checkpoint="tiny.safetensors", rebuild="make tiny")
>>> model.in_features, model.meta["note"], model.weight.dtype, model.training
(3, 'hi', torch.float32, False)

The one checkpoint format of the shipped models (:mod:`hlviz.models.cnn`,
:mod:`hlviz.models.rnn`, :mod:`hlviz.models.gpt`): weights are stored as float16 (half the
size) and read back into the model's own dtype; the constructor's arguments are in the header.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DataFileError

__all__ = ["load_float16", "save_float16"]


def save_float16(
    model: nn.Module,
    path: Any,
    config: dict[str, Any] | None,
    metadata: dict[str, str],
    *,
    unstored: tuple[str, ...] = (),
) -> None:
    """Write ``model``'s state as float16 to ``path``, with ``config`` (the constructor's
    keyword arguments; ``None`` leaves it out) and the string ``metadata`` in the safetensors
    header. Floating tensors become float16; integer buffers keep their dtype; tensors whose
    name ends with one of ``unstored`` are left out."""
    from safetensors.torch import save_file

    state = {
        k: (v.to(torch.float16) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith(unstored) or not unstored
    }
    header = dict(metadata)
    if config is not None:
        header["config"] = json.dumps(config)
    save_file(state, str(path), metadata=header)


def load_float16(
    cls: type[nn.Module],
    path: Any = None,
    *,
    checkpoint: str,
    rebuild: str,
    device: str | torch.device | None = None,
    config: Callable[[dict[str, str]], dict[str, Any]] | None = None,
    unstored: tuple[str, ...] = (),
) -> nn.Module:
    """``cls(**config)`` with the weights of ``path`` (default: ``data/<checkpoint>``, checked
    against ``data/SHA256SUMS``), in eval mode, with the header's metadata as ``model.meta``.

    A missing or damaged file, a header without a config and tensors that do not match
    ``cls`` raise :class:`~hlviz.errors.DataFileError` naming ``rebuild``, the command
    that writes the file again. ``config`` turns the header into the constructor's keyword
    arguments when the header has no ``config`` entry (the CNN checkpoints store ``widths``);
    tensors whose names end with one of ``unstored`` (e.g. BatchNorm's step counters, unused
    in eval mode) may be absent from the file.
    """
    from safetensors import safe_open

    from ..datasets.files import verified_data_file

    if path is None:
        path = verified_data_file(checkpoint, rebuild)
    elif not Path(path).is_file():
        raise DataFileError(f"no checkpoint at {path}; write one with `{rebuild} --out {path}`.")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    if "config" in meta:
        kwargs = json.loads(meta["config"])
    elif config is not None:
        kwargs = config(meta)
    else:
        raise DataFileError(
            f"{path} has no {cls.__name__} config in its metadata; rebuild it with `{rebuild}`."
        )
    model = cls(**kwargs)
    expected = {
        k: v for k, v in model.state_dict().items() if not (unstored and k.endswith(unstored))
    }
    if set(state) != set(expected):
        raise DataFileError(
            f"{Path(path).name} holds tensors {sorted(set(state) ^ set(expected))[:4]} that do "
            f"not match {cls.__name__}; rebuild it with `{rebuild}`."
        )
    model.load_state_dict(
        {k: v.to(expected[k].dtype) for k, v in state.items()}, strict=not unstored
    )
    model.meta = dict(meta)
    model.eval()
    return model.to(device) if device is not None else model
