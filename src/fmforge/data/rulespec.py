"""What a cleaning rule may say: each kind's options as a frozen pydantic model, checked before
anything runs, and the one place a ``python`` rule's function is found.

A wrong option is refused in one line naming the rule, the option and what it must be
(``rule 2 (near_dedup): option 'threshold' must be a number in (0, 1], not 'abc'``). Values are
taken as YAML typed them: ``"0.8"`` (a string) is not a number.

A ``python`` rule names ``MODULE:FUNCTION``. MODULE is the user's own code: a ``MODULE.py`` (or
package ``MODULE/``) beside the rules file, in the current directory, or on ``PYTHONPATH``; a
module of Python's standard library, fmforge, or a package installed into the environment
(``site-packages``) is refused before anything is imported. FUNCTION must be a plain function
(``def``) defined in that module (not imported into it, not a class, builtin or other callable)
that takes ``(table, column)``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import inspect
import re
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fmforge.data.userinput import SpecProblem, shown, validate_fields
from fmforge.errors import BadRule

PiiKind = Literal["email", "url", "ip", "credit_card", "phone"]
PII_KINDS: tuple[PiiKind, ...] = ("email", "url", "ip", "credit_card", "phone")


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class NoOptions(Options):
    """``drop_empty``: drop rows whose text is null or only whitespace."""


class DedupOptions(Options):
    """``dedup``: keep the first of rows with the same text."""

    mode: Literal["exact", "normalized"] = Field(
        "exact", description="exact or normalized (case, accents, spacing, punctuation folded)"
    )


class NearDedupOptions(Options):
    """``near_dedup``: keep the first of each cluster of near-duplicates (MinHash/LSH)."""

    threshold: float = Field(0.8, gt=0, le=1, description="a number in (0, 1]")
    permutations: int = Field(64, ge=1, le=1024, description="an integer from 1 to 1024")
    shingle: int = Field(5, ge=1, le=100, description="an integer from 1 to 100")


class FilterOptions(Options):
    """``drop`` / ``keep``: rows matching every condition given."""

    regex: str | None = Field(None, description="a regular expression (a string)")
    keywords: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, description="a list of one or more non-empty strings"
    )
    min_length: int | None = Field(None, ge=0, description="an integer of 0 or more")
    max_length: int | None = Field(None, ge=0, description="an integer of 0 or more")
    sql: str | None = Field(None, description="an SQL condition (a string)")


class RedactOptions(Options):
    """``redact``: replace personal data with a token."""

    kinds: list[PiiKind] = Field(
        list(PII_KINDS), min_length=1, description=f"a list of {', '.join(PII_KINDS)}"
    )
    replacement: str = Field(
        "[{kind}]", description="a string ({kind} in it is replaced by EMAIL, URL, ...)"
    )


class LanguageOptions(Options):
    """``language``: keep rows in the given languages."""

    keep: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="a list of ISO 639-1 codes, e.g. [en]"
    )
    min_probability: float = Field(0.8, ge=0, le=1, description="a number from 0 to 1")


class PythonOptions(Options):
    """``python``: drop the rows a function of your own module flags (True: drop)."""

    function: str = Field(description="MODULE:FUNCTION, a function of your own module")


def validated(model: type[Options], kind: str, options: Any) -> Any:
    """``options`` as ``model``, or ``BadRule`` naming the first wrong option."""
    try:
        return validate_fields(model, options)
    except SpecProblem as problem:
        raise BadRule(kind, str(problem)) from None


_TARGET = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<name>[A-Za-z_]\w*)\Z")


def user_function(target: str, base: Path | None) -> Callable[..., Any]:
    """The function ``MODULE:FUNCTION`` names, when MODULE is the user's own (see above)."""
    match = _TARGET.match(target)
    if match is None:
        raise BadRule("python", f"function {shown(target)}: write it as MODULE:FUNCTION")
    module_name, name = match["module"], match["name"]
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "fmforge":
        what = (
            f"{module_name} is fmforge's own code"
            if top == "fmforge"
            else f"{top} is part of the Python standard library"
        )
        raise BadRule(
            "python",
            f"function {target!r}: {what}; a python rule runs a function of your own module",
        )
    search = [str(p) for p in (base, Path.cwd()) if p is not None]
    importlib.invalidate_caches()  # a module written a moment ago must be found
    spec = importlib.machinery.PathFinder.find_spec(top, search + sys.path)
    if spec is None or spec.origin is None:
        raise BadRule("python", f"function {target!r}: no module {top!r} beside the rules, "
                      "in the current directory or on PYTHONPATH")  # fmt: skip
    if _installed(spec.origin):
        raise BadRule(
            "python",
            f"function {target!r}: {top} is an installed package ({spec.origin}); a python "
            "rule runs a function of your own module",
        )
    module = _import(module_name, search, target)
    loaded = getattr(sys.modules.get(top), "__file__", None)
    if loaded is None or Path(loaded).resolve() != Path(spec.origin).resolve():
        raise BadRule(
            "python",
            f"function {target!r}: a module named {top} is already loaded from elsewhere; "
            "rename yours",
        )
    function = getattr(module, name, None)
    if function is None:
        raise BadRule("python", f"function {target!r}: {module_name} has no {name!r}")
    if not inspect.isfunction(function) or function.__module__ != module.__name__:
        what = "imported from elsewhere" if inspect.isfunction(function) else "not a function"
        raise BadRule(
            "python",
            f"function {target!r}: {name} is {what}; name a function defined (def) in "
            f"{module_name}",
        )
    try:
        inspect.signature(function).bind(None, None)
    except TypeError:
        raise BadRule("python", f"function {target!r} must take (table, column)") from None
    return function


def _installed(origin: str) -> bool:
    path = Path(origin).resolve()
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        return True
    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")}
    return any(path.is_relative_to(Path(root).resolve()) for root in roots)


def _import(module_name: str, search: list[str], target: str) -> Any:
    added = [p for p in search if p not in sys.path]
    sys.path[:0] = added
    try:
        return importlib.import_module(module_name)
    except Exception as error:  # the user's module: say what failed
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise BadRule(
            "python", f"function {target!r}: importing {module_name} failed: "
            f"{type(error).__name__}{': ' + text if text else ''}",
        ) from None  # fmt: skip
    finally:
        for path in added:
            sys.path.remove(path)
