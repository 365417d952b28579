"""What ``Run.log`` and its kin accept (steps in int64, numbers, printable metric names), and
what a run's start resolves (its base model, a name unique in its project)."""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Any

from fmforge.errors import InvalidMetric

if TYPE_CHECKING:
    from fmforge.repository import Repository

INT64 = (-(2**63), 2**63 - 1)
MAX_NAME = 250  # MLflow's limit on a metric key


def check_step(step: Any) -> int:
    try:
        value = operator.index(step)
    except TypeError:
        raise InvalidMetric(f"step must be an integer, got {step!r}") from None
    if not INT64[0] <= value <= INT64[1]:
        raise InvalidMetric(f"step {value} is outside the int64 range")
    return value


def check_number(name: Any, value: Any) -> float:
    if type(value) is float:
        return value
    if isinstance(value, str | bytes) or value is None:
        raise InvalidMetric(f"metric {name!r}: {value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidMetric(f"metric {name!r}: {value!r} is not a number") from None


def check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidMetric(
            f"metric names are 1-{MAX_NAME} printable characters, got {str(name)[:60]!r}"
        )


def json_number(value: float) -> float | str:
    """A float as JSON can hold it: NaN and the infinities as the strings "NaN",
    "Infinity" and "-Infinity"."""
    number = float(value)
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


def resolve_base(repo: Repository, base_model: str | None) -> tuple[str | None, str | None]:
    """(model name, commit) of ``NAME@REF`` when it names a registered model, else (None,
    None): a hub id or a path is only recorded."""
    if not base_model:
        return None, None
    from fmforge.errors import InvalidName, ModelNotFound, RefNotFound
    from fmforge.models.refs import ModelRefs, split_model_ref

    try:
        name, ref = split_model_ref(base_model)
        return name, repo.view(ModelRefs).resolve(name, ref)
    except (InvalidName, ModelNotFound, RefNotFound):
        return None, None


def unique_name(repo: Repository, project: str, wanted: str) -> str:
    """``wanted``, or ``wanted-2``, ``-3``... when the project has a run of that name."""
    from fmforge.tracking.views import RunsView

    taken = repo.view(RunsView).names_in(project)
    if wanted not in taken:
        return wanted
    number = 2
    while f"{wanted}-{number}" in taken:
        number += 1
    return f"{wanted}-{number}"
