"""What a dataset declares about the people in it, and erasing one of them.

``tag_dataset`` records ``DatasetTagged``: the dataset's licence (``CC-BY-NC-4.0``: refused
for commercial use, and so is anything trained from it), its personal-data columns (masked, or
the read denied, for whoever may not read them), the column naming each row's data subject,
and the purposes consent covers. Access control decides with these at the moment of access
(``fmforge.access.compliance``). With a subject id, every version written from then on stores
the personal-data cells encrypted under the subject's own key (``fmforge.access.cells``): the
subject id and the personal-data columns are declared before the first version and stay.

``forget_subject`` erases a subject by crypto-shredding: their key is destroyed, so every
copy of their personal data (in any chunk of any version, in any backup of the objects) is
unreadable, and their rows drop out of every read; ``SubjectForgotten`` records a pseudonym,
never the id, and flags ``needs_unlearning`` the versions that held them and every run and
model commit derived from those, which policy then refuses to ``use``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fmforge.access import targets
from fmforge.access.cells import holds_subject
from fmforge.access.facts import AccessFactsView
from fmforge.access.mediation import gate, mediated
from fmforge.access.resources import format_resource
from fmforge.data.events import DatasetTagged
from fmforge.data.names import validate_dataset_name
from fmforge.data.versions import STREAM_PREFIX
from fmforge.data.views import DatasetsView
from fmforge.errors import DataError, FmforgeError, InvalidDataSource
from fmforge.repository import Repository

_KEEP: Any = object()
"""An argument not given: the declaration keeps what it said."""


@dataclass(frozen=True)
class DatasetTags:
    dataset: str
    licence: str | None = None
    pii: tuple[str, ...] = ()
    subject_id: str | None = None
    consent: tuple[str, ...] | None = None
    pii_mode: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "licence": self.licence, "pii": list(self.pii),
            "subject_id": self.subject_id,
            "consent": list(self.consent) if self.consent is not None else None,
            "pii_mode": self.pii_mode,
        }  # fmt: skip


@mediated("read_meta", targets.dataset_name())
def dataset_tags(repo: Repository, name: str) -> DatasetTags:
    """What ``name`` declares (nothing, for a dataset never tagged)."""
    validate_dataset_name(name)
    found = repo.view(AccessFactsView).attributes(format_resource("dataset", name))
    consent = found.get("consent_purposes")
    return DatasetTags(
        name, found.get("licence"), tuple(found.get("pii_columns") or ()),
        found.get("subject_id"), tuple(consent) if consent is not None else None,
        found.get("pii_mode"),
    )  # fmt: skip


@mediated("own", targets.dataset_name())
def tag_dataset(
    repo: Repository,
    name: str,
    *,
    licence: str | None = _KEEP,
    pii: list[str] | tuple[str, ...] = _KEEP,
    subject_id: str | None = _KEEP,
    consent: list[str] | tuple[str, ...] | None = _KEEP,
    pii_mode: str | None = _KEEP,
) -> DatasetTags:
    """Declare what ``name`` is (see the module docstring); what is not given stays as it
    was. Nothing is recorded when nothing changes."""
    before = dataset_tags(repo, name)
    after = DatasetTags(
        name,
        before.licence if licence is _KEEP else (licence or None),
        before.pii if pii is _KEEP else tuple(dict.fromkeys(pii)),
        before.subject_id if subject_id is _KEEP else (subject_id or None),
        before.consent if consent is _KEEP else (tuple(consent) if consent is not None else None),
        before.pii_mode if pii_mode is _KEEP else (pii_mode or None),
    )
    if after.pii_mode not in (None, "mask", "deny"):
        raise DataError(f"--pii-mode {after.pii_mode!r}: mask or deny")
    versions = repo.view(DatasetsView).versions(name)
    if versions:
        columns = [c["name"] for c in versions[0].columns]
        for column in (*after.pii, *([after.subject_id] if after.subject_id else [])):
            if column not in columns:
                raise DataError(
                    f"{name} has no column {column!r} (its columns: {', '.join(columns)})"
                )
        sealed_before = _sealed(before)
        if _sealed(after) != sealed_before:
            raise DataError(
                f"{name} has versions already: the subject id and the personal-data columns of "
                "a dataset with a subject id are declared before its first version (their cells "
                "are stored encrypted from the start); tag a new dataset and add the data to it"
            )
    if after == before:
        return after
    repo.record(STREAM_PREFIX + name, DatasetTagged(after.to_json()))  # type: ignore[arg-type]
    return after


def _sealed(tags: DatasetTags) -> tuple[str | None, frozenset[str]]:
    return (tags.subject_id, frozenset(tags.pii) if tags.subject_id else frozenset())


@dataclass
class SubjectErasure:
    key_id: str
    pseudonym: str
    flagged: list[str] = field(default_factory=list)  # resources now needing unlearning
    seconds: float = 0.0


@mediated("forget", lambda repo, args: "dataset")
def forget_subject(repo: Repository, subject: str, *, reason: str) -> SubjectErasure:
    """Erase ``subject`` from every dataset (see the module docstring)."""
    if not reason.strip():
        raise DataError("say why the subject is forgotten (--reason): it goes on the record")
    if not subject:
        raise InvalidDataSource("give the subject's id (the value of the subject id column)")
    started = time.perf_counter()
    control = gate(repo).control
    keys = control.subject_keys()
    key_id = keys.key_id(subject)
    if keys.destroyed([key_id]):
        raise DataError("that subject was forgotten already: nothing of theirs is readable")
    if not _has_key(keys, key_id):
        raise DataError("no dataset holds data of that subject (no key was ever made for them)")
    flagged = _flag(repo, key_id)
    control.forget_subject(subject, reason, flagged=flagged)
    return SubjectErasure(
        key_id, keys.master.pseudonym(subject), flagged, time.perf_counter() - started
    )


def _has_key(keys: Any, key_id: str) -> bool:
    with keys.lock:
        row = keys.db.execute("SELECT 1 FROM subject_keys WHERE key_id = ?", (key_id,))
        return row.fetchone() is not None


def _flag(repo: Repository, key_id: str) -> list[str]:
    """Every version holding the subject, the runs given one of them, the model commits
    those runs made, and whatever lineage derives from all of these."""
    index = repo.view(DatasetsView)
    held: dict[str, str] = {}  # version id -> resource
    for latest in index.newest():
        for version in index.versions(latest.dataset):
            digest = version.transformation.get("subjects")
            if isinstance(digest, str) and holds_subject(repo.objects, digest, key_id):
                held[version.id] = format_resource(
                    "dataset", version.dataset, version=f"v{version.number}"
                )
    if not held:
        return []
    from fmforge.data.versions import resolve
    from fmforge.tracking.views import RunsView

    flagged = list(held.values())
    for run in repo.view(RunsView).dataset_usage():
        hit = False
        for ref in run["datasets"]:
            try:
                hit = hit or resolve(repo, ref).id in held
            except FmforgeError:
                continue
        if hit:
            flagged.append(format_resource("run", run["id"]))
            flagged += [
                format_resource("model", c["model"], commit=c["commit"]) for c in run["checkpoints"]
            ]
    flagged += repo.view(AccessFactsView).derived_from(set(flagged))
    return list(dict.fromkeys(flagged))
