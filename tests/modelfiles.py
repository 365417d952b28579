"""Small real model directories for tests: safetensors weights, config and tokenizer files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def write_model(directory: Path, tensors: dict[str, torch.Tensor], note: str = "v") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps({"hidden_size": 64, "note": note}))
    (directory / "tokenizer").mkdir(exist_ok=True)
    (directory / "tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    return directory


def base_weights(seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": (torch.randn(100, 64, generator=g) * 0.05).to(dtype),
        "layer.0.attn.q.weight": (torch.randn(64, 64, generator=g) * 0.05).to(dtype),
        "layer.0.attn.v.weight": (torch.randn(64, 64, generator=g) * 0.05).to(dtype),
        "layer.0.norm.bias": torch.zeros(64, dtype=dtype),
        "step": torch.tensor(3, dtype=torch.int64),
    }


def adam_step(tensors: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in tensors.items():
        if t.is_floating_point():
            noise = torch.randn(t.shape, generator=g).to(t.dtype)
            out[name] = (t.float() * (1 + 0.005 * noise.float())).to(t.dtype)
        else:
            out[name] = t + 1
    return out


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    others = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    return names == others and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
