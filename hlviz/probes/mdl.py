"""Minimum description length (MDL) probing with the online code of Voita & Titov (2020).

>>> import torch
>>> from hlviz.probes.mdl import mdl_layers
>>> gen = torch.Generator().manual_seed(0)
>>> y = torch.randint(0, 2, (400,), generator=gen)
>>> acts = {"noise": torch.randn(400, 4, generator=gen),
...         "signal": torch.randn(400, 4, generator=gen) + 2 * y[:, None]}
>>> report = mdl_layers(acts, y)
>>> report.best_layer()
'signal'

Accuracy says whether a probe *can* read a property out of a layer; the description
length says how *easily*: how many bits it takes to transmit the labels ``y`` to a
receiver who already has the activations ``X``. With the online (prequential) code, the
rows are shuffled once and cut at ``t_1 < t_2 < ... < t_S = n``:

* the first ``t_1`` labels are sent with the uniform code, ``t_1 * log2(K)`` bits
  (``K``: the number of classes in ``y``);
* each next block ``[t_i, t_{i+1})`` is sent with a probe fit on the first ``t_i`` rows,
  at a cost of ``-sum log2 p(y | x)`` bits.

The sum is the *online codelength*; ``compression = n * log2(K) / codelength`` is about 1
for a layer that holds nothing about ``y`` and grows with how well (and how early, with
how little data) a probe learns it. Unlike accuracy, it does not saturate, and a probe
that merely memorises pays for it on the blocks it has not seen.

Two conventions keep the codelength finite and defined:

* a training prefix that holds a single class cannot fit a probe; its block is sent with
  the uniform code (``log2(K)`` bits a row);
* probabilities are floored at :data:`PROB_FLOOR` (``1e-12``, ~40 bits), which is what a
  class the probe has not seen in training (or one it rules out) costs.

Reference: E. Voita and I. Titov, "Information-Theoretic Probing with Minimum Description
Length", EMNLP 2020.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._checks import non_negative_int
from ..errors import OptionError, OptionTypeError, ShapeMismatchError
from ._checks import as_rows, as_targets, device_of
from ._estimators import probe_template

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = [
    "DEFAULT_FRACTIONS",
    "PROB_FLOOR",
    "MDLReport",
    "MDLResult",
    "mdl_layers",
    "online_codelength",
]

#: Block boundaries of Voita & Titov, as fractions of the rows (0.1%, 0.2%, ..., 100%).
DEFAULT_FRACTIONS: tuple[float, ...] = (
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.0625,
    0.125,
    0.25,
    0.5,
    1.0,
)

#: Smallest probability a label is coded with (classes unseen in training get this).
PROB_FLOOR = 1e-12


@dataclass(frozen=True)
class MDLResult:
    """The online codelength of one set of activations, block by block.

    >>> import torch
    >>> from hlviz.probes.mdl import online_codelength
    >>> y = torch.arange(100) % 2
    >>> result = online_codelength(torch.randn(100, 3) + y[:, None], y)
    >>> result.uniform_codelength, result.block_bits[0], result.block_sizes[0]
    (100.0, 2.0, 2)

    Attributes:
        codelength: the online codelength in bits, ``sum(block_bits)``.
        uniform_codelength: the uniform code's, ``n * log2(K)`` bits.
        compression: ``uniform_codelength / codelength``.
        block_bits: bits of each block; the first is the uniform block (``t_1 * log2 K``).
        block_sizes: rows of each block (the same length as ``block_bits``; sums to ``n``).
        num_classes: ``K``, the number of distinct labels in ``y``.
    """

    codelength: float
    uniform_codelength: float
    compression: float
    block_bits: tuple[float, ...]
    block_sizes: tuple[int, ...]
    num_classes: int

    @property
    def n(self) -> int:
        """Number of rows coded."""
        return int(sum(self.block_sizes))

    def summary(self) -> pd.DataFrame:
        """The headline numbers as a one-row DataFrame (kilobits, compression, rows, classes,
        blocks).

        >>> import torch
        >>> from hlviz.probes.mdl import online_codelength
        >>> y = torch.arange(64) % 2
        >>> online_codelength(torch.zeros(64, 2), y).summary().columns.tolist()
        ['codelength_kbits', 'uniform_kbits', 'compression', 'n', 'classes', 'blocks']
        """
        import pandas as pd

        row = {
            "codelength_kbits": self.codelength / 1000.0,
            "uniform_kbits": self.uniform_codelength / 1000.0,
            "compression": self.compression,
            "n": self.n,
            "classes": self.num_classes,
            "blocks": len(self.block_sizes),
        }
        return pd.DataFrame([row])

    def to_frame(self) -> pd.DataFrame:
        """One row per block: ``rows`` (its size), ``bits`` and ``bits_per_row``.

        >>> import torch
        >>> from hlviz.probes.mdl import online_codelength
        >>> y = torch.arange(64) % 2
        >>> online_codelength(torch.zeros(64, 2), y).to_frame().columns.tolist()
        ['block', 'rows', 'bits', 'bits_per_row']
        """
        import pandas as pd

        sizes = np.asarray(self.block_sizes)
        bits = np.asarray(self.block_bits)
        return pd.DataFrame(
            {
                "block": np.arange(len(sizes)),
                "rows": sizes,
                "bits": bits,
                "bits_per_row": bits / sizes,
            }
        )


@dataclass(frozen=True)
class MDLReport:
    """The result of :func:`mdl_layers`: one row per layer, every layer coded alike.

    >>> import torch
    >>> from hlviz.probes.mdl import mdl_layers
    >>> y = torch.arange(200) % 2
    >>> report = mdl_layers({"a": torch.zeros(200, 3), "b": torch.zeros(200, 2)}, y)
    >>> report.to_frame().columns.tolist()
    ['layer', 'codelength_kbits', 'compression', 'uniform_kbits']
    >>> report.results["a"].num_classes
    2

    Attributes:
        table: the DataFrame (``to_frame()`` returns a copy): ``layer``,
            ``codelength_kbits``, ``compression`` and ``uniform_kbits``.
        results: layer name -> its :class:`MDLResult` (block by block).
    """

    table: pd.DataFrame
    results: dict[str, MDLResult]

    def to_frame(self) -> pd.DataFrame:
        """The table, one row per layer (a copy)."""
        return self.table.copy()

    def summary(self, digits: int = 3) -> pd.DataFrame:
        """The table rounded for reading, with the rows coded and the number of classes."""
        first = next(iter(self.results.values()))
        return self.table.assign(n=first.n, classes=first.num_classes).round(digits)

    def best_layer(self) -> str:
        """The layer with the highest compression (the shortest code)."""
        return str(self.table.loc[self.table["compression"].idxmax(), "layer"])

    def plot(self, *, ax: Axes | None = None, title: str | None = None) -> Axes:
        """Compression by layer, with the uniform code (1x, nothing learned) as a dashed line;
        returns the Axes it drew on."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(self.table) + 2), 3.2))
        x = np.arange(len(self.table))
        ax.plot(x, self.table["compression"], marker="o", color="C0", label="online code")
        ax.axhline(1.0, ls="--", color="0.5", label="uniform code (1x)")
        ax.set_xticks(x, self.table["layer"], rotation=30, ha="right")
        ax.set_ylabel("compression (uniform / online)")
        ax.set_title(title or "MDL probe by layer")
        ax.legend(fontsize="small", frameon=False)
        return ax


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return (
            (value.float() if value.dtype in (torch.float16, torch.bfloat16) else value)
            .cpu()
            .numpy()
        )
    return np.asarray(value)


def _labels(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Distinct classes of ``y`` and each row's index into them."""
    y_np = _numpy(as_targets(y))
    if y_np.ndim != 1:
        raise ShapeMismatchError(
            f"y must be 1-D (one class label per row), got shape {y_np.shape}; "
            "flatten it or pick one label per row."
        )
    if y_np.dtype.kind == "f" and not np.all(np.mod(y_np, 1) == 0):
        raise OptionError(
            "online codelength is for class labels, but y holds non-integer floats "
            f"(e.g. {y_np[np.mod(y_np, 1) != 0][0]!r}); pass integer or string labels."
        )
    classes, codes = np.unique(y_np, return_inverse=True)
    if len(classes) < 2:
        raise OptionError(
            f"y holds {len(classes)} class(es) ({classes.tolist()}); MDL probing needs at "
            "least two distinct labels."
        )
    return classes, codes.reshape(-1)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(f) for f in fractions)
    ok = (
        len(values) >= 2
        and all(0.0 < f <= 1.0 for f in values)
        and all(a < b for a, b in itertools.pairwise(values))
        and values[-1] == 1.0
    )
    if not ok:
        raise OptionError(
            f"fractions must be at least two strictly increasing values in (0, 1] ending at "
            f"1.0, got {values}; e.g. (0.001, 0.002, ..., 0.5, 1.0) (the default)."
        )
    return values


def _boundaries(n: int, k: int, fractions: tuple[float, ...]) -> list[int]:
    """Block ends ``t_1 < ... < t_S = n``; the first block has at least ``K`` rows."""
    first = max(k, round(fractions[0] * n))
    if first >= n:
        raise OptionError(
            f"{n} rows leave nothing to code online: the first (uniform) block needs "
            f"max(K={k}, fractions[0] * n) = {first} rows; give more rows than that."
        )
    ends = [first]
    for f in fractions[1:]:
        t = min(n, round(f * n))
        if t > ends[-1]:
            ends.append(t)
    if ends[-1] != n:
        ends.append(n)
    return ends


def _template(probe: Any) -> Any:
    from sklearn.base import clone

    from .linear import LinearProbe

    template = clone(probe_template(probe, "classification"))
    if isinstance(template, LinearProbe):
        device_of(template.device)
    if isinstance(template, LinearProbe):
        template.set_params(task="classification")
    return template


def _online(
    X: np.ndarray,
    codes: np.ndarray,
    k: int,
    order: np.ndarray,
    ends: list[int],
    template: Any,
) -> MDLResult:
    from sklearn.base import clone

    X, codes = X[order], codes[order]
    uniform_row = math.log2(k)
    bits = [ends[0] * uniform_row]
    for start, stop in itertools.pairwise(ends):
        train = codes[:start]
        if len(np.unique(train)) < 2:  # a single class: no probe to fit, send uniformly
            bits.append((stop - start) * uniform_row)
            continue
        fit = clone(template).fit(X[:start], train)
        proba = _numpy(fit.predict_proba(X[start:stop])).astype(np.float64)
        columns = np.asarray(_numpy(fit.classes_)).astype(np.int64)
        full = np.zeros((stop - start, k))
        full[:, columns] = proba
        p = np.clip(full[np.arange(stop - start), codes[start:stop]], PROB_FLOOR, 1.0)
        bits.append(float(-np.log2(p).sum()))
    sizes = tuple(int(s) for s in np.diff([0, *ends]))
    total = float(sum(bits))
    uniform = len(codes) * uniform_row
    return MDLResult(
        codelength=total,
        uniform_codelength=uniform,
        compression=uniform / total if total > 0 else math.inf,
        block_bits=tuple(float(b) for b in bits),
        block_sizes=sizes,
        num_classes=k,
    )


def _rows(value: Any, name: str, n: int) -> np.ndarray:
    if isinstance(value, list) and len(value) and isinstance(value[0], (torch.Tensor, np.ndarray)):
        raise OptionError(
            f"layer {name!r} holds {len(value)} calls (the module ran several times); pick "
            f"one, e.g. {{{name!r}: rec.calls({name!r})[-1]}}."
        )
    return _numpy(as_rows(value, f"layer {name!r}", n=n, vector_ok=True))


def online_codelength(
    X: Any,
    y: Any,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    probe: Any = None,
) -> MDLResult:
    """Online (prequential) codelength of class labels ``y`` given activations ``X``.

    >>> import torch
    >>> from hlviz.probes.mdl import online_codelength
    >>> gen = torch.Generator().manual_seed(0)
    >>> y = torch.arange(300) % 3
    >>> signal = torch.randn(300, 5, generator=gen) + 3 * torch.nn.functional.one_hot(y, 5)
    >>> noise = torch.randn(300, 5, generator=gen)
    >>> online_codelength(signal, y).compression > 1.5 > online_codelength(noise, y).compression
    True

    Args:
        X: ``(n, ...)`` activations (tensor or array; extra axes are flattened).
        y: ``(n,)`` class labels (integers, bools or strings).
        fractions: block ends as fractions of ``n``, strictly increasing in ``(0, 1]``
            and ending at ``1.0``. The first block has ``max(K, round(fractions[0] * n))``
            rows; boundaries that round onto an earlier one are dropped.
        seed: seed of the one shuffle of the rows (``numpy.random.default_rng``), >= 0.
        probe: an unfitted classifier with ``fit``/``predict_proba``/``classes_`` (cloned
            for every block), or the name ``"linear"`` (the default: a
            :class:`~hlviz.probes.LinearProbe` for classification) or ``"mlp"``.

    Blocks whose training prefix holds a single class, and the first block, are sent with
    the uniform code; label probabilities are floored at :data:`PROB_FLOOR` (see the
    module doc). Returns an :class:`MDLResult`.
    """
    classes, codes = _labels(y)
    fractions = _check_fractions(fractions)
    non_negative_int("seed", seed)
    X_np = _rows(X, "X", len(codes))
    ends = _boundaries(len(codes), len(classes), fractions)
    order = np.random.default_rng(seed).permutation(len(codes))
    return _online(X_np, codes, len(classes), order, ends, _template(probe))


def mdl_layers(
    acts: Mapping[str, Any],
    y: Any,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    probe: Any = None,
) -> MDLReport:
    """Online codelength of ``y`` for every layer: an :class:`MDLReport`, one row per layer.

    >>> import torch
    >>> from hlviz.probes.mdl import mdl_layers
    >>> y = torch.arange(200) % 2
    >>> report = mdl_layers({"a": torch.zeros(200, 3), "b": torch.zeros(200, 2, 2)}, y)
    >>> report.to_frame().columns.tolist()
    ['layer', 'codelength_kbits', 'compression', 'uniform_kbits']

    Args:
        acts: layer name -> ``(n, ...)`` activations (a dict or a :class:`~hlviz.Recording`);
            each is flattened to ``(n, -1)``.
        y, fractions, seed, probe: as in :func:`online_codelength`.

    Every layer is coded with the same shuffle and the same blocks, so the codelengths
    compare. The :class:`MDLResult` of each layer is in ``report.results``.
    """
    classes, codes = _labels(y)
    fractions = _check_fractions(fractions)
    non_negative_int("seed", seed)
    if not isinstance(acts, Mapping):
        raise OptionTypeError(
            "acts must be a non-empty mapping layer name -> activations (a dict or a "
            f"Recording), got {type(acts).__name__}."
        )
    if not len(acts):
        raise OptionError(
            "acts must be a non-empty mapping layer name -> activations (a dict or a "
            "Recording), got an empty one; record at least one layer."
        )
    layers = {str(name): _rows(value, str(name), len(codes)) for name, value in acts.items()}
    ends = _boundaries(len(codes), len(classes), fractions)
    order = np.random.default_rng(seed).permutation(len(codes))
    template = _template(probe)
    results = {
        name: _online(X, codes, len(classes), order, ends, template) for name, X in layers.items()
    }
    import pandas as pd

    table = pd.DataFrame(
        [
            {
                "layer": name,
                "codelength_kbits": r.codelength / 1000.0,
                "compression": r.compression,
                "uniform_kbits": r.uniform_codelength / 1000.0,
            }
            for name, r in results.items()
        ]
    )
    return MDLReport(table=table, results=results)
