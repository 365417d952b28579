"""A deployment: one base model, adapters by reference, the engine, and the ledger's side.

``Deployment(root, "base@main", ["sentiment@live"], ServingConfig(...))`` opens the repository,
checks the base out (``open_model``), wraps its LoRA targets, preloads and pins the declared
adapters, records ``DeploymentStarted`` and starts the engine. Then:

- **Resolution.** A request's ``model`` (``NAME``, ``NAME@REF``, or the base) resolves through
  the registry on the registry thread (its own repository connection): to a commit (or the
  commit a rollback pinned), then to an ``AdapterSpec`` whose content hash keys every cache.
  Results are kept until the ledger says the model's refs changed.
- **Hot reload.** A watcher thread follows the ledger (``subscribe``) from the start: a branch
  move, tag or rollback drops the cached resolutions of that model (a generation counter keeps
  a resolution that raced with the move from being kept), lifts pins the move supersedes, and
  prefetches the new version of the references this replica serves, so the first request after
  a move needs no cold load. Requests already resolved finish on the version they resolved;
  none fails. Replicas sharing a PostgreSQL ledger all see the move.
- **Events.** Adapter loads and evictions of the host and disk tiers are buffered and recorded
  in one append per second (``AdapterLoaded`` / ``AdapterEvicted``); ``stop`` records
  ``DeploymentStopped``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fmforge.access import targets
from fmforge.access.mediation import bind_purpose, mediated
from fmforge.errors import AdapterIncompatible
from fmforge.ledger import NewEvent
from fmforge.models.checkout import open_model
from fmforge.models.refs import ModelRefs, split_model_ref
from fmforge.repository import Repository
from fmforge.serving import adapters as adapter_files
from fmforge.serving.adapters import AdapterSpec
from fmforge.serving.cache import AdapterCache, CacheEvent
from fmforge.serving.engine import Engine
from fmforge.serving.events import (
    AdapterEvicted,
    AdapterLoaded,
    DeploymentStarted,
    DeploymentStopped,
)
from fmforge.serving.loading import LoadedBase, build_engine, load_base
from fmforge.serving.metrics import Metrics
from fmforge.serving.views import DeploymentsView

logger = logging.getLogger(__name__)
T = TypeVar("T")
WATCHED = ("BranchCreated", "BranchMoved", "BranchDeleted", "TagCreated", "DeploymentRolledBack")


@dataclass(frozen=True)
class ServingConfig:
    """How a replica serves; recorded in ``DeploymentStarted``."""

    deployment: str | None = None  # default: the base model's name
    replica: str | None = None  # default: HOST-PID
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (float32 on CPU, bfloat16 on CUDA) | float32 | float64 | ...
    max_batch: int = 64
    max_rank: int = 16
    lora_targets: tuple[str, ...] | None = None  # module name suffixes; default: the adapters'
    device_cache_bytes: int = 256 << 20
    host_cache_bytes: int = 2 << 30
    disk_cache_bytes: int = 8 << 30
    cache_dir: str | None = None  # default: .fmforge/serving-cache
    max_queued: int = 1024
    max_queued_per_adapter: int | None = None
    queue_timeout_s: float = 60.0
    cycle_time_s: float = 2.0
    max_prompt_tokens: int | None = None  # default: the model's context
    max_labels: int = 32
    threads: int | None = None
    loader_threads: int = 4  # adapters loaded from the registry at once
    flush_s: float = 1.0
    purpose: str | None = None  # what the models are used for (licences are checked for it)


@dataclass(frozen=True, slots=True)
class Target:
    """What a request's ``model`` names: the base, or an adapter version."""

    id: str  # the name answers carry
    spec: AdapterSpec | None  # None: the base model

    @property
    def content(self) -> str | None:
        return None if self.spec is None else self.spec.content

    @property
    def label(self) -> str:
        return self.id


@mediated("use", targets.model())
def use_base(repo: Repository, target: str) -> Path:
    """The base model checked out, for serving: ``use`` of it, decided and recorded."""
    return open_model(target, repo=repo)


class Deployment:
    def __init__(
        self,
        root: str | os.PathLike[str],
        base: str,
        adapters: Sequence[str] = (),
        config: ServingConfig | None = None,
    ) -> None:
        self.root = Path(root)
        config = config or ServingConfig()
        if config.cache_dir is None:
            config = dataclasses.replace(
                config, cache_dir=str(self.root / ".fmforge" / "serving-cache")
            )
        self.config = config
        self.base_text = base
        self.base_model, self.base_ref = split_model_ref(base)
        self.declared = [split_model_ref(a) for a in adapters]
        self.name = self.config.deployment or self.base_model
        self.replica = self.config.replica or f"{socket.gethostname()}-{os.getpid()}"
        self.stream = f"deployment/{self.name}"
        self.metrics = Metrics()
        self._local = threading.local()
        self._repos: list[Repository] = []  # one per registry and loader thread
        self._registry = ThreadPoolExecutor(2, "fmforge-registry", self._open_repo)
        self._loader = ThreadPoolExecutor(
            max(1, self.config.loader_threads), "fmforge-loader", self._open_repo
        )
        self._lock = threading.Lock()
        self._resolved: dict[tuple[str, str], AdapterSpec] = {}
        self._generation: dict[str, int] = {}
        self._pins: dict[tuple[str, str], tuple[str, int]] = {}
        self._pending: list[NewEvent] = []
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._subscription: Any = None
        self.base: LoadedBase | None = None
        self.engine: Engine | None = None
        self.cache: AdapterCache | None = None
        self.metrics.collect_with(self._gauges)

    # ---- the registry thread's repository --------------------------------------------------

    def _open_repo(self) -> None:
        bind_purpose(self.config.purpose)  # this thread's loads use the models for it
        self._local.repo = Repository.open(self.root)
        with self._lock:
            self._repos.append(self._local.repo)

    def _on_registry(self, fn: Any, *args: Any) -> Future[Any]:
        return self._registry.submit(lambda: fn(self._local.repo, *args))

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Load the base, preload the declared adapters, record the start, start serving
        (once: a second call does nothing)."""
        if self.engine is not None:
            return
        try:
            self._on_registry(self._start_registry).result()
            assert self.base is not None
            cache, engine = build_engine(
                self.base, self.config, self.metrics, self._declared_specs,
                fetch=self._fetch, loader=self._loader, on_event=self._cache_event,
            )  # fmt: skip
            self.cache = cache
            for spec in self._declared_specs:
                cache.pin(spec.content)
                cache.ensure(spec).result()
            self._record_now([DeploymentStarted(self._started_payload())])  # type: ignore[arg-type]
        except BaseException:
            self._close()
            raise
        self.engine = engine
        engine.start()
        for target, name in ((self._watch, "fmforge-watch"), (self._flush_loop, "fmforge-events")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _start_registry(self, repo: Repository) -> None:
        refs = repo.view(ModelRefs)
        self.base_commit = refs.resolve(self.base_model, self.base_ref)
        self._start_seq = repo.ledger.head().seq
        for (model, ref), pin in repo.view(DeploymentsView).pins(self.name).items():
            self._pins[(model, ref)] = (pin.commit, pin.seq)
        directory = use_base(repo, f"{self.base_model}@{self.base_commit}")
        self.base = load_base(directory, self.config)
        self._declared_specs = [self._resolve(repo, model, ref) for model, ref in self.declared]

    def stop(self, reason: str = "stopped") -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._subscription is not None:
            self._subscription.close()
        if self.engine is not None:
            self.engine.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        engine = self.engine
        payload = {
            "deployment": self.name, "replica": self.replica, "reason": reason,
            "requests": engine.requests if engine else 0,
            "generated_tokens": engine.generated_tokens if engine else 0,
        }  # fmt: skip
        try:
            self._record_now([*self._take_pending(), DeploymentStopped(payload)])  # type: ignore[arg-type]
        finally:
            self._close()

    def _close(self) -> None:
        self._loader.shutdown(wait=True)
        self._registry.shutdown(wait=True)
        for repo in self._repos:
            repo.close()

    def _started_payload(self) -> dict[str, Any]:
        assert self.base is not None
        assert self.cache is not None
        config = dataclasses.asdict(self.config)
        config.update(
            deployment=self.name, replica=self.replica, device=str(self.base.device),
            dtype=str(self.base.dtype).removeprefix("torch."), slots=self.cache.slots.count,
            lora_targets=sorted(self.cache.slots.targets), kind=self.base.kind,
        )  # fmt: skip
        return {
            "deployment": self.name, "replica": self.replica, "base": self.base_text,
            "base_commit": self.base_commit,
            "adapters": [
                {"ref": f"{m}@{r}", "commit": s.commit}
                for (m, r), s in zip(self.declared, self._declared_specs, strict=True)
            ],
            "config": config,
        }  # fmt: skip

    # ---- resolution -------------------------------------------------------------------------

    async def resolve(self, text: str) -> Target:
        """What a request's ``model`` names (``ModelNotFound``, ``RefNotFound``,
        ``AdapterIncompatible`` otherwise)."""
        model, ref, is_base = self._parse(text)
        if is_base:
            return Target(self.base_text, None)
        with self._lock:
            spec = self._resolved.get((model, ref))
        if spec is None:
            future = self._on_registry(self._resolve, model, ref)
            spec = await asyncio.wrap_future(future)
        return Target(f"{model}@{ref}", spec)

    def resolve_now(self, text: str) -> Target:
        """``resolve`` from a thread without an event loop (benchmarks, tests)."""
        model, ref, is_base = self._parse(text)
        if is_base:
            return Target(self.base_text, None)
        return Target(f"{model}@{ref}", self._on_registry(self._resolve, model, ref).result())

    def resolve_all(self, texts: Sequence[str]) -> list[Target]:
        """``resolve_now`` of many names, resolved concurrently on the registry threads."""
        parsed = [self._parse(text) for text in texts]
        futures = [
            None if is_base else self._on_registry(self._resolve, model, ref)
            for model, ref, is_base in parsed
        ]
        return [
            Target(self.base_text, None) if future is None else Target(f"{m}@{r}", future.result())
            for (m, r, _), future in zip(parsed, futures, strict=True)
        ]

    def parse_model(self, text: str) -> tuple[str, str, bool]:
        """(model, ref, is the base) that a request's ``model`` names."""
        return self._parse(text)

    def _parse(self, text: str) -> tuple[str, str, bool]:
        model, sep, ref = text.partition("@")
        if model == self.base_model and (
            not sep or ref == self.base_ref or (len(ref) >= 4 and self.base_commit.startswith(ref))
        ):
            return model, ref, True
        model, ref = split_model_ref(text)
        if not sep:
            ref = dict(self.declared).get(model, "main")
        return model, ref, False

    def _resolve(self, repo: Repository, model: str, ref: str) -> AdapterSpec:
        with self._lock:
            generation = self._generation.get(model, 0)
            pin = self._pins.get((model, ref))
        commit = pin[0] if pin else repo.view(ModelRefs).resolve(model, ref)
        if model == self.base_model:
            raise AdapterIncompatible(
                f"{model}@{ref}",
                f"is commit {commit[:12]} of the base; this deployment serves "
                f"{model}@{self.base_commit[:12]} (start a deployment of that version)",
            )
        spec = adapter_files.describe(repo, model, commit)
        served = f"{self.base_model}@{self.base_commit}"
        if spec.base is not None and spec.base != served:
            theirs, _, commit_id = spec.base.partition("@")
            raise AdapterIncompatible(
                spec.short,
                f"adapts {theirs}@{commit_id[:12]}; this deployment serves "
                f"{self.base_model}@{self.base_commit[:12]}",
            )
        with self._lock:
            if self._generation.get(model, 0) == generation:
                self._resolved[(model, ref)] = spec
        return spec

    def _fetch(self, spec: AdapterSpec) -> adapter_files.AdapterWeights:
        assert self.cache is not None
        return adapter_files.load(self._local.repo, spec, self.cache.slots.targets)

    def held_names(self) -> dict[str, AdapterSpec]:
        """Every reference resolved and still current, by ``NAME@REF``."""
        with self._lock:
            return {f"{m}@{r}": spec for (m, r), spec in self._resolved.items()}

    def _gauges(self, metrics: Metrics) -> None:
        """Queue depths, running sequences and residency, set just before each render."""
        if self.cache is None or self.engine is None:
            return
        labels = {spec.content: spec.short for spec in self.cache.specs.values()}
        for name in ("queue_depth", "adapter_resident", "cache_bytes"):
            metrics.reset(name)
        for key, depth in self.engine.scheduler.depth().items():
            label = labels.get(key, self.base_text) if key is not None else self.base_text
            metrics.set("queue_depth", depth, model=label)
        metrics.set("running_sequences", len(self.engine.rows))
        for content, tier in self.cache.residency().items():
            if tier != "registry" and content in labels:
                metrics.set("adapter_resident", 1, adapter=labels[content], tier=tier)
        usage = self.cache.usage()
        metrics.set("cache_bytes", usage["host_bytes"], tier="host")
        metrics.set("cache_bytes", usage["disk_bytes"], tier="disk")
        metrics.set("cache_bytes", usage["device_bytes"], tier="device")

    # ---- the ledger: hot reload and events -------------------------------------------------

    def _watch(self) -> None:
        try:
            with Repository.open(self.root) as repo:
                subscription = repo.ledger.subscribe(self._start_seq + 1, types=WATCHED)
                self._subscription = subscription
                if self._stopped.is_set():
                    return
                with subscription:
                    for event in subscription:
                        self._changed(event.type, event.data, event.seq)
        except Exception:  # the replica keeps serving what it resolved; say so loudly
            logger.exception(
                "the ledger watcher stopped: refs that move will not reach this replica"
            )

    def _changed(self, kind: str, data: dict[str, Any], seq: int) -> None:
        if kind == "DeploymentRolledBack" and data["deployment"] != self.name:
            return
        model = str(data["model"])
        ref = str(data.get("branch") or data.get("tag") or data.get("ref"))
        with self._lock:
            self._generation[model] = self._generation.get(model, 0) + 1
            served = [r for (m, r) in self._resolved if m == model]
            for key in [k for k in self._resolved if k[0] == model]:
                del self._resolved[key]
            if kind == "DeploymentRolledBack":
                self._pins[(model, data["ref"])] = (data["commit"], seq)
            elif kind in ("BranchMoved", "BranchDeleted"):
                pin = self._pins.get((model, ref))
                if pin is not None and pin[1] < seq:
                    del self._pins[(model, ref)]
        declared = {r for m, r in self.declared if m == model}
        for name in sorted(declared | set(served)):
            if kind != "BranchDeleted" or name != ref:
                self._on_registry(self._prefetch, model, name, name in declared)

    def _prefetch(self, repo: Repository, model: str, ref: str, pin: bool) -> None:
        try:
            spec = self._resolve(repo, model, ref)
        except Exception as exc:  # a ref gone or an incompatible new version: requests will say so
            logger.warning("prefetch of %s@%s: %s", model, ref, exc)
            return
        assert self.cache is not None
        if pin:
            previous = [s for (m, r), s in zip(self.declared, self._declared_specs, strict=True)
                        if (m, r) == (model, ref)]  # fmt: skip
            for old in previous:
                if old.content != spec.content:
                    self.cache.pin(old.content, False)
            self._declared_specs = [
                spec if (m, r) == (model, ref) else s
                for (m, r), s in zip(self.declared, self._declared_specs, strict=True)
            ]
            self.cache.pin(spec.content)
        self.cache.ensure(spec)

    def _cache_event(self, event: CacheEvent) -> None:
        if event.kind == "loaded":
            self.metrics.inc("adapter_loads_total", tier=event.tier, source=event.source)
            self.metrics.observe("adapter_load_ms", event.ms, tier=event.tier)
        else:
            self.metrics.inc("adapter_evictions_total", tier=event.tier)
        if event.tier == "device" or self.cache is None:
            return
        spec = self.cache.specs.get(event.content)
        if spec is None:
            return  # a disk file of an earlier run, never asked for
        common: dict[str, Any] = {
            "deployment": self.name, "replica": self.replica, "adapter": spec.name,
            "content": event.content, "tier": event.tier,
        }  # fmt: skip
        if event.kind == "loaded":
            data = {
                **common,
                "source": event.source,
                "ms": round(event.ms, 3),
                "bytes": event.nbytes,
            }
            new = AdapterLoaded(data)  # type: ignore[arg-type]
        else:
            evicted: dict[str, Any] = {**common, "reason": event.reason}
            new = AdapterEvicted(evicted)  # type: ignore[arg-type]
        with self._lock:
            self._pending.append(new)

    def _take_pending(self) -> list[NewEvent]:
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def _flush_loop(self) -> None:
        while not self._stopped.wait(self.config.flush_s):
            pending = self._take_pending()
            if pending:
                try:
                    self._record_now(pending)
                except Exception:
                    logger.exception("recording %d serving events failed", len(pending))

    def _record_now(self, events: list[NewEvent]) -> None:
        if events:
            self._on_registry(lambda repo: repo.record(self.stream, events)).result()
