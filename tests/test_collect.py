"""hlviz.collect: in memory and on disk, every reduce against hand-written hooks, token-level
collection, columns, the memory budget, estimate(), errors, and hook hygiene."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hlviz
from hlviz.errors import (
    HlvizError,
    HlvizWarning,
    MemoryBudgetError,
    OptionError,
    OptionTypeError,
    ShapeMismatchError,
)

from .zoo import Blocks, Exploding, Shared, tiny_bert


class Reader(nn.Module):
    """An LSTM over (batch, steps, features) and a linear read-out of every step."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.randn(50, 1, 6, 6)


def _hand_hooks(model, names, batches):
    """Reference: plain forward hooks storing detached clones, batch by batch."""
    modules = dict(model.named_modules())
    seen = {n: [] for n in names}
    handles = [
        modules[n].register_forward_hook(
            lambda m, a, o, n=n: seen[n].append(
                (o[0] if isinstance(o, tuple) else o).detach().clone()
            )
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for h in handles:
            h.remove()
    return seen


REFERENCE = {
    None: lambda t: t,
    "mean": lambda t: t.mean(dim=tuple(range(2, t.dim()))) if t.dim() == 4 else t.mean(1),
    "max": lambda t: t.amax(dim=(2, 3)) if t.dim() == 4 else t.amax(1),
    "sum": lambda t: t.sum(dim=(2, 3)) if t.dim() == 4 else t.sum(1),
    "flatten": lambda t: t.reshape(t.shape[0], -1),
    "first": lambda t: t[:, 0],
    "last": lambda t: t[:, -1],
}


@pytest.mark.parametrize("reduce", [None, "mean", "max", "sum", "flatten"])
def test_every_reduce_on_images_matches_hand_written_hooks(cnn, images, reduce):
    layers = ["features.0", "features.3", "classifier"]
    store = hlviz.collect(cnn, images, layers, reduce=reduce, batch_size=16)
    seen = _hand_hooks(cnn, layers, images.split(16))
    for name in layers:
        want = torch.cat([REFERENCE[reduce](t) if t.dim() > 2 else t for t in seen[name]])
        if reduce == "flatten":
            want = torch.cat([t.reshape(len(t), -1) for t in seen[name]])
        np.testing.assert_array_equal(store[name].numpy(), want.numpy())
    hlviz.testing.assert_no_hooks(cnn)


@pytest.mark.parametrize("reduce", [None, "mean", "max", "sum", "flatten", "first", "last"])
def test_every_reduce_on_sequences_matches_hand_written_hooks(reduce):
    torch.manual_seed(0)
    model = Reader().eval()
    x = torch.randn(30, 7, 3)
    store = hlviz.collect(model, x, ["lstm", "head"], reduce=reduce, batch_size=8)
    seen = _hand_hooks(model, ["lstm", "head"], x.split(8))
    for name in ("lstm", "head"):
        want = torch.cat([REFERENCE[reduce](t) for t in seen[name]])
        np.testing.assert_array_equal(store[name].numpy(), want.numpy())


def test_a_callable_reduce_runs_inside_the_hook(cnn, images):
    store = hlviz.collect(cnn, images, "features.1", reduce=lambda t: t[:, :2, 0, 0])
    seen = _hand_hooks(cnn, ["features.1"], images.split(64))
    np.testing.assert_array_equal(store["features.1"].numpy(), seen["features.1"][0][:, :2, 0, 0])


def test_first_and_last_refuse_images_with_a_reason(cnn, images):
    with pytest.raises(
        OptionError, match=r"reduce='last' takes the last position .* 2 position axes"
    ):
        hlviz.collect(cnn, images, "features.0", reduce="last")
    hlviz.testing.assert_no_hooks(cnn)


@pytest.mark.parametrize("reduce", [None, "mean"])
def test_streamed_to_disk_equals_in_memory_bit_for_bit(cnn, images, tmp_path, reduce):
    labels = torch.arange(50) % 3
    data = list(zip(images.split(7), labels.split(7), strict=True))
    options = dict(reduce=reduce, columns={"label": 1}, stats=True)
    memory = hlviz.collect(cnn, data, "features.*", **options)
    disk = hlviz.collect(cnn, data, "features.*", out=tmp_path / "s", shard_bytes=1000, **options)
    assert disk.path == tmp_path / "s" and disk.verify().shards == 8
    assert list(memory) == list(disk) == [f"features.{i}" for i in range(6)]
    for name in memory:
        a, b = memory[name].numpy(), disk[name].numpy()
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert memory.columns["label"].numpy().tolist() == disk.columns["label"].numpy().tolist()
    assert disk.columns["label"].numpy().tolist() == labels.tolist()
    for name in memory:
        m, d = memory.stats[name], disk.stats[name]
        for field in ("mean", "var", "min", "max", "quantiles", "top_values", "top_rows"):
            np.testing.assert_array_equal(getattr(m, field), getattr(d, field))
    reopened = hlviz.ActivationStore(tmp_path / "s")
    assert reopened["features.5"].numpy().tobytes() == memory["features.5"].numpy().tobytes()


def test_a_dataloader_and_dict_batches(cnn, images):
    labels = torch.arange(50) % 3
    loader = DataLoader(TensorDataset(images, labels), batch_size=20)
    store = hlviz.collect(cnn, loader, "classifier", columns={"label": 1})
    assert store["classifier"].shape == (50, 3) and store.inputs == 50
    np.testing.assert_array_equal(store.columns["label"].numpy(), labels.numpy())

    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(x)

    model = Keyword().eval()
    batches = [{"x": torch.randn(5, 4), "y": torch.arange(5)} for _ in range(3)]
    store = hlviz.collect(model, batches, "lin", columns={"y": "y", "double": lambda b: 2 * b["y"]})
    assert store.columns["y"].numpy().tolist() == list(range(5)) * 3
    assert store.columns["double"].numpy().tolist() == [2 * i for i in range(5)] * 3


def test_a_tuple_batch_without_columns_says_which_item_is_a_label(cnn, images):
    data = [(images[:4], torch.zeros(4))]
    with pytest.raises(
        OptionError, match=r"model\(\*batch\) on a batch of 2 items .* columns=\{'label': 1\}"
    ):
        hlviz.collect(cnn, data, "classifier")
    hlviz.testing.assert_no_hooks(cnn)


def _padded_batches(tokenizer_like_lengths, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for lengths in tokenizer_like_lengths:
        T = max(lengths)
        ids = torch.randint(1, vocab, (len(lengths), T), generator=g)
        mask = torch.zeros(len(lengths), T, dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
            ids[i, n:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def test_token_level_rows_are_the_real_tokens_only():
    torch.manual_seed(0)
    model = tiny_bert()
    batches = _padded_batches([[5, 3, 7], [2, 6]])
    store = hlviz.collect(model, batches, ["embeddings", "encoder.layer.1"], tokens=True)
    assert store.rows == 5 + 3 + 7 + 2 + 6 and store.inputs == 5
    assert store["encoder.layer.1"].shape == (23, 16)
    cols = {k: v.numpy() for k, v in store.columns.items()}
    assert cols["sequence"].tolist() == [0] * 5 + [1] * 3 + [2] * 7 + [3] * 2 + [4] * 6
    assert cols["position"].tolist() == [*range(5), *range(3), *range(7), *range(2), *range(6)]
    # reference: the model's own hidden states at the real tokens
    want, tokens = [], []
    with torch.no_grad():
        for b in batches:
            out = model(**b, output_hidden_states=True)
            mask = b["attention_mask"].bool()
            want.append(out.hidden_states[2][mask])
            tokens.append(b["input_ids"][mask])
    np.testing.assert_array_equal(store["encoder.layer.1"].numpy(), torch.cat(want).numpy())
    assert cols["token"].tolist() == torch.cat(tokens).tolist()
    assert 0 not in cols["token"].tolist(), "no padding token was kept"
    # a sequence's rows do not depend on the padding around it
    alone = batches[0]["input_ids"][1:2, :3]
    with torch.no_grad():
        single = model(input_ids=alone, output_hidden_states=True).hidden_states[2][0]
    np.testing.assert_allclose(store["encoder.layer.1"][5:8], single.numpy(), atol=1e-5)
    hlviz.testing.assert_no_hooks(model, hlviz_only=True)  # transformers has its own


def test_token_level_columns_repeat_per_input_values_and_keep_per_token_values():
    torch.manual_seed(0)
    model = tiny_bert()
    batches = _padded_batches([[2, 3]])
    batches[0]["label"] = torch.tensor([7, 9])
    batches[0]["tag"] = torch.arange(6).reshape(2, 3)
    store = hlviz.collect(
        model, batches, "encoder.layer.0", tokens=True, columns={"label": "label", "tag": "tag"}
    )
    assert store.columns["label"].numpy().tolist() == [7, 7, 9, 9, 9]
    assert store.columns["tag"].numpy().tolist() == [0, 1, 3, 4, 5]


def test_token_level_without_a_mask_keeps_every_step():
    torch.manual_seed(0)
    model = Reader().eval()
    x = torch.randn(4, 6, 3)
    store = hlviz.collect(model, x, "lstm", tokens=True)
    assert store["lstm"].shape == (24, 5)
    assert "token" not in store.columns  # float inputs are not token ids
    with torch.no_grad():
        np.testing.assert_array_equal(
            store["lstm"].numpy(), model.lstm(x)[0].reshape(24, 5).numpy()
        )


def test_token_level_errors_say_what_to_do(cnn, images):
    with pytest.raises(
        OptionError, match="tokens=True keeps one row per token, which reduce='mean'"
    ):
        hlviz.collect(cnn, images, "classifier", tokens=True, reduce="mean")
    with pytest.raises(
        OptionError,
        match=r"layer 'classifier' gives shape \(50, 3\) .*not \(batch, tokens, units\)",
    ):
        hlviz.collect(cnn, images, "classifier", tokens=True, batch_size=64)
    with pytest.raises(OptionError, match="column 'position' is made by tokens=True itself"):
        hlviz.collect(cnn, images, "classifier", tokens=True, columns={"position": 1})
    hlviz.testing.assert_no_hooks(cnn)


def test_variable_length_rows_without_reduce_are_refused_with_the_fix():
    torch.manual_seed(0)
    model = Reader().eval()
    data = [torch.randn(2, 5, 3), torch.randn(2, 4, 3)]
    with pytest.raises(
        ShapeMismatchError,
        match=r"layer 'lstm' gives rows of shape \(4, 5\) .* in batch 1 but \(5, 5\) .*Use reduce=",
    ):
        hlviz.collect(model, data, "lstm")
    assert hlviz.collect(model, data, "lstm", reduce="last")["lstm"].shape == (4, 5)
    hlviz.testing.assert_no_hooks(model)


def test_memory_budget_is_refused_up_front_with_the_estimate_and_the_fix(cnn, images):
    consumed = []

    def data():
        for batch in images.split(10):
            consumed.append(1)
            yield batch

    per_input = 4 * 6 * 6 * 4  # features.0: 4 channels x 6 x 6 float32
    msg = (
        r"collecting 1 layer\(s\) of 50 inputs in memory needs about 28\.1 KiB \(features\.0: "
        r"28\.1 KiB\), more than max_bytes=10\.0 KiB \(estimated from the first batch\)\. Stream "
        r"to disk instead with out="
    )
    with pytest.raises(MemoryBudgetError, match=msg):
        hlviz.collect(cnn, images, "features.0", max_bytes=10 * 1024, batch_size=10)
    assert 50 * per_input == 28800
    # an iterable of unknown length is refused as soon as the budget is reached
    with pytest.raises(MemoryBudgetError, match=r"reached after 30 inputs\)\. Stream to disk"):
        hlviz.collect(cnn, data(), "features.0", max_bytes=2 * 10 * per_input + 1)
    assert len(consumed) == 3
    # on disk, the same budget does not apply
    hlviz.testing.assert_no_hooks(cnn)


def test_estimate_gives_bytes_per_layer_equal_to_what_is_stored(cnn, images, tmp_path):
    est = hlviz.estimate(cnn, images[:10], ["features.0", "classifier"], n=50)
    store = hlviz.collect(cnn, images, ["features.0", "classifier"], out=tmp_path / "s")
    assert est.bytes == {name: store[name].nbytes for name in store}
    assert est.total == 50 * (4 * 36 * 4 + 3 * 4)
    assert list(est.summary()["layer"]) == ["features.0", "classifier"]
    half = hlviz.estimate(cnn, images[:10], "features.0", n=50, dtype=torch.float16, reduce="mean")
    assert half.bytes == {"features.0": 50 * 4 * 2}
    bert = tiny_bert()
    tokens = hlviz.estimate(
        bert, _padded_batches([[2, 4]])[0], "encoder.layer.0", n=10, tokens=True
    )
    assert tokens.per_input == {"encoder.layer.0": 3 * 16 * 4}  # 3 real tokens per input on average
    with pytest.raises(
        OptionError, match=r"n must be a non-negative int, got -1\. It is the number of inputs"
    ):
        hlviz.estimate(cnn, images, "features.0", n=-1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"reduce": "median"},
            OptionError,
            r"reduce='median' is not one of 'mean', .*Or give None \(keep everything\)",
        ),
        ({"batch_size": 0}, OptionError, "batch_size must be a positive int or None, got 0"),
        (
            {"max_bytes": 0},
            OptionError,
            r"max_bytes must be a positive int, got 0\. It is a number of bytes\.",
        ),
        (
            {"shard_bytes": -5},
            OptionError,
            r"shard_bytes must be a positive int, got -5\. It is a number of bytes",
        ),
        (
            {"stats": "yes"},
            OptionTypeError,
            "stats must be True, False/None or a hlviz.collection.stats.RunningStats",
        ),
        ({"out": 3}, OptionTypeError, "out must be a directory path"),
        ({"resume": "yes"}, OptionTypeError, "resume must be True or False"),
        ({"tokens": 1}, OptionTypeError, "tokens must be True or False"),
        ({"dtype": torch.bfloat16}, OptionError, "dtype=torch.bfloat16 cannot be stored"),
        ({"columns": ["label"]}, OptionTypeError, "columns must be a dict name -> index"),
        ({"columns": {"a/b": 1}}, OptionError, "column name 'a/b' must be a non-empty string"),
        (
            {"columns": {"label": 5}},
            OptionError,
            r"columns\['label'\]=5 cannot be read from a batch of type Tensor",
        ),
    ],
)
def test_bad_options_are_refused_with_a_message_and_leave_no_hook(
    cnn, images, kwargs, error, match
):
    with pytest.raises(error, match=match):
        hlviz.collect(cnn, images, "features.0", **kwargs)
    hlviz.testing.assert_no_hooks(cnn)


def test_bad_data_is_refused_with_a_message(cnn, images):
    loader = DataLoader(TensorDataset(images), batch_size=8)
    with pytest.raises(
        OptionError,
        match="batch_size=8 applies only when data is a tensor, but data is a DataLoader",
    ):
        hlviz.collect(cnn, loader, "features.0", batch_size=8)
    with pytest.raises(
        OptionTypeError,
        match=r"data must be a tensor .* got a dict with keys \['x'\] \(one batch\? wrap it in a",
    ):
        hlviz.collect(cnn, {"x": images}, "features.0")
    with pytest.raises(OptionTypeError, match="batch 0 of data holds no tensor: got a tuple"):
        hlviz.collect(cnn, [["a", "b"]], "features.0")
    with pytest.raises(OptionError, match="data gave no batches"):
        hlviz.collect(cnn, [], "features.0")
    with pytest.raises(hlviz.errors.LayerNotFoundError, match="no layer 'features.9'"):
        hlviz.collect(cnn, images, "features.9")
    hlviz.testing.assert_no_hooks(cnn)


def test_a_module_that_runs_twice_is_refused():
    model = Shared().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HlvizWarning)
        with pytest.raises(OptionError, match="layer 'block' ran 3 times in one forward pass"):
            hlviz.collect(model, torch.randn(4, 5), "block")
    hlviz.testing.assert_no_hooks(model)


def test_training_mode_is_warned_about_when_it_changes_the_activations(images):
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))  # train mode, with dropout
    with pytest.warns(
        HlvizWarning,
        match=r"Sequential is in training mode \('1': dropout or batch norm\): the collected "
        r"activations are random .* Call model.eval\(\) first",
    ):
        hlviz.collect(model, torch.randn(8, 4), "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hlviz.collect(Blocks(), images, "classifier")  # train mode but nothing depends on it


def test_numpy_data_and_float16_storage(cnn, images):
    store = hlviz.collect(cnn, images.numpy(), "classifier", dtype=torch.float16)
    assert store["classifier"].dtype == np.float16 and store["classifier"].shape == (50, 3)


# ---------------------------------------------------------------- hook hygiene
@pytest.mark.parametrize("on_disk", [False, True])
@pytest.mark.parametrize("case", ["normal", "bad argument", "raises mid-forward", "bad data"])
def test_collect_never_leaves_hooks_and_keeps_the_users(case, on_disk, tmp_path, images):
    model = (Exploding() if case == "raises mid-forward" else Blocks()).eval()
    first = model.a if case == "raises mid-forward" else model.features[0]
    fired = []
    mine = first.register_forward_hook(lambda *a: fired.append(1))
    out = tmp_path / "s" if on_disk else None
    try:
        if case == "normal":
            hlviz.collect(model, images, "features.*", out=out)
        elif case == "bad argument":
            with pytest.raises(HlvizError):
                hlviz.collect(model, images, "features.*", out=out, reduce="nope")
        elif case == "raises mid-forward":
            with pytest.raises(RuntimeError, match="boom inside forward"):
                hlviz.collect(model, torch.zeros(3, 4), ["a", "b"], out=out)
        else:
            with pytest.raises(RuntimeError):
                hlviz.collect(model, torch.zeros(3, 5, 6, 6), "features.*", out=out)
        hlviz.testing.assert_no_hooks(model, ignore=[mine])
        before = len(fired)
        with torch.no_grad():
            if case == "raises mid-forward":
                first(torch.zeros(1, 4))
            else:
                model(images[:1])
        assert len(fired) == before + 1, "the user's hook no longer fires"
    finally:
        mine.remove()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is visible")
def test_collect_on_cuda_matches_cpu(tmp_path, images):
    cpu = Blocks().eval()
    gpu = Blocks().eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    a = hlviz.collect(cpu, images, "features.*", reduce="mean", stats=True)
    b = hlviz.collect(gpu, images, "features.*", reduce="mean", stats=True, out=tmp_path / "s")
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-4, atol=1e-5)
    bert = tiny_bert().cuda()
    batch = _padded_batches([[3, 5]])[0]
    store = hlviz.collect(bert, [batch], "encoder.layer.1", tokens=True)
    assert store.rows == 8 and store.columns["token"].numpy().tolist() == (
        batch["input_ids"][batch["attention_mask"].bool()].tolist()
    )
    hlviz.testing.assert_no_hooks(gpu)


def test_batches_are_split_across_processes_unless_the_loader_already_is():
    from torch.utils.data import BatchSampler, SequentialSampler
    from torch.utils.data.distributed import DistributedSampler

    from hlviz._batches import Source, _is_presharded

    ds = TensorDataset(torch.arange(10.0)[:, None])
    plain = DataLoader(ds, batch_size=2)
    assert not _is_presharded(plain)
    assert [g for g, _ in Source(plain, None, rank=1, world=2)] == [1, 3]
    assert [g for g, _ in Source(torch.zeros(10, 2), 3, rank=0, world=2)] == [0, 2]
    assert Source(torch.zeros(10, 2), 3, rank=1, world=2).mine() == 2
    shared = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, num_replicas=2, rank=1))
    assert _is_presharded(shared)
    assert [g for g, _ in Source(shared, None, rank=1, world=2)] == [1, 3, 5]

    class BatchSamplerShard(BatchSampler):  # the name accelerate's sharded sampler has
        pass

    accelerated = DataLoader(ds, batch_sampler=BatchSamplerShard(SequentialSampler(ds), 2, False))
    assert _is_presharded(accelerated)


class SequenceFirst(nn.Module):
    """An LSTM over (steps, batch, features), and a head applied batch-first."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.lstm(x)[0].transpose(0, 1))


def test_sequence_first_layers_are_reduced_per_input_and_mixed_axes_are_refused():
    torch.manual_seed(0)
    model = SequenceFirst().eval()
    x = torch.randn(7, 3, 3)  # 7 steps, 3 sequences
    store = hlviz.collect(model, [x], "lstm", reduce="last")
    with torch.no_grad():
        np.testing.assert_array_equal(store["lstm"].numpy(), model.lstm(x)[0][-1].numpy())
    with pytest.raises(
        ShapeMismatchError,
        match=r"layer 'head' gives shape \(3, 7, 2\) where the batch has 7 rows \('lstm'\): the "
        r"first axis of every layer must be the batch",
    ):
        hlviz.collect(model, [x], ["lstm", "head"])
    hlviz.testing.assert_no_hooks(model)


def test_a_layer_that_does_not_run_and_bfloat16_outputs_are_refused():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.b(x) if x.sum() > 1e9 else self.a(x)

    model = Branch().eval()
    with pytest.raises(OptionError, match="layer 'b' did not run on this batch, so it has no rows"):
        hlviz.collect(model, torch.randn(3, 4), ["a", "b"])
    half = nn.Sequential(nn.Linear(4, 4)).to(torch.bfloat16).eval()
    x = torch.randn(3, 4, dtype=torch.bfloat16)
    with pytest.raises(
        OptionError, match="layer '0' is bfloat16, which numpy and .npy files cannot"
    ):
        hlviz.collect(half, x, "0")
    assert hlviz.collect(half, x, "0", dtype=torch.float32)["0"].dtype == np.float32
    hlviz.testing.assert_no_hooks(model)
    hlviz.testing.assert_no_hooks(half)


def test_collect_list_batches_repro():
    """/work/shared/repros/collect_list_batches.py: DataLoader(TensorDataset(...)) yields
    *lists*; they are batches like tuples (model(*batch)), the (x, y) hint is shown, and an
    (X, y) tuple or an ImageSplit-like object is cut into (x, y) batches."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    assert type(next(iter(loader))) is list
    hint = r"model\(\*batch\) on a batch of 2 items .* columns=\{'label': 1\}"
    for data in (loader, [(x[:5], y[:5])], (x, y)):
        with pytest.raises(OptionError, match=hint):
            hlviz.collect(model, data, "1", progress=False)
    single = hlviz.collect(model, DataLoader(TensorDataset(x), batch_size=5), "1", progress=False)
    expected = model[1](model[0](x)).detach().numpy()
    np.testing.assert_allclose(single["1"], expected, rtol=1e-6)
    labelled = hlviz.collect(model, loader, "1", columns={"label": 1}, progress=False)
    np.testing.assert_allclose(labelled["1"], expected, rtol=1e-6)
    assert np.asarray(labelled.columns["label"]).tolist() == y.tolist()

    labels_ = y

    class Split:  # what hlviz.datasets.ImageSplit offers: .X, .y, and unpacking
        X, y = x, labels_

        def __iter__(self):
            return iter((self.X, self.y))

    split = hlviz.collect(model, Split(), "1", columns={"label": 1}, batch_size=6)
    assert split["1"].shape == (20, 8)
    assert np.asarray(split.columns["label"]).tolist() == y.tolist()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"x": torch.zeros(2, 4)}, r"got a dict with keys \['x'\] \(one batch\? wrap it in a list"),
        (3, "data must be a tensor .*; got a int"),
        (["text"], r"batch 0 of data holds no tensor: got a str\. Each batch must be"),
        ([[1, 2]], r"batch 0 of data holds no tensor: got a tuple of 2 items \(int, int\)"),
    ],
)
def test_data_that_is_not_batches_says_what_it_got(data, match):
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(OptionTypeError, match=match):
        hlviz.collect(model, data, "0", progress=False)
    hlviz.testing.assert_no_hooks(model)


def test_one_batch_iterator_for_every_kind_of_data():
    from hlviz._batches import batches, labelled_batches

    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    as_tensor = [b.shape[0] for b in batches(x, 4)]
    as_pair = [(a.shape[0], b.tolist()) for a, b in batches((x, y), 4)]
    as_loader = [type(b).__name__ for b in batches(DataLoader(TensorDataset(x, y), batch_size=4))]
    as_dicts = list(batches([{"input_ids": x[:2]}]))
    assert as_tensor == [4, 4, 2] and as_loader == ["tuple"] * 3
    assert as_pair[0] == (4, [0, 1, 2, 3]) and len(as_dicts[0]["input_ids"]) == 2
    assert [len(b) for b in batches(x.numpy(), 5)] == [5, 5]
    labels = [b.tolist() for _, b in labelled_batches(DataLoader(TensorDataset(x, y), 5), 99)]
    assert labels == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert [lab for _, lab in labelled_batches(x, 5)] == [None, None]
    with pytest.raises(
        OptionError, match=r"tuple of tensors of different lengths \[\(10, 1\), \(3,\)\]"
    ):
        list(batches((x, y[:3])))
    with pytest.raises(
        OptionTypeError, match="each batch must be a tensor or an .inputs, labels. pair, got a dict"
    ):
        list(labelled_batches([{"a": x}], 2))


def test_repro_reduce_mean_counts_padding() -> None:
    """collect/activations with reduce= over padded tokenizer batches pool only real tokens,
    so the same sentence gets the same vector in any batch (right and left padding)."""
    from .zoo import tiny_bert

    torch.manual_seed(0)
    model = tiny_bert()
    sent = torch.tensor([1, 17, 23, 42, 2])
    other = torch.tensor([1, 8, 9, 10, 11, 12, 13, 14, 2])

    def batch(rows, left=False):
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            where = slice(width - len(r), width) if left else slice(0, len(r))
            ids[i, where], mask[i, where] = r, 1
        return {"input_ids": ids, "attention_mask": mask}

    alone = hlviz.activations(model, batch([sent]), "encoder.layer.1")["encoder.layer.1"][0]
    loader = [batch([sent, sent]), batch([sent, other])]
    for how, truth in (("mean", alone.mean(0)), ("last", alone[-1]), ("max", alone.amax(0))):
        store = hlviz.collect(model, loader, "encoder.layer.1", reduce=how, progress=False)
        rows = torch.as_tensor(store["encoder.layer.1"][:])
        torch.testing.assert_close(rows[0], rows[2], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rows[2], truth, atol=1e-5, rtol=1e-5)
    acts = hlviz.activations(model, loader[1], "encoder.layer.1", reduce="mean")
    torch.testing.assert_close(acts["encoder.layer.1"][0], alone.mean(0), atol=1e-5, rtol=1e-5)

    # left padding (BERT's positions shift with it, so check the pooling on a token-wise model)
    class Tokenwise(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 4)

        def forward(self, input_ids, attention_mask):
            return self.emb(input_ids)

    model = Tokenwise()
    emb = model.emb
    left = batch([sent, other], left=True)
    pooled = hlviz.activations(model, left, "emb", reduce="last")["emb"]
    torch.testing.assert_close(pooled[0], emb(sent)[-1].detach())
    pooled = hlviz.activations(model, left, "emb", reduce="first")["emb"]
    torch.testing.assert_close(pooled[0], emb(sent)[0].detach())


def test_repro_collect_tokens_packed() -> None:
    """tokens=True on a model that packs its padded batch: one row per real step, for tuple
    batches and for dict batches whose attention_mask the model does not take."""
    from torch.nn.utils.rnn import pack_padded_sequence

    class Packed(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.rnn = nn.LSTM(8, 12, batch_first=True)

        def forward(self, ids, lengths):
            p = pack_padded_sequence(self.emb(ids), lengths, batch_first=True, enforce_sorted=False)
            return self.rnn(p)[1][0][-1]

    torch.manual_seed(0)
    model = Packed().eval()
    ids, lengths = torch.randint(1, 20, (3, 9)), torch.tensor([9, 4, 6])
    ids[1, 4:] = 0
    ids[2, 6:] = 0
    full = hlviz.activations(model, (ids, lengths), "rnn")["rnn"]  # padded (N, T, D)
    real = torch.arange(9)[None, :] < lengths[:, None]
    for batch in [(ids, lengths), {"ids": ids, "lengths": lengths, "attention_mask": real.long()}]:
        store = hlviz.collect(model, [batch], "rnn", tokens=True, progress=False)
        torch.testing.assert_close(torch.as_tensor(store["rnn"][:]), full[real])
        assert store.columns["position"][:].tolist() == real.nonzero()[:, 1].tolist()
