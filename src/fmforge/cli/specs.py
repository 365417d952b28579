"""Command options derived from a frozen pydantic spec, so the model is the one definition.

``@spec_options(FinetuneSpec)`` adds one option per field to a command: ``--batch-size`` for
``batch_size``, ``--soft-labels/--no-soft-labels`` for a bool, a repeatable option (commas also
split) for a tuple, the field's description as help and its default shown; a field marked
``json_schema_extra={"cli_text": True}`` is read as text (the model parses it: ``--keep 0.5%``).
Every option
defaults to "not given"; the command receives ``spec_values``, the options given, and validates
them with the model, so the spec knows what the user set (``model_fields_set``) and its errors
name the option.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

CLI_TYPES = (str, int, float, bool)


def cli_type(annotation: Any) -> Any:
    """The type an option of a field with ``annotation`` parses (str for choices: the model
    validates them, naming the choices)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return cli_type(typing.get_args(annotation)[0])
    if origin in (types.UnionType, typing.Union):
        kinds = [cli_type(a) for a in typing.get_args(annotation) if a is not type(None)]
        return str if len(set(map(str, kinds))) != 1 else kinds[0]
    if origin is Literal:
        return str
    if origin is tuple:
        return list[str]
    if annotation in CLI_TYPES:
        return annotation
    return str


def choices(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union, Annotated):
        return tuple(c for a in typing.get_args(annotation) for c in choices(a))
    return ()


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def spec_parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    """One keyword-only parameter per field of ``model``, typed and documented for typer."""
    out = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        kind = str if extra.get("cli_text") else cli_type(info.annotation)
        flag = option_name(name)
        declarations = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        default = info.default
        shown: str | bool = False
        if default is not None and default is not PydanticUndefined:
            shown = ",".join(default) if isinstance(default, tuple) else str(default)
        help_text = info.description or ""
        options = choices(info.annotation)
        if options:
            help_text += f" One of: {', '.join(map(str, options))}."
        if info.is_required():
            help_text += " Required."
        option = typer.Option(*declarations, help=help_text, show_default=shown)
        annotation = Annotated[kind | None, option]  # type: ignore[valid-type]
        out.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
            )
        )
    return out


def spec_options(
    model: type[BaseModel], into: str = "spec_values"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command ``fn(..., spec_values: dict)`` with ``model``'s fields as options;
    ``into`` names another parameter, so two specs can be stacked on one command."""
    fields = list(model.model_fields)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(fn).parameters.values()
            if p.name != into
        ]
        clashes = set(fields) & {p.name for p in own}
        if clashes:
            raise TypeError(f"{fn.__name__}: parameters clash with spec fields: {clashes}")
        parameters = own + spec_parameters(model)

        def command(**kwargs: Any) -> Any:
            values = {}
            for name in fields:
                value = kwargs.pop(name)
                if value is not None and value != []:
                    values[name] = value
            return fn(**{into: values}, **kwargs)

        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return decorate
