"""The tiered adapter cache: device slots, host memory, local disk, each with a byte budget.

Every entry is keyed by the adapter's content hash (``adapters.describe``), never by a name or
reference, so a moved branch reaches new requests with no stale weights anywhere.

- **Device**: the slots of the stacked adapter weights (``batching.LoRASlots``; on the GPU when
  there is one). The number of slots is the device budget divided by one slot's bytes. ``place``
  copies an adapter into a free slot, or into the least recently used slot no running sequence
  uses.
- **Host**: ``AdapterWeights`` in memory (pinned when the device is a GPU, so copies to it are
  asynchronous), up to ``host_bytes``; least recently used first out, except pinned adapters
  (the deployment's declared ones) and adapters that queued or running requests hold.
- **Disk**: one safetensors file per content hash under the deployment's cache directory, up
  to ``disk_bytes``: a replica restarted, or one whose host tier evicted an adapter, reloads
  it from there without touching the registry (which may be S3 away).

``ensure`` loads an adapter into the host tier on the loader thread (from disk when there,
else from the registry, then written to disk) and returns a future: requests await it before
they queue, so a cold adapter never holds up the others (prefetch), and the first request
for it starts as soon as its weights are in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path

from fmforge.serving.adapters import AdapterSpec, AdapterWeights, load_file, save_file
from fmforge.serving.batching import LoRASlots

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CacheEvent:
    kind: str  # "loaded" | "evicted"
    content: str
    tier: str  # device | host | disk
    source: str = ""  # registry | disk | host (loaded)
    ms: float = 0.0
    nbytes: int = 0
    reason: str = ""


@dataclass(slots=True)
class _HostEntry:
    weights: AdapterWeights
    nbytes: int


class AdapterCache:
    def __init__(
        self,
        slots: LoRASlots,
        *,
        fetch: Callable[[AdapterSpec], AdapterWeights],
        loader: Executor,
        host_bytes: int,
        disk_dir: Path | None = None,
        disk_bytes: int = 0,
        prepare: Callable[[AdapterWeights], AdapterWeights] = lambda w: w,
        on_event: Callable[[CacheEvent], None] | None = None,
    ) -> None:
        self.slots = slots
        self.fetch = fetch
        self.loader = loader
        self.host_bytes = host_bytes
        self.disk_dir = disk_dir
        self.disk_bytes = disk_bytes
        self.prepare = prepare
        self.on_event = on_event or (lambda event: None)
        self.lock = threading.RLock()
        self.specs: dict[str, AdapterSpec] = {}
        self.host: OrderedDict[str, _HostEntry] = OrderedDict()
        self.host_used = 0
        self.disk: OrderedDict[str, int] = OrderedDict()
        self.disk_used = 0
        self.pinned: set[str] = set()
        self.refs: Counter[str] = Counter()
        self.loading: dict[str, Future[None]] = {}
        self.slot_of: dict[str, int] = {}
        self.owner: list[str | None] = [None] * (slots.count + 1)
        self.users = [0] * (slots.count + 1)
        self.busy_since: dict[int, float] = {}
        self.slot_lru: OrderedDict[int, None] = OrderedDict()
        if disk_dir is not None:
            disk_dir.mkdir(parents=True, exist_ok=True)
            for path in sorted(disk_dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime):
                self.disk[path.stem] = path.stat().st_size
                self.disk_used += path.stat().st_size

    # ---- host tier: loading, pinning, holding -----------------------------------------------

    def ensure(self, spec: AdapterSpec) -> Future[None]:
        """A future done when ``spec``'s weights are in memory (host or device tier)."""
        with self.lock:
            self.specs[spec.content] = spec
            if spec.content in self.host or spec.content in self.slot_of:
                if spec.content in self.host:
                    self.host.move_to_end(spec.content)
                done: Future[None] = Future()
                done.set_result(None)
                return done
            pending = self.loading.get(spec.content)
            if pending is None:
                pending = self.loader.submit(self._load, spec)
                self.loading[spec.content] = pending
            return pending

    def ready(self, content: str | None) -> bool:
        with self.lock:
            return content is None or content in self.host or content in self.slot_of

    def hold(self, content: str | None) -> None:
        """A request needs ``content``: it stays in memory until ``release``."""
        if content is not None:
            with self.lock:
                self.refs[content] += 1

    def release(self, content: str | None) -> None:
        if content is not None:
            with self.lock:
                self.refs[content] -= 1
                if self.refs[content] <= 0:
                    del self.refs[content]
                self._evict_host()

    def pin(self, content: str, pinned: bool = True) -> None:
        with self.lock:
            if pinned:
                self.pinned.add(content)
            else:
                self.pinned.discard(content)
                self._evict_host()

    def _load(self, spec: AdapterSpec) -> None:
        started = time.perf_counter()
        source, weights = "registry", None
        try:
            path = self._disk_path(spec.content)
            if path is not None and spec.content in self.disk:
                try:
                    weights = load_file(path)
                    source = "disk"
                    with self.lock:
                        self.disk.move_to_end(spec.content)
                except Exception as exc:  # a damaged cache file: the registry has the truth
                    logger.warning("disk cache %s unreadable (%s): reloading", path, exc)
                    self._drop_disk(spec.content, "unreadable")
            if weights is None:
                weights = self.fetch(spec)
            weights = self.prepare(weights)
            ms = (time.perf_counter() - started) * 1000
            with self.lock:
                entry = _HostEntry(weights, weights.nbytes)
                self.host[spec.content] = entry
                self.host_used += entry.nbytes
            self.on_event(CacheEvent("loaded", spec.content, "host", source, ms, entry.nbytes))
            if source == "registry" and path is not None:
                self._write_disk(spec.content, path, weights)
        finally:
            with self.lock:
                self.loading.pop(spec.content, None)
                self._evict_host()

    def _evict_host(self) -> None:
        with self.lock:
            if self.host_used <= self.host_bytes:
                return
            for content in list(self.host):
                if self.host_used <= self.host_bytes:
                    break
                if content in self.pinned or self.refs.get(content, 0) > 0:
                    continue
                entry = self.host.pop(content)
                self.host_used -= entry.nbytes
                self.on_event(CacheEvent("evicted", content, "host", reason="host budget"))

    # ---- disk tier ---------------------------------------------------------------------------

    def _disk_path(self, content: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"{content}.safetensors"

    def _write_disk(self, content: str, path: Path, weights: AdapterWeights) -> None:
        if self.disk_bytes <= 0:
            return
        started = time.perf_counter()
        try:
            size = save_file(path, weights)
        except OSError as exc:
            logger.warning("cannot write the disk cache %s: %s", path, exc)
            return
        with self.lock:
            self.disk[content] = size
            self.disk_used += size
        ms = (time.perf_counter() - started) * 1000
        self.on_event(CacheEvent("loaded", content, "disk", "host", ms, size))
        with self.lock:
            while self.disk_used > self.disk_bytes and len(self.disk) > 1:
                oldest = next(iter(self.disk))
                if oldest == content:
                    break
                self._drop_disk(oldest, "disk budget")

    def _drop_disk(self, content: str, reason: str) -> None:
        with self.lock:
            size = self.disk.pop(content, None)
            if size is None:
                return
            self.disk_used -= size
        path = self._disk_path(content)
        if path is not None:
            path.unlink(missing_ok=True)
        self.on_event(CacheEvent("evicted", content, "disk", reason=reason))

    # ---- device tier (the engine's thread) -------------------------------------------------

    def place(self, content: str | None) -> int | None:
        """The device slot holding ``content`` (0 for the base), copying it into a free or
        unused slot first; None when every slot is in use or the weights are not in memory."""
        if content is None:
            return 0
        with self.lock:
            slot = self.slot_of.get(content)
            if slot is not None:
                self.slot_lru.move_to_end(slot)
                return slot
            entry = self.host.get(content)
            if entry is None:
                return None
            slot = self._free_slot()
            if slot is None:
                return None
            previous = self.owner[slot]
            if previous is not None:
                del self.slot_of[previous]
                self.on_event(CacheEvent("evicted", previous, "device", reason="slot reused"))
            started = time.perf_counter()
            self.slots.write(slot, entry.weights)
            ms = (time.perf_counter() - started) * 1000
            self.owner[slot] = content
            self.slot_of[content] = slot
            self.slot_lru[slot] = None
            self.slot_lru.move_to_end(slot)
            self.host.move_to_end(content)
        self.on_event(CacheEvent("loaded", content, "device", "host", ms, entry.nbytes))
        return slot

    def _free_slot(self) -> int | None:
        for slot in range(1, self.slots.count + 1):
            if self.owner[slot] is None:
                return slot
        for slot in self.slot_lru:
            if self.users[slot] == 0:
                return slot
        return None

    def use(self, slot: int, rows: int = 1) -> None:
        if slot:
            with self.lock:
                if self.users[slot] == 0:
                    self.busy_since[slot] = time.monotonic()
                self.users[slot] += rows

    def unuse(self, slot: int, rows: int = 1) -> None:
        if slot:
            with self.lock:
                self.users[slot] -= rows
                if self.users[slot] <= 0:
                    self.users[slot] = 0
                    self.busy_since.pop(slot, None)

    def busy_for(self, content: str, now: float) -> float:
        """Seconds the slot of ``content`` has had running sequences without a pause."""
        with self.lock:
            slot = self.slot_of.get(content)
            since = self.busy_since.get(slot) if slot is not None else None
            return 0.0 if since is None else now - since

    def slots_full(self) -> bool:
        with self.lock:
            return all(self.users[s] > 0 for s in range(1, self.slots.count + 1))

    # ---- what /v1/models and /metrics show ------------------------------------------------

    def tier(self, content: str) -> str:
        with self.lock:
            if content in self.slot_of:
                return "device"
            if content in self.host:
                return "host"
            if content in self.disk:
                return "disk"
            return "registry"

    def residency(self) -> dict[str, str]:
        with self.lock:
            known = set(self.specs) | set(self.host) | set(self.slot_of) | set(self.disk)
            return {content: self.tier(content) for content in known}

    def usage(self) -> dict[str, int]:
        with self.lock:
            return {
                "device_slots": self.slots.count,
                "device_slots_used": len(self.slot_of),
                "device_bytes": len(self.slot_of) * self.slots.slot_bytes,
                "host_bytes": self.host_used,
                "disk_bytes": self.disk_used,
            }
