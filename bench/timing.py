"""Interleaved wall-clock timing for comparing variants on a shared, noisy machine.

>>> t = interleaved({"a": lambda: sum(range(100)), "b": lambda: sum(range(200))}, rounds=5)
>>> t.ratio("b", "a") > 0
True

Each round calls every variant once, in an order rotated by one each round so no
variant always runs first (warm caches) or last. Ratios are *paired*: within each
round ``variant / baseline`` is taken, and the median over rounds is reported, which
cancels slow drifts of the machine that a ratio of two medians would not.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Timings", "interleaved"]


@dataclass(frozen=True)
class Timings:
    """Per-round seconds of each variant: ``samples[name][round]``."""

    samples: dict[str, list[float]]

    @property
    def rounds(self) -> int:
        """Number of timed rounds (every variant ran once per round)."""
        return len(next(iter(self.samples.values())))

    def median_ms(self, name: str) -> float:
        """Median wall time of one call of ``name``, in milliseconds."""
        return 1e3 * statistics.median(self.samples[name])

    def _paired(self, name: str, baseline: str) -> list[float]:
        return [v / b for v, b in zip(self.samples[name], self.samples[baseline], strict=True)]

    def ratio(self, name: str, baseline: str) -> float:
        """Median over rounds of ``time(name) / time(baseline)`` measured in the same round."""
        return statistics.median(self._paired(name, baseline))

    def delta_ms(self, name: str, baseline: str) -> float:
        """Median over rounds of ``time(name) - time(baseline)`` in the same round, in ms."""
        deltas = [v - b for v, b in zip(self.samples[name], self.samples[baseline], strict=True)]
        return 1e3 * statistics.median(deltas)

    def ratio_ci(
        self, name: str, baseline: str, level: float = 0.95, resamples: int = 2000
    ) -> tuple[float, float]:
        """Bootstrap confidence interval of :meth:`ratio` (resampling rounds, fixed seed)."""
        paired = self._paired(name, baseline)
        rng = random.Random(0)
        medians = sorted(
            statistics.median(rng.choices(paired, k=len(paired))) for _ in range(resamples)
        )
        tail = (1 - level) / 2
        return medians[int(tail * resamples)], medians[int((1 - tail) * resamples) - 1]

    def ratio_iqr(self, name: str, baseline: str) -> tuple[float, float]:
        """First and third quartile of the paired ratios (the spread the noise gives)."""
        paired = self._paired(name, baseline)
        if len(paired) < 2:
            return paired[0], paired[0]
        q1, _, q3 = statistics.quantiles(paired, n=4, method="inclusive")
        return q1, q3


def interleaved(
    variants: Mapping[str, Callable[[], object]],
    *,
    rounds: int | None = None,
    budget_s: float | None = None,
    min_rounds: int = 3,
    warmup: int = 2,
) -> Timings:
    """Time ``variants`` round-robin; stop after ``rounds``, or when ``budget_s`` is spent.

    Each variant is called ``warmup`` times first (untimed). With ``budget_s`` the loop
    runs at least ``min_rounds`` rounds and at most ``rounds`` (when given). The result
    of each call is dropped inside the timed region, so freeing what a variant kept
    (recorded activations) is part of its cost. Objects alive before timing are frozen
    out of the garbage collector (``gc.freeze``; a full collection of a process that has
    imported transformers takes ~0.1 s), and a cheap ``gc.collect()`` runs, untimed,
    between rounds, so a pending collection is not billed to whichever variant runs next.
    """
    if rounds is None and budget_s is None:
        raise ValueError("give rounds=, budget_s= or both.")
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.freeze()
    try:
        start, r = time.perf_counter(), 0
        while rounds is None or r < rounds:
            if budget_s is not None and r >= min_rounds and time.perf_counter() - start > budget_s:
                break
            gc.collect()
            k = r % len(names)
            for name in names[k:] + names[:k]:
                fn = variants[name]
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
            r += 1
    finally:
        gc.unfreeze()
    return Timings(samples)
