"""Draw the README's figure, docs/quickstart.png: each layer of the digits CNN, PCA by class.

    python scripts/make_readme_figure.py [--out docs/quickstart.png]

The same model, data and projection as section 4 of notebooks/00_quickstart.ipynb.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch

import hlviz
from hlviz.plotting import plot_layer_embeddings

LAYERS = ["features.relu1", "features.pool2", "features.pool3", "classifier.relu", "classifier.fc2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/quickstart.png"))
    args = parser.parse_args()
    hlviz.seed_everything(0)
    torch.set_num_threads(2)
    test = hlviz.datasets.load_digits("test")
    model, _ = hlviz.models.train_digits_cnn(seed=0)
    acts = hlviz.activations(model, test.X, LAYERS)
    fig = plot_layer_embeddings({"input": test.X, **acts}, test.y, ncols=3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80, bbox_inches="tight")
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
