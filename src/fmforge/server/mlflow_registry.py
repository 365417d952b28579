"""MLflow's logged models and model registry in fmforge's terms.

A logged model (``mlflow.<flavor>.log_model``) is the stream ``logged-model/<id>``: created
pending, its files uploaded as its artifacts through the artifact proxy, then finalized
(``tracking.logged_models``). Registering it (``register_model``) commits those files to the
fmforge model of the registered name with ``commit_model`` (objects already stored cost
nothing) and numbers that commit as version N (``ModelVersionCreated``). A version is thus a
commit: ``fmforge model log NAME`` lists it, ``open_model("NAME@<commit>")`` checks it out, and
MLflow clients download it from ``mlflow-artifacts:/model-commits/<commit>``, served from that
checkout. An alias is the branch ``alias/<alias>``, which moves where tags never do.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from fmforge.errors import (
    AliasNotFound,
    ExperimentNotFound,
    InvalidRequest,
    ModelExists,
    ModelNotFound,
    RefNotFound,
)
from fmforge.models import commit_model, create_branch, delete_branch, reset_branch
from fmforge.models.events import (
    ModelDescribed,
    ModelRegistered,
    ModelRenamed,
    ModelTagsSet,
    ModelUnregistered,
    ModelVersionCreated,
    ModelVersionDeleted,
)
from fmforge.models.names import validate_model_name, validate_ref_name
from fmforge.models.refs import STREAM_PREFIX, ModelRefs
from fmforge.models.registered import (
    ALIAS_PREFIX,
    ModelVersion,
    RegisteredModel,
    RegisteredModelsView,
)
from fmforge.repository import Repository
from fmforge.server.mlflow_schemas import Param, Tag
from fmforge.server.mlflow_search import matches, parse_filter, parse_order_by, sort_rows
from fmforge.server.mlflow_store import key_values, ms, page
from fmforge.tracking import events as ev
from fmforge.tracking.artifacts import ArtifactsView
from fmforge.tracking.logged_models import STREAM_PREFIX as LOGGED
from fmforge.tracking.logged_models import LoggedModel, LoggedModelsView

_STATUS_IN = {"LOGGED_MODEL_READY": "READY", "2": "READY", "LOGGED_MODEL_UPLOAD_FAILED": "FAILED",
              "3": "FAILED"}  # fmt: skip
_STATUS_OUT = {"PENDING": "LOGGED_MODEL_PENDING", "READY": "LOGGED_MODEL_READY",
               "FAILED": "LOGGED_MODEL_UPLOAD_FAILED"}  # fmt: skip
COMMITS = "model-commits"  # mlflow-artifacts:/model-commits/<commit>: a version's files


def _iso_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


class MlflowRegistry:
    def __init__(
        self, repository: Callable[[], Repository], experiment_exists: Callable[[str], object]
    ) -> None:
        self._repository = repository
        self._experiment_exists = experiment_exists
        self.lock = threading.RLock()

    @property
    def repo(self) -> Repository:
        return self._repository()

    # ---- logged models -------------------------------------------------------------------

    def logged_json(self, model: LoggedModel) -> dict[str, Any]:
        return {
            "info": {
                "model_id": model.model_id, "experiment_id": model.experiment_id,
                "name": model.name, "creation_timestamp_ms": ms(model.created),
                "last_updated_timestamp_ms": ms(model.updated),
                "artifact_uri": f"mlflow-artifacts:/{model.experiment_id}/models/"
                                f"{model.model_id}/artifacts",
                "status": _STATUS_OUT.get(model.status, "LOGGED_MODEL_PENDING"),
                "model_type": model.model_type or "", "source_run_id": model.run or "",
                "tags": key_values(model.tags),
            },
            "data": {"params": key_values(model.params), "metrics": []},
        }  # fmt: skip

    def logged(self, model_id: str) -> LoggedModel:
        found = self.repo.view(LoggedModelsView).get(model_id)
        if found is None or found.lifecycle != "active":
            raise ModelNotFound(f"no logged model {model_id!r}")
        return found

    def create_logged(
        self, experiment_id: str, name: str, model_type: str | None, run: str | None,
        params: Sequence[Param], tags: Sequence[Tag],
    ) -> LoggedModel:  # fmt: skip
        self._experiment_exists(experiment_id)
        model_id = "m-" + uuid.uuid4().hex
        self.repo.record(
            LOGGED + model_id,
            ev.LoggedModelCreated({
                "model_id": model_id, "experiment_id": experiment_id, "name": name, "run": run,
                "model_type": model_type, "params": {p.key: p.value for p in params},
                "tags": {t.key: t.value for t in tags}, "created": time.time(),
            }),
            expected_version=0,
        )  # fmt: skip
        return self.logged(model_id)

    def finalize_logged(self, model_id: str, status: str) -> LoggedModel:
        self.logged(model_id)
        chosen = _STATUS_IN.get(str(status).upper())
        if chosen is None:
            raise InvalidRequest(
                f"field 'status' must be LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED, "
                f"got {status!r}"
            )
        self.repo.record(
            LOGGED + model_id, ev.LoggedModelFinalized({"status": chosen, "time": time.time()})
        )
        return self.logged(model_id)

    def tag_logged(self, model_id: str, tags: dict[str, str], deleted: Sequence[str] = ()) -> None:
        found = self.logged(model_id)
        if any(k not in found.tags for k in deleted):
            raise ModelNotFound(f"logged model {model_id!r} has no tag {deleted[0]!r}")
        self.repo.record(
            LOGGED + model_id, ev.LoggedModelTagsSet({"tags": tags, "deleted": list(deleted)})
        )

    def params_logged(self, model_id: str, params: dict[str, str]) -> None:
        self.logged(model_id)
        self.repo.record(LOGGED + model_id, ev.LoggedModelParamsLogged({"params": params}))

    def delete_logged(self, model_id: str) -> None:
        self.logged(model_id)
        self.repo.record(LOGGED + model_id, ev.LoggedModelDeleted({"time": time.time()}))

    def search_logged(
        self, experiment_ids: list[str], filter_string: str | None,
        order_by: list[dict[str, Any]], max_results: int, token: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        clauses = parse_filter(filter_string)
        found = self.repo.view(LoggedModelsView).all(experiment_ids)

        def lookup(model: LoggedModel) -> Callable[[str, str], Any]:
            def value(entity: str, key: str) -> Any:
                if entity == "tags":
                    return model.tags.get(key)
                if entity == "params":
                    return model.params.get(key)
                if entity == "metrics":
                    return None
                info = self.logged_json(model)["info"]
                renamed = {"creation_time": "creation_timestamp_ms",
                           "last_updated_timestamp": "last_updated_timestamp_ms"}  # fmt: skip
                key = renamed.get(key, key)
                return info.get(key)

            return value

        rows = [m for m in found if matches(clauses, lookup(m))]
        orders = parse_order_by(
            [f"{o.get('field_name', '')} {'ASC' if o.get('ascending', True) else 'DESC'}"
             for o in order_by if o.get("field_name")]
        )  # fmt: skip
        if orders:
            sort_rows(rows, orders, lookup)
        chosen, more = page(rows, token, max_results)
        answer: dict[str, Any] = {"models": [self.logged_json(m) for m in chosen]}
        if more:
            answer["next_page_token"] = more
        return answer

    # ---- registered models ---------------------------------------------------------------

    def _registered(self, name: str) -> RegisteredModel:
        found = self.repo.view(RegisteredModelsView).by_name(name)
        if found is None:
            raise ModelNotFound(f"no registered model named {name!r}")
        return found

    def _aliases(self, model: str) -> dict[str, int]:
        """alias -> version, from the branches ``alias/<name>`` of the model."""
        branches = self.repo.view(ModelRefs).branches(model)
        versions = self.repo.view(RegisteredModelsView).versions(model)
        out: dict[str, int] = {}
        for branch, commit in branches.items():
            if branch.startswith(ALIAS_PREFIX):
                numbers = [v.version for v in versions if v.commit == commit]
                if numbers:
                    out[branch[len(ALIAS_PREFIX) :]] = max(numbers)
        return out

    def version_json(self, v: ModelVersion, name: str, aliases: dict[str, int]) -> dict[str, Any]:
        return {
            "name": name, "version": str(v.version),
            "creation_timestamp": _iso_ms(v.created), "last_updated_timestamp": _iso_ms(v.updated),
            "user_id": "", "current_stage": "None", "description": v.description,
            "source": v.source, "run_id": v.run or "", "status": "READY",
            "tags": key_values(v.tags), "run_link": "", "model_id": v.logged_model or "",
            "aliases": sorted(a for a, n in aliases.items() if n == v.version),
        }  # fmt: skip

    def registered_json(self, found: RegisteredModel) -> dict[str, Any]:
        aliases = self._aliases(found.model)
        versions = self.repo.view(RegisteredModelsView).versions(found.model)
        latest = [self.version_json(versions[-1], found.name, aliases)] if versions else []
        return {
            "name": found.name, "creation_timestamp": _iso_ms(found.created),
            "last_updated_timestamp": _iso_ms(found.updated), "user_id": "",
            "description": found.description, "latest_versions": latest,
            "tags": key_values(found.tags),
            "aliases": [{"alias": a, "version": str(n)} for a, n in sorted(aliases.items())],
        }  # fmt: skip

    def get_registered(self, name: str) -> dict[str, Any]:
        return self.registered_json(self._registered(name))

    def create_registered(self, name: str, tags: Sequence[Tag], description: str) -> None:
        with self.lock:
            if self.repo.view(RegisteredModelsView).by_name(name) is not None:
                raise ModelExists(f"registered model {name!r} exists already")
            model = validate_model_name(name)
            self.repo.record(
                STREAM_PREFIX + model,
                ModelRegistered({"model": model, "description": description,
                                 "tags": {t.key: t.value for t in tags}}),
            )  # fmt: skip

    def rename_registered(self, name: str, new_name: str) -> None:
        with self.lock:
            found = self._registered(name)
            if self.repo.view(RegisteredModelsView).by_name(new_name) is not None:
                raise ModelExists(f"registered model {new_name!r} exists already")
            if not new_name.strip() or len(new_name) > 255:
                raise InvalidRequest("field 'new_name' must be 1-255 characters")
            self.repo.record(
                STREAM_PREFIX + found.model, ModelRenamed({"model": found.model, "name": new_name})
            )

    def describe(self, name: str, description: str, version: str | None = None) -> None:
        found = self._registered(name)
        number = self._version(found, version).version if version is not None else None
        self.repo.record(
            STREAM_PREFIX + found.model,
            ModelDescribed({"model": found.model, "version": number, "description": description}),
        )

    def tag(
        self, name: str, tags: dict[str, str], deleted: Sequence[str] = (),
        version: str | None = None,
    ) -> None:  # fmt: skip
        found = self._registered(name)
        current = found.tags
        number = None
        if version is not None:
            chosen = self._version(found, version)
            number, current = chosen.version, chosen.tags
        missing = [k for k in deleted if k not in current]
        if missing:
            raise ModelNotFound(f"registered model {name!r} has no tag {missing[0]!r}")
        self.repo.record(
            STREAM_PREFIX + found.model,
            ModelTagsSet({"model": found.model, "version": number, "tags": tags,
                          "deleted": list(deleted)}),
        )  # fmt: skip

    def delete_registered(self, name: str) -> None:
        with self.lock:
            found = self._registered(name)
            for alias in self._aliases(found.model):
                delete_branch(self.repo, found.model, ALIAS_PREFIX + alias, force=True)
            self.repo.record(STREAM_PREFIX + found.model, ModelUnregistered({"model": found.model}))

    def search_registered(
        self, filter_string: str | None, order_by: Sequence[str], max_results: int,
        token: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        clauses = parse_filter(filter_string)

        def lookup(found: RegisteredModel) -> Callable[[str, str], Any]:
            def value(entity: str, key: str) -> Any:
                if entity == "tags":
                    return found.tags.get(key)
                return {"name": found.name, "creation_timestamp": _iso_ms(found.created),
                        "last_updated_timestamp": _iso_ms(found.updated)}.get(key)  # fmt: skip

            return value

        rows = [m for m in self.repo.view(RegisteredModelsView).models()
                if matches(clauses, lookup(m), absent_differs=True)]  # fmt: skip
        sort_rows(rows, parse_order_by(order_by), lookup)
        chosen, more = page(rows, token, max_results)
        answer: dict[str, Any] = {"registered_models": [self.registered_json(m) for m in chosen]}
        if more:
            answer["next_page_token"] = more
        return answer

    # ---- versions ------------------------------------------------------------------------

    def _version(self, found: RegisteredModel, version: str) -> ModelVersion:
        if not str(version).isdigit():
            raise InvalidRequest(f"version {version!r} is not a version number")
        chosen = self.repo.view(RegisteredModelsView).version(found.model, int(version))
        if chosen is None:
            raise ModelNotFound(f"registered model {found.name!r} has no version {version}")
        return chosen

    def get_version(self, name: str, version: str) -> dict[str, Any]:
        found = self._registered(name)
        return self.version_json(self._version(found, version), found.name,
                                 self._aliases(found.model))  # fmt: skip

    def create_version(
        self, name: str, source: str, run_id: str | None, tags: Sequence[Tag], description: str,
        model_id: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        with self.lock:
            owner, prefix, logged = self._source(source, run_id, model_id)
            files = self.repo.view(ArtifactsView).files(owner, prefix)
            if not files:
                raise InvalidRequest(f"source {source!r} holds no files on this server")
            found = self.repo.view(RegisteredModelsView).by_name(name)
            if found is None:  # MLflow's register_model creates it first; a bare call too
                self.create_registered(name, (), "")
                found = self._registered(name)
            registry = self.repo.view(RegisteredModelsView)
            number = registry.next_version(found.model)
            with tempfile.TemporaryDirectory(prefix="fmforge-register-") as tmp:
                root = Path(tmp)
                for file in files:
                    relative = file.path[len(prefix) :].lstrip("/") if prefix else file.path
                    target = root / (relative or Path(file.path).name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.repo.objects.copy_to(file.digest, target)
                result = commit_model(
                    self.repo, found.model, root, f"version {number} ({source})",
                    provenance={"mlflow_source": source, "run": run_id, "logged_model": logged},
                )  # fmt: skip
            self.repo.record(
                STREAM_PREFIX + found.model,
                ModelVersionCreated({
                    "model": found.model, "version": number, "commit": result.commit,
                    "source": source, "run": run_id or self._run_of(logged), "logged_model": logged,
                    "tags": {t.key: t.value for t in tags}, "description": description,
                }),
            )  # fmt: skip
            return self.get_version(found.name, str(number))

    def _run_of(self, logged: str | None) -> str | None:
        return self.logged(logged).run if logged else None

    def _source(
        self, source: str, run_id: str | None, model_id: str | None
    ) -> tuple[str, str, str | None]:
        """(artifact owner stream, path prefix, logged model id) of what ``source`` names."""
        if model_id:
            self.logged(model_id)
            return LOGGED + model_id, "", model_id
        match = re.fullmatch(r"models:/(m-[0-9a-f]+)/?", source)
        if match:
            self.logged(match[1])
            return LOGGED + match[1], "", match[1]
        match = re.fullmatch(r"runs:/([^/]+)/?(.*)", source)
        if match:
            run, path = match[1], match[2].strip("/")
            named = [m for m in self.repo.view(LoggedModelsView).of_run(run) if m.name == path]
            if named and not self.repo.view(ArtifactsView).files("run/" + run, path):
                return LOGGED + named[-1].model_id, "", named[-1].model_id
            return "run/" + run, path, None
        match = re.fullmatch(r"mlflow-artifacts:/+(.*)", source)
        if match:
            owner, path = artifact_owner(match[1])
            model = owner.removeprefix(LOGGED) if owner.startswith(LOGGED) else None
            return owner, path, model
        raise InvalidRequest(
            f"source {source!r} is not a run's or a logged model's files on this server "
            "(models:/m-..., runs:/RUN/PATH or mlflow-artifacts:/...)"
        )

    def delete_version(self, name: str, version: str) -> None:
        with self.lock:
            found = self._registered(name)
            chosen = self._version(found, version)
            for alias, number in self._aliases(found.model).items():
                if number == chosen.version:
                    delete_branch(self.repo, found.model, ALIAS_PREFIX + alias, force=True)
            self.repo.record(
                STREAM_PREFIX + found.model,
                ModelVersionDeleted({"model": found.model, "version": chosen.version}),
            )

    def search_versions(
        self, filter_string: str | None, order_by: Sequence[str], max_results: int,
        token: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        clauses = parse_filter(filter_string)
        rows: list[dict[str, Any]] = []
        registry = self.repo.view(RegisteredModelsView)
        for found in registry.models():
            aliases = self._aliases(found.model)
            rows.extend(self.version_json(v, found.name, aliases)
                        for v in registry.versions(found.model))  # fmt: skip

        def lookup(row: dict[str, Any]) -> Callable[[str, str], Any]:
            def value(entity: str, key: str) -> Any:
                if entity == "tags":
                    return next((t["value"] for t in row["tags"] if t["key"] == key), None)
                if key == "version_number":
                    return float(row["version"])
                return row.get({"source_path": "source"}.get(key, key))

            return value

        rows = [r for r in rows if matches(clauses, lookup(r), absent_differs=True)]
        sort_rows(rows, parse_order_by(order_by), lookup)
        chosen, more = page(rows, token, max_results)
        answer: dict[str, Any] = {"model_versions": chosen}
        if more:
            answer["next_page_token"] = more
        return answer

    def latest_versions(self, name: str) -> list[dict[str, Any]]:
        found = self._registered(name)
        versions = self.repo.view(RegisteredModelsView).versions(found.model)
        aliases = self._aliases(found.model)
        return [self.version_json(versions[-1], found.name, aliases)] if versions else []

    def download_uri(self, name: str, version: str) -> str:
        found = self._registered(name)
        return f"mlflow-artifacts:/{COMMITS}/{self._version(found, version).commit}"

    # ---- aliases -------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: str) -> None:
        with self.lock:
            found = self._registered(name)
            chosen = self._version(found, version)
            branch = ALIAS_PREFIX + _alias_name(alias)
            if branch in self.repo.view(ModelRefs).branches(found.model):
                reset_branch(self.repo, found.model, branch, chosen.commit)
            else:
                create_branch(self.repo, found.model, branch, chosen.commit)

    def delete_alias(self, name: str, alias: str) -> None:
        with self.lock:
            found = self._registered(name)
            if _alias_name(alias) not in self._aliases(found.model):
                raise AliasNotFound(f"registered model {name!r} has no alias {alias!r}")
            delete_branch(self.repo, found.model, ALIAS_PREFIX + alias, force=True)

    def by_alias(self, name: str, alias: str) -> dict[str, Any]:
        found = self._registered(name)
        aliases = self._aliases(found.model)
        if alias not in aliases:
            raise AliasNotFound(f"registered model {name!r} has no alias {alias!r}")
        return self.get_version(name, str(aliases[alias]))

    # ---- a version's files ---------------------------------------------------------------

    def commit_files(self, commit: str) -> Path:
        """The checked-out directory of a version's commit (``open_model``'s cache)."""
        from fmforge.models import open_model

        try:
            info = self.repo.view(ModelRefs).commit(commit)
        except (RefNotFound, ModelNotFound):
            raise ModelNotFound(f"no model commit {commit!r}") from None
        return open_model(f"{info.model}@{info.commit}", repo=self.repo)


def _alias_name(alias: str) -> str:
    if not re.fullmatch(r"[\w\-]{1,255}", alias) or alias.lower() == "latest":
        raise InvalidRequest(
            f"alias {alias!r} must be letters, digits, '_' and '-' (and not 'latest')"
        )
    validate_ref_name("branch", ALIAS_PREFIX + alias)
    return alias


def artifact_owner(path: str) -> tuple[str, str]:
    """(owner stream, path inside it) of an artifact proxy path:
    ``<experiment>/<run>/artifacts/<path>`` (a run's) or
    ``<experiment>/models/<model id>/artifacts/<path>`` (a logged model's)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        return LOGGED + parts[2], "/".join(parts[4:])
    if len(parts) >= 3 and parts[2] == "artifacts":
        return "run/" + parts[1], "/".join(parts[3:])
    raise InvalidRequest(
        f"artifact path {path[:80]!r} is not inside a run's or a logged model's artifacts "
        "(EXPERIMENT/RUN/artifacts/... or EXPERIMENT/models/MODEL/artifacts/...)"
    )


def ensure_experiment(experiments: Callable[[], dict[str, Any]]) -> Callable[[str], object]:
    def check(experiment_id: str) -> object:
        if experiment_id not in experiments():
            raise ExperimentNotFound(f"no experiment with id {experiment_id!r}")
        return True

    return check
