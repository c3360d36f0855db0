"""The batched probe solver (every layer, seed and control in one solve) and MLP probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from hlviz.errors import NotFittedError, OptionError, ShapeMismatchError
from hlviz.probes import LinearProbe, MLPProbe, probe_layers, split_indices
from hlviz.probes._batched import Fit, batched_scores
from hlviz.probes._lbfgs import Problems, fit_softmax


def _layers(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, 10))
    acts = {
        "weak": (0.4 * centres[y] + rng.normal(size=(n, 10))).astype(np.float32),
        "strong": (2.0 * centres[y] + rng.normal(size=(n, 10)) + 5.0).astype(np.float32),
        "wide": rng.normal(size=(n, 16)).astype(np.float32) * 3,
    }
    return acts, y


def test_loss_and_gradient_match_autograd():
    gen = torch.Generator().manual_seed(0)
    L, n, d, P, K = 2, 30, 5, 3, 4
    X = torch.randn(L, n, d, generator=gen, dtype=torch.float64) + 1.0
    codes = torch.randint(0, K, (P, n), generator=gen)
    weights = torch.rand(P, n, generator=gen, dtype=torch.float64) * (torch.rand(P, n) > 0.3)
    absent = torch.zeros(P, K, dtype=torch.bool)
    absent[2, 3] = True
    codes[2][codes[2] == 3] = 0
    mean = torch.randn(L, P, d, generator=gen, dtype=torch.float64)
    scale = torch.rand(L, P, d, generator=gen, dtype=torch.float64) + 0.5
    lam = torch.tensor([0.1, 0.01, 1.0], dtype=torch.float64)
    problems = Problems(X, codes, weights, absent, mean, scale, lam)
    x = torch.randn(L, P, K * d + K, generator=gen, dtype=torch.float64)
    loss, grad = problems(x, torch.ones(L, P, dtype=torch.bool))

    x_ref = x.clone().requires_grad_(True)
    total = 0
    for layer in range(L):
        for p in range(P):
            W = x_ref[layer, p, : K * d].view(K, d)
            b = x_ref[layer, p, K * d :]
            Z = (X[layer] - mean[layer, p]) / scale[layer, p]
            logits = (Z @ W.T + b).masked_fill(absent[p], float("-inf"))
            ce = torch.nn.functional.cross_entropy(logits, codes[p], reduction="none")
            value = (ce * weights[p]).sum() + 0.5 * lam[p] * (W * W).sum()
            assert torch.allclose(value, loss[layer, p])
            total = total + value
    total.backward()
    torch.testing.assert_close(grad, x_ref.grad)


def test_solver_reaches_scikit_learn_optimum():
    acts, y = _layers()
    Z = torch.as_tensor(acts["weak"])
    Z = (Z - Z.mean(0)) / Z.std(0, unbiased=False)
    n = len(y)
    ones = torch.ones(1, 1, 10)
    problems = Problems(
        Z[None],
        torch.as_tensor(y)[None],
        torch.full((1, n), 1 / n),
        torch.zeros(1, 3, dtype=torch.bool),
        0 * ones,
        ones,
        torch.tensor([1.0 / n]),
    )
    # tol 1e-5: float32 losses stop registering progress at a largest gradient entry of
    # about 3e-6 here, so a tighter tol runs to max_iter or not depending on rounding
    fit = fit_softmax(problems, tol=1e-5, max_iter=500)
    ref = LogisticRegression(C=1.0, tol=1e-8, max_iter=5000).fit(Z.numpy(), y)
    # softmax weights are defined up to a shift shared by the classes; compare centred
    ours = fit.coef[0, 0] - fit.coef[0, 0].mean(0)
    theirs = torch.as_tensor(ref.coef_, dtype=torch.float32)
    torch.testing.assert_close(ours, theirs - theirs.mean(0), atol=2e-3, rtol=1e-3)
    assert int(fit.n_iter[0, 0]) < 100


def test_batched_scores_equal_probes_fitted_one_by_one():
    acts, y = _layers()
    fits = []
    for seed in range(2):
        train, test = split_indices(y, seed=seed)
        fits.append(Fit(y, train, test))
        shuffled = y.copy()
        shuffled[train] = np.random.default_rng(seed).permutation(y[train])
        fits.append(Fit(shuffled, train, test))
    scores = batched_scores(acts, fits)
    for name, X in acts.items():
        for i, f in enumerate(fits):
            alone = LinearProbe().fit(X[f.train], f.labels[f.train])
            expected = alone.score(X[f.test], f.labels[f.test])
            assert abs(scores[name][i] - expected) <= 1.5 / len(f.test), (name, i)


def test_a_layer_score_does_not_depend_on_the_other_layers_in_the_batch():
    acts, y = _layers()
    train, test = split_indices(y, seed=0)
    fits = [Fit(y, train, test)]
    together = batched_scores(acts, fits)
    alone = batched_scores({"strong": acts["strong"]}, fits)
    np.testing.assert_array_equal(together["strong"], alone["strong"])


def test_a_class_missing_from_the_training_rows_is_never_predicted():
    acts, y = _layers()
    labels = y.copy()
    train, test = split_indices(y, seed=0)
    labels[test[:10]] = 7  # a label that exists only among test rows
    scores = batched_scores({"strong": acts["strong"]}, [Fit(labels, train, test)])
    ok = LinearProbe().fit(acts["strong"][train], labels[train])
    assert np.isfinite(scores["strong"]).all()
    assert abs(scores["strong"][0] - ok.score(acts["strong"][test], labels[test])) <= 1 / len(test)
    assert scores["strong"][0] <= 1 - 10 / len(test)


def test_probe_layers_passes_the_probe_parameters_to_the_batched_solve():
    acts, y = _layers()
    strong = probe_layers(acts, y, seeds=1).table.set_index("layer")["score"]
    starved = probe_layers(acts, y, seeds=1, probe=LinearProbe(C=1e-6)).table
    assert strong["strong"] > 0.9
    # with almost no capacity the probe falls back towards the majority answer
    assert starved.set_index("layer").loc["strong", "score"] < strong["strong"] - 0.2


def test_mlp_probe_finds_what_a_linear_probe_cannot_and_reports_selectivity():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 2)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] > 0).astype(int)  # XOR of the signs
    types = rng.integers(0, 40, 600)
    acts = {"xor": X}
    linear = probe_layers(acts, y, seeds=2, types=types).table.iloc[0]
    mlp = probe_layers(acts, y, seeds=2, types=types, probe=MLPProbe(hidden=32)).table.iloc[0]
    assert linear["score"] < 0.65 and mlp["score"] > 0.9
    assert np.isfinite(mlp["selectivity"]) and mlp["selectivity"] > 0.3


def test_probe_layers_accepts_a_scikit_learn_classifier():
    acts, y = _layers()
    report = probe_layers(acts, y, seeds=1, probe=LogisticRegression(max_iter=500))
    ours = probe_layers(acts, y, seeds=1)
    np.testing.assert_allclose(report.table["score"], ours.table["score"], atol=0.03)


def test_mlp_probe_errors_and_contract():
    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(NotFittedError, match=r"not fitted yet: call probe.fit"):
        MLPProbe().predict(X)
    with pytest.raises(
        OptionError, match="MLPProbe classifies labels.*float32.*LinearProbe\\(task='regression'\\)"
    ):
        MLPProbe().fit(X, X[:, 0])
    with pytest.raises(OptionError, match="hidden must be a positive int, got 0"):
        MLPProbe(hidden=0).fit(X, y)
    with pytest.raises(OptionError, match="single class"):
        MLPProbe().fit(X, np.zeros(50, dtype=int))
    with pytest.raises(ShapeMismatchError, match="X has 50 rows, y has shape \\(49,\\)"):
        MLPProbe().fit(X, y[:49])
    probe = MLPProbe(hidden=8, seed=3).fit(X, y)
    with pytest.raises(ShapeMismatchError, match="X has 2 features but the probe was fit on 3"):
        probe.predict(X[:, :2])
    again = MLPProbe(hidden=8, seed=3).fit(X, y)
    np.testing.assert_array_equal(probe.predict_proba(X).numpy(), again.predict_proba(X).numpy())
    assert probe.predict_proba(X).shape == (50, 2) and set(probe.predict(X)) <= {0, 1}


def test_a_column_constant_on_the_training_rows_is_ignored_by_both_paths():
    acts, y = _layers()
    X = acts["weak"].copy()
    train, test = split_indices(y, seed=0)
    X[train, 0] = 3.0  # constant where the probe learns, wild where it is scored
    X[test, 0] = np.random.default_rng(1).normal(size=len(test)) * 1e3
    dropped = LinearProbe().fit(X[train, 1:], y[train]).score(X[test, 1:], y[test])
    single = LinearProbe().fit(X[train], y[train])
    assert float(single.coef_[:, 0].abs().max()) == 0.0
    assert abs(single.score(X[test], y[test]) - dropped) <= 1 / len(test)
    batched = batched_scores({"x": X}, [Fit(y, train, test)])["x"][0]
    assert abs(batched - dropped) <= 1.5 / len(test)


def test_identical_inputs_as_layer_and_baseline_give_identical_scores():
    acts, y = _layers()
    report = probe_layers(acts, y, seeds=2, baseline=acts).table
    np.testing.assert_array_equal(report["score"].to_numpy(), report["baseline"].to_numpy())


def test_the_shrunk_preconditioner_takes_fewer_steps_to_the_same_probes(monkeypatch):
    # nearly collinear features (rank 8 plus 1e-3 noise), as hidden states are: the inverse
    # of their covariance blows up the near-null directions unless it is shrunk
    import hlviz.probes._batched as sweep
    import hlviz.probes._lbfgs as lbfgs

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(800, 8))
    X = (Z @ rng.normal(size=(8, 64)) + 1e-3 * rng.normal(size=(800, 64))).astype(np.float32)
    y = (Z[:, 0] + 0.5 * Z[:, 1] > 0).astype(int) + (Z[:, 2] > 0.5)
    order = rng.permutation(800)
    fits = [Fit(y, order[:600], order[600:]), Fit(rng.permutation(y), order[:600], order[600:])]
    steps = {}

    def counting(problems, **options):
        fit = fit_softmax(problems, **options)
        steps[lbfgs._SHRINK] = int(fit.n_iter.sum())
        return fit

    monkeypatch.setattr(sweep, "fit_softmax", counting)
    scores = {}
    for shrink in (0.0, 0.05):
        monkeypatch.setattr(lbfgs, "_SHRINK", shrink)
        scores[shrink] = batched_scores({"layer": X}, fits)["layer"]
    np.testing.assert_allclose(scores[0.05], scores[0.0], atol=1 / 200)  # one test row
    assert steps[0.05] < steps[0.0], steps


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_one_constant_column_rule_for_the_probe_and_the_sweep(offset):
    """A column whose spread is rounding noise (absolute, or next to a large mean) is dropped
    by LinearProbe and by the batched sweep alike: one rule (``_scaling.scale_of``)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    X = rng.normal(size=(400, 3)).astype(np.float32)
    # the label, written at the level of float32 rounding: 1e-9 around 0, one float32
    # step (6e-5) around 1000; a probe that standardised it would read y perfectly
    X[:, 0] = np.float32(offset) + np.float32(1e-9 if offset == 0 else 5e-5) * (2 * y - 1)
    train, test = split_indices(y, seed=0)
    probe = LinearProbe().fit(X[train], y[train])
    assert np.isinf(probe.scale_[0].item()) and float(probe.coef_[:, 0].abs().max()) == 0.0
    alone = probe.score(X[test], y[test])
    assert alone < 0.7  # the label is not read out of the dropped column
    batched = batched_scores({"x": X}, [Fit(y, train, test)])["x"][0]
    assert abs(batched - alone) <= 1.5 / len(test)
