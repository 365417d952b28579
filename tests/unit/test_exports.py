"""Each package's ``__all__`` is sorted, complete and importable (httpx's
``test_exported_members``): what a package exports is a decision, not an accident."""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = [
    "fmforge",
    "fmforge.access",
    "fmforge.data",
    "fmforge.data.labeling",
    "fmforge.integrations",
    "fmforge.ledger",
    "fmforge.merging",
    "fmforge.models",
    "fmforge.objects",
    "fmforge.remotes",
    "fmforge.tracking",
    "fmforge.training",
]


def _isort_style(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then CamelCase, then the rest."""
    if name.isupper() and len(name) > 1:
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_importable_and_complete(name: str) -> None:
    package = importlib.import_module(name)
    exported = package.__all__
    assert exported == sorted(exported, key=_isort_style)
    assert len(exported) == len(set(exported))
    for member in exported:
        assert getattr(package, member) is not None, member
    public = {
        member
        for member in dir(package)
        if not member.startswith("_")
        and not isinstance(getattr(package, member), types.ModuleType)
        and member not in ("annotations", "TYPE_CHECKING", "Any", "importlib")
    }
    assert public <= set(exported), sorted(public - set(exported))


def test_the_top_level_is_the_first_things_a_user_reaches_for() -> None:
    import fmforge

    assert {"Repository", "start_run", "open_model", "load_state_dict", "commit_tensors"} <= set(
        fmforge.__all__
    )
    from fmforge import Repository, start_run
    from fmforge.repository import Repository as Defined
    from fmforge.tracking import start_run as defined

    assert Repository is Defined
    assert start_run is defined
