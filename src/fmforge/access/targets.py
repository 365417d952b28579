"""What an entry point's arguments name, as a resource (``fmforge.access.resources``): the
resolvers ``@mediated`` is given.

Reads are decided on what they resolve to (``dataset/yt@v3``; ``model/m/branch/main``,
``model/m/tag/v1`` or ``model/m@<commit>`` as the reference names a branch, a tag or a commit),
so the record says what was released. A name that does not resolve (a dataset that does not
exist) is decided as given: a principal without access learns nothing of what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fmforge.access.resources import format_resource
from fmforge.errors import FmforgeError

if TYPE_CHECKING:
    from fmforge.access.mediation import Need, Resolver
    from fmforge.repository import Repository

Arguments = Mapping[str, Any]
One = Callable[["Repository", Arguments], str]
"""A resolver naming one resource (usable in ``needs``)."""


def _as_given(kind: str, name: str | None) -> str:
    if not name:
        return kind
    try:
        return format_resource(kind, name)
    except FmforgeError:
        return kind


def dataset_resource(repo: Repository, target: str) -> str:
    """``NAME[@REF]`` as the resource of the version it resolves to."""
    from fmforge.data.versions import resolve

    try:
        version = resolve(repo, target)
    except FmforgeError:
        return _as_given("dataset", target.partition("@")[0])
    return format_resource("dataset", version.dataset, version=f"v{version.number}")


def model_resource(repo: Repository, target: str) -> str:
    """``NAME[@REF]`` as a branch, tag or commit resource."""
    from fmforge.models.refs import ModelRefs

    name, _, ref = target.partition("@")
    ref = ref or "main"
    try:
        index = repo.view(ModelRefs)
        if ref in index.branches(name):
            return format_resource("model", name, branch=ref)
        if ref in index.tags(name):
            return format_resource("model", name, tag=ref)
        return format_resource("model", name, commit=index.resolve(name, ref))
    except FmforgeError:
        return _as_given("model", name)


def branch_resource(model: str, branch: str) -> str:
    try:
        return format_resource("model", model, branch=branch)
    except FmforgeError:
        return _as_given("model", model)


def dataset(param: str = "target") -> One:
    """The dataset version argument ``param`` names (``NAME[@REF]``)."""
    return lambda repo, args: dataset_resource(repo, args[param])


def dataset_name(param: str = "name") -> One:
    """The dataset named by ``param`` (a write makes its next version)."""
    return lambda repo, args: _as_given("dataset", args[param])


def model(param: str = "target") -> One:
    """The model version argument ``param`` names (``NAME[@REF]``)."""
    return lambda repo, args: model_resource(repo, args[param])


def model_name(param: str = "name") -> One:
    return lambda repo, args: _as_given("model", args[param])


def branch(model_param: str = "model", branch_param: str = "branch") -> One:
    """The branch ``branch_param`` of the model ``model_param``."""
    return lambda repo, args: branch_resource(args[model_param], args[branch_param])


def tag(model_param: str = "model", tag_param: str = "tag") -> One:
    """The tag ``tag_param`` of the model ``model_param``."""

    def resolve(repo: Repository, args: Arguments) -> str:
        try:
            return format_resource("model", args[model_param], tag=args[tag_param])
        except FmforgeError:
            return _as_given("model", args[model_param])

    return resolve


def run(param: str = "run_id") -> One:
    return lambda repo, args: _as_given("run", args[param])


def fixed(resource: str) -> One:
    """Always ``resource`` (``dataset``, ``run``, ``repository``: a listing or a creation)."""
    return lambda repo, args: resource


def needs(*parts: tuple[str, Callable[[Repository, Arguments], str | None]]) -> Resolver:
    """Several (action, resolver) needs, the first the one recorded; a resolver that gives
    None (an optional argument not given) is left out."""

    def resolve(repo: Repository, args: Arguments) -> Sequence[Need]:
        out: list[Need] = []
        for action, resolver in parts:
            resource = resolver(repo, args)
            if resource is not None:
                out.append((action, resource))
        return out

    return resolve
