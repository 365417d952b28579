"""The vLLM resolver plugin, without vLLM: its registry side on a real repository, and its
``resolve_lora`` with a stand-in for vLLM's ``LoRARequest`` (the one object crossing the
plugin boundary). The interface it implements is vLLM's ``LoRAResolver.resolve_lora(self,
base_model_name, lora_name) -> LoRARequest | None`` (``vllm/lora/resolver.py``)."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fmforge.errors import AdapterIncompatible
from fmforge.models import commit_model, reset_branch
from fmforge.repository import Repository
from fmforge.serving.vllm_plugin import FmforgeLoRAResolver, RegistryAdapters, ResolvedAdapter
from tests.servingfiles import write_lora, write_tiny_llama


@dataclass
class FakeLoRARequest:
    """vLLM's ``LoRARequest`` fields the resolver fills."""

    lora_name: str
    lora_int_id: int
    lora_path: str


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    root = tmp_path_factory.mktemp("vllm")
    base = write_tiny_llama(root / "base")
    other = write_tiny_llama(root / "other", hidden=32)
    return (base, write_lora(base, root / "a", seed=1), write_lora(base, root / "b", seed=2),
            write_lora(other, root / "c", seed=3))  # fmt: skip


@pytest.fixture
def registry(repo: Repository, files: tuple[Path, Path, Path, Path]) -> Repository:
    base, a, b, c = files
    commit_model(repo, "llama", base, "base")
    commit_model(repo, "other", files[0].parent / "other", "another base")
    commit_model(repo, "sentiment", a, "v1", base="llama@main", branch="live")
    commit_model(repo, "sentiment", b, "v2", base="llama@main", branch="next")
    commit_model(repo, "foreign", c, "v1", base="other@main")
    return repo


def test_resolve_lora_gives_a_content_addressed_adapter_directory(registry: Repository) -> None:
    resolver = FmforgeLoRAResolver(RegistryAdapters(registry.root, "llama@main"), FakeLoRARequest)
    request = asyncio.run(resolver.resolve_lora("/models/llama", "sentiment@live"))
    assert isinstance(request, FakeLoRARequest)
    assert request.lora_name == "sentiment@live"
    assert request.lora_int_id > 0
    path = Path(request.lora_path)
    assert path.parent.name == "vllm-adapters"
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert (path / "adapter_model.safetensors").is_file()
    again = asyncio.run(resolver.resolve_lora("/models/llama", "sentiment@live"))
    assert again.lora_path == request.lora_path  # one checkout per content hash
    assert asyncio.run(resolver.resolve_lora("/models/llama", "unknown@main")) is None
    assert asyncio.run(resolver.resolve_lora("/models/llama", "foreign")) is None  # refused


def test_an_adapter_of_another_base_is_refused_by_name(registry: Repository) -> None:
    adapters = RegistryAdapters(registry.root, "llama@main")
    with pytest.raises(AdapterIncompatible, match="adapts other@"):
        adapters.resolve("foreign@main")


def test_a_moved_ref_is_checked_out_and_handed_to_reload(registry: Repository) -> None:
    adapters = RegistryAdapters(registry.root, "llama@main")
    first = adapters.resolve("sentiment@live")
    assert first is not None
    reloaded: list[ResolvedAdapter] = []
    stop = threading.Event()
    follower = threading.Thread(
        target=adapters.follow_refs, args=(reloaded.append,), kwargs={"stop": stop}
    )
    follower.start()
    try:
        time.sleep(0.3)
        reset_branch(registry, "sentiment", "live", "next")
        deadline = time.monotonic() + 20
        while not reloaded and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        follower.join(timeout=20)
    (moved,) = reloaded
    assert moved.name == "sentiment@live"
    assert moved.content != first.content
    assert moved.path != first.path
    assert (moved.path / "adapter_config.json").is_file()


def test_the_resolver_matches_vllm_s_interface() -> None:
    signature = inspect.signature(FmforgeLoRAResolver.resolve_lora)
    assert list(signature.parameters) == ["self", "base_model_name", "lora_name"]
    assert inspect.iscoroutinefunction(FmforgeLoRAResolver.resolve_lora)
