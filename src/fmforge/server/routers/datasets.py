"""Datasets over HTTP: the versions, a version's description, and its rows as the caller may
see them (personal-data columns masked, or the read denied, per the policy): the same entry
points as the library's, so the same decisions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from fmforge.data import head, list_datasets, resolve, where
from fmforge.data.views import DatasetVersion
from fmforge.errors import InvalidRequest
from fmforge.server.encoding import json_safe
from fmforge.server.state import State

router = APIRouter(prefix="/api/datasets")
MAX_ROWS = 10_000


def _version(v: DatasetVersion) -> dict[str, Any]:
    return {
        "dataset": v.dataset, "ref": v.ref, "id": v.id, "rows": v.rows, "columns": v.columns,
        "made_by": v.transformation.get("kind"), "message": v.message, "time": v.time,
    }  # fmt: skip


@router.get("")
def datasets(state: State) -> list[dict[str, Any]]:
    """The newest version of every dataset."""
    return [_version(v) for v in list_datasets(state.repo)]


@router.get("/{target}")
def dataset(target: str, state: State) -> dict[str, Any]:
    """A version (``NAME[@REF]``): its rows, columns and lineage."""
    return _version(resolve(state.repo, target))


@router.get("/{target}/rows")
def rows(
    target: str,
    state: State,
    limit: int = 100,
    where_: Annotated[str | None, Query(alias="where")] = None,
) -> Any:
    """Up to ``limit`` rows of a version, those matching ``where`` (a filter) when given."""
    if not 0 <= limit <= MAX_ROWS:
        raise InvalidRequest(f"query parameter 'limit' must be 0..{MAX_ROWS}, got {limit}")
    if where_ is not None:
        table = where(state.repo, target, where_, source="where").drop_columns(["_row_id"])
        table = table.slice(0, limit)
    else:
        table = head(state.repo, target, limit)
    return json_safe({"target": target, "rows": table.to_pylist()})
