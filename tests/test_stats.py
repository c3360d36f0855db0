"""Streaming statistics against numpy on the whole data: moments, extremes, quantiles, top-k;
merging halves equals one pass; state round trips exactly; errors say what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hlviz
from hlviz.collection.stats import RunningStats
from hlviz.errors import OptionError, ShapeMismatchError


def _feed(acc: RunningStats, x: np.ndarray, cuts: list[int], first_key: int = 0) -> RunningStats:
    for part, keys in zip(
        np.split(x, cuts), np.split(np.arange(first_key, first_key + len(x)), cuts), strict=True
    ):
        acc.update(part, keys)
    return acc


def _top_reference(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest k values per column, ties to the earlier row, by a plain stable sort."""
    order = np.argsort(-x, axis=0, kind="stable")[:k]
    return np.take_along_axis(x, order, 0), order


def test_against_numpy_on_the_whole_data():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(500, 6))
    x[:, 5] = np.round(x[:, 5])  # many ties
    acc = _feed(RunningStats(top_k=4, sample=1000), x, [7, 100, 333])
    s = acc.result()
    assert type(s) is hlviz.collection.LayerStats  # one layer's units; units.UnitStats is a table
    assert s.count == 500 and s.units == 6
    np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.var, x.var(0), rtol=1e-10)
    np.testing.assert_allclose(s.std, x.std(0), rtol=1e-10)
    np.testing.assert_array_equal(s.min, x.min(0))
    np.testing.assert_array_equal(s.max, x.max(0))
    np.testing.assert_array_equal(s.quantiles, np.quantile(x, s.levels, axis=0))
    assert s.exact_quantiles
    values, rows = _top_reference(x, 4)
    np.testing.assert_array_equal(s.top_values, values)
    np.testing.assert_array_equal(s.top_rows, rows)
    np.testing.assert_array_equal(s.quantile(0.5), np.median(x, 0))


def test_quantiles_of_a_sample_are_close_when_the_data_outgrow_it():
    rng = np.random.default_rng(1)
    x = rng.exponential(1.0, size=(20000, 3))
    s = _feed(RunningStats(sample=2000), x, list(range(500, 20000, 500))).result()
    assert not s.exact_quantiles
    for i, level in enumerate(s.levels):
        # the rank of the estimate among the data is within a few 1/sqrt(sample) of the level
        ranks = (x < s.quantiles[i]).mean(0)
        assert np.all(np.abs(ranks - level) < 4 / np.sqrt(2000)), (level, ranks)


def test_variance_is_stable_far_from_zero():
    x = 1e8 + np.random.default_rng(2).normal(size=(10000, 1))
    s = _feed(RunningStats(), x, list(range(64, 10000, 64))).result()
    np.testing.assert_allclose(s.var, x.var(0), rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 120),
    units=st.integers(1, 4),
    split=st.floats(0, 1),
    k=st.integers(0, 5),
    seed=st.integers(0, 1000),
)
def test_merging_two_halves_equals_one_pass(n, units, split, k, seed):
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(n, units)), 1)  # ties are common
    cut = int(split * n)
    whole = _feed(RunningStats(top_k=k, sample=50), x, [n // 3]).result()
    left = _feed(RunningStats(top_k=k, sample=50), x[:cut], [])
    right = _feed(RunningStats(top_k=k, sample=50), x[cut:], [], first_key=cut)
    merged = left.merge(right)
    m = merged.result()
    assert m.count == n
    np.testing.assert_allclose(m.mean, whole.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.var, whole.var, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(m.min, whole.min)
    np.testing.assert_array_equal(m.max, whole.max)
    np.testing.assert_array_equal(m.top_values, whole.top_values)
    np.testing.assert_array_equal(m.top_rows, whole.top_rows)
    if n <= 50:  # both samples hold everything
        np.testing.assert_allclose(m.quantiles, whole.quantiles)


def test_state_round_trips_exactly_and_continues_identically():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    a = _feed(RunningStats(top_k=3, sample=64), x[:150], [50, 100])
    b = RunningStats.from_state(a.state())
    _feed(a, x[150:], [60], first_key=150)
    _feed(b, x[150:], [60], first_key=150)
    ra, rb = a.result(), b.result()
    for field in ("mean", "var", "min", "max", "quantiles", "top_values", "top_rows"):
        np.testing.assert_array_equal(getattr(ra, field), getattr(rb, field))
    empty = RunningStats.from_state(RunningStats().state())
    assert empty.count == 0


def test_fewer_rows_than_k_are_padded():
    acc = RunningStats(top_k=3)
    acc.update(np.array([[1.0], [2.0]]), np.array([0, 1]))
    s = acc.result()
    assert s.top_rows[:, 0].tolist() == [1, 0, -1] and np.isnan(s.top_values[2, 0])


def test_row_keys_are_mapped_to_rows():
    acc = RunningStats(top_k=1)
    acc.update(np.array([[5.0]]), np.array([(2 << 32) + 3]))
    assert acc.result(row_of=lambda keys: keys & 0xFF).top_rows.tolist() == [[3]]


def test_collected_statistics_match_the_collected_rows():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU()).eval()
    store = hlviz.collect(
        model, torch.randn(90, 4), ["0", "1"], batch_size=16, stats=RunningStats(top_k=5)
    )
    for name in store:
        x = store[name].numpy().astype(np.float64)
        s = store.stats[name]
        np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(s.var, x.var(0), rtol=1e-10)
        values, rows = _top_reference(x, 5)
        np.testing.assert_array_equal(s.top_values, values)
        np.testing.assert_array_equal(s.top_rows, rows)  # ReLU zeros tie: earlier rows first


def test_token_level_statistics_point_at_token_rows():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.LSTM(3, 4, batch_first=True)).eval()
    x = torch.randn(6, 5, 3)
    store = hlviz.collect(model, x, "0", tokens=True, batch_size=4, stats=True)
    rows = store["0"].numpy().astype(np.float64)
    s = store.stats["0"]
    assert s.count == 30
    np.testing.assert_array_equal(s.top_rows, _top_reference(rows, 10)[1])
    top = s.top_rows[0, 0]
    assert (store.columns["sequence"][top], store.columns["position"][top]) == divmod(top, 5)


def test_errors_say_what_was_wrong():
    with pytest.raises(
        OptionError, match="top_k must be a non-negative int, got -1. It is the number of top rows"
    ):
        RunningStats(top_k=-1)
    with pytest.raises(
        OptionError,
        match=r"sample must be a positive int, got 0\. It is the number of rows kept for quantiles",
    ):
        RunningStats(sample=0)
    with pytest.raises(OptionError, match=r"levels must lie in \[0, 1\], got 1\.5"):
        RunningStats(levels=[1.5])
    acc = RunningStats()
    with pytest.raises(OptionError, match="no rows were added"):
        acc.result()
    acc.update(np.zeros((2, 3)), np.arange(2))
    with pytest.raises(ShapeMismatchError, match="rows have 4 units but earlier rows had 3"):
        acc.update(np.zeros((2, 4)), np.arange(2))
    with pytest.raises(
        ShapeMismatchError, match=r"keys must hold one id per row: 2 rows but keys of shape \(3,\)"
    ):
        acc.update(np.zeros((2, 3)), np.arange(3))
    with pytest.raises(OptionError, match="cannot merge accumulators with different options"):
        acc.merge(RunningStats(top_k=2))
    with pytest.raises(OptionError, match=r"quantile 0.3 was not tracked; the levels are \[0.01"):
        acc.result().quantile(0.3)


def test_summary_and_plot():
    import matplotlib.pyplot as plt

    acc = RunningStats(top_k=2)
    acc.update(np.arange(12.0).reshape(4, 3), np.arange(4))
    s = acc.result()
    table = s.summary()
    assert table.shape == (3, 6 + len(s.levels)) and table["top_row"].tolist() == [3, 3, 3]
    fig = s.plot()
    assert len(fig.axes[0].get_xticklabels()) == 3
    plt.close(fig)
