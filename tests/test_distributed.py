"""Two processes under torchrun (gloo, CPU) collect into one store that equals the
single-process collection: rows, columns, token-level sequence ids and merged statistics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hlviz

from ._dist_collect import LAYERS, cnn, images, sequences, tagger

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # starts two processes under torchrun


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    paths = [base / name for name in ("split", "sampler", "tokens")]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "tests/_dist_collect.py",
            *map(str, paths),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HLVIZ_PROGRESS": "0"},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "rank 0 of 2: done" in run.stdout and "rank 1 of 2: done" in run.stdout
    return [hlviz.ActivationStore(p) for p in paths]


def _stats_agree(a, b):
    for name in a:
        sa, sb = a.stats[name], b.stats[name]
        assert sa.count == sb.count
        np.testing.assert_allclose(sa.mean, sb.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(sa.var, sb.var, rtol=1e-9, atol=1e-12)
        for field in ("min", "max", "top_values", "top_rows"):
            np.testing.assert_array_equal(getattr(sa, field), getattr(sb, field), err_msg=field)


def test_two_processes_equal_one(stores):
    store = stores[0]
    assert store.world_size == 2 and store.complete
    written = {p.name[:4] for p in (store.path / "layers" / "1").iterdir()}
    assert written == {"r000", "r001"}, "each rank wrote its own shards"
    x, index = images()
    single = hlviz.collect(
        cnn(),
        list(zip(x.split(7), index.split(7), strict=True)),
        LAYERS,
        columns={"index": 1},
        stats=hlviz.collection.stats.RunningStats(top_k=3),
    )
    for name in LAYERS:
        assert store[name].numpy().tobytes() == single[name].numpy().tobytes()
    assert store.columns["index"].numpy().tolist() == list(range(60))
    _stats_agree(store, single)
    store.verify()


def test_a_distributed_sampler_is_not_split_again(stores):
    store = stores[1]
    assert store.rows == 60
    x, _ = images()
    single = hlviz.collect(cnn(), x, LAYERS, reduce="mean")
    order = store.columns["index"].numpy()
    assert sorted(order.tolist()) == list(range(60)), "each input exactly once"
    for name in LAYERS:  # other batches: equal up to float rounding
        np.testing.assert_allclose(store[name].numpy(), single[name].numpy()[order], atol=1e-6)


def test_token_level_sequence_ids_are_global(stores):
    store = stores[2]
    single = hlviz.collect(
        tagger(),
        sequences(),
        "lstm",
        tokens=True,
        stats=hlviz.collection.stats.RunningStats(top_k=3),
    )
    assert store.rows == single.rows and store.inputs == 21
    assert store["lstm"].numpy().tobytes() == single["lstm"].numpy().tobytes()
    for column in ("sequence", "position", "token"):
        assert store.columns[column].numpy().tolist() == single.columns[column].numpy().tolist()
    assert store.columns["sequence"].numpy().max() == 20
    _stats_agree(store, single)
    assert torch.equal(store["lstm"].torch(), torch.from_numpy(single["lstm"].numpy()))
