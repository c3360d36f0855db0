"""Benchmark a probe sweep over MiniLM token states, and a layer x layer CKA matrix.

Run ``python bench/probe_sweep.py`` (``make bench`` runs it after ``run.py``);
``--quick`` for a smoke run, ``--out FILE`` to also write the markdown report.

Token states of all-MiniLM-L6-v2 (the embeddings and the 6 encoder layers: 7 layers x
384 dims) are probed for a 4-way label (the token's position bucket: 1-3, 4-7, 8-11,
12+, a property every layer holds to a different degree). Each layer is fit once on the
same 75/25 split by ``hlviz.probes.LinearProbe`` (torch L-BFGS) and by scikit-learn's
``LogisticRegression`` (lbfgs) on the same standardised features, layer by layer.
Reported: seconds per sweep (median of repeats, interleaved), the speed ratio, and the
largest difference in test accuracy. Not asserted: the issue's target is >= 5x faster
at accuracy within 1 point.

``--threads-check`` times small, notebook-sized workloads (a LinearProbe fit, a
``probe_layers`` call, a toy MLP and a small sweep) at the process's thread count and at
one thread: hlviz used to switch to one thread inside small fits (a process-wide change
that can deadlock MKL's batched LU afterwards, issue 16); this shows what that was worth.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from timing import interleaved
from workloads import SENTENCES

import hlviz
from hlviz.probes import LinearProbe, split_indices
from hlviz.probes._batched import Fit, batched_scores
from hlviz.probes._scaling import standardize_rows, standardizer
from hlviz.similarity import cka_matrix


def token_states(n_tokens: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n_tokens`` real-token rows of the 7 MiniLM layers, and their position buckets."""
    from hlviz.models import minilm

    mini = minilm.load()
    tokenizer, model = mini.tokenizer, mini.model
    words = " ".join(SENTENCES).split()
    rng = random.Random(seed)
    layers: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    total = 0
    while total < n_tokens:  # word-shuffled sentences of 8-20 words, in batches of 64
        batch = [" ".join(rng.sample(words, rng.randint(8, 20))) for _ in range(64)]
        enc = tokenizer(batch, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model(**enc, output_hidden_states=True)
        real = enc["attention_mask"].bool()
        positions = torch.arange(real.shape[1]).expand_as(real)
        for i, hidden in enumerate(out.hidden_states):
            layers.setdefault(f"layer{i}", []).append(hidden[real].numpy())
        labels.append(np.digitize(positions[real].numpy(), [4, 8, 12]))
        total += int(real.sum())
    acts = {name: np.concatenate(parts)[:n_tokens] for name, parts in layers.items()}
    return acts, np.concatenate(labels)[:n_tokens]


def sweep_fits(y: np.ndarray, seeds: int) -> list[Fit]:
    """The fits of a ``probe_layers`` sweep: task and shuffled labels for each seed."""
    fits = []
    for seed in range(seeds):
        train, test = split_indices(y, seed=seed)
        shuffled = y.copy()
        shuffled[train] = np.random.default_rng(seed).permutation(y[train])
        fits += [Fit(y, train, test), Fit(shuffled, train, test)]
    return fits


def sklearn_scores(acts: dict[str, np.ndarray], fits: list[Fit]) -> dict[str, np.ndarray]:
    """Each fit of each layer by scikit-learn, layer by layer, on train-standardised rows.

    The rows are standardised by LinearProbe's rule (float64 statistics, scale floored at
    1e-8), not by ``StandardScaler``: MiniLM's last layer has a feature that is 0 up to
    1e-32, which ``StandardScaler`` blows up to unit variance, and the comparison is
    about the solvers, not about that choice.
    """
    from sklearn.linear_model import LogisticRegression

    scores = {}
    for name, X in acts.items():
        row = []
        X = torch.as_tensor(X)
        for f in fits:
            mean, scale = standardizer(X[f.train])
            model = LogisticRegression(max_iter=1000)
            model.fit(standardize_rows(X[f.train], mean, scale).numpy(), f.labels[f.train])
            row.append(
                model.score(standardize_rows(X[f.test], mean, scale).numpy(), f.labels[f.test])
            )
        scores[name] = np.array(row)
    return scores


def report_sweep(n_tokens: int, rounds: int) -> list[str]:
    acts, y = token_states(n_tokens)
    lines = [
        f"### {len(acts)} MiniLM layers x {len(y)} tokens x 384 dims, 4 classes",
        "",
        f"{rounds} interleaved rounds; median seconds; both libraries on the same thread "
        "count, the same splits and the same standardisation.",
        "",
        "| workload | hlviz s | scikit-learn s | speed-up | largest accuracy gap (points) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, fits, batched in (
        ("one probe per layer, fitted layer by layer", sweep_fits(y, 1)[:1], False),
        ("sweep: 3 seeds x (task + shuffled control) per layer", sweep_fits(y, 3), True),
    ):
        if batched:

            def ours(fits=fits):
                return batched_scores(acts, fits)
        else:

            def ours(fits=fits):
                return {
                    name: np.array(
                        [
                            LinearProbe()
                            .fit(X[f.train], f.labels[f.train])
                            .score(X[f.test], f.labels[f.test])
                            for f in fits
                        ]
                    )
                    for name, X in acts.items()
                }

        def theirs(fits=fits):
            return sklearn_scores(acts, fits)

        a, b = ours(), theirs()
        gap = max(float(np.abs(a[n][::2] - b[n][::2]).max()) for n in acts)  # task fits
        t = interleaved({"hlviz": ours, "sklearn": theirs}, rounds=rounds)
        lines.append(
            f"| {label} ({len(fits)} fits/layer) | {t.median_ms('hlviz') / 1000:.2f} | "
            f"{t.median_ms('sklearn') / 1000:.2f} | **{t.ratio('sklearn', 'hlviz'):.1f}x** | "
            f"{gap * 100:.2f} |"
        )
    lines += ["", "Target: >= 5x at accuracy within 1 point.", ""]
    cka_start = time.perf_counter()
    matrix = cka_matrix(acts)
    lines += [
        f"- layer x layer linear CKA of these {len(acts)} layers: "
        f"{time.perf_counter() - cka_start:.2f} s (CKA(layer0, layer6) = "
        f"{matrix.iloc[0, -1]:.3f})",
        "",
    ]
    return lines


def _median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def report_threads(repeats: int = 5) -> list[str]:
    """Seconds of small workloads at the current thread count and at one thread (set here,
    by the script, as a user would)."""
    from hlviz.models import MLP, train_full_batch
    from hlviz.probes import probe_layers
    from hlviz.toy import make_toy

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (600,), generator=gen)
    small = {
        f"layer{i}": torch.randn(600, 64, generator=gen) + 0.3 * i * y[:, None] for i in range(4)
    }
    wide = {f"layer{i}": torch.randn(2000, 384, generator=gen) for i in range(7)}
    y_wide = torch.randint(0, 4, (2000,), generator=gen)
    toy = make_toy("spirals", n=400)
    workloads = {
        "LinearProbe.fit, 450 x 64, 4 classes": lambda: LinearProbe().fit(
            small["layer3"][:450], y[:450]
        ),
        "probe_layers, 4 layers x 600 x 64, 3 seeds": lambda: probe_layers(small, y, seeds=3),
        "toy MLP [16, 16], 400 points, 300 Adam steps": lambda: train_full_batch(
            MLP([16, 16], seed=0), toy.X, toy.y, steps=300
        ),
        "probe_layers, 7 layers x 2,000 x 384, 3 seeds": lambda: probe_layers(
            wide, y_wide, seeds=3
        ),
    }
    threads = torch.get_num_threads()
    lines = [
        f"### Small workloads: {threads} torch threads vs 1 (median of {repeats})",
        "",
        f"| workload | {threads} threads s | 1 thread s | 1-thread speed-up |",
        "|---|---:|---:|---:|",
    ]
    for label, fn in workloads.items():
        many = _median_s(fn, repeats)
        torch.set_num_threads(1)
        try:
            one = _median_s(fn, repeats)
        finally:
            torch.set_num_threads(threads)
        lines.append(f"| {label} | {many:.3f} | {one:.3f} | {many / one:.2f}x |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    parser.add_argument("--out", help="also write the markdown report here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--threads-check", action="store_true", help="only time small workloads, threads vs 1"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.threads_check:
        print("\n".join(report_threads()))
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # NumPy's BLAS (scikit-learn) on the same thread count
    sizes = [500] if args.quick else [2000, 20000]
    rounds = 2 if args.quick else 3
    lines = [
        "# hlviz benchmark: probe sweep vs scikit-learn (one run)",
        "",
        f"- torch {torch.__version__}, hlviz {hlviz.__version__}, torch threads {args.threads}",
        "",
    ]
    for n in sizes:
        lines += report_sweep(n, rounds if n <= 2000 else max(2, rounds // 2))
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
