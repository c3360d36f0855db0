"""Train the shipped character LSTM on the Python code corpus: data/code_lstm.safetensors.

    .venv/bin/python scripts/train_lstm.py   # ~6 min on one idle CPU thread (0.4 s a step)
    .venv/bin/python scripts/train_lstm.py --steps 50 --out /tmp/lstm.safetensors   # a quick try

Reproducible: fixed seed, one CPU thread, a fixed number of steps. Truncated backpropagation
through time: the training text is cut into ``--batch`` contiguous streams; each step reads the
next ``--seq`` characters of every stream, starting from the (detached) state the previous step
ended in. Adam with a cosine learning-rate decay and gradient clipping. The weights are stored
as float16 (half the size); the test bits per character written into the file's metadata are
measured with those float16 weights (the float32 figure is stored beside it).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _char_checkpoint import finish  # noqa: E402

from hlviz.datasets import code_corpus  # noqa: E402
from hlviz.models.rnn import (  # noqa: E402
    CHECKPOINT,
    CharLSTM,
    load_char_lstm,
    save_char_lstm,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / CHECKPOINT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    train, valid, test = (code_corpus(s) for s in ("train", "validation", "test"))
    ids = train.encode()
    length = len(ids) // args.batch
    streams = ids[: args.batch * length].view(args.batch, length)
    model = CharLSTM(len(train.vocab), hidden_size=args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * s / args.steps))
    )
    hx, pos, start = None, 0, time.time()
    model.train()
    for step in range(args.steps):
        if pos + args.seq + 1 > length:
            hx, pos = None, 0  # a new pass over the text starts from a zero state
        chunk = streams[:, pos : pos + args.seq + 1]
        out = model.run(chunk[:, :-1], hx)
        loss = torch.nn.functional.cross_entropy(
            out.logits.reshape(-1, out.logits.shape[-1]), chunk[:, 1:].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        hx, pos = (out.h_n.detach(), out.c_n.detach()), pos + args.seq
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
        save=save_char_lstm,
        load=load_char_lstm,
        checkpoint=CHECKPOINT,
    )


if __name__ == "__main__":
    main()
