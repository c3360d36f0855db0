"""Streaming per-unit statistics: mean, variance, min/max, approximate quantiles, top-k rows.

>>> import numpy as np
>>> acc = RunningStats(top_k=2, sample=100)
>>> acc.update(np.array([[1.0, 5.0], [3.0, 1.0]]), keys=np.array([0, 1]))
>>> acc.update(np.array([[2.0, 9.0]]), keys=np.array([2]))
>>> s = acc.result()
>>> s.count, s.mean.tolist(), s.max.tolist(), s.top_rows[0].tolist()
(3, [2.0, 5.0], [3.0, 9.0], [1, 2])

Rows arrive in batches of shape ``(n, units)``; nothing but the running state is kept, so
memory does not grow with the number of rows. Means and variances are merged exactly
(Chan et al.'s parallel update, in float64), so two accumulators over the halves of a data
set merge into the accumulator of the whole (:meth:`RunningStats.merge`). Quantiles come
from a uniform reservoir sample of ``sample`` rows (exact while fewer rows have been seen;
afterwards their rank error is about ``1 / sqrt(sample)``). The top-k rows of each unit are
kept with their row keys; ties go to the earlier row, so the result does not depend on how
the rows were split into batches or processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import fraction, non_negative_int, positive_int
from ..errors import OptionError, ShapeMismatchError

__all__ = ["QUANTILES", "LayerStats", "RunningStats"]

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass(frozen=True)
class LayerStats:
    """Statistics of every unit of one layer over ``count`` rows.

    ``mean``, ``var``, ``min``, ``max``: ``(units,)``; ``quantiles``: ``(len(levels), units)``
    at ``levels``; ``top_values`` and ``top_rows``: ``(k, units)``, the largest values of
    each unit (descending) and the rows they came from (``-1`` where fewer than ``k`` rows
    were seen). ``exact_quantiles`` says whether every row was in the quantile sample.
    """

    count: int
    mean: np.ndarray
    var: np.ndarray
    min: np.ndarray
    max: np.ndarray
    levels: tuple[float, ...]
    quantiles: np.ndarray
    top_values: np.ndarray
    top_rows: np.ndarray
    exact_quantiles: bool

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation of each unit, ``(units,)``."""
        return np.sqrt(self.var)

    @property
    def units(self) -> int:
        """Number of units (features of a row)."""
        return int(self.mean.shape[0])

    def quantile(self, level: float) -> np.ndarray:
        """The ``(units,)`` quantile at one of ``levels`` (e.g. ``0.5`` for the median)."""
        for i, have in enumerate(self.levels):
            if abs(have - level) < 1e-12:
                return self.quantiles[i]
        raise OptionError(
            f"quantile {level!r} was not tracked; the levels are {list(self.levels)}. Collect "
            "again with stats=hlviz.collection.stats.RunningStats(levels=[...]) to track others."
        )

    def summary(self, digits: int = 3):
        """A ``pandas.DataFrame``, one row per unit: mean, std, min, max, quantiles, top row."""
        import pandas as pd

        table = pd.DataFrame(
            {
                "unit": np.arange(self.units),
                "mean": self.mean,
                "std": self.std,
                "min": self.min,
                "max": self.max,
                **{f"q{level:g}": self.quantiles[i] for i, level in enumerate(self.levels)},
                "top_row": self.top_rows[0] if len(self.top_rows) else -1,
            }
        )
        return table.round(digits)

    def plot(self, ax: Any = None, units: int = 32):
        """Mean (dot), 5-95% quantile band and max (x) of the ``units`` most active units."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3))
        order = np.argsort(-self.mean, kind="stable")[:units]
        x = np.arange(len(order))
        lo, hi = self.quantile_band(0.05, 0.95)
        ax.vlines(x, lo[order], hi[order], color="0.7", lw=3, label="5-95% quantiles")
        ax.plot(x, self.mean[order], "o", ms=4, label="mean")
        ax.plot(x, self.max[order], "x", ms=4, label="max")
        ax.set_xticks(x, [str(u) for u in order], rotation=90, fontsize=7)
        ax.set_xlabel("unit (sorted by mean)")
        ax.set_ylabel("activation")
        ax.legend(fontsize=8, frameon=False)
        return ax.figure

    def quantile_band(self, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
        """The tracked quantiles nearest to ``low`` and ``high``, each ``(units,)``."""
        levels = np.asarray(self.levels)
        return (
            self.quantiles[int(np.abs(levels - low).argmin())],
            self.quantiles[int(np.abs(levels - high).argmin())],
        )


class RunningStats:
    """Accumulate per-unit statistics over batches of rows; see the module doc.

    Args:
        top_k: how many of the largest values (and their rows) to keep per unit.
        sample: size of the reservoir sample used for quantiles.
        levels: the quantile levels reported, each in ``[0, 1]``.
        seed: seed of the reservoir's random choices (the result is reproducible).
    """

    def __init__(
        self,
        *,
        top_k: int = 10,
        sample: int = 2048,
        levels: tuple[float, ...] | list[float] = QUANTILES,
        seed: int = 0,
    ):
        top_k = non_negative_int("top_k", top_k, hint="It is the number of top rows kept per unit.")
        sample = positive_int("sample", sample, hint="It is the number of rows kept for quantiles.")
        if not levels:
            raise OptionError("levels must hold at least one quantile in [0, 1], got none.")
        levels = tuple(fraction("levels", q, closed=True) for q in levels)
        self.top_k, self.sample, self.levels, self.seed = top_k, sample, levels, seed
        self._rng = np.random.default_rng(seed)
        self._units: int | None = None
        self.count = 0

    def options(self) -> dict[str, Any]:
        """The constructor arguments (a fresh accumulator with the same settings)."""
        return {
            "top_k": self.top_k,
            "sample": self.sample,
            "levels": self.levels,
            "seed": self.seed,
        }

    def _start(self, units: int) -> None:
        self._units = units
        self._mean = np.zeros(units)
        self._m2 = np.zeros(units)
        self._min = np.full(units, np.inf)
        self._max = np.full(units, -np.inf)
        self._top_values = np.empty((0, units))
        self._top_keys = np.empty((0, units), dtype=np.int64)
        self._reservoir = np.empty((0, units))

    def update(self, rows: Any, keys: Any) -> None:
        """Add ``rows`` ``(n, units)`` (anything numpy reads); ``keys`` ``(n,)`` int row ids."""
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2:
            x = x.reshape(len(x), -1)
        keys = np.asarray(keys, dtype=np.int64)
        if keys.shape != (len(x),):
            raise ShapeMismatchError(
                f"keys must hold one id per row: {len(x)} rows but keys of shape {keys.shape}."
            )
        if self._units is None:
            self._start(x.shape[1])
        if x.shape[1] != self._units:
            raise ShapeMismatchError(
                f"rows have {x.shape[1]} units but earlier rows had {self._units}; every batch "
                "of one layer must have the same units."
            )
        n = len(x)
        if n == 0:
            return
        mean = x.mean(0)
        m2 = ((x - mean) ** 2).sum(0)
        self._merge_moments(n, mean, m2)
        np.minimum(self._min, x.min(0), out=self._min)
        np.maximum(self._max, x.max(0), out=self._max)
        if self.top_k:
            self._merge_top(x, np.broadcast_to(keys[:, None], x.shape))
        self._add_to_reservoir(x)

    def _merge_moments(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self.count + n
        delta = mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def _merge_top(self, values: np.ndarray, keys: np.ndarray) -> None:
        values = np.concatenate([self._top_values, values])
        keys = np.concatenate([self._top_keys, keys])
        order = np.lexsort((keys, -values), axis=0)[: self.top_k]  # value desc, then row asc
        self._top_values = np.take_along_axis(values, order, 0)
        self._top_keys = np.take_along_axis(keys, order, 0)

    def _add_to_reservoir(self, x: np.ndarray) -> None:
        room = self.sample - len(self._reservoir)
        seen = self.count - len(x)  # rows seen before this batch
        if room > 0:
            self._reservoir = np.concatenate([self._reservoir, x[:room]])
            x, seen = x[room:], seen + min(room, len(x))
        if not len(x):
            return
        # Algorithm R: the i-th row seen overall replaces a random slot with probability k/i
        index = seen + 1 + np.arange(len(x))
        accept = self._rng.random(len(x)) * index < self.sample
        slots = self._rng.integers(0, self.sample, size=int(accept.sum()))
        for slot, row in zip(slots, np.flatnonzero(accept), strict=True):
            self._reservoir[slot] = x[row]

    def merge(self, other: RunningStats) -> RunningStats:
        """Fold ``other`` (over other rows, with the same options) into this accumulator."""
        if other.options() != self.options():
            raise OptionError(
                f"cannot merge accumulators with different options: {self.options()} and "
                f"{other.options()}."
            )
        if other._units is None:
            return self
        if self._units is None:
            self._start(other._units)
        elif other._units != self._units:
            raise ShapeMismatchError(
                f"cannot merge statistics of {self._units} units with {other._units} units."
            )
        seen_self, seen_other = self.count, other.count
        self._merge_moments(other.count, other._mean, other._m2)
        np.minimum(self._min, other._min, out=self._min)
        np.maximum(self._max, other._max, out=self._max)
        if self.top_k:
            self._merge_top(other._top_values, other._top_keys)
        # weighted merge of reservoirs: each slot comes from a side in proportion to its rows
        a, b = self._reservoir, other._reservoir
        if len(a) + len(b) <= self.sample:
            self._reservoir = np.concatenate([a, b])
        else:
            from_a = self._rng.binomial(self.sample, seen_self / (seen_self + seen_other))
            from_a = int(np.clip(from_a, self.sample - len(b), len(a)))
            pick_a = np.sort(self._rng.choice(len(a), from_a, replace=False))
            pick_b = np.sort(self._rng.choice(len(b), self.sample - from_a, replace=False))
            self._reservoir = np.concatenate([a[pick_a], b[pick_b]])
        return self

    def result(self, row_of: Any = None) -> LayerStats:
        """The :class:`LayerStats` so far; ``row_of`` maps stored row keys to row numbers."""
        if self._units is None or self.count == 0:
            raise OptionError("no rows were added: there are no statistics to report yet.")
        keys = self._top_keys
        rows = np.asarray(row_of(keys) if row_of is not None else keys, dtype=np.int64)
        k = self.top_k
        pad = k - len(rows)
        top_values = np.concatenate([self._top_values, np.full((pad, self._units), np.nan)])
        top_rows = np.concatenate([rows, np.full((pad, self._units), -1, dtype=np.int64)])
        return LayerStats(
            count=int(self.count),
            mean=self._mean.copy(),
            var=self._m2 / self.count,
            min=self._min.copy(),
            max=self._max.copy(),
            levels=self.levels,
            quantiles=np.quantile(self._reservoir, self.levels, axis=0),
            top_values=top_values,
            top_rows=top_rows,
            exact_quantiles=self.count <= self.sample,
        )

    # ---------------------------------------------------------------- state on disk
    def state(self) -> dict[str, np.ndarray]:
        """Arrays that :meth:`from_state` restores exactly (for ``np.savez``, no pickle)."""
        meta = {
            "options": self.options(),
            "count": self.count,
            "units": self._units,
            "rng": self._rng.bit_generator.state,
        }
        out = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        if self._units is not None:
            out.update(
                mean=self._mean,
                m2=self._m2,
                min=self._min,
                max=self._max,
                top_values=self._top_values,
                top_keys=self._top_keys,
                reservoir=self._reservoir,
            )
        return out

    @classmethod
    def from_state(cls, state: Any) -> RunningStats:
        """The accumulator :meth:`state` was taken from."""
        meta = json.loads(bytes(np.asarray(state["meta"], dtype=np.uint8)).decode())
        options = meta["options"]
        new = cls(**{**options, "levels": tuple(options["levels"])})
        new._rng.bit_generator.state = meta["rng"]
        new.count = int(meta["count"])
        if meta["units"] is not None:
            new._units = int(meta["units"])
            new._mean = np.array(state["mean"])
            new._m2 = np.array(state["m2"])
            new._min = np.array(state["min"])
            new._max = np.array(state["max"])
            new._top_values = np.array(state["top_values"])
            new._top_keys = np.array(state["top_keys"])
            new._reservoir = np.array(state["reservoir"])
        return new
