"""fmforge as vLLM's adapter source: a ``LoRAResolver`` plugin over the model registry.

On GPUs at scale vLLM is the engine (paged attention, Punica-derived LoRA kernels); fmforge
gives it adapters by reference. With ``pip install 'fmforge[vllm]'``::

    FMFORGE_STORE=/srv/team-repo FMFORGE_VLLM_BASE=llama@v1 \\
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=true VLLM_PLUGINS=fmforge \\
    vllm serve /srv/checkouts/llama --enable-lora --max-lora-rank 16

A request for ``model="sentiment@live"`` that vLLM does not know yet reaches
``resolve_lora``: the reference resolves through the registry to a commit, the adapter's
recorded base is checked against ``FMFORGE_VLLM_BASE`` (when set), and the adapter is checked
out once into a directory named by its content hash (``.fmforge/vllm-adapters/<hash>``), which
is what vLLM loads. vLLM keeps a resolved name for good, so ``follow_refs`` (started by
``register``) follows the ledger and, when a served reference moves, checks the new version
out and asks the local server to load it in place (``/v1/load_lora_adapter`` with
``load_inplace``, at ``FMFORGE_VLLM_URL``, default ``http://127.0.0.1:8000``): the same hot
reload as ``fmforge serve``.

The registry side (``RegistryAdapters``) needs no vLLM; the vLLM side is the few lines of
``FmforgeLoRAResolver.resolve_lora`` and ``register``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmforge.errors import AdapterIncompatible, FmforgeError
from fmforge.models.checkout import checkout
from fmforge.models.refs import ModelRefs, split_model_ref
from fmforge.repository import Repository
from fmforge.serving.adapters import describe

logger = logging.getLogger(__name__)
WATCHED = ("BranchCreated", "BranchMoved", "TagCreated")


@dataclass(frozen=True, slots=True)
class ResolvedAdapter:
    name: str  # as vLLM was asked for it
    model: str
    ref: str
    commit: str
    content: str
    path: Path

    @property
    def int_id(self) -> int:
        """A stable positive id from the content hash (vLLM may number them itself)."""
        return int(self.content[:15], 16) or 1


class RegistryAdapters:
    """``NAME@REF`` -> a checked-out, content-addressed adapter directory."""

    def __init__(self, root: str | os.PathLike[str], base: str | None = None) -> None:
        self.root = Path(root)
        self.base = base
        self.directory = self.root / ".fmforge" / "vllm-adapters"
        self._lock = threading.Lock()
        self.resolved: dict[str, ResolvedAdapter] = {}

    def resolve(self, name: str) -> ResolvedAdapter | None:
        """The adapter ``name`` names, checked out; None when the registry has no such model
        (another resolver may know it). An adapter of another base raises
        ``AdapterIncompatible``."""
        try:
            model, ref = split_model_ref(name)
        except FmforgeError:
            return None
        with Repository.open(self.root) as repo:
            refs = repo.view(ModelRefs)
            if model not in refs.models():
                return None
            commit = refs.resolve(model, ref)
            spec = describe(repo, model, commit)
            if self.base is not None and spec.base is not None:
                base_model, base_ref = split_model_ref(self.base)
                served = f"{base_model}@{refs.resolve(base_model, base_ref)}"
                if spec.base != served:
                    theirs, _, their_commit = spec.base.partition("@")
                    raise AdapterIncompatible(
                        spec.short,
                        f"adapts {theirs}@{their_commit[:12]}, not the served base {self.base}",
                    )
            path = self.directory / spec.content
            with self._lock:
                if not (path / "adapter_config.json").is_file():
                    self.directory.mkdir(parents=True, exist_ok=True)
                    checkout(repo, f"{model}@{commit}", path, force=path.exists())
        found = ResolvedAdapter(name, model, ref, commit, spec.content, path)
        with self._lock:
            self.resolved[name] = found
        return found

    def follow_refs(
        self,
        reload: Callable[[ResolvedAdapter], None],
        *,
        from_seq: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Follow the ledger; when the reference of a resolved name moves, resolve it again
        and hand the new version to ``reload``. Runs until ``stop`` is set."""
        stop = stop or threading.Event()
        with Repository.open(self.root) as repo:
            start = repo.ledger.head().seq + 1 if from_seq is None else from_seq
            subscription = repo.ledger.subscribe(start, types=WATCHED, poll_interval=0.1)

            def close_on_stop() -> None:
                stop.wait()
                subscription.close()

            threading.Thread(target=close_on_stop, daemon=True).start()
            with subscription:
                for event in subscription:
                    moved = event.data.get("branch") or event.data.get("tag")
                    with self._lock:
                        names = [
                            r.name for r in self.resolved.values()
                            if r.model == event.data["model"] and r.ref == moved
                        ]  # fmt: skip
                    for name in names:
                        self._reload(name, reload)

    def _reload(self, name: str, reload: Callable[[ResolvedAdapter], None]) -> None:
        previous = self.resolved.get(name)
        try:
            found = self.resolve(name)
        except FmforgeError as exc:
            logger.warning("%s moved to a version that cannot be served: %s", name, exc)
            return
        if found is not None and (previous is None or found.content != previous.content):
            reload(found)


def load_in_place(url: str) -> Callable[[ResolvedAdapter], None]:
    """Ask the vLLM server at ``url`` to load a new version under the same name."""

    def reload(adapter: ResolvedAdapter) -> None:
        body = json.dumps(
            {"lora_name": adapter.name, "lora_path": str(adapter.path), "load_inplace": True}
        ).encode()
        request = urllib.request.Request(
            url.rstrip("/") + "/v1/load_lora_adapter", data=body,
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        try:
            urllib.request.urlopen(request, timeout=60).read()
        except OSError as exc:
            logger.warning("vLLM did not reload %s: %s", adapter.name, exc)

    return reload


class FmforgeLoRAResolver:
    """vLLM's ``LoRAResolver`` interface over ``RegistryAdapters`` (``register`` mixes in
    vLLM's abstract base). ``request_class`` builds the ``LoRARequest``."""

    def __init__(self, adapters: RegistryAdapters, request_class: Any) -> None:
        self.adapters = adapters
        self.request_class = request_class

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> Any:
        try:
            found = await asyncio.to_thread(self.adapters.resolve, lora_name)
        except FmforgeError as exc:
            logger.warning("fmforge cannot serve %s on %s: %s", lora_name, base_model_name, exc)
            return None
        if found is None:
            return None
        return self.request_class(
            lora_name=lora_name, lora_int_id=found.int_id, lora_path=str(found.path)
        )


def register() -> None:
    """vLLM's ``vllm.general_plugins`` entry point: register the resolver and follow refs."""
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

    root = os.environ.get("FMFORGE_STORE")
    if not root:
        logger.warning("FMFORGE_STORE is not set: the fmforge LoRA resolver is not registered")
        return
    adapters = RegistryAdapters(root, os.environ.get("FMFORGE_VLLM_BASE") or None)
    resolver_class = type("FmforgeLoRAResolver", (FmforgeLoRAResolver, LoRAResolver), {})
    LoRAResolverRegistry.register_resolver("fmforge", resolver_class(adapters, LoRARequest))
    url = os.environ.get("FMFORGE_VLLM_URL", "http://127.0.0.1:8000")
    threading.Thread(
        target=adapters.follow_refs, args=(load_in_place(url),), name="fmforge-refs", daemon=True
    ).start()
