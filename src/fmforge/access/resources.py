"""Resources and resource patterns: one grammar, hierarchical, with specified matching.

A **resource** names what an action touches::

    resource  = "repository" | "audit" | "policy"
              | "dataset" [ "/" NAME [ "@" VERSION [ "#" COLUMN { "," COLUMN } ] ] ]
              | "model"   [ "/" NAME [ "/branch/" REF | "/tag/" REF | "@" COMMIT ] ]
              | "run"     [ "/" ID ]
              | "lf"      [ "/" NAME ]

The separators are ``/``, ``@``, ``#`` (and ``,`` between columns); a **segment** is what lies
between them: one or more of ``A-Z a-z 0-9 . _ - ~ + = :`` or a ``%XX`` escape. A name holding
anything else (a model ``org/llama`` has a ``/``) is written escaped, ``model/org%2Fllama``;
``quote`` and ``format_resource`` do it. ``#a,b`` names a set of columns: a request for it is
decided column by column.

**Hierarchy.** Every resource has a chain of ancestors up to ``repository``:
``dataset/yt@3#author`` → ``dataset/yt@3`` → ``dataset/yt`` → ``dataset`` → ``repository``;
``model/m/branch/main`` and ``model/m@C`` → ``model/m`` → ``model``; ``run/ID`` → ``run``;
``audit`` and ``policy`` → ``repository``. A grant or rule on a resource covers its children,
present and future.

A **pattern** is written like a resource, except that a segment may hold ``*``:

- ``*`` inside a segment matches any run of characters within that one segment, none of the
  separators: ``dataset/yt*`` matches ``dataset/yt`` and ``dataset/yt2``; a segment that is
  only ``*`` matches exactly one whole segment (``dataset/*``, ``dataset/yt@*#author``);
- ``**`` is a whole last segment and matches the rest: one or more segments, separators
  included (``dataset/**``, ``model/m/**``).

A pattern **matches a resource** when it matches, as a whole string, the resource or one of
its ancestors. Every character after a ``*`` counts (unlike casbin's ``keyMatch``, which
ignores what follows ``*``): ``dataset/yt@*#author`` matches ``dataset/yt@3#author`` and not
``dataset/yt@3#text``. A pattern with columns ``#a,b`` is the two patterns ``#a`` and ``#b``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote as _urlquote
from urllib.parse import unquote

from fmforge.errors import InvalidPolicy

KINDS = ("repository", "audit", "policy", "dataset", "model", "run", "lf")
SEPARATORS = "/@#"
_SEGMENT = re.compile(r"(?:[A-Za-z0-9._~+=:-]|%[0-9A-Fa-f]{2})+\Z")
_PATTERN_SEGMENT = re.compile(r"(?:[A-Za-z0-9._~+=:*-]|%[0-9A-Fa-f]{2})+\Z")
_SPLIT = re.compile(r"([/@#])")
_SAFE = "._~+=:-"


_PLAIN = re.compile(r"[A-Za-z0-9._~+=:-]+\Z")


def quote(name: str) -> str:
    """``name`` as one segment: every character outside the segment alphabet escaped."""
    return name if _PLAIN.match(name) else _urlquote(name, safe=_SAFE)


def format_resource(kind: str, name: str | None = None, **parts: str | list[str]) -> str:
    """A resource from unescaped parts: ``format_resource("dataset", "yt", version="3",
    columns=["a"])``, ``format_resource("model", "org/llama", branch="main")``."""
    text = kind
    if name is not None:
        text += "/" + quote(name)
    for key, value in parts.items():
        if key == "version" or key == "commit":
            text += "@" + quote(str(value))
        elif key == "columns":
            text += "#" + ",".join(quote(c) for c in value)
        elif key in ("branch", "tag"):
            text += f"/{key}/" + quote(str(value))
        else:
            raise TypeError(f"unknown resource part {key!r}")
    return parse_resource(text).text


@dataclass(frozen=True, slots=True)
class Resource:
    """A parsed resource: ``text`` (canonical), ``kind``, ``base`` (the resource without its
    columns), ``columns`` (unescaped, in order; empty for none) and ``chain``: ``base`` and
    its ancestors, nearest first, ending with ``repository``."""

    text: str
    kind: str
    base: str
    columns: tuple[str, ...]
    chain: tuple[str, ...]

    @property
    def root(self) -> str:
        """The resource's top-level object (``dataset/yt``, ``model/m``, ``run/ID``, ``audit``):
        what the access log indexes reads by."""
        return self.chain[-3] if len(self.chain) >= 3 else self.chain[0]

    def column(self, name: str) -> str:
        """The resource of one of this resource's columns (``base#name``)."""
        return f"{self.base}#{quote(name)}"

    def name(self) -> str | None:
        """The unescaped NAME (dataset, model, run id, lf), if any."""
        parts = self.root.split("/", 1)
        return unquote(parts[1]) if len(parts) == 2 else None


def _canonical(segment: str, columns: bool = False) -> str:
    """One spelling per segment: escapes decoded and re-encoded (``%2f`` is ``%2F``), ``*``
    kept as a wildcard."""
    if "%" not in segment:
        return segment  # already canonical: only escapes have two spellings
    if columns:
        return ",".join(_canonical(c) for c in segment.split(","))
    return "*".join(quote(unquote(p)) for p in segment.split("*"))


def _tokens(text: str) -> list[tuple[str, str]]:
    """(separator, segment) pairs; the first separator is ''."""
    pieces = _SPLIT.split(text)
    out = [("", pieces[0])]
    for i in range(1, len(pieces), 2):
        out.append((pieces[i], pieces[i + 1]))
    return out


_GRAMMAR = {
    "repository": ("",),
    "audit": ("",),
    "policy": ("",),
    "dataset": ("", "/", "/@", "/@#"),
    "model": ("", "/", "/@", "///"),
    "run": ("", "/"),
    "lf": ("", "/"),
}


def _shape(tokens: list[tuple[str, str]], text: str, what: str) -> str:
    """Check the separators against the grammar; return the kind ('*' for a wildcard kind).
    A last segment ``**`` stands for whatever may follow the separators before it."""
    segments = [seg for _, seg in tokens]
    if "**" in segments[:-1]:
        raise InvalidPolicy(f"{what} {text!r}: '**' may only be the last segment")
    kind = segments[0]
    if "*" in kind:
        return "*"
    if kind not in _GRAMMAR:
        raise InvalidPolicy(f"{what} {text!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    seps = "".join(sep for sep, _ in tokens[1:])
    rest = segments[-1] == "**"
    allowed = _GRAMMAR[kind]
    if not any(a.startswith(seps) if rest else a == seps for a in allowed):
        if kind == "dataset" and "#" in seps and "@" not in seps:
            raise InvalidPolicy(
                f"{what} {text!r}: columns need a version: dataset/NAME@VERSION#COLUMNS "
                "(@* for every version)"
            )
        raise InvalidPolicy(f"{what} {text!r} does not follow the grammar of {kind} resources")
    if kind == "model" and seps.startswith("//") and len(segments) > 2:
        word = segments[2]
        if word not in ("branch", "tag") and "*" not in word:
            raise InvalidPolicy(
                f"{what} {text!r}: a model's child is /branch/REF, /tag/REF or @COMMIT"
            )
    return kind


@lru_cache(maxsize=65536)
def parse_resource(text: str) -> Resource:
    """Parse and check a resource (no wildcards); ``InvalidPolicy`` names the problem."""
    if not isinstance(text, str) or not text:
        raise InvalidPolicy(f"invalid resource {text!r}: empty")
    tokens = _tokens(text)
    for sep, segment in tokens:
        for piece in segment.split(",") if sep == "#" else (segment,):
            if not _SEGMENT.match(piece):
                raise InvalidPolicy(
                    f"invalid resource {text!r}: segment {piece!r} is not letters, digits, "
                    "'._~+=:-' or %XX escapes"
                )
    if any(segment in (".", "..") for _, segment in tokens):
        raise InvalidPolicy(f"invalid resource {text!r}: a segment '.' or '..'")
    kind = _shape(tokens, text, "resource")
    text = "".join(sep + _canonical(seg, sep == "#") for sep, seg in tokens)
    columns: tuple[str, ...] = ()
    base = text
    if "#" in text:
        base, cols = text.split("#", 1)
        parts = cols.split(",")
        if any(not p for p in parts):
            raise InvalidPolicy(f"invalid resource {text!r}: an empty column name")
        columns = tuple(unquote(p) for p in parts)
    chain = [base]
    if kind == "dataset" and "@" in base:
        chain.append(base.split("@", 1)[0])
    elif kind == "model" and base.count("/") == 3:
        chain.append(base.rsplit("/", 2)[0])
    elif kind == "model" and "@" in base:
        chain.append(base.split("@", 1)[0])
    if chain[-1] != kind:
        chain.append(kind)
    if kind != "repository":
        chain.append("repository")
    if columns:
        text = base + "#" + ",".join(quote(c) for c in columns)
    return Resource(text, kind, base, columns, tuple(chain))


def ancestors(resource: str) -> tuple[str, ...]:
    """``resource`` and its ancestors, nearest first (columns are each their own child of the
    version: ask per column)."""
    parsed = parse_resource(resource)
    if parsed.columns:
        if len(parsed.columns) != 1:
            raise InvalidPolicy(f"{resource!r} names several columns: ask for each")
        return (parsed.text, *parsed.chain)
    return parsed.chain


class Pattern:
    """A compiled resource pattern (see the module docstring): ``matches(resource)``. An exact
    pattern (no ``*``) is compared as a string; only wildcards compile to a regex."""

    __slots__ = ("exact", "regex", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        if not isinstance(text, str) or not text or "," in text:
            raise InvalidPolicy(
                f"invalid resource pattern {text!r}: empty, or a column list (use compile_patterns)"
            )
        tokens = _tokens(text)
        for _, segment in tokens:
            if not _PATTERN_SEGMENT.match(segment):
                raise InvalidPolicy(
                    f"invalid resource pattern {text!r}: segment {segment!r} is not letters, "
                    "digits, '._~+=:-', '*' or %XX escapes"
                )
        _shape(tokens, text, "resource pattern")
        tokens = [(sep, _canonical(seg)) for sep, seg in tokens]
        self.text = text = "".join(sep + seg for sep, seg in tokens)
        self.exact = "*" not in text
        self.regex: re.Pattern[str] | None = None
        if self.exact:
            return
        parts = []
        for sep, segment in tokens:
            parts.append(re.escape(sep))
            if segment == "**":
                parts.append(".+")
            elif segment == "*":
                parts.append("[^/@#]+")
            else:
                parts.append("[^/@#]*".join(re.escape(p) for p in segment.split("*")))
        self.regex = re.compile("".join(parts))

    def matches(self, resource: str) -> bool:
        """Whether this pattern matches ``resource`` (one column at most) or an ancestor."""
        return self.matches_chain(ancestors(resource))

    def matches_chain(self, chain: tuple[str, ...]) -> bool:
        """Whether it matches one of ``chain`` (a resource and its ancestors)."""
        if self.regex is None:
            return self.text in chain
        full = self.regex.fullmatch
        return any(full(r) for r in chain)

    def matches_node(self, node: str) -> bool:
        """Whether it matches ``node`` itself (not its ancestors)."""
        return node == self.text if self.regex is None else bool(self.regex.fullmatch(node))

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"


def expand_pattern(text: str) -> list[str]:
    """A pattern with a column list as one pattern per column (``#a,b`` → ``#a``, ``#b``)."""
    if not isinstance(text, str) or not text:
        raise InvalidPolicy(f"invalid resource pattern {text!r}: empty")
    if "#" not in text:
        return [text]
    base, cols = text.split("#", 1)
    parts = cols.split(",")
    if any(not p for p in parts):
        raise InvalidPolicy(f"invalid resource pattern {text!r}: an empty column name")
    return [f"{base}#{p}" for p in parts]


_compiled: dict[str, tuple[Pattern, ...]] = {}


def compile_patterns(text: str) -> tuple[Pattern, ...]:
    """The patterns of ``text`` (one per column of a column list), checked and compiled once
    per process: recompiling a policy after one grant changed costs only the new patterns."""
    found = _compiled.get(text)
    if found is None:
        found = tuple(Pattern(p) for p in expand_pattern(text))
        if len(_compiled) >= 200_000:
            _compiled.clear()
        _compiled[text] = found
    return found
