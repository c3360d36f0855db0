"""The models and inputs the benchmarks run: MiniLM on 64 sentences, a small CNN at batch 256.

>>> w = small_cnn(batch=2)
>>> w.forward().shape
torch.Size([2, 10])

A :class:`Workload` bundles a model in eval mode, a zero-argument ``forward`` on fixed
inputs, the layer spec given to ``hlviz.record`` and the same layers as module objects
(for the hand-written hooks, which take modules rather than names).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["SENTENCES", "SmallCNN", "Workload", "minilm", "small_cnn"]

# 64 English sentences of varied length and structure (written for this benchmark).
SENTENCES: list[str] = [
    "The cat sat on the warm windowsill.",
    "Rain is expected tomorrow afternoon across the northern hills.",
    "She finished the marathon in just under four hours.",
    "Why do leaves change colour in autumn?",
    "The committee postponed its decision until the next meeting.",
    "He plays the violin every evening after dinner.",
    "A small boat drifted slowly towards the rocky shore.",
    "Please close the door quietly when you leave.",
    "The museum opens at nine and closes at five.",
    "Our neighbours adopted two kittens from the shelter last spring.",
    "Fresh bread smells wonderful in the early morning.",
    "The bridge was built more than a century ago.",
    "Can you recommend a good book about the history of mathematics?",
    "Children laughed as the clown juggled seven bright balls.",
    "The old clock in the hallway stopped at midnight.",
    "Scientists discovered a new species of frog in the rainforest.",
    "I forgot my umbrella, so I got soaked on the way home.",
    "The train to the coast leaves from platform four.",
    "Honey never spoils if it is stored properly.",
    "They painted the fence green because the neighbours asked nicely.",
    "The teacher explained the problem twice, but nobody understood it.",
    "Mountains covered in snow rose above the quiet village.",
    "He rarely drinks coffee after lunch.",
    "The library lends laptops to students during the exam period.",
    "A strong wind knocked over several trees on our street last night.",
    "Wash the vegetables before you chop them.",
    "The orchestra tuned their instruments while the audience waited.",
    "My grandmother grows tomatoes, beans and courgettes in her garden.",
    "The software update fixed the bug that crashed the application.",
    "Birds migrate south when the days grow shorter.",
    "Nobody expected the underdog team to win the championship.",
    "The recipe calls for two eggs and a cup of flour.",
    "Stars are easier to see far away from city lights.",
    "She translated the letter from Portuguese into English.",
    "The river flooded the fields after a week of heavy rain.",
    "Do not feed the ducks at the pond.",
    "The startup hired ten engineers in its first year.",
    "He read the instructions carefully before assembling the shelf.",
    "The lighthouse guided ships safely into the harbour for decades.",
    "Our flight was delayed by three hours because of fog.",
    "Volcanoes can change the climate of the whole planet.",
    "The chef tasted the soup and added a pinch of salt.",
    "Most of the guests left before the fireworks started.",
    "A quiet mind often finds the simplest answer.",
    "The dog buried its bone under the apple tree.",
    "Electric cars are becoming more common in many countries.",
    "The students built a robot that can sort coloured blocks.",
    "It was the coldest winter anyone in the town could remember.",
    "Turn left at the bakery and walk straight for two blocks.",
    "The painter mixed blue and yellow to make a soft green.",
    "Although the road was long, the journey felt short.",
    "The journalist asked the minister a difficult question.",
    "Whales communicate with songs that travel for miles underwater.",
    "He lost his keys and found them in the fridge.",
    "The garden was full of bees and butterflies in July.",
    "Reading before bed helps many people fall asleep.",
    "The factory will close for two weeks in August.",
    "A thin layer of ice covered the lake overnight.",
    "She sent the parcel by express mail on Monday.",
    "The ancient city was rediscovered by farmers digging a well.",
    "Good maps show both roads and the shape of the land.",
    "The baby finally fell asleep after a long walk in the park.",
    "Prices rose sharply after the harvest failed.",
    "Every language has words that are hard to translate.",
]


@dataclass(frozen=True)
class Workload:
    """A model, a fixed-input forward call, and the layers to record (spec and modules)."""

    name: str
    model: nn.Module
    forward: Callable[[], Any]
    layers: Any
    modules: dict[str, nn.Module]
    description: str


class SmallCNN(nn.Module):
    """Four conv blocks (32-64-128-128 channels) and a linear head, for ``(N, 1, 28, 28)``."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 128), classes: int = 10):
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = 1
        for i, c_out in enumerate(channels):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                blocks.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 28, 28)`` images -> ``(N, classes)`` logits."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


def small_cnn(batch: int = 256, seed: int = 0) -> Workload:
    """The small CNN on ``batch`` random 28x28 images; every Conv2d and Linear layer recorded."""
    torch.manual_seed(seed)
    model = SmallCNN().eval()
    x = torch.randn(batch, 1, 28, 28)
    modules = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    return Workload(
        name="cnn",
        model=model,
        forward=lambda: model(x),
        layers=(nn.Conv2d, nn.Linear),
        modules=modules,
        description=f"SmallCNN 32-64-128-128, batch {batch}x1x28x28, {len(modules)} conv/linear layers",
    )


def minilm(n_sentences: int = 64) -> Workload:
    """all-MiniLM-L6-v2 (offline, eager attention) on ``n_sentences``; its 6 encoder layers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from hlviz.models import minilm

    mini = minilm.load()
    tokenizer, model = mini.tokenizer, mini.model
    sentences = [SENTENCES[i % len(SENTENCES)] for i in range(n_sentences)]
    batch = dict(tokenizer(sentences, padding=True, return_tensors="pt"))
    modules = {f"encoder.layer.{i}": layer for i, layer in enumerate(model.encoder.layer)}
    shape = tuple(batch["input_ids"].shape)
    return Workload(
        name="minilm",
        model=model,
        forward=lambda: model(**batch),
        layers="encoder.layer.*",
        modules=modules,
        description=f"all-MiniLM-L6-v2 (eager), {shape[0]} sentences x {shape[1]} tokens, "
        f"{len(modules)} encoder layers",
    )
