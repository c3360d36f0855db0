"""CUDA paths: run by `make gpu-check` on a machine with a GPU; skipped with a reason elsewhere."""

from __future__ import annotations

import pytest
import torch

import hlviz

from .zoo import Blocks

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device; none is visible"
    ),
]


def test_record_on_cuda_defaults_to_cpu_copies_or_keeps_device():
    model = Blocks().cuda().eval()
    x = torch.randn(4, 1, 8, 8, device="cuda")
    with hlviz.record(model, "features.*") as cpu_rec, torch.no_grad():
        model(x)
    with hlviz.record(model, "features.*", to=None) as gpu_rec, torch.no_grad():
        model(x)
    assert (
        cpu_rec["features.0"].device.type == "cpu" and gpu_rec["features.0"].device.type == "cuda"
    )
    torch.testing.assert_close(cpu_rec["features.0"], gpu_rec["features.0"].cpu())
    assert (cpu_rec["features.0"] < 0).any()  # copied before the in-place ReLU
    hlviz.testing.assert_no_hooks(model)


def test_activations_moves_cpu_inputs_and_patch_moves_cpu_sources():
    model = Blocks().cuda().eval()
    x = torch.randn(2, 1, 8, 8)
    clean = hlviz.activations(model, x[:1], ["features.4"])
    with hlviz.edit(model, {"features.4": hlviz.patch(clean)}), torch.no_grad():
        out = model(x[1:].cuda())
    with torch.no_grad():
        torch.testing.assert_close(out, model(x[:1].cuda()))


def test_gradients_on_cuda():
    model = Blocks().cuda()
    x = torch.randn(2, 1, 8, 8, device="cuda", requires_grad=True)
    with hlviz.record(model, "features.2", grads=True) as rec:
        model(x).sum().backward()
    assert rec.grads["features.2"].device.type == "cpu" and rec.grads["features.2"].abs().sum() > 0


def test_probe_sweep_on_cuda_agrees_with_the_cpu():
    import numpy as np

    from hlviz.probes import LinearProbe, MLPProbe, probe_layers

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    acts = {f"layer{i}": rng.normal(size=(400, 12)) + i * 0.5 * y[:, None] for i in range(3)}
    cpu = probe_layers(acts, y, seeds=2, types=y % 2 + 10 * (np.arange(400) % 7))
    gpu = probe_layers(
        acts, y, seeds=2, types=y % 2 + 10 * (np.arange(400) % 7), probe=LinearProbe(device="cuda")
    )
    for column in ("score", "shuffled", "control_task"):
        np.testing.assert_allclose(gpu.table[column], cpu.table[column], atol=0.011)
    mlp = MLPProbe(hidden=16, device="cuda").fit(acts["layer2"], y)
    assert mlp.predict_proba(acts["layer2"]).device.type == "cuda"
    assert mlp.score(acts["layer2"], y) > 0.9
