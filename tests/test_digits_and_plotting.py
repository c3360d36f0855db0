"""The tutorials' building blocks: the digits data, DigitsCNN and its training, the figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import hlviz
from hlviz.datasets import ImageSplit, load_digits
from hlviz.models import DigitsCNN, accuracy, predict, train_classifier, train_digits_cnn
from hlviz.plotting import plot_by_layer, plot_feature_maps, plot_images, plot_layer_embeddings


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def trained():
    return train_digits_cnn(seed=0)


def visible_panels(fig) -> int:
    return sum(1 for ax in fig.axes if ax.get_visible())


# ---------------------------------------------------------------- datasets
def test_digits_splits_have_the_documented_sizes_types_and_range():
    train, test, every = load_digits("train"), load_digits("test"), load_digits("all")
    assert (len(train), len(test), len(every)) == (1347, 450, 1797)
    assert train.X.shape == (1347, 1, 8, 8) and train.X.dtype == torch.float32
    assert train.y.dtype == torch.int64 and set(train.y.tolist()) == set(range(10))
    assert float(every.X.min()) == 0.0 and float(every.X.max()) == 1.0
    assert train.classes == tuple("0123456789") and train.split == "train"
    X, y = test  # unpacks
    assert X is test.X and y is test.y
    assert "digits 'test'" in repr(test) and "per class" in repr(test)


def test_digits_split_is_stratified_deterministic_and_complete():
    train, test, every = load_digits("train"), load_digits("test"), load_digits("all")
    counts = torch.bincount(every.y, minlength=10).float()
    share = torch.bincount(test.y, minlength=10).float() / counts
    assert float(share.min()) > 0.24 and float(share.max()) < 0.26  # each class ~25% in test
    torch.testing.assert_close(
        torch.bincount(train.y) + torch.bincount(test.y), torch.bincount(every.y)
    )
    again = load_digits("train")
    assert torch.equal(again.X, train.X) and torch.equal(again.y, train.y)
    assert not torch.equal(load_digits("train", seed=1).y, train.y)
    assert len(load_digits("test", test_size=0.5)) in (898, 899)


def test_digits_bad_arguments_say_what_to_use():
    with pytest.raises(
        ValueError, match=r"split must be one of 'train', 'test', 'all', got 'valid'"
    ):
        load_digits("valid")
    with pytest.raises(ValueError, match=r"test_size must be a fraction between 0 and 1.*got 25"):
        load_digits("test", test_size=25)
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        load_digits(seed=-1)


def test_image_split_is_frozen():
    split = load_digits("test")
    assert isinstance(split, ImageSplit)
    with pytest.raises(AttributeError):
        split.X = None


# ---------------------------------------------------------------- model
def test_digits_cnn_has_readable_names_and_documented_shapes():
    model = DigitsCNN()
    names = hlviz.layer_names(model)
    assert names == [
        "features",
        "features.conv1",
        "features.relu1",
        "features.conv2",
        "features.relu2",
        "features.pool2",
        "features.conv3",
        "features.relu3",
        "features.pool3",
        "classifier",
        "classifier.flatten",
        "classifier.fc1",
        "classifier.relu",
        "classifier.fc2",
    ]
    assert model.features.relu1.inplace and model.features.relu2.inplace
    table = hlviz.list_layers(model, torch.zeros(3, 1, 8, 8)).set_index("name")
    assert table.loc["features.conv1", "output_shape"] == "(3, 16, 8, 8)"
    assert table.loc["features.pool3", "output_shape"] == "(3, 32, 2, 2)"
    assert table.loc["classifier.fc2", "output_shape"] == "(3, 10)"
    assert DigitsCNN(num_classes=3, width=4)(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    hlviz.testing.assert_no_hooks(model)


def test_digits_cnn_errors():
    with pytest.raises(
        ValueError,
        match=r"expects images of shape \(N, 1, H, W\), got \(2, 8, 8\); add the channel axis",
    ):
        DigitsCNN()(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="width must be a positive int.*got 0"):
        DigitsCNN(width=0)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 1"):
        DigitsCNN(num_classes=1)


def test_training_reaches_high_test_accuracy(trained):
    model, history = trained
    test = load_digits("test")
    assert list(history.columns) == ["epoch", "loss", "train_accuracy", "test_accuracy"]
    assert len(history) == 20 and history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert accuracy(model, test.X, test.y) >= 0.95
    assert accuracy(model, test.X, test.y) == pytest.approx(history["test_accuracy"].iloc[-1])
    assert not model.training


def test_training_is_deterministic_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, ha = train_digits_cnn(seed=3, epochs=2)
    b, hb = train_digits_cnn(seed=3, epochs=2)
    c, _ = train_digits_cnn(seed=4, epochs=2)
    assert torch.equal(torch.get_rng_state(), state)
    pd.testing.assert_frame_equal(ha, hb)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.features.conv1.weight, c.features.conv1.weight)


def test_train_digits_cnn_rejects_a_bad_seed():
    with pytest.raises(ValueError, match="seed must be a non-negative int, got 1.5"):
        train_digits_cnn(seed=1.5)


def test_train_classifier_on_a_toy_problem_and_its_errors():
    torch.manual_seed(0)
    X = torch.randn(80, 2)
    y = (X[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    history = train_classifier(model, X, y, epochs=30, lr=0.05, batch_size=16, eval_data=(X, y))
    assert history["test_accuracy"].iloc[-1] >= 0.9 and not model.training
    with pytest.raises(ValueError, match=r"X has shape \(80, 2\) and y \(79,\)"):
        train_classifier(model, X, y[:-1], epochs=1)
    with pytest.raises(TypeError, match="y must hold int64 class indices, got dtype torch.float32"):
        train_classifier(model, X, y.float(), epochs=1)
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        train_classifier(model, X, y, epochs=0)
    with pytest.raises(ValueError, match="lr must be a positive learning rate, got 0"):
        train_classifier(model, X, y, epochs=1, lr=0)
    with pytest.raises(TypeError, match="eval_data must be a pair"):
        train_classifier(model, X, y, epochs=1, eval_data=X)
    with pytest.raises(TypeError, match="must be tensors, got X: ndarray"):
        train_classifier(model, X.numpy(), y, epochs=1)


def test_predict_restores_the_mode_and_batches():
    model = DigitsCNN().train()
    X = torch.rand(5, 1, 8, 8)
    logits = predict(model, X, batch_size=2)
    assert model.training and logits.shape == (5, 10) and not logits.requires_grad
    torch.testing.assert_close(logits, model.eval()(X).detach())
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        predict(model, X, batch_size=0)


# ---------------------------------------------------------------- plotting
def test_plot_images_grid_and_titles():
    X, y = load_digits("test")
    fig = plot_images(X[:10], y[:10], ncols=4)
    assert visible_panels(fig) == 10 and len(fig.axes) == 12
    assert [ax.get_title() for ax in fig.axes[:3]] == [str(v) for v in y[:3].tolist()]
    assert visible_panels(plot_images(X[:, 0], max_images=5)) == 5


def test_plot_images_errors():
    X, y = load_digits("test")
    with pytest.raises(ValueError, match="labels has 3 entries for 4 images"):
        plot_images(X[:4], y[:3])
    with pytest.raises(ValueError, match=r"images must have shape .*got \(4, 64\)"):
        plot_images(X[:4].flatten(1))
    with pytest.raises(ValueError, match="max_images must be a positive int"):
        plot_images(X[:4], max_images=0)


def test_plot_feature_maps_panels_and_colour_scale():
    acts = torch.randn(3, 20, 8, 8)
    fig = plot_feature_maps(acts, index=1, max_maps=12, title="conv")
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 12  # the colour bar axes holds no image
    assert visible_panels(fig) == 13 and fig._suptitle.get_text() == "conv"
    low, high = maps[0].images[0].get_clim()
    assert low == -high and maps[0].images[0].get_cmap().name == "RdBu_r"
    fig = plot_feature_maps(acts.relu()[0])  # (C, H, W) with no negatives
    image = next(ax for ax in fig.axes if ax.images).images[0]
    assert image.get_clim()[0] == 0 and image.get_cmap().name == "viridis"


def test_plot_feature_maps_errors():
    with pytest.raises(IndexError, match=r"index=5 is out of range for a batch of 2 examples"):
        plot_feature_maps(torch.zeros(2, 4, 3, 3), index=5)
    with pytest.raises(ValueError, match=r"acts must be a spatial activation.*got shape \(2, 4\)"):
        plot_feature_maps(torch.zeros(2, 4))
    with pytest.raises(TypeError, match=r"list of 2 tensors.*rec.calls\(layer\)\[0\]"):
        plot_feature_maps([torch.zeros(1, 2, 3, 3)] * 2)
    with pytest.raises(ValueError, match="fig= must be an empty figure"):
        fig, _ = plt.subplots()
        plot_feature_maps(torch.zeros(1, 2, 3, 3), fig=fig)


def test_plot_layer_embeddings_from_a_recording(trained):
    model, _ = trained
    X, y = load_digits("test")
    rec = hlviz.activations(model, X[:60], ["features.relu1", "features.pool3", "classifier.relu"])
    fig = plot_layer_embeddings(rec, y[:60], ncols=2)
    assert visible_panels(fig) == 3
    assert fig.axes[0].get_title().startswith("features.relu1 (D=1024)\nPC1+PC2:")
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == len(set(y[:60].tolist()))
    fig = plot_layer_embeddings({"input": X[:40]}, y[:40], method="tsne")
    assert fig.axes[0].get_title().endswith("t-SNE")
    hlviz.testing.assert_no_hooks(model)


def test_plot_layer_embeddings_errors():
    acts = {"a": torch.randn(10, 4)}
    with pytest.raises(ValueError, match="method must be one of 'pca', 'tsne', got 'umap'"):
        plot_layer_embeddings(acts, range(10), method="umap")
    with pytest.raises(ValueError, match=r"acts\['a'\] has 10 rows .* but labels has 9 entries"):
        plot_layer_embeddings(acts, range(9))
    with pytest.raises(ValueError, match="acts must be a non-empty mapping"):
        plot_layer_embeddings({}, [])
    with pytest.raises(TypeError, match=r"acts\['a'\] is a list of 2 tensors"):
        plot_layer_embeddings({"a": [torch.zeros(3, 2)] * 2}, range(3))


def test_plot_by_layer_lines_bars_and_references():
    ax = plot_by_layer(
        {"conv1": 0.5, "conv2": 0.7, "fc": 0.9}, ylabel="acc", reference={"chance": 0.1}
    )
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "conv2", "fc"]
    assert len(ax.lines) == 2 and ax.get_ylabel() == "acc"  # the series and the reference line
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}, index=["x", "y"])
    _, target = plt.subplots()
    ax = plot_by_layer(frame, kind="bar", ax=target, title="t")
    assert ax is target and len(ax.patches) == 4 and ax.get_title() == "t"
    assert len(ax.get_legend().get_texts()) == 2
    ax = plot_by_layer(pd.Series([0.2, 0.4], index=["l1", "l2"], name="effect"))
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.2, 0.4])


def test_plot_by_layer_errors():
    with pytest.raises(ValueError, match="kind must be 'line' or 'bar', got 'pie'"):
        plot_by_layer({"a": 1.0}, kind="pie")
    with pytest.raises(ValueError, match="values is empty"):
        plot_by_layer({})
    with pytest.raises(TypeError, match="values must be a dict .*got list"):
        plot_by_layer([1.0, 2.0])
    with pytest.raises(TypeError, match="values must be numbers"):
        plot_by_layer(pd.DataFrame({"a": ["x"]}, index=["l"]))
