"""Never hang (issue 16): no LU on the probes' symmetric positive definite matrices.

In torch 2.13 + MKL, once a process has changed its thread count (``torch.set_num_threads``
by hlviz or by the user), a batched LU (``torch.linalg.inv`` / ``solve``) can fail with
``Intel oneMKL ERROR: Parameter 6 was incorrect on entry to DLASWP`` or spin forever.
The probes factor their matrices by Cholesky instead, and never touch the thread count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import hlviz
from hlviz.errors import OptionError
from hlviz.probes import LinearProbe, MLPProbe, mdl_layers, probe_layers
from hlviz.probes._linalg import cholesky

_SCRIPT = textwrap.dedent(
    """
    import json, time
    import torch
    from hlviz.probes import LinearProbe, probe_layers

    gen = torch.Generator().manual_seed(0)
    for _ in range(3):  # small sweeps first, as notebook 08 does
        y = torch.randint(0, 3, (300,), generator=gen)
        probe_layers({"a": torch.randn(300, 16, generator=gen) + y[:, None]}, y, seeds=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the user toggles the thread count
    torch.set_num_threads(max(2, threads))
    y = torch.randint(0, 4, (20_000,), generator=gen)
    acts = {
        f"layer{i}": torch.randn(20_000, 384, generator=gen) + 0.05 * i * y[:, None]
        for i in range(7)
    }
    start = time.perf_counter()
    report = probe_layers(acts, y, seeds=1, controls=("majority",))
    ridge = LinearProbe(task="regression").fit(acts["layer6"][:5000], y[:5000].float())
    print(json.dumps({
        "seconds": time.perf_counter() - start,
        "best": report.best_layer(),
        "scores": report.table["score"].round(3).tolist(),
        "ridge_r2": ridge.score(acts["layer6"][5000:6000], y[5000:6000].float()),
    }))
    """
)


@pytest.mark.slow
def test_small_sweeps_then_a_thread_toggle_then_a_large_sweep_finish():
    """The scenario of issue 16 in a fresh process: it hung forever before the fix."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - the regression itself
        pytest.fail(f"the 7 x 20,000 x 384 sweep did not finish in 300 s: {exc.stderr!r}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "oneMKL ERROR" not in done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["best"] == "layer6"
    assert result["scores"][6] > result["scores"][0] + 0.1
    assert 0.0 < result["ridge_r2"] < 1.0
    assert result["seconds"] < 120


_LU = [
    (torch.linalg, "inv"),
    (torch.linalg, "inv_ex"),
    (torch.linalg, "solve"),
    (torch.linalg, "solve_ex"),
    (torch.linalg, "lu"),
    (torch.linalg, "lu_factor"),
    (torch.linalg, "lu_factor_ex"),
    (torch, "inverse"),
    (torch.Tensor, "inverse"),
]


@pytest.fixture
def no_lu(monkeypatch):
    """Every LU entry point raises; Cholesky calls are counted."""

    def refuse(*args, **kwargs):
        raise AssertionError("hlviz called an LU routine on a positive definite matrix")

    for owner, name in _LU:
        monkeypatch.setattr(owner, name, refuse)
    calls = []
    real = torch.linalg.cholesky_ex

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", counted)
    return calls


def _data(n=240, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    return torch.randn(n, d, generator=gen) + y[:, None], y


def test_probe_layers_and_linear_probes_use_cholesky_not_lu(no_lu):
    X, y = _data()
    report = probe_layers({"a": X, "b": X[:, :4]}, y, seeds=2)
    assert report.table["score"].min() > 0.5
    assert any(len(shape) == 3 for shape in no_lu)  # the batched preconditioner
    LinearProbe().fit(X, y)
    ridge = LinearProbe(task="regression", alpha=0.5).fit(X, y.double())
    assert ridge.score(X, y.double()) > 0.5
    assert (X.shape[1], X.shape[1]) in no_lu  # the ridge system
    MLPProbe(hidden=8, max_iter=20).fit(X, y)
    mdl_layers({"a": X}, y)


@pytest.mark.parametrize("standardize", [True, False])
def test_ridge_matches_scikit_learn(standardize):
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    X, _ = _data(d=5)
    X = X * torch.tensor([1.0, 10.0, 0.1, 1.0, 3.0]) + 5.0  # off-centre, unequal scales
    target = (X @ torch.arange(1.0, 6.0) + torch.randn(len(X)) + 7.0).double()
    probe = LinearProbe(task="regression", alpha=2.0, standardize=standardize).fit(X, target)
    Xs = StandardScaler().fit_transform(X.numpy()) if standardize else X.numpy()
    ref = Ridge(alpha=2.0).fit(Xs.astype(np.float64), target.numpy())
    np.testing.assert_allclose(probe.coef_[0].numpy(), ref.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probe.predict(X), ref.predict(Xs.astype(np.float64)), rtol=1e-4)


def test_a_singular_ridge_system_says_what_and_how_to_fix():
    X, y = _data(d=4)
    X = torch.cat([X, X[:, :1]], 1)  # a duplicated column: Z^T Z is singular
    with pytest.raises(OptionError, match=r"ridge system Z\^T Z \+ alpha I \(5 x 5, alpha=0") as e:
        LinearProbe(task="regression", alpha=0.0).fit(X, y.double())
    assert "pass alpha > 0" in str(e.value)
    assert isinstance(e.value, hlviz.HlvizError)
    LinearProbe(task="regression", alpha=1e-3).fit(X, y.double())  # the fix works


def test_cholesky_names_the_matrix_of_a_batch_that_is_not_positive_definite():
    good = torch.eye(3, dtype=torch.float64)
    bad = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    with pytest.raises(
        OptionError,
        match=r"M \(matrix 1 of the batch\) is not positive definite: "
        r"its leading minor of order 2 \(of 3\) is not positive. do X",
    ):
        cholesky(torch.stack([good, bad]), what="M", fix="do X")
