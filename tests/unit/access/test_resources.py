"""The resource grammar and the pattern semantics, exactly as documented."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmforge.access.resources import (
    Pattern,
    ancestors,
    compile_patterns,
    format_resource,
    parse_resource,
    quote,
)
from fmforge.errors import InvalidPolicy


class TestGrammar:
    @pytest.mark.parametrize(
        ("text", "chain"),
        [
            ("repository", ("repository",)),
            ("audit", ("audit", "repository")),
            ("policy", ("policy", "repository")),
            ("dataset", ("dataset", "repository")),
            ("dataset/yt", ("dataset/yt", "dataset", "repository")),
            ("dataset/yt@3", ("dataset/yt@3", "dataset/yt", "dataset", "repository")),
            ("model/m", ("model/m", "model", "repository")),
            ("model/m/branch/main", ("model/m/branch/main", "model/m", "model", "repository")),
            ("model/m/tag/v1", ("model/m/tag/v1", "model/m", "model", "repository")),
            ("model/m@0a1b", ("model/m@0a1b", "model/m", "model", "repository")),
            ("run/01ab", ("run/01ab", "run", "repository")),
            ("lf/keywords", ("lf/keywords", "lf", "repository")),
        ],
    )
    def test_each_kind_and_its_ancestors(self, text: str, chain: tuple[str, ...]) -> None:
        parsed = parse_resource(text)
        assert parsed.text == text
        assert parsed.chain == chain
        assert ancestors(text) == chain

    def test_columns_are_children_of_the_version(self) -> None:
        parsed = parse_resource("dataset/yt@3#author,text")
        assert parsed.base == "dataset/yt@3"
        assert parsed.columns == ("author", "text")
        assert parsed.root == "dataset/yt"
        assert ancestors("dataset/yt@3#author")[:2] == ("dataset/yt@3#author", "dataset/yt@3")
        with pytest.raises(InvalidPolicy, match="several columns"):
            ancestors("dataset/yt@3#author,text")

    def test_names_with_separators_are_escaped_one_way(self) -> None:
        text = format_resource("model", "org/llama", branch="feature/x")
        assert text == "model/org%2Fllama/branch/feature%2Fx"
        assert parse_resource("model/org%2fllama/branch/feature%2fx").text == text
        assert parse_resource(text).name() == "org/llama"
        assert format_resource("dataset", "a b", version="3", columns=["x,y"]) == (
            "dataset/a%20b@3#x%2Cy"
        )
        assert parse_resource("dataset/a@3#x%2Cy").columns == ("x,y",)
        assert quote("*") == "%2A"

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("", "empty"),
            ("dataset/yt#author", "columns need a version"),
            ("audit/x", "grammar of audit resources"),
            ("model/m/head/x", "/branch/REF, /tag/REF or @COMMIT"),
            ("model/m/branch/a/b", "grammar of model resources"),
            ("run/a@b", "grammar of run resources"),
            ("datasets/yt", "unknown kind 'datasets'"),
            ("dataset/y t", "segment 'y t'"),
            ("dataset/yt@3#", "segment ''"),
            ("dataset/yt@3#a,,b", "segment ''"),
            ("dataset/..", "'.' or '..'"),
            ("dataset/*", "segment '*'"),  # a resource has no wildcards
            ("dataset//x", "segment ''"),
        ],
    )
    def test_bad_resources_are_refused_naming_the_problem(self, text: str, message: str) -> None:
        with pytest.raises(InvalidPolicy, match=message.replace("(", r"\(").replace("*", r"\*")):
            parse_resource(text)


MATCHES = [
    # (pattern, resource, matches?)
    ("dataset/yt@*#author", "dataset/yt@3#author", True),
    ("dataset/yt@*#author", "dataset/yt@3#text", False),  # casbin keyMatch says True here
    ("dataset/yt@*#author", "dataset/yt@3", False),
    ("dataset/yt@*#author", "dataset/yt", False),
    ("dataset/yt@*", "dataset/yt@3#text", True),  # a version's columns are its children
    ("dataset/yt@*", "dataset/yt", False),  # every version is not the dataset itself
    ("dataset/yt", "dataset/yt@3#text", True),
    ("dataset/yt", "dataset/yt2", False),
    ("dataset/yt*", "dataset/yt2", True),
    ("dataset/yt*", "dataset/yt", True),
    ("dataset/yt*", "dataset/xyt", False),
    ("dataset/*", "dataset/anything@9#c", True),
    ("dataset/*", "dataset", False),
    ("dataset/*", "model/m", False),
    ("dataset/**", "dataset/yt@3#a", True),
    ("dataset/**", "dataset", False),
    ("dataset/yt@3#**", "dataset/yt@3#a", True),
    ("dataset/yt@3#**", "dataset/yt@3", False),
    ("dataset", "dataset/yt@3", True),
    ("repository", "run/r1", True),
    ("**", "model/m@abc", True),
    ("*", "audit", True),
    ("model/m/branch/*", "model/m/branch/main", True),
    ("model/m/branch/*", "model/m/tag/main", False),
    ("model/m/branch/*", "model/m@abc", False),
    ("model/m/*/main", "model/m/tag/main", True),
    ("model/*", "model/org%2Fllama/branch/main", True),
    ("model/org%2F*", "model/org%2Fllama", True),
    ("model/org%2F*", "model/orgx", False),
    ("run/*", "run/abc", True),
    ("audit", "policy", False),
]


class TestPatterns:
    @pytest.mark.parametrize(("pattern", "resource", "expected"), MATCHES)
    def test_the_documented_table(self, pattern: str, resource: str, expected: bool) -> None:
        assert Pattern(pattern).matches(resource) is expected

    def test_a_column_list_is_one_pattern_per_column(self) -> None:
        patterns = compile_patterns("dataset/yt@*#author,email")
        assert [p.text for p in patterns] == ["dataset/yt@*#author", "dataset/yt@*#email"]
        assert not any(p.matches("dataset/yt@3#text") for p in patterns)

    def test_escapes_are_canonical_in_patterns(self) -> None:
        assert Pattern("model/org%2f*").text == "model/org%2F*"

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("dataset/**/x", "'\\*\\*' may only be the last segment"),
            ("dataset/yt#**", "columns need a version"),
            ("audit/**", "grammar of audit resources"),
            ("dataset/y?t", "segment 'y\\?t'"),
            ("dataset/a,b", "column list"),
            ("foo/*", "unknown kind 'foo'"),
        ],
    )
    def test_bad_patterns_are_refused(self, text: str, message: str) -> None:
        with pytest.raises(InvalidPolicy, match=message):
            Pattern(text)


_SEG = st.text(alphabet="abcxyz019._-", min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..")
)


class TestProperties:
    @given(_SEG, _SEG, _SEG, _SEG)
    def test_an_exact_pattern_matches_its_descendants_and_no_sibling(
        self, name: str, version: str, column: str, other: str
    ) -> None:
        resource = f"dataset/{name}@{version}#{column}"
        for node in ancestors(resource):
            assert Pattern(node).matches(resource)
        if other != column:
            assert not Pattern(resource).matches(f"dataset/{name}@{version}#{other}")
        if other != name:
            assert not Pattern(f"dataset/{name}").matches(f"dataset/{other}@{version}")

    @given(_SEG, _SEG, _SEG)
    def test_a_star_never_crosses_a_separator(self, name: str, version: str, column: str) -> None:
        assert not Pattern("dataset/*").regex.fullmatch(f"dataset/{name}@{version}")
        assert not Pattern("dataset/*@*").regex.fullmatch(f"dataset/{name}@{version}#{column}")
        assert Pattern(f"dataset/*@*#{column}").matches(f"dataset/{name}@{version}#{column}")
