"""Benchmark the unit-level tools on the shipped Fashion-MNIST CNN: feature visualisation of one
channel, top-k patches over the test split, unit statistics; prints a markdown table.

    python bench/units_bench.py            # full: 256 steps, 2,000 images
    python bench/units_bench.py --quick    # smoke: 32 steps, 256 images (seconds)

Ratios compare each hlviz call with the bare PyTorch work it wraps (the same number of
forward/backward passes with no hooks, transforms or bookkeeping), so they say what the
convenience costs, independent of the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hlviz
from hlviz import units
from hlviz.models import load_small_cnn
from hlviz.units import featurevis as fv


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_ascent(model, layer_module, steps: int) -> None:
    """Gradient ascent on raw pixels with one plain forward hook: the floor for visualize()."""
    image = torch.rand(1, 1, 28, 28, requires_grad=True)
    optimizer = torch.optim.Adam([image], lr=0.05)
    store = {}
    handle = layer_module.register_forward_hook(lambda m, a, o: store.update(out=o))
    try:
        for _ in range(steps):
            model(image)
            loss = -store["out"][:, 0].mean()
            (grad,) = torch.autograd.grad(loss, [image])
            image.grad = grad
            optimizer.step()
    finally:
        handle.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    steps, n = (32, 256) if args.quick else (256, 2000)
    model = load_small_cnn(0)
    test = hlviz.datasets.fashion_mnist("test")
    X = test.X[:n]
    layer = "features.block3.relu"
    fv.visualize(model, fv.channel(layer, 0), steps=2)  # warm-up (imports, first hook)
    rows = []
    vis = timed(lambda: fv.visualize(model, fv.channel(layer, 0), steps=steps))
    bare = timed(lambda: bare_ascent(model, model.features.block3.relu, steps))
    rows.append((f"feature vis, 1 channel, {steps} steps", vis, bare))

    def bare_top() -> None:
        with torch.no_grad():
            model.features[:3](X).flatten(2).amax(2).topk(9, dim=0)

    top = timed(lambda: units.top_patches(model, X, layer, k=9))
    rows.append((f"top-9 patches, 64 channels, {n} images", top, timed(bare_top)))
    stats = timed(lambda: units.unit_stats(model, test if not args.quick else X, layer))
    rows.append((f"unit stats, 64 channels, {n} images", stats, timed(bare_top)))
    print("| task | hlviz (s) | bare torch (s) | ratio |")
    print("|---|---|---|---|")
    for name, ours, base in rows:
        print(f"| {name} | {ours:.2f} | {base:.2f} | {ours / base:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
