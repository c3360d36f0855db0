"""MDL probing (online code, Voita & Titov 2020): behaviour, bookkeeping, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hlviz.errors import OptionError, ShapeMismatchError
from hlviz.probes import LinearProbe
from hlviz.probes.mdl import PROB_FLOOR, MDLReport, MDLResult, mdl_layers, online_codelength


def _data(n=800, d=8, k=2, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.normal(size=(k, d)) * 3.0
    signal = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    noise = rng.normal(size=(n, d)).astype(np.float32)
    return signal, noise, y


def test_planted_signal_compresses_and_noise_does_not():
    signal, noise, y = _data()
    report = mdl_layers({"noise": noise, "signal": torch.from_numpy(signal)}, y)
    assert isinstance(report, MDLReport) and report.best_layer() == "signal"
    table = report.to_frame().set_index("layer")
    assert table.loc["signal", "compression"] > 3.0
    assert 0.8 <= table.loc["noise", "compression"] <= 1.2
    assert table.loc["signal", "codelength_kbits"] < 0.5 * table.loc["noise", "codelength_kbits"]
    assert table.loc["signal", "uniform_kbits"] == pytest.approx(len(y) / 1000.0)
    results = report.results
    assert isinstance(results["signal"], MDLResult)


def test_codelength_is_first_uniform_block_plus_online_blocks():
    signal, _, y = _data(n=500, k=3)
    result = online_codelength(signal, y)
    k = 3
    first = result.block_sizes[0]
    assert first == max(k, round(0.001 * 500))
    assert result.block_bits[0] == pytest.approx(first * math.log2(k))
    assert result.codelength == pytest.approx(result.block_bits[0] + sum(result.block_bits[1:]))
    assert sum(result.block_sizes) == result.n == 500
    assert len(result.block_bits) == len(result.block_sizes)
    assert result.uniform_codelength == pytest.approx(500 * math.log2(3))
    assert result.compression == pytest.approx(result.uniform_codelength / result.codelength)
    summary = result.summary()
    assert summary.shape == (1, 6)
    assert summary.loc[0, "classes"] == 3 and summary.loc[0, "n"] == 500
    assert summary.loc[0, "codelength_kbits"] == pytest.approx(result.codelength / 1000)
    blocks = result.to_frame()
    assert blocks["rows"].sum() == 500 and blocks["bits"].sum() == pytest.approx(result.codelength)


def test_block_boundaries_follow_fractions():
    y = np.arange(1000) % 4
    X = np.random.default_rng(0).normal(size=(1000, 3))
    result = online_codelength(X, y)
    # ends: max(4, 1)=4, 4 (dropped), 4 (dropped), 8, 16, 32, 62, 125, 250, 500, 1000
    assert result.block_sizes == (4, 4, 8, 16, 30, 63, 125, 250, 500)
    assert result.block_bits[0] == pytest.approx(4 * 2.0)


def test_hand_computed_tiny_example():
    # 6 rows, 2 classes, fractions (0.5, 1.0): first block of 3 rows is uniform (3 bits),
    # the second block is coded by a probe fit on the first 3 rows.
    X = np.array([[0.0], [1.0], [0.1], [0.9], [0.2], [0.8]])
    y = np.array([0, 1, 0, 1, 0, 1])
    result = online_codelength(X, y, fractions=(0.5, 1.0), seed=3)
    assert result.block_sizes == (3, 3)
    assert result.block_bits[0] == 3.0
    order = np.random.default_rng(3).permutation(6)
    Xs, ys = X[order], y[order]
    probe = LinearProbe(task="classification").fit(Xs[:3], ys[:3])
    p = probe.predict_proba(Xs[3:]).double().numpy()
    expected = -np.log2(p[np.arange(3), ys[3:]]).sum()
    assert result.block_bits[1] == pytest.approx(expected, rel=1e-5)
    assert result.codelength == pytest.approx(3.0 + expected, rel=1e-5)


def test_single_class_prefix_is_sent_uniformly():
    # labels sorted so that after the shuffle with this seed the first rows may share a
    # class: force it with a constant prefix and fractions whose first block is K rows.
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    X = np.arange(8, dtype=np.float32)[:, None]
    seed = next(
        s for s in range(1000) if len(set(y[np.random.default_rng(s).permutation(8)[:2]])) == 1
    )
    result = online_codelength(X, y, fractions=(0.25, 0.5, 1.0), seed=seed)
    assert result.block_sizes == (2, 2, 4)
    assert result.block_bits[0] == 2.0 and result.block_bits[1] == 2.0


def test_unseen_class_costs_the_floor():
    # Three classes; the training prefix (4 rows) lacks class 2, which the last row has.
    X = np.array([[0.0], [1.0], [0.0], [1.0], [0.5]])
    y = np.array([0, 1, 0, 1, 2])

    result = online_codelength(X, y, fractions=(0.8, 1.0), seed=0)
    order = np.random.default_rng(0).permutation(5)
    if y[order][4] == 2:  # the class-2 row landed in the online block
        assert result.block_bits[1] == pytest.approx(-math.log2(PROB_FLOOR))
    assert math.isfinite(result.codelength)


def test_determinism_and_seed_dependence():
    signal, noise, y = _data(n=400)
    a = online_codelength(noise, y, seed=1)
    b = online_codelength(noise, y, seed=1)
    c = online_codelength(noise, y, seed=2)
    assert a == b
    assert a.codelength != c.codelength
    t1 = mdl_layers({"s": signal, "n": noise}, y, seed=5)
    t2 = mdl_layers({"s": signal, "n": noise}, y, seed=5)
    assert t1.table.equals(t2.table)
    # the same shuffle for every layer: each row equals the single-layer result
    assert t1.table.loc[0, "codelength_kbits"] == pytest.approx(
        online_codelength(signal, y, seed=5).codelength / 1000
    )


def test_custom_probe_and_string_labels():
    signal, _, y = _data(n=300)
    labels = np.array(["cat", "dog"])[y]
    result = online_codelength(signal, labels, probe=LinearProbe(C=0.1, max_iter=50))
    assert result.num_classes == 2 and result.compression > 2.0
    flat = online_codelength(signal.reshape(300, 2, 4), y)
    assert flat == online_codelength(signal, y)


def test_errors():
    signal, _, y = _data(n=100)
    with pytest.raises(
        ShapeMismatchError, match=r"layer 'b' has 99 rows but y has 100; every layer needs one row"
    ):
        mdl_layers({"a": signal, "b": signal[:99]}, y)
    with pytest.raises(OptionError, match=r"layer 'a' holds 2 calls .*rec.calls\('a'\)\[-1\]"):
        mdl_layers({"a": [signal, signal]}, y)
    with pytest.raises(OptionError, match="non-empty mapping"):
        mdl_layers({}, y)
    for bad in [(0.5, 0.25, 1.0), (0.0, 1.0), (0.5, 0.9), (0.5, 1.5), (1.0,), (0.5, 0.5, 1.0)]:
        with pytest.raises(
            OptionError, match=r"fractions must be at least two strictly increasing"
        ):
            online_codelength(signal, y, fractions=bad)
    with pytest.raises(OptionError, match=r"y holds 1 class\(es\) \(\[0\]\).*at least two"):
        online_codelength(signal, np.zeros(100, dtype=int))
    with pytest.raises(OptionError, match="non-integer floats"):
        online_codelength(signal, np.linspace(0, 1, 100))
    with pytest.raises(ShapeMismatchError, match=r"y must be 1-D .*got shape \(50, 2\)"):
        online_codelength(signal, y.reshape(50, 2))
    with pytest.raises(ShapeMismatchError, match=r"layer 'X' has 99 rows but y has 100"):
        online_codelength(signal[:99], y)
    with pytest.raises(OptionError, match=r"2 rows leave nothing to code online"):
        online_codelength(np.zeros((2, 1)), np.array([0, 1]))


def test_accepts_a_recording():
    import hlviz

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    x = torch.randn(120, 4)
    y = (x[:, 0] > 0).long()
    with hlviz.record(model, ["0", "2"]) as rec:
        model(x)
    table = mdl_layers(rec, y).to_frame()
    assert table["layer"].tolist() == ["0", "2"]
    assert (table["compression"] > 0).all()


def test_the_report_reads_like_every_other_result():
    import matplotlib.pyplot as plt
    import pandas as pd

    signal, noise, y = _data(n=400)
    report = mdl_layers({"noise": noise, "signal": signal}, y)
    frame = report.to_frame()
    frame.loc[0, "compression"] = -1.0  # a copy: the report is unchanged
    assert report.table.loc[0, "compression"] > 0
    summary = report.summary()
    assert isinstance(summary, pd.DataFrame)
    assert summary.columns.tolist() == [
        "layer",
        "codelength_kbits",
        "compression",
        "uniform_kbits",
        "n",
        "classes",
    ]
    assert summary["n"].tolist() == [400, 400] and summary["classes"].tolist() == [2, 2]
    _, ax = plt.subplots()
    assert report.plot(ax=ax) is ax
    assert [t.get_text() for t in ax.get_xticklabels()] == ["noise", "signal"]
    assert ax.lines[0].get_ydata().tolist() == report.table["compression"].tolist()
    assert isinstance(report.plot(), plt.Axes)
    plt.close("all")
    with pytest.raises(TypeError):
        report.plot(ax)  # keyword-only, as every result's plot


def test_mdl_layers_fuzz_cases_end_in_hlviz_errors():
    """Fuzz cases (issue 16): bfloat16 layers are widened; a zero-width layer, an unknown
    probe name and a negative seed each end in an HlvizError that says the fix."""
    from hlviz.errors import OptionTypeError

    signal, noise, y = _data(n=200)
    acts = {"a": torch.as_tensor(signal), "b": torch.as_tensor(noise)}
    full = mdl_layers(acts, y, fractions=(0.25, 0.5, 1.0))
    half = mdl_layers(
        {k: v.to(torch.bfloat16) for k, v in acts.items()}, y, fractions=(0.25, 0.5, 1.0)
    )
    assert np.allclose(half.table["compression"], full.table["compression"], rtol=0.1)
    with pytest.raises(ShapeMismatchError, match=r"layer 'a' has no features \(shape \(200, 0\)\)"):
        mdl_layers({**acts, "a": acts["a"][:, :0]}, y)
    with pytest.raises(OptionError, match=r"probe='svm' is not one of 'linear', 'mlp'"):
        mdl_layers(acts, y, probe="svm")
    with pytest.raises(OptionError, match="seed must be a non-negative int, got -1"):
        mdl_layers(acts, y, seed=-1)
    with pytest.raises(OptionError, match="seed must be a non-negative int, got -1"):
        online_codelength(signal, y, seed=-1)
    with pytest.raises(OptionTypeError, match=r"layer 'a' must be activations.*NoneType"):
        mdl_layers({**acts, "a": None}, y)
    with pytest.raises(OptionTypeError, match="acts must be a non-empty mapping.*got ndarray"):
        mdl_layers(signal, y)
    assert mdl_layers(acts, y, probe="linear").table.equals(mdl_layers(acts, y).table)
