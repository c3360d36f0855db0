"""ActivationStore on disk: a SIGKILLed collection resumes to the uninterrupted result, damaged
or missing shards are named, runs of another model, layers, options or data are refused, and
reads are lazy (memory maps) and work with probes and CKA."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import hlviz
from hlviz.errors import OptionError, StoreCorruptError, StoreMismatchError

from .zoo import Blocks

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["features.0", "features.3", "classifier"]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Blocks().eval()


def _data(n: int = 60) -> torch.Tensor:
    return torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(1))


def _batches(x: torch.Tensor, stop_after: int | None = None):
    """Batches of 5 images with their labels; raises after ``stop_after`` batches (a crash)."""
    for i, batch in enumerate(x.split(5)):
        if stop_after is not None and i == stop_after:
            raise KeyboardInterrupt("simulated interruption")
        yield batch, torch.arange(len(batch)) + 5 * i


OPTIONS = dict(columns={"label": 1}, stats=hlviz.collection.stats.RunningStats(top_k=3, sample=40))


def _same(a: hlviz.ActivationStore, b: hlviz.ActivationStore) -> None:
    assert list(a) == list(b) and a.rows == b.rows
    for name in a:
        assert a[name].numpy().tobytes() == b[name].numpy().tobytes(), name
    assert a.columns["label"].numpy().tolist() == b.columns["label"].numpy().tolist()
    for name in a:
        sa, sb = a.stats[name], b.stats[name]
        for field in ("mean", "var", "min", "max", "quantiles", "top_values", "top_rows"):
            np.testing.assert_array_equal(getattr(sa, field), getattr(sb, field), err_msg=field)


@pytest.fixture
def reference(tmp_path):
    return hlviz.collect(_model(), _batches(_data()), LAYERS, out=tmp_path / "ref", **OPTIONS)


def _journal_shards(path: Path) -> int:
    journal = path / "journal" / "rank-000.jsonl"
    if not journal.exists():
        return 0
    return sum(1 for line in journal.read_bytes().splitlines() if b'"kind": "shard"' in line)


CHILD = """
import sys, time, torch, hlviz
from tests.test_store import LAYERS, OPTIONS, _data, _model

def data():
    for i, batch in enumerate(_data().split(5)):
        if i == 7:
            time.sleep(120)  # still running when the parent kills it
        yield batch, torch.arange(len(batch)) + 5 * i

hlviz.collect(_model(), data(), LAYERS, out=sys.argv[1], shard_bytes=1, **OPTIONS)
"""


def test_a_collection_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path, reference):
    out = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HLVIZ_PROGRESS": "0", "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.time() + 120
        while _journal_shards(out) < 7 and time.time() < deadline:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        assert _journal_shards(out) == 7, "the child did not write its shards in time"
        assert child.poll() is None, "the child must still be running when it is killed"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # what a kill during a write leaves: a torn journal line, a temp file, an orphan shard
    with open(out / "journal" / "rank-000.jsonl", "ab") as fp:
        fp.write(b'{"kind": "shard", "index": 7, "rows": 5, "batc')
    (out / "layers" / "classifier" / ".r000-000007.npy.tmp-999999999").write_bytes(b"partial")
    (out / "layers" / "features.0" / "r000-000007.npy").write_bytes(b"garbage")
    survivor = hlviz.ActivationStore(out)
    assert not survivor.complete and survivor.rows == 35
    survivor.verify()

    model = _model()  # the surviving process's model object
    calls = []
    mine = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        resumed = hlviz.collect(model, _batches(_data()), LAYERS, out=out, shard_bytes=1, **OPTIONS)
        assert len(calls) == 12 - 7, "the 7 complete shards were not computed again"
        hlviz.testing.assert_no_hooks(model, ignore=[mine])
    finally:
        mine.remove()
    assert resumed.complete
    _same(resumed, reference)
    resumed.verify()
    assert not list(out.glob("**/.*.tmp-*")), "dead temp files are cleaned up"


def test_an_interrupted_collection_resumes_from_its_last_complete_shard(tmp_path, reference):
    out = tmp_path / "s"
    model = _model()
    with pytest.raises(KeyboardInterrupt, match="simulated interruption"):
        hlviz.collect(
            model, _batches(_data(), stop_after=5), LAYERS, out=out, shard_bytes=1500, **OPTIONS
        )
    hlviz.testing.assert_no_hooks(model)
    partial = hlviz.ActivationStore(out)
    assert 0 < partial.rows < 60 and not partial.complete
    assert "incomplete" in repr(partial)
    resumed = hlviz.collect(model, _batches(_data()), LAYERS, out=out, shard_bytes=1500, **OPTIONS)
    _same(resumed, reference)
    hlviz.testing.assert_no_hooks(model)


def test_a_complete_store_is_returned_without_running_the_model(tmp_path, reference):
    model = _model()
    calls = []
    mine = model.register_forward_hook(lambda *a: calls.append(1))
    again = hlviz.collect(model, _batches(_data()), LAYERS, out=tmp_path / "ref", **OPTIONS)
    mine.remove()
    assert calls == [] and again.rows == 60
    with pytest.raises(StoreMismatchError, match="was started on other data"):
        hlviz.collect(model, _batches(_data().flip(0)), LAYERS, out=tmp_path / "ref", **OPTIONS)
    hlviz.testing.assert_no_hooks(model)


def _flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_verify_names_a_flipped_byte_and_a_deleted_shard(tmp_path):
    label = {"label": 1}
    store = hlviz.collect(
        _model(), _batches(_data()), LAYERS, out=tmp_path / "s", shard_bytes=1, columns=label
    )
    checked = store.verify()
    assert checked.shards == 12 and len(checked.files) == 12 * 4 and checked.bytes > 0
    assert "12 shards, 48 files" in checked.summary()
    _flip_a_byte(tmp_path / "s" / "layers" / "features.3" / "r000-000004.npy")
    with pytest.raises(
        StoreCorruptError,
        match=r"1 shard file\(s\) of the store at .* are damaged or missing:\n"
        r"  layers/features.3/r000-000004.npy \(shard 4 of process 0\): sha256 differs from the "
        r"manifest \(damaged\)\nTheir rows cannot be trusted",
    ):
        store.verify()
    (tmp_path / "s" / "columns" / "label" / "r000-000009.npy").unlink()
    (tmp_path / "s" / "layers" / "classifier" / "r000-000002.npy").write_bytes(b"short")
    with pytest.raises(StoreCorruptError) as info:
        hlviz.ActivationStore(tmp_path / "s").verify()
    message = str(info.value)
    assert message.startswith("3 shard file(s)")
    assert "columns/label/r000-000009.npy (shard 9 of process 0): missing" in message
    assert (
        "layers/classifier/r000-000002.npy (shard 2 of process 0): 5 bytes, the manifest says"
        in message
    )
    with pytest.raises(
        StoreCorruptError, match=r"shard file columns/label/r000-000009.npy .* is missing"
    ):
        hlviz.ActivationStore(tmp_path / "s").columns["label"].numpy()
    model = _model()
    with pytest.raises(
        StoreCorruptError, match="missing"
    ):  # a resume checks the shards it builds on
        hlviz.collect(
            model, _batches(_data()), LAYERS, out=tmp_path / "s", shard_bytes=1, columns=label
        )
    hlviz.testing.assert_no_hooks(model)


def test_a_damaged_journal_line_is_reported(tmp_path):
    hlviz.collect(
        _model(), _data(20), "classifier", out=tmp_path / "s", shard_bytes=1, batch_size=5
    )
    journal = tmp_path / "s" / "journal" / "rank-000.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"{not json\n" + b"".join(lines[1:]))
    with pytest.raises(
        StoreCorruptError, match=r"the journal .* has a damaged line after 1 entries"
    ):
        hlviz.ActivationStore(tmp_path / "s")


def _started(tmp_path, **kw):
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        hlviz.collect(
            _model(),
            _batches(_data(), stop_after=4),
            LAYERS,
            out=out,
            shard_bytes=1,
            **{**OPTIONS, **kw},
        )
    return out


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            "weights",
            r"holds activations of Blocks with fingerprint \w{16}, but this model is Blocks with "
            r"fingerprint \w{16}: its weights differ \(the model changed since the store was "
            r"started: trained further, another checkpoint or seed\?\)\. Appending would mix",
        ),
        ("class", r"but this model is Sequential with fingerprint \w{16}: it is another model\."),
        (
            "layers",
            r"holds layers \['features.0', 'features.3', 'classifier'\], but this run asks for "
            r"\['features.0', 'classifier'\]: every shard of a store has the same layers",
        ),
        (
            "reduce",
            r"was collected with reduce=None, but this run asks for reduce='mean': the rows",
        ),
        ("stats", r"was collected with stats=\{'top_k': 3, .*\}, but this run asks for stats=None"),
        (
            "data",
            r"was started on other data: its first batch had sha256 \w{16}, this data's first",
        ),
        (
            "columns",
            r"was collected with columns=\['label'\], but this run asks for columns=\['target'\]",
        ),
        ("resume", r"already holds an activation store and resume=False: hlviz does not overwrite"),
        (
            "world",
            r"was written by 2 process\(es\) but this run has 1: each process resumes its own",
        ),
    ],
)
def test_resuming_with_something_else_is_refused_with_the_reason(tmp_path, change, match):
    out = _started(tmp_path)
    model, data, layers, kw = _model(), _batches(_data()), LAYERS, dict(OPTIONS)
    if change == "weights":
        model = _model(seed=1)
    elif change == "class":
        model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).eval()
        layers = ["0"]
    elif change == "layers":
        layers = ["features.0", "classifier"]
    elif change == "reduce":
        kw["reduce"] = "mean"
    elif change == "stats":
        kw["stats"] = None
    elif change == "data":
        data = _batches(_data().flip(0))
    elif change == "columns":
        kw["columns"] = {"target": 1}
    elif change == "resume":
        kw["resume"] = False
    elif change == "world":
        header = json.loads((out / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps({**header, "world_size": 2}))
    with pytest.raises(StoreMismatchError, match=match):
        hlviz.collect(model, data, layers, out=out, shard_bytes=1, **kw)
    hlviz.testing.assert_no_hooks(model)


def test_a_directory_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(
        OptionError, match=r"holds files that are not part of an activation store \(notes.txt\)"
    ):
        hlviz.collect(_model(), _data(), "classifier", out=tmp_path)
    with pytest.raises(OptionError, match=r"is not an activation store: it has no manifest.json"):
        hlviz.ActivationStore(tmp_path)
    with pytest.raises(OptionError, match=r"is not an activation store: it does not exist"):
        hlviz.ActivationStore(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text('{"format": "other", "version": 3}')
    with pytest.raises(OptionError, match=r"is not a version-1 hlviz activation store manifest"):
        hlviz.ActivationStore(tmp_path / "x")


def test_lazy_reads_index_like_numpy(tmp_path):
    x = _data()
    store = hlviz.collect(
        _model(), x, LAYERS, out=tmp_path / "s", batch_size=7, shard_bytes=3000, stats=True
    )
    full = hlviz.collect(_model(), x, LAYERS, batch_size=7)["features.3"].numpy()
    arr = store["features.3"]
    assert len(arr.shards) > 2 and all(isinstance(s, np.memmap) for s in arr.shards)
    assert arr.shape == (60, 6, 6, 6) and arr.ndim == 4 and arr.dtype == np.float32
    assert arr.nbytes == full.nbytes and len(arr) == 60
    np.testing.assert_array_equal(arr[3], full[3])
    np.testing.assert_array_equal(arr[-1], full[-1])
    np.testing.assert_array_equal(arr[5:40], full[5:40])
    np.testing.assert_array_equal(arr[::7], full[::7])
    np.testing.assert_array_equal(arr[[50, 2, 9]], full[[50, 2, 9]])
    np.testing.assert_array_equal(arr[full[:, 0, 0, 0] > 0], full[full[:, 0, 0, 0] > 0])
    np.testing.assert_array_equal(arr[10:20, 2, :, 1], full[10:20, 2, :, 1])
    np.testing.assert_array_equal(np.asarray(arr), full)
    assert np.asarray(arr, dtype=np.float64).dtype == np.float64
    assert torch.equal(arr.torch(), torch.from_numpy(full))
    with pytest.raises(IndexError, match="row 60 is out of range for 'features.3' with 60 rows"):
        arr[60]
    assert "LayerArray('features.3', shape=(60, 6, 6, 6)" in repr(arr)
    chunks = list(store.batches(25, layers=["classifier"]))
    assert [len(c["classifier"]) for c in chunks] == [25, 25, 10] and set(chunks[0]) == {
        "classifier"
    }
    with pytest.raises(OptionError, match="batch_size must be a positive int, got 0"):
        next(store.batches(0))
    table = store.summary()
    assert list(table["name"]) == LAYERS and table.loc[2, "shape"] == (3,)
    assert store.model == "Blocks" and store.world_size == 1 and len(store.fingerprint) == 64
    assert store.options["reduce"] is None and store.options["stats"]["top_k"] == 10
    with pytest.raises(
        hlviz.errors.LayerNotFoundError, match=r"no layer 'features.9' in this store; it holds"
    ):
        store["features.9"]
    summary = store.stats["classifier"].summary()
    assert list(summary.columns[:5]) == ["unit", "mean", "std", "min", "max"]


def test_a_single_shard_reads_as_a_zero_copy_torch_view(tmp_path):
    store = hlviz.collect(_model(), _data(), "classifier", out=tmp_path / "s")
    view = store["classifier"].torch()
    assert torch.equal(view, torch.from_numpy(store["classifier"].numpy()))
    view.zero_()  # copy-on-write: the file is not changed
    store.verify()


def test_a_store_is_a_mapping_that_probes_and_cka_accept(tmp_path):
    x = _data(80)
    labels = (x.mean((1, 2, 3)) > 0).long()
    data = list(zip(x.split(16), labels.split(16), strict=True))
    store = hlviz.collect(
        _model(),
        data,
        LAYERS,
        out=tmp_path / "s",
        columns={"label": 1},
        reduce="mean",
        shard_bytes=200,
    )
    in_memory = {name: store[name].numpy() for name in store}
    table = hlviz.similarity.cka_matrix(store)
    np.testing.assert_allclose(table.values, hlviz.similarity.cka_matrix(in_memory).values)
    report = hlviz.probes.probe_layers(store, store.columns["label"], seeds=1)
    assert list(report.table["layer"]) == LAYERS
    assert store.columns["label"].numpy().tolist() == labels.tolist()


def test_no_statistics_is_said_clearly(tmp_path):
    store = hlviz.collect(_model(), _data(), "classifier", out=tmp_path / "s")
    with pytest.raises(OptionError, match="this store has no statistics: collect with stats=True"):
        _ = store.stats


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=8).filter(lambda s: sum(s) > 0),
    shard_bytes=st.integers(1, 400),
    data=st.data(),
)
def test_reads_match_numpy_for_any_batches_and_shard_sizes(
    tmp_path_factory, sizes, shard_bytes, data
):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4)).eval()
    batches = [
        torch.randn(n, 3, generator=torch.Generator().manual_seed(i)) for i, n in enumerate(sizes)
    ]
    out = tmp_path_factory.mktemp("prop") / "s"
    store = hlviz.collect(model, batches, "0", out=out, shard_bytes=shard_bytes, progress=False)
    with torch.no_grad():
        full = torch.cat([model(b) for b in batches]).numpy()
    arr = store["0"]
    n = len(full)
    assert arr.shape == full.shape
    a = data.draw(st.integers(-n, n))
    b = data.draw(st.integers(-n, n))
    step = data.draw(st.integers(1, 3))
    np.testing.assert_array_equal(arr[a:b], full[a:b])
    np.testing.assert_array_equal(arr[a:b:step], full[a:b:step])
    picks = data.draw(st.lists(st.integers(0, n - 1), max_size=10))
    np.testing.assert_array_equal(arr[picks], full[picks])
    np.testing.assert_array_equal(np.asarray(arr), full)
