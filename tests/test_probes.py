"""LinearProbe: the scikit-learn contract, agreement with scikit-learn, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from hlviz.errors import NotFittedError, OptionError, ShapeMismatchError
from hlviz.probes import LinearProbe, MLPProbe


def _blobs(n=600, d=20, k=4, seed=0, spread=1.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * spread
    y = rng.integers(0, k, n)
    X = centres[y] + rng.normal(size=(n, d)) * 2.0
    return X.astype(np.float32), y


def test_classification_agrees_with_scikit_learn_within_a_point():
    X, y = _blobs()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    ours = LinearProbe(C=0.5).fit(Xtr, ytr)
    scaler = StandardScaler().fit(Xtr)
    ref = LogisticRegression(C=0.5, max_iter=2000).fit(scaler.transform(Xtr), ytr)
    ref_acc = ref.score(scaler.transform(Xte), yte)
    assert abs(ours.score(Xte, yte) - ref_acc) <= 0.01
    agree = (ours.predict(Xte) == ref.predict(scaler.transform(Xte))).mean()
    assert agree >= 0.98
    probs = ours.predict_proba(Xte)
    np.testing.assert_allclose(probs.numpy(), ref.predict_proba(scaler.transform(Xte)), atol=0.02)


def test_regression_equals_ridge_on_standardised_features():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 8))
    y = X @ rng.normal(size=8) + 0.1 * rng.normal(size=300)
    ours = LinearProbe(alpha=3.0).fit(X, y)
    scaler = StandardScaler().fit(X)
    ref = Ridge(alpha=3.0).fit(scaler.transform(X), y)
    np.testing.assert_allclose(
        ours.predict(X), ref.predict(scaler.transform(X)), rtol=1e-4, atol=1e-4
    )
    assert abs(ours.score(X, y) - ref.score(scaler.transform(X), y)) < 1e-5
    assert ours.task_ == "regression" and ours.predict(X).shape == (300,)
    multi = LinearProbe(task="regression").fit(X, np.stack([y, -y], 1))
    assert multi.predict(X).shape == (300, 2)


def test_standardisation_uses_training_rows_only():
    X, y = _blobs(n=200)
    probe = LinearProbe().fit(X[:100], y[:100])
    np.testing.assert_allclose(probe.mean_.numpy(), X[:100].mean(0), rtol=1e-5, atol=1e-5)
    assert not np.allclose(probe.mean_.numpy(), X.mean(0), atol=1e-3)


def test_labels_keep_their_values_and_images_are_flattened():
    X = torch.randn(120, 2, 3, 3)
    y = np.where(X[:, 0, 0, 0].numpy() > 0, "pos", "neg")
    probe = LinearProbe().fit(X, np.unique(y, return_inverse=True)[1] * 10 + 3)
    assert set(probe.classes_.tolist()) == {3, 13}
    assert probe.coef_.shape == (2, 18)
    assert set(np.unique(probe.predict(X))) <= {3, 13}


def test_scikit_learn_contract():
    probe = LinearProbe(C=2.0)
    assert probe.get_params()["C"] == 2.0 and not hasattr(probe, "coef_")
    twin = clone(probe)
    assert twin.get_params() == probe.get_params() and twin is not probe
    X, y = _blobs(n=100)
    assert probe.fit(X, y) is probe


def test_errors_say_what_to_do():
    X, y = _blobs(n=50)
    with pytest.raises(
        NotFittedError, match=r"not fitted yet: call probe.fit\(X_train, y_train\) first"
    ):
        LinearProbe().predict(X)
    with pytest.raises(ShapeMismatchError, match="X has 50 rows but y has 49"):
        LinearProbe().fit(X, y[:49])
    with pytest.raises(ShapeMismatchError, match=r"got shape \(50,\)"):
        LinearProbe().fit(X[:, 0], y)
    with pytest.raises(OptionError, match="single class"):
        LinearProbe().fit(X, np.zeros(50, dtype=int))
    with pytest.raises(OptionError, match="task='probe' is not one of"):
        LinearProbe(task="probe").fit(X, y)
    with pytest.raises(OptionError, match="X has NaN or inf values in 4 of its 4 rows"):
        LinearProbe().fit(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))
    fitted = LinearProbe().fit(X, y)
    with pytest.raises(ShapeMismatchError, match="X has 3 features but the probe was fit on 20"):
        fitted.predict(X[:, :3])
    with pytest.raises(OptionError, match="predict_proba is for classification"):
        LinearProbe().fit(X, y.astype(float)).predict_proba(X)


def _with_bad_rows(n=120, d=4):
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    X = torch.randn(n, d, generator=gen) + y[:, None]
    X[7, 1], X[30, 0], X[30, 2] = float("nan"), float("inf"), float("-inf")
    return X, y


@pytest.mark.parametrize("probe", [LinearProbe(), LinearProbe(task="regression"), MLPProbe()])
def test_nan_and_inf_rows_are_counted_before_fitting(probe):
    X, y = _with_bad_rows()
    target = y.double() if getattr(probe, "task", "") == "regression" else y
    with pytest.raises(
        OptionError,
        match=r"^X has NaN or inf values in 2 of its 120 rows \(first at row 7: 1 NaN, 2 inf in "
        r"all\); drop or impute those rows",
    ):
        probe.fit(X, target)
    fitted = probe.fit(X[:5], target[:5])
    with pytest.raises(OptionError, match="X has NaN or inf values in 2 of its 120 rows"):
        fitted.predict(X)


def test_float64_values_beyond_float32_are_reported_as_inf():
    X, y = _with_bad_rows()
    X = X.double()
    X[7, 1], X[30] = 1e300, 0.0
    with pytest.raises(OptionError, match=r"X \(in float32\) has NaN or inf values in 1 of"):
        LinearProbe().fit(X, y)


def test_probe_layers_and_mdl_layers_name_the_layer_with_nan_rows():
    from hlviz.probes import mdl_layers, probe_layers

    X, y = _with_bad_rows()
    good = torch.randn(120, 4)
    expected = r"layer 'bad' in acts has NaN or inf values in 2 of its 120 rows \(first at row 7"
    with pytest.raises(OptionError, match=expected):
        probe_layers({"good": good, "bad": X}, y, seeds=1)
    with pytest.raises(OptionError, match=expected.replace("acts", "baseline")):
        probe_layers({"good": good, "bad": good}, y, seeds=1, baseline={"bad": X})
    with pytest.raises(OptionError, match=r"layer 'bad' has NaN or inf values in 2 of its 120"):
        mdl_layers({"good": good, "bad": X}, y)
