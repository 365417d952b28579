"""A repository: the ``.fmforge/`` directory binding a ledger, an object store and settings.

Found like git's: the directory given (``--store`` / ``FMFORGE_STORE``), else the current directory
or the nearest parent holding ``.fmforge/``. The embedded default keeps everything inside it
(``ledger.db``, ``objects/``, ``views.db``); settings point the ledger at PostgreSQL and the
objects at S3 for teams.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fmforge.errors import (
    ConfigError,
    CorruptObject,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
)
from fmforge.ledger import EventStore, NewEvent, Projection, ProjectionRunner, open_event_store
from fmforge.ledger.projections import ViewDifference
from fmforge.ledger.records import AppendResult, Head, default_actor
from fmforge.objects import GcReport, ObjectStore, open_object_store
from fmforge.settings import (
    STORE_ENV,
    Settings,
    load_settings,
    redact_url,
    render_config_toml,
)

DIRNAME = ".fmforge"
PRUNE_STREAM = "objects/pruned"
REPOSITORY_STREAM = "repository"
R = TypeVar("R")

_acting_as: ContextVar[str | None] = ContextVar("fmforge_principal", default=None)


@contextmanager
def acting_as(principal: str) -> Iterator[None]:
    """Record every event written in this context (thread or task) as ``principal``'s.

    The seam authentication plugs into: the server sets the principal of each request here;
    outside it, the principal is the repository's user (``FMFORGE_USER``, the ``user.name``
    setting, else the operating system's user, as git does)."""
    token = _acting_as.set(principal)
    try:
        yield
    finally:
        _acting_as.reset(token)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    head: Head
    events: int
    objects_checked: int
    views_checked: int = 0
    view_differences: tuple[ViewDifference, ...] = ()


def find_repository(start: Path) -> Path:
    """The directory holding ``.fmforge/``: ``start`` or its nearest parent."""
    start = start.resolve()
    if start.name == DIRNAME and start.is_dir():
        return start.parent
    for candidate in (start, *start.parents):
        if (candidate / DIRNAME).is_dir():
            return candidate
    raise RepositoryNotFound(str(start))


class Repository:
    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.path = root / DIRNAME
        self.settings = settings
        from fmforge.events import REGISTRY

        ledger_url = settings["ledger.url"] or str(self.path / "ledger.db")
        self.user: str = settings["user.name"] or default_actor()
        """Who this process records events as, unless a context says otherwise."""
        self.ledger: EventStore = open_event_store(
            ledger_url,
            busy_timeout=settings["ledger.busy_timeout_s"],
            actor=self.user,
            registry=REGISTRY,
        )
        try:
            self.objects: ObjectStore = open_object_store(
                settings["objects.url"] or str(self.path / "objects"),
                endpoint_url=settings["objects.s3_endpoint_url"] or None,
                create=True,
                compression=settings["objects.compression"],
                zstd_level=settings["objects.zstd_level"],
            )
        except BaseException:
            self.ledger.close()
            raise
        self._views: ProjectionRunner | None = None
        self._views_lock = threading.Lock()  # threads of a server may ask for it at once

    # ---- lifecycle ----------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str] = ".",
        *,
        config: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        records: Iterable[Mapping[str, Any]] | None = None,
    ) -> Repository:
        """Create ``.fmforge/`` in ``directory`` with the given settings (dotted names).

        With ``records`` (an ``events export``), the new ledger is that ledger, hash for hash,
        instead of starting with ``RepositoryInitialized``; if they do not import, nothing of
        the new repository is left behind.
        """
        root = Path(directory).resolve()
        path = root / DIRNAME
        if path.exists():
            raise RepositoryExists(f"{path} already exists")
        if not root.is_dir():
            raise ConfigError(f"directory {root} does not exist")
        config = {k: v for k, v in (config or {}).items() if v not in (None, "")}
        path.mkdir()
        if config:
            (path / "config.toml").write_text(render_config_toml(config))
        try:
            repo = cls(root, load_settings(path / "config.toml", environ))
        except BaseException:
            _remove_tree(path)
            raise
        if records is not None:
            try:
                repo.ledger.import_records(records)
            except BaseException:
                repo.close()
                _remove_tree(path)
                raise
            return repo
        from fmforge.events import RepositoryInitialized

        repo.record(
            REPOSITORY_STREAM,
            RepositoryInitialized(
                {"ledger": redact_url(repo.ledger.url), "objects": repo.objects.url}
            ),
        )
        return repo

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> Repository:
        """Open the repository at ``directory``, ``$FMFORGE_STORE`` or the nearest parent."""
        env = os.environ if environ is None else environ
        if directory is None and env.get(STORE_ENV):
            directory = env[STORE_ENV]
        root = find_repository(Path(directory) if directory is not None else Path.cwd())
        return cls(root, load_settings(root / DIRNAME / "config.toml", env))

    def close(self) -> None:
        if self._views is not None:
            self._views.close()
        self.ledger.close()
        self.objects.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the write path and the read models ----------------------------------------------

    @property
    def principal(self) -> str:
        """Who events written now are recorded as (see ``acting_as``)."""
        return _acting_as.get() or self.user

    def record(
        self,
        stream: str,
        events: NewEvent | Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> AppendResult:
        """The one write path of every domain: validate each event against its declared type
        (``fmforge.events.REGISTRY``), stamp ``meta.actor`` with the principal (``actor``, else
        the current one), and append atomically (``expected_version`` as in ``append``)."""
        if isinstance(events, NewEvent):
            events = [events]
        return self.ledger.record(
            stream, events, expected_version=expected_version, actor=actor or self.principal
        )

    @property
    def views(self) -> ProjectionRunner:
        """Runner for projections, kept in ``.fmforge/views.db``."""
        if self._views is None:
            with self._views_lock:
                if self._views is None:
                    self._views = ProjectionRunner(
                        self.ledger, self.path / "views.db", self.objects
                    )
        return self._views

    def view(self, projection: type[Projection[R]]) -> R:
        """The read side of ``projection``, brought up to date with the ledger first."""
        return self.views.view(projection)

    def verify(
        self,
        *,
        objects: bool = True,
        views: bool = True,
        workers: int | None = None,
        on_object: Callable[[str], None] | None = None,
    ) -> VerifyReport:
        """Verify the hash chain, read back every referenced object and check its hash, then
        rebuild every read model into a scratch database and compare it with ``views.db``.

        Raises at the first fault of the chain or an object: ``ChainBroken``,
        ``ObjectNotFound`` or ``CorruptObject``, the last two naming the first event that refers
        to the object. Read models that differ are listed in ``view_differences`` (projection,
        table, key); ``rebuild_views`` repairs them.
        """
        head = self.ledger.verify(workers=workers)
        checked = 0
        if objects:
            pruned = self.pruned_objects()
            referenced = self.ledger.referenced_objects()
            for digest, seq in sorted(referenced.items(), key=lambda i: i[1]):
                if digest in pruned:
                    continue
                try:
                    self.objects.verify_object(digest)
                except ObjectNotFound:
                    raise ObjectNotFound(digest, referenced_by=seq) from None
                except CorruptObject as exc:
                    raise CorruptObject(
                        digest, f"{exc.reason} (referenced by event seq {seq})"
                    ) from None
                checked += 1
                if on_object is not None:
                    on_object(digest)
        differences: list[ViewDifference] = []
        classes: tuple[type[Projection[Any]], ...] = ()
        if views:
            from fmforge.views import VIEWS

            classes = VIEWS
            differences = self.views.verify(VIEWS)
        return VerifyReport(head, head.seq, checked, len(classes), tuple(differences))

    def rebuild_views(self) -> list[str]:
        """Rebuild every read model from the ledger (what ``verify`` found wrong is gone);
        returns their names."""
        from fmforge.views import VIEWS

        for cls in VIEWS:
            self.views.rebuild(self.views.projection(cls))
        return [cls.name for cls in VIEWS]

    def gc(
        self,
        *,
        grace_period_s: float | None = None,
        dry_run: bool = False,
        prune: Collection[str] = (),
        reason: str = "",
    ) -> GcReport:
        """Delete objects no event refers to, and those in ``prune``, older than the grace period.

        ``prune`` names referenced objects a domain has found unreachable (the model registry:
        objects only old commits outside every branch and tag use). Their deletion is recorded
        as an ``ObjectsPruned`` event, so ``verify`` knows they are gone on purpose and the
        ledger tells when and why.
        """
        from fmforge.views import ObjectRefs

        grace = self.settings["gc.grace_period_s"] if grace_period_s is None else grace_period_s
        prune = set(prune)
        keep = self.view(ObjectRefs).all() - prune
        report = self.objects.gc(keep, grace_period_s=grace, dry_run=dry_run)
        pruned = sorted(prune.intersection(report.deleted_digests))
        if pruned and not dry_run:
            from fmforge.events import ObjectsPruned

            self.record(PRUNE_STREAM, ObjectsPruned({"objects": pruned, "reason": reason}))
        return report

    def erase(self, digests: Collection[str], reason: str) -> list[str]:
        """Delete these objects now, whatever refers to them (forgetting data), recording first
        an ``ObjectsPruned`` event with the reason, so the deletion is on the record even if
        the process dies half-way (run it again to finish). Returns what was deleted."""
        present = sorted(d for d in set(digests) if self.objects.has(d))
        if present:
            from fmforge.events import ObjectsPruned

            self.record(PRUNE_STREAM, ObjectsPruned({"objects": present, "reason": reason}))
            for digest in present:
                self.objects.delete(digest)
        return present

    def pruned_objects(self) -> set[str]:
        """Objects deleted on purpose by ``gc`` or forgetting (see ``ObjectsPruned``)."""
        from fmforge.views import PrunedObjects

        return self.view(PrunedObjects)


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        if child.is_dir():
            child.rmdir()
        else:
            child.unlink()
    path.rmdir()
