"""Representational similarity: CKA invariances and known values, RSA, projections, errors."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from hlviz.errors import HlvizError, OptionError, OptionTypeError, ShapeMismatchError
from hlviz.plotting import plot_cka
from hlviz.similarity import (
    RBF_MAX_N,
    CKAReport,
    cka_matrix,
    hsic_unbiased,
    linear_cka,
    linear_cka_gram,
    minibatch_cka,
    project,
    rbf_cka,
    rdm,
    rsa,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


def rotation(d: int, seed: int = 0) -> torch.Tensor:
    Q, _ = torch.linalg.qr(randn(d, d, seed=seed))
    return Q


def related(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """X and a partly related, differently sized Y (CKA strictly between 0 and 1)."""
    X = randn(n, 12, seed=seed)
    Y = torch.tanh(X[:, :6] @ randn(6, 9, seed=seed + 1)) + 0.7 * randn(n, 9, seed=seed + 2)
    return X, Y


# ---------------------------------------------------------------- linear CKA
@pytest.mark.parametrize("cka", [linear_cka, linear_cka_gram, rbf_cka])
def test_cka_of_a_representation_with_itself_is_one(cka):
    X = randn(150, 7)
    assert cka(X, X) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("cka", [linear_cka, linear_cka_gram, rbf_cka])
def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling(cka):
    X, Y = related()
    reference = cka(X, Y)
    assert 0.05 < reference < 0.95
    assert cka(X @ rotation(12), Y) == pytest.approx(reference, abs=1e-9)
    assert cka(X, 7.5 * Y @ rotation(9, seed=3)) == pytest.approx(reference, abs=1e-9)
    assert cka(0.01 * X, Y + 3.0) == pytest.approx(reference, abs=1e-9)  # shifts too


def test_linear_cka_is_not_invariant_to_a_general_invertible_map():
    X, Y = related()
    stretch = torch.diag(
        torch.logspace(0, 2, 12, dtype=torch.float64)
    )  # invertible, not orthogonal
    assert torch.linalg.matrix_rank(stretch) == 12
    assert abs(linear_cka(X @ stretch, Y) - linear_cka(X, Y)) > 0.05


def test_feature_space_and_gram_forms_agree():
    for seed in range(3):
        X, Y = related(n=120, seed=seed)
        assert linear_cka(X, Y) == pytest.approx(linear_cka_gram(X, Y), abs=1e-6)
    wide = randn(40, 500, seed=9)  # d > n
    assert linear_cka(wide, Y[:40]) == pytest.approx(linear_cka_gram(wide, Y[:40]), abs=1e-6)


def test_cka_of_independent_random_representations_is_small():
    X, Y = randn(2000, 10, seed=1), randn(2000, 10, seed=2)
    assert linear_cka(X, Y) < 0.1
    assert minibatch_cka(X, Y, batch_size=200) < 0.05  # unbiased: no d/n offset


def test_accepts_numpy_float32_and_flattens_extra_dimensions():
    X = randn(50, 2, 3, 4)
    as_numpy = linear_cka(X.float().numpy(), X.reshape(50, -1))
    assert as_numpy == pytest.approx(1.0, abs=1e-6)


def test_hand_computed_value_against_numpy():
    X, Y = related(n=80)
    Xc, Yc = (X - X.mean(0)).numpy(), (Y - Y.mean(0)).numpy()
    expected = np.linalg.norm(Yc.T @ Xc) ** 2 / (
        np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)
    )
    assert linear_cka(X, Y) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- unbiased HSIC, minibatch
def test_hsic_unbiased_matches_the_definition_by_loops():
    X, Y = related(n=9)
    K, L = (X @ X.T).numpy(), (Y @ Y.T).numpy()
    n = 9
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    expected = (
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * one @ Kt @ Lt @ one
    ) / (n * (n - 3))
    assert hsic_unbiased(K, L) == pytest.approx(expected, rel=1e-10)


def full_unbiased_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    return minibatch_cka([(X, Y)])


def test_minibatch_estimate_converges_to_the_full_value_as_batches_accumulate():
    X, Y = related(n=4000, seed=5)
    full = full_unbiased_cka(X, Y)  # one batch of all rows
    order = torch.randperm(4000, generator=gen(0))
    batches = [(X[i], Y[i]) for i in order.split(100)]
    errors = [abs(minibatch_cka(batches[:k]) - full) for k in (1, 4, 40)]
    assert errors[-1] < 0.01
    assert errors[-1] < errors[0]
    assert minibatch_cka(X, Y, batch_size=100, seed=0) == pytest.approx(
        minibatch_cka(batches), abs=1e-12
    )


def test_minibatch_is_close_to_linear_cka_for_large_n():
    X, Y = related(n=10_000, seed=7)
    assert minibatch_cka(X, Y, batch_size=500) == pytest.approx(linear_cka(X, Y), abs=0.02)


def test_minibatch_streams_from_a_generator_and_is_seeded():
    X, Y = related(n=600)
    stream = ((X[i : i + 50], Y[i : i + 50]) for i in range(0, 600, 50))
    assert 0 < minibatch_cka(stream) < 1
    assert minibatch_cka(X, Y, batch_size=64, seed=1) == minibatch_cka(X, Y, batch_size=64, seed=1)
    assert minibatch_cka(X, Y, batch_size=64, seed=1) != minibatch_cka(X, Y, batch_size=64, seed=2)


# ---------------------------------------------------------------- RBF
def test_rbf_bandwidth_changes_the_value_and_large_sigma_approaches_linear():
    X, Y = related(n=200)
    assert rbf_cka(X, Y, sigma=0.3) != pytest.approx(rbf_cka(X, Y, sigma=1.0), abs=1e-3)
    assert rbf_cka(X, Y, sigma=100.0) == pytest.approx(linear_cka(X, Y), abs=1e-3)


# ---------------------------------------------------------------- matrix
def layers(n: int = 200) -> dict[str, torch.Tensor]:
    X, Y = related(n)
    return {"in": X, "mid": Y.reshape(n, 3, 3), "out": torch.relu(Y @ randn(9, 4, seed=4))}


@pytest.mark.parametrize(
    ("method", "pairwise"),
    [
        ("linear", linear_cka),
        ("rbf", rbf_cka),
        ("minibatch", lambda a, b: minibatch_cka(a, b, batch_size=64, seed=0)),
    ],
)
def test_cka_matrix_is_symmetric_with_unit_diagonal_and_matches_pairwise_calls(method, pairwise):
    acts = layers()
    report = cka_matrix(
        acts, method=method, **({"batch_size": 64} if method == "minibatch" else {})
    )
    assert isinstance(report, CKAReport) and report.method == method and report.n == 200
    table = report.matrix
    assert isinstance(table, pd.DataFrame) and report.to_frame().equals(table)
    assert report.to_frame() is not table and report.loc["in", "mid"] == table.loc["in", "mid"]
    assert list(table.index) == list(table.columns) == ["in", "mid", "out"]
    assert np.allclose(table.to_numpy(), table.to_numpy().T)
    assert np.allclose(np.diag(table.to_numpy()), 1.0)
    for a in acts:
        for b in acts:
            if a != b:
                assert table.loc[a, b] == pytest.approx(pairwise(acts[a], acts[b]), abs=1e-9)


def test_cka_matrix_across_two_models():
    acts = layers()
    other = {"x": acts["out"] * 2, "y": randn(200, 5, seed=11), "z": acts["in"] @ rotation(12)}
    table = cka_matrix(acts, other)
    assert list(table.index) == ["in", "mid", "out"] and list(table.columns) == ["x", "y", "z"]
    assert table.loc["out", "x"] == pytest.approx(1.0)
    assert table.loc["in", "z"] == pytest.approx(1.0)
    assert table.loc["mid", "y"] == pytest.approx(linear_cka(acts["mid"], other["y"]))
    minibatch = cka_matrix(acts, other, method="minibatch", batch_size=50)
    assert minibatch.loc["in", "z"] == pytest.approx(1.0)
    assert minibatch.loc["mid", "y"] == pytest.approx(
        minibatch_cka(acts["mid"], other["y"], batch_size=50), abs=1e-9
    )


def test_cka_matrix_takes_a_recording():
    import hlviz

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with hlviz.record(model, ["0", "1", "2"]) as rec:
        model(torch.randn(64, 6))
    table = cka_matrix(rec)
    assert list(table.index) == ["0", "1", "2"]
    assert table.loc["0", "1"] == pytest.approx(linear_cka(rec["0"], rec["1"]))


def test_linear_cka_in_column_blocks_gives_the_same_value(monkeypatch):
    import hlviz.similarity.cka as hs

    X, Y = related(n=100)
    whole = linear_cka(X, Y)
    monkeypatch.setattr(hs, "_BLOCK", 20)  # blocks of 2 columns of X against Y's 9
    assert linear_cka(X, Y) == pytest.approx(whole, abs=1e-12)


# ---------------------------------------------------------------- RSA and projections
def embed(distances: np.ndarray) -> torch.Tensor:
    """Points whose euclidean distances are ``distances`` (classical multidimensional scaling)."""
    n = len(distances)
    J = np.eye(n) - 1.0 / n
    values, vectors = np.linalg.eigh(-0.5 * J @ distances**2 @ J)
    return torch.from_numpy(vectors * np.sqrt(values.clip(min=0)))


def test_rsa_of_identical_and_of_monotone_transformed_rdms_is_one():
    X = randn(40, 10)
    assert rsa(X, X) == pytest.approx(1.0)
    assert rsa(X, X, metric="euclidean") == pytest.approx(1.0)
    # the square root of a euclidean distance matrix is again euclidean (Schoenberg): Y has
    # RDM sqrt(RDM(X)), a monotone but non-linear change that Spearman does not see
    D = rdm(X, "euclidean")
    Y = embed(np.sqrt(D))
    assert np.allclose(rdm(Y, "euclidean"), np.sqrt(D), atol=1e-6)
    rows, cols = np.triu_indices(40, k=1)
    assert np.corrcoef(D[rows, cols], np.sqrt(D)[rows, cols])[0, 1] < 0.999
    assert rsa(X, Y, metric="euclidean") == pytest.approx(1.0)


def test_rsa_is_spearman_of_the_upper_triangles():
    from scipy.stats import spearmanr

    X, Y = related(n=30)
    rows, cols = np.triu_indices(30, k=1)
    expected = spearmanr(rdm(X)[rows, cols], rdm(Y)[rows, cols]).statistic
    assert rsa(X, Y) == pytest.approx(expected)
    assert -1 <= rsa(X, randn(30, 5, seed=8)) < 0.5


def test_rdm_values_and_symmetry():
    X = randn(12, 6)
    D = rdm(X)
    assert D.shape == (12, 12) and np.allclose(D, D.T) and np.allclose(np.diag(D), 0)
    assert np.allclose(D, 1 - np.corrcoef(X.numpy()), atol=1e-12)
    E = rdm(X, "euclidean")
    assert np.allclose(E, np.linalg.norm(X.numpy()[:, None] - X.numpy()[None], axis=-1))


@pytest.mark.parametrize(("method", "k"), [("pca", 2), ("pca", 5), ("tsne", 2)])
def test_project_shapes_and_determinism(method, k):
    X = randn(60, 8)
    points = project(X, method, n_components=k, seed=3)
    assert isinstance(points, np.ndarray) and points.shape == (60, k)
    assert np.array_equal(points, project(X, method, n_components=k, seed=3))


def test_project_pca_matches_scikit_learn():
    from sklearn.decomposition import PCA

    X = randn(50, 6)
    expected = PCA(2, random_state=0).fit_transform(X.numpy())
    assert np.allclose(project(X), expected)


# ---------------------------------------------------------------- plot
def test_plot_cka_draws_a_heatmap_on_a_fixed_scale():
    table = cka_matrix(layers())
    ax = plot_cka(table, title="layers")
    assert ax.get_title() == "layers"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["in", "mid", "out"]
    assert len(ax.texts) == 9  # annotations
    mesh = ax.collections[0]
    assert mesh.get_clim() == (0.0, 1.0)
    _, own = plt.subplots()
    assert plot_cka(table, ax=own, annot=False) is own and len(own.texts) == 0


def test_plot_cka_errors():
    with pytest.raises(
        OptionTypeError, match="must be a CKAReport .* or a pandas DataFrame.*got dict"
    ):
        plot_cka({"a": 1.0})
    with pytest.raises(OptionError, match="matrix is empty"):
        plot_cka(pd.DataFrame())
    with pytest.raises(OptionTypeError, match="must hold numbers"):
        plot_cka(pd.DataFrame([["x"]], index=["a"], columns=["a"]))


# ---------------------------------------------------------------- errors
def test_shape_errors():
    X = randn(20, 3)
    with pytest.raises(ShapeMismatchError, match="X has 20 rows and Y has 19.*same inputs"):
        linear_cka(X, X[:19])
    with pytest.raises(OptionError, match=r"shape \(n, d\).*got shape \(20,\).*reshape\(-1, 1\)"):
        linear_cka(X[:, 0], X)
    with pytest.raises(OptionError, match="Y is empty"):
        linear_cka(X, torch.zeros(20, 0))
    with pytest.raises(OptionError, match="1 rows; this measure needs at least 2"):
        linear_cka(X[:1], X[:1])
    with pytest.raises(OptionTypeError, match="list of 2 tensors.*rec.calls"):
        linear_cka([X, X], X)
    with pytest.raises(OptionTypeError, match="must be a tensor or an array of numbers, got str"):
        linear_cka(X, "activations")


@pytest.mark.parametrize("cka", [linear_cka, linear_cka_gram, rbf_cka])
def test_constant_and_nan_inputs_are_refused(cka):
    X = randn(20, 3)
    with pytest.raises(OptionError, match="Y is constant across inputs.*undefined"):
        cka(X, torch.full((20, 4), 0.1))
    with pytest.raises(OptionError, match="X is constant"):
        cka(torch.zeros(20, 2), X)
    bad = X.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(OptionError, match=r"X has NaN or inf in 1 of 20 rows \(rows 3\)"):
        cka(bad, X)
    bad[7:, 0] = float("inf")
    with pytest.raises(OptionError, match=r"Y has NaN or inf in 14 of 20 rows \(rows 3, 7, 8, "
                       r"9, 10, 11, 12, 13, 14, 15, \.\.\.\)"):  # fmt: skip
        cka(X, bad)


def test_rbf_errors():
    X = randn(20, 3)
    with pytest.raises(OptionError, match="sigma must be a positive finite number.*-1"):
        rbf_cka(X, X, sigma=-1.0)
    with pytest.raises(OptionTypeError, match="sigma must be a positive number.*'wide'"):
        rbf_cka(X, X, sigma="wide")
    dupes = torch.cat([torch.zeros(15, 3), randn(5, 3)])
    with pytest.raises(OptionError, match="median distance between inputs is 0"):
        rbf_cka(dupes, X)
    big = torch.zeros(RBF_MAX_N + 1, 1)
    with pytest.raises(OptionError, match="limited to 10000 rows.*linear_cka or minibatch_cka"):
        rbf_cka(big, big)


def test_hsic_and_minibatch_errors():
    K = torch.eye(6)
    with pytest.raises(ShapeMismatchError, match=r"K must be a square.*\(6, 5\)"):
        hsic_unbiased(K[:, :5], K)
    with pytest.raises(ShapeMismatchError, match=r"K is \(6, 6\) and L is \(5, 5\)"):
        hsic_unbiased(K, torch.eye(5))
    with pytest.raises(OptionError, match="3 rows; this measure needs at least 4"):
        hsic_unbiased(torch.eye(3), torch.eye(3))
    X = randn(40, 3)
    with pytest.raises(OptionError, match="no batches"):
        minibatch_cka([])
    with pytest.raises(
        OptionTypeError, match="batch 0 is a Tensor, not an .X_batch, Y_batch. pair"
    ):
        minibatch_cka([X])
    with pytest.raises(ShapeMismatchError, match="batch 1: X_batch has 10 rows and Y_batch has 9"):
        minibatch_cka([(X[:10], X[:10]), (X[:10], X[:9])])
    with pytest.raises(OptionError, match="batch 0's X_batch and Y_batch have 3 rows"):
        minibatch_cka([(X[:3], X[:3])])
    with pytest.raises(OptionError, match="batch_size=2: .*at least 4"):
        minibatch_cka(X, X, batch_size=2)
    with pytest.raises(OptionTypeError, match="batch_size must be an int.*'64'"):
        minibatch_cka(X, X, batch_size="64")
    with pytest.raises(OptionError, match="batch_size= is for the minibatch_cka.X, Y"):
        minibatch_cka([(X, X)], batch_size=8)
    with pytest.raises(OptionTypeError, match="got one array and no Y"):
        minibatch_cka(X)
    with pytest.raises(OptionError, match="Y batch 0 is constant"):
        minibatch_cka([(X, torch.ones(40, 2))])


def test_cka_matrix_errors():
    acts = layers()
    with pytest.raises(OptionError, match="method='cosine' is not known.*'linear', 'rbf'"):
        cka_matrix(acts, method="cosine")
    with pytest.raises(OptionError, match="batch_size=32 is only used by method='minibatch'"):
        cka_matrix(acts, batch_size=32)
    with pytest.raises(
        ShapeMismatchError, match=r"acts\['short'\] has 10 rows but layer 'in' has 200"
    ):
        cka_matrix({**acts, "short": randn(10, 3)})
    with pytest.raises(ShapeMismatchError, match=r"other\['y'\] has 50 rows but .* has 200"):
        cka_matrix(acts, {"y": randn(50, 3)})
    with pytest.raises(OptionTypeError, match="non-empty mapping.*got dict with no entries"):
        cka_matrix({})
    with pytest.raises(OptionTypeError, match="non-empty mapping.*got Tensor"):
        cka_matrix(randn(10, 3))
    with pytest.raises(OptionError, match=r"acts\['dead'\] is constant"):
        cka_matrix({**acts, "dead": torch.zeros(200, 4)})
    broken = acts["mid"].clone()
    broken[[5, 9]] = float("nan")
    with pytest.raises(OptionError, match=r"other\['mid'\] has NaN or inf in 2 of 200 rows "
                       r"\(rows 5, 9\): similarity is undefined"):  # fmt: skip
        cka_matrix(acts, {"mid": broken})


def test_cka_report_summary_and_plot():
    import matplotlib.pyplot as plt

    acts = layers()
    report = cka_matrix(acts)
    summary = report.summary()
    assert list(summary.columns) == ["layer", "best_match", "cka", "same_layer"]
    values = report.matrix.to_numpy()
    for i, row in summary.iterrows():
        others = [j for j in range(3) if j != i]
        best = max(others, key=lambda j: values[i, j])
        assert row.best_match == report.matrix.columns[best]
        assert row.cka == pytest.approx(values[i, best]) and row.same_layer == 1.0
    across = cka_matrix(acts, {"out": acts["out"] * 3, "y": randn(200, 5, seed=11)})
    assert not across.symmetric and report.symmetric
    row = across.summary().set_index("layer").loc["out"]
    assert row.same_layer == pytest.approx(1.0) and row.best_match == "out"
    assert np.isnan(across.summary().set_index("layer").loc["in", "same_layer"])
    _, ax = plt.subplots()
    assert report.plot(ax=ax, title="t") is ax and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["in", "mid", "out"]
    plt.close(ax.figure)


def test_rsa_rdm_project_errors():
    X = randn(10, 4)
    with pytest.raises(OptionError, match="metric='cosine' is not known.*'correlation'"):
        rdm(X, "cosine")
    with pytest.raises(OptionError, match="metric='l1' is not known"):
        rsa(X, X, metric="l1")
    flat_row = X.clone()
    flat_row[2] = 5.0
    with pytest.raises(OptionError, match=r"rows \[2\] of X are constant.*metric='euclidean'"):
        rdm(flat_row)
    with pytest.raises(ShapeMismatchError, match="X has 10 rows and Y has 8"):
        rsa(X, X[:8])
    with pytest.raises(OptionError, match="2 rows; this measure needs at least 3"):
        rsa(X[:2], X[:2])
    with pytest.raises(OptionError, match="all dissimilarities of acts_b are equal"):
        rsa(
            randn(3, 2),
            torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 3**0.5 / 2]], dtype=torch.float64),
            "euclidean",
        )
    with pytest.raises(OptionError, match="method='umap' is not known.*'pca', 'tsne'"):
        project(X, "umap")
    with pytest.raises(OptionError, match="n_components must be a positive int.*0"):
        project(X, n_components=0)
    with pytest.raises(OptionError, match=r"n_components=5 is more than min\(n, d\) = 4"):
        project(X, n_components=5)
    with pytest.raises(OptionError, match="t-SNE here draws 1 to 3 dimensions"):
        project(X, "tsne", n_components=4)


def test_errors_are_hlviz_errors_and_value_errors():
    with pytest.raises(HlvizError):
        linear_cka(randn(5, 2), randn(4, 2))
    with pytest.raises(ValueError):
        linear_cka(randn(5, 2), randn(4, 2))
