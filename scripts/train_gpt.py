"""Train the shipped character GPT on the Python code corpus: data/code_gpt.safetensors.

    .venv/bin/python scripts/train_gpt.py   # ~10 min on one idle CPU thread (0.4 s a step)
    .venv/bin/python scripts/train_gpt.py --steps 50 --out /tmp/gpt.safetensors   # a quick try

Reproducible: fixed seed, one CPU thread, a fixed number of steps. Each step reads ``--batch``
windows of ``--seq + 1`` characters at random places in the training text (drawn by a seeded
generator) and predicts every character of a window from the ones before it. AdamW (weight
decay on the weight matrices only), a linear warm-up then a cosine decay of the learning rate,
gradient clipping. The weights are stored as float16 (half the size); the test bits per
character written into the file's metadata are measured with those float16 weights (the float32
figure is stored beside it), with :meth:`hlviz.models.CharGPT.bits_per_char` (windows of
``context`` characters every ``context / 2``). The validation split chooses hyper-parameters;
the test split is only reported. The defaults (context 128, lr 3e-3, 1,500 steps) won on
validation bits per character against ``--context 256 --seq 256 --batch 16 --steps 1050``
(the same characters per step and about the same time): 2.038 against 2.454 (~20 min each on
a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _char_checkpoint import finish  # noqa: E402

from hlviz.datasets import code_corpus  # noqa: E402
from hlviz.models.gpt import (  # noqa: E402
    CHECKPOINT,
    CharGPT,
    load_char_gpt,
    save_char_gpt,
)
from hlviz.models.rnn import CHECKPOINT as LSTM_CHECKPOINT  # noqa: E402


def learning_rate_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def lstm_test_bits_per_char() -> str:
    """The shipped LSTM's test bits per character, read from its metadata (for comparison)."""
    from safetensors import safe_open

    path = ROOT / "data" / LSTM_CHECKPOINT
    if not path.is_file():
        return "n/a (no data/code_lstm.safetensors)"
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("test_bits_per_char", "n/a")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128, help="characters per training window")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / CHECKPOINT)
    args = parser.parse_args()
    if args.seq > args.context:
        parser.error(f"--seq ({args.seq}) must be at most --context ({args.context}).")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    train, valid, test = (code_corpus(s) for s in ("train", "validation", "test"))
    ids = train.encode()
    model = CharGPT(
        len(train.vocab),
        d_model=args.d_model,
        n_heads=args.heads,
        n_layers=args.layers,
        context=args.context,
        dropout=args.dropout,
    )
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": other}],
        lr=args.lr,
        betas=(0.9, 0.95),
        weight_decay=0.0,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: learning_rate_factor(s, args.steps, args.warmup)
    )
    windows = torch.Generator().manual_seed(args.seed)
    offsets = torch.arange(args.seq + 1)
    start = time.time()
    model.train()
    for step in range(args.steps):
        at = torch.randint(0, len(ids) - args.seq - 1, (args.batch, 1), generator=windows)
        chunk = ids[at + offsets]
        logits = model(chunk[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(
                f"step {step:4d}  loss {loss.item() / math.log(2):.3f} bits/char  "
                f"{time.time() - start:.0f}s",
                flush=True,
            )
    finish(
        model,
        args=args,
        seconds=time.time() - start,
        corpora=(train, valid, test),
        save=save_char_gpt,
        load=load_char_gpt,
        checkpoint=CHECKPOINT,
        metadata={
            "evaluation": json.dumps({"context": model.context, "stride": model.context // 2})
        },
        notes=[f"the shipped LSTM on the same test split: {lstm_test_bits_per_char()} bits/char"],
    )


if __name__ == "__main__":
    main()
