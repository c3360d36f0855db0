"""Collect under torch.distributed (run by tests/test_distributed.py through torchrun, gloo, CPU).

``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_dist_collect.py A B C``
writes three stores: A (batches split across ranks by collect), B (a DataLoader with a
DistributedSampler: each rank's loader yields its own share) and C (token-level rows of
padded sequences). The test compares them with a single-process collection.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

LAYERS = ["1", "3", "5"]


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 36, 3),
    ).eval()


def images() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(60, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    return x, torch.arange(60)


class Tagger(nn.Module):
    """Embeds token ids and runs an LSTM; the attention mask only marks padding."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 5)
        self.lstm = nn.LSTM(5, 4, batch_first=True)

    def forward(self, input_ids, attention_mask):
        return self.lstm(self.embed(input_ids))[0]


def tagger() -> nn.Module:
    torch.manual_seed(0)
    return Tagger().eval()


def sequences() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(7):
        lengths = torch.randint(1, 8, (3,), generator=g)
        mask = (torch.arange(int(lengths.max()))[None, :] < lengths[:, None]).long()
        ids = torch.randint(1, 20, mask.shape, generator=g) * mask
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def main(split: str, sampler: str, tokens: str) -> None:
    import torch.distributed as dist
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    import hlviz

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    stats = hlviz.collection.stats.RunningStats(top_k=3)
    x, index = images()
    model = cnn()
    data = list(zip(x.split(7), index.split(7), strict=True))
    store = hlviz.collect(
        model, data, LAYERS, out=split, columns={"index": 1}, stats=stats, shard_bytes=2000
    )
    assert store.rows == 60 and store.complete, "every rank reads the whole store"
    loader = DataLoader(
        TensorDataset(x, index),
        batch_size=5,
        sampler=DistributedSampler(TensorDataset(x, index), shuffle=False),
    )
    hlviz.collect(model, loader, LAYERS, out=sampler, columns={"index": 1}, reduce="mean")
    hlviz.testing.assert_no_hooks(model)
    model = tagger()
    hlviz.collect(model, sequences(), "lstm", out=tokens, tokens=True, stats=stats)
    hlviz.testing.assert_no_hooks(model)
    print(f"rank {dist.get_rank()} of {dist.get_world_size()}: done", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
