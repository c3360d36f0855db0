"""The CNN track's shipped files: the Fashion-MNIST subset and its builder, the SmallCNN
checkpoints (safetensors, checksums, stated accuracy) and the errors that say how to rebuild."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hlviz
from hlviz import datasets
from hlviz.errors import DataFileError, OptionError
from hlviz.models.cnn import CHECKPOINT_STEPS, SmallCNN, checkpoint_name, load_small_cnn

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (
    [datasets.FASHION_MNIST_SUBSET]
    + [checkpoint_name(0, step) for step in CHECKPOINT_STEPS]
    + [checkpoint_name(1, "final")]
)


@pytest.fixture(scope="module")
def test_split():
    return datasets.fashion_mnist("test")


def _write_idx(folder: Path, subset) -> None:
    """The subset written as the four official idx.gz files (a small stand-in 'full set')."""
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = subset[f"{split}_images"], subset[f"{split}_labels"]
        n = len(images)
        head = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(head + images.tobytes(), mtime=0)
        )
        head = (0x801).to_bytes(4, "big") + n.to_bytes(4, "big")
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(head + labels.tobytes(), mtime=0)
        )


@pytest.fixture(scope="module")
def fake_full(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fashion")
    with np.load(ROOT / "data" / datasets.FASHION_MNIST_SUBSET) as arrays:
        _write_idx(folder, dict(arrays))
    return folder


def test_shipped_files_are_small():
    # their checksums: tests/test_repo.py::test_data_file_matches_its_checksum_and_has_provenance
    sizes = {name: (ROOT / "data" / name).stat().st_size for name in SHIPPED}
    assert sizes[datasets.FASHION_MNIST_SUBSET] < 6e6
    assert all(size < 200e3 for name, size in sizes.items() if name.endswith(".safetensors"))


def test_subset_is_stratified_and_scaled(test_split):
    train = datasets.fashion_mnist("train")
    assert tuple(train.X.shape) == (10000, 1, 28, 28) and tuple(test_split.X.shape) == (
        2000,
        1,
        28,
        28,
    )
    assert torch.bincount(train.y).tolist() == [1000] * 10
    assert torch.bincount(test_split.y).tolist() == [200] * 10
    assert train.X.dtype == torch.float32 and train.X.min() >= 0 and train.X.max() <= 1
    assert test_split.classes[0] == "T-shirt/top" and "per class [200" in repr(test_split)


@pytest.mark.parametrize(
    "name,rebuild",
    [
        (datasets.FASHION_MNIST_SUBSET, "python scripts/build_fashion_mnist.py"),
        (checkpoint_name(0, "final"), "python scripts/train_cnn.py"),
    ],
)
def test_missing_or_damaged_files_say_how_to_rebuild(tmp_path, monkeypatch, name, rebuild):
    load = (lambda: datasets.fashion_mnist("test")) if name.endswith(".npz") else load_small_cnn
    monkeypatch.setattr("hlviz.datasets.files.data_dir", lambda: tmp_path)
    shutil.copy(ROOT / "data" / "SHA256SUMS", tmp_path / "SHA256SUMS")
    with pytest.raises(DataFileError, match=rf"{name}' is missing .*rebuild it with `{rebuild}`"):
        load()
    data = bytearray((ROOT / "data" / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(
        DataFileError, match=rf"{name}' is damaged or stale.*rebuild it with `{rebuild}`"
    ):
        load()
    (tmp_path / "SHA256SUMS").write_text("")
    with pytest.raises(
        DataFileError, match=rf"{name}' has no line in .*rebuild it with `{rebuild}`"
    ):
        load()
    assert isinstance(DataFileError("x"), OSError)


def test_full_set_from_a_folder_or_the_environment(fake_full, monkeypatch, test_split):
    full = datasets.fashion_mnist("test", path=fake_full)
    assert full.name == "fashion-mnist" and torch.equal(full.X, test_split.X)
    monkeypatch.setenv(datasets.images.FASHION_MNIST_ENV, str(fake_full))
    assert datasets.fashion_mnist_folder() == fake_full
    assert torch.equal(
        datasets.fashion_mnist("train", full=True).y, datasets.fashion_mnist("train").y
    )
    monkeypatch.setenv(datasets.images.FASHION_MNIST_ENV, "")
    monkeypatch.setattr("hlviz.datasets.images.FASHION_MNIST_DEBIAN", str(fake_full / "nowhere"))
    assert datasets.fashion_mnist_folder() is None
    with pytest.raises(
        DataFileError, match="the full Fashion-MNIST was asked for but none was found"
    ):
        datasets.fashion_mnist("test", full=True)
    with pytest.raises(DataFileError, match="does not hold the Fashion-MNIST idx files"):
        datasets.fashion_mnist("test", path=fake_full / "nowhere")
    with pytest.raises(OptionError, match="split must be 'train' or 'test', got 'all'"):
        datasets.fashion_mnist("all")


def test_idx_reader_rejects_damaged_files(fake_full, tmp_path):
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        shutil.copy(fake_full / name, tmp_path / name)
    raw = gzip.decompress((fake_full / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])  # plain idx, truncated
    with pytest.raises(DataFileError, match="is truncated: .*for shape \\(2000, 28, 28\\)"):
        datasets.read_fashion_mnist(tmp_path, "test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + raw[4:])
    with pytest.raises(DataFileError, match="is not an idx3 file"):
        datasets.read_fashion_mnist(tmp_path, "test")
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataFileError, match="has no t10k-images-idx3-ubyte"):
        datasets.read_fashion_mnist(tmp_path, "test")


def test_builder_is_deterministic_and_stratified(fake_full, tmp_path):
    script = ROOT / "scripts" / "build_fashion_mnist.py"
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        args = [
            sys.executable,
            script,
            "--source",
            fake_full,
            "--out",
            out,
            "--train-per-class",
            "30",
            "--test-per-class",
            "10",
        ]
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        assert "wrote" in done.stdout
        outs.append((out / datasets.FASHION_MNIST_SUBSET).read_bytes())
    assert outs[0] == outs[1]
    with np.load(tmp_path / "a" / datasets.FASHION_MNIST_SUBSET) as arrays:
        assert np.bincount(arrays["train_labels"]).tolist() == [30] * 10
        full = datasets.read_fashion_mnist(fake_full, "test")[0]
        assert np.array_equal(full[arrays["test_index"]], arrays["test_images"])
    sums = (tmp_path / "a" / "SHA256SUMS").read_text()
    assert hashlib.sha256(outs[0]).hexdigest() in sums
    bad = subprocess.run(
        [sys.executable, script, "--source", tmp_path], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "does not hold the Fashion-MNIST idx files" in bad.stderr


@pytest.mark.skipif(
    datasets.fashion_mnist_folder() is None,
    reason="needs the full Fashion-MNIST: apt-get install dataset-fashion-mnist",
)
def test_the_subset_is_the_full_set_at_the_stored_positions():
    folder = datasets.fashion_mnist_folder()
    with np.load(ROOT / "data" / datasets.FASHION_MNIST_SUBSET) as arrays:
        for split in ("train", "test"):
            images, labels = datasets.read_fashion_mnist(folder, split)
            index = arrays[f"{split}_index"]
            assert np.array_equal(images[index], arrays[f"{split}_images"])
            assert np.array_equal(labels[index], arrays[f"{split}_labels"])


@pytest.mark.parametrize("seed", [0, 1])
def test_checkpoints_load_without_pickle_and_reach_90_percent(seed, test_split, monkeypatch):
    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load (pickle) must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    model = load_small_cnn(seed=seed)
    acc = hlviz.models.accuracy(model, test_split.X, test_split.y)
    assert acc >= 0.90
    assert abs(acc - float(model.meta["test_accuracy"])) < 1e-3  # the stated accuracy
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())


def test_training_dynamics_checkpoints_improve(test_split):
    accs = [
        hlviz.models.accuracy(load_small_cnn(0, step), test_split.X, test_split.y)
        for step in CHECKPOINT_STEPS
    ]
    assert accs[0] < 0.2 and accs[1] < accs[-1] and accs[2] < accs[-1]
    a, b = load_small_cnn(0), load_small_cnn(1)
    assert not torch.equal(a.features.block1.conv.weight, b.features.block1.conv.weight)


def test_small_cnn_names_and_errors():
    model = SmallCNN()
    names = hlviz.layer_names(model)
    for name in (
        "features.block1.conv",
        "features.block1.relu",
        "features.block1.pool",
        "features.block4.conv",
        "head.fc",
    ):
        assert name in names
    with pytest.raises(
        OptionError, match=r"expects grey images of shape \(N, 1, H, W\), got \(28, 28\)"
    ):
        model(torch.zeros(28, 28))
    with pytest.raises(OptionError, match="widths must be four positive ints"):
        SmallCNN(widths=(8, 8))
    with pytest.raises(OptionError, match="num_classes must be an int >= 2"):
        SmallCNN(num_classes=1)
    with pytest.raises(OptionError, match=r"no shipped checkpoint for seed=5.*--seeds 5"):
        load_small_cnn(seed=5)
    with pytest.raises(OptionError, match=r"seed=1, step='epoch1'.*\['final'\]"):
        load_small_cnn(seed=1, step="epoch1")
