"""Train the shipped Fashion-MNIST SmallCNN checkpoints (data/fashion_cnn_seed*_*.safetensors).

    python scripts/train_cnn.py                 # seeds 0 and 1, about 5 minutes on 2 CPU cores
    python scripts/train_cnn.py --seeds 0 --epochs 2 --out /tmp/cnn   # a quick try elsewhere

Trains :class:`hlviz.models.cnn.SmallCNN` on the training split of the shipped subset
(``hlviz.datasets.fashion_mnist("train")``) with Adam, a one-cycle learning rate, label
smoothing and light augmentation (random shifts of up to 2 pixels, horizontal flips),
all drawn from generators seeded by the model's seed, on the CPU with one thread so the
same seed gives the same weights. Writes float16 safetensors (metadata: seed, step, widths,
test accuracy of the stored float16 weights on the shipped test split) for every seed
at the end, and for seed 0 also after 0 (initialisation), 1 and 3 epochs; then updates
``data/SHA256SUMS``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hlviz.datasets import fashion_mnist  # noqa: E402
from hlviz.models.cnn import SmallCNN, checkpoint_name, load_small_cnn  # noqa: E402
from hlviz.models.training import accuracy  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from build_fashion_mnist import update_sums  # noqa: E402

DYNAMICS = {0: "epoch0", 1: "epoch1", 3: "epoch3"}


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels and random horizontal flips."""
    n = len(x)
    padded = F.pad(x, (2, 2, 2, 2))
    dy = torch.randint(0, 5, (n,), generator=generator)
    dx = torch.randint(0, 5, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(28)[None]).view(n, 1, 28, 1).expand(n, 1, 28, 32)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(28)[None]).view(n, 1, 1, 28).expand(n, 1, 28, 28)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


UNSTORED = ("num_batches_tracked",)  # BatchNorm's step counters, unused in eval mode


def save(model: SmallCNN, path: Path, meta: dict, test) -> float:
    """Write float16 weights (hlviz's one checkpoint format); return the test accuracy of the
    weights as stored."""
    from hlviz.models._checkpoint import save_float16

    def write(extra: dict) -> None:
        header = {k: str(v) for k, v in {**meta, **extra}.items()}
        save_float16(model, path, None, header, unstored=UNSTORED)

    write({})
    stored = load_small_cnn(path=path)
    acc = accuracy(stored, test.X, test.y)
    write({"test_accuracy": f"{acc:.4f}"})
    return acc


def train(seed: int, epochs: int, lr: float, batch_size: int, out: Path) -> list[str]:
    train_split, test = fashion_mnist("train"), fashion_mnist("test")
    torch.manual_seed(seed)
    model = SmallCNN()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = -(-len(train_split) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch
    )
    base = {
        "seed": seed,
        "widths": json.dumps(list(model.widths)),
        "epochs": epochs,
        "data": "fashion_mnist_subset.npz (train split)",
        "builder": f"python scripts/train_cnn.py --seeds {seed} --epochs {epochs}",
    }
    written = []

    def checkpoint(step: str) -> None:
        name = checkpoint_name(seed, step)
        acc = save(model.eval(), out / name, {**base, "step": step}, test)
        written.append(name)
        print(f"seed {seed} {step:>6}: test accuracy {acc:.4f} -> {name}", flush=True)

    for epoch in range(epochs + 1):
        if seed == 0 and epoch in DYNAMICS:
            checkpoint(DYNAMICS[epoch])
        if epoch == epochs:
            break
        model.train()
        order = torch.randperm(len(train_split), generator=generator)
        start = time.perf_counter()
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = augment(train_split.X[idx], generator)
            loss = F.cross_entropy(model(x), train_split.y[idx], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        acc = accuracy(model.eval(), test.X, test.y)
        took = time.perf_counter() - start
        print(f"seed {seed} epoch {epoch + 1}: loss {loss.item():.3f} test {acc:.4f} ({took:.0f}s)")
    checkpoint("final")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "data")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        names = train(seed, args.epochs, args.lr, args.batch_size, args.out)
        if args.out == ROOT / "data":
            for name in names:
                update_sums(args.out, name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
