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


def test_repro_probe_string_labels():
    """Issue 22: string (any hashable) labels work as in scikit-learn: ``classes_`` holds
    them, ``predict`` returns them, and the scores match integer labels of the same classes."""
    from hlviz.probes import probe_layers

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    codes = (X[:, 0] > 0).astype(int)
    tags = np.array(["NOUN", "VERB"])[codes]
    reference = LogisticRegression().fit(X[:90], tags[:90])
    probe = LinearProbe().fit(X[:90], tags[:90])
    assert probe.classes_.tolist() == reference.classes_.tolist() == ["NOUN", "VERB"]
    assert set(probe.predict(X[90:])) <= {"NOUN", "VERB"}
    assert probe.score(X[90:], tags[90:]) == LinearProbe().fit(X[:90], codes[:90]).score(
        X[90:], codes[90:]
    )
    assert probe.score(X[90:], list(tags[90:])) >= reference.score(X[90:], tags[90:]) - 0.05
    mlp = MLPProbe(hidden=8).fit(X[:90], list(tags[:90]))  # a list of str works too
    assert mlp.classes_.tolist() == ["NOUN", "VERB"] and mlp.predict(X[:3]).dtype.kind == "U"
    # labels that do not even compare: first appearance order, still returned as given
    mixed = np.empty(90, dtype=object)
    mixed[:] = [("a", 1) if c else None for c in codes[:90]]
    fitted = LinearProbe().fit(X[:90], mixed)
    first_other = mixed[codes[:90] != codes[0]][0]
    assert fitted.classes_.tolist() == [mixed[0], first_other]
    assert set(map(repr, fitted.predict(X[:90]))) == {"None", "('a', 1)"}
    assert fitted.score(X[:90], mixed) > 0.9
    strings = probe_layers({"layer": X}, tags, seeds=2, types=tags)
    numbers = probe_layers({"layer": X}, codes, seeds=2, types=codes)
    assert strings.task == "classification"
    assert strings.table["score"].tolist() == numbers.table["score"].tolist()
    with pytest.raises(OptionError, match=r"task='regression' needs numeric targets.*dtype <U4"):
        LinearProbe(task="regression").fit(X, tags)


@pytest.mark.parametrize("cls", [LinearProbe, lambda **kw: MLPProbe(hidden=4, max_iter=5, **kw)])
def test_probes_reject_unusable_inputs_with_an_hlviz_error(cls):
    """Fuzz cases (issue 16): empty, missing, string and zero-width inputs, and a string
    where labels belong, each end in an HlvizError that says what was given and the fix."""
    from hlviz.errors import OptionTypeError

    gen = torch.Generator().manual_seed(5)
    y = torch.randint(0, 2, (80,), generator=gen)
    X = torch.randn(80, 4, generator=gen) + y[:, None]
    with pytest.raises(ShapeMismatchError, match=r"X has no rows \(shape \(0, 4\)\).*examples"):
        cls().fit(X[:0], y[:0])
    for bad, shown in [({}, "dict"), (None, "NoneType"), ("acts", "str 'acts'")]:
        with pytest.raises(OptionTypeError, match=f"X must be activations.*got {shown}"):
            cls().fit(bad, y)
    with pytest.raises(OptionTypeError, match=r"X must hold numbers.*dtype <U1"):
        cls().fit(np.array([["a"]] * 80), y)
    with pytest.raises(ShapeMismatchError, match=r"X has no features \(shape \(80, 0\)\)"):
        cls().fit(X[:, :0], y)
    with pytest.raises(ShapeMismatchError, match="y must hold one target per row, got the single"):
        cls().fit(X, "labels")
    # half precision is widened, not refused
    assert cls().fit(X.to(torch.bfloat16), y).score(X.half(), y) > 0.6


@pytest.mark.parametrize("cls", [LinearProbe, lambda **kw: MLPProbe(hidden=4, max_iter=5, **kw)])
def test_probe_device_is_checked_before_fitting(cls):
    X, y = _blobs(n=40, d=3, k=2)
    with pytest.raises(OptionError, match=r"device='nowhere' is not a torch device; use None"):
        cls(device="nowhere").fit(X, y)
    with pytest.raises(OptionError, match=r"device='meta' holds no data.*'cpu'"):
        cls(device="meta").fit(X, y)
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="CUDA is not available"):
            cls(device="cuda").fit(X, y)
    assert cls(device=torch.device("cpu")).fit(X, y).predict(X).shape == (40,)


def test_mlp_probe_refuses_a_hidden_layer_that_cannot_fit():
    from hlviz.errors import MemoryBudgetError, OptionTypeError

    X, y = _blobs(n=40, d=3, k=2)
    with pytest.raises(
        MemoryBudgetError,
        match=r"MLPProbe\(hidden=1000000000000\) on 3 features has 6,000,000,000,002 parameters"
        r".*smaller hidden=",
    ):
        MLPProbe(hidden=10**12).fit(X, y)
    with pytest.raises(OptionTypeError, match=r"hidden must be a positive int, got 2.5 \(float\)"):
        MLPProbe(hidden=2.5).fit(X, y)
    with pytest.raises(OptionError, match="seed must be a non-negative int, got -1"):
        MLPProbe(seed=-1).fit(X, y)
