from __future__ import annotations

import uuid

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmforge.errors import InvalidEvent, UpcasterError
from fmforge.ledger.events import canonical_json, chain_preimage, decode_json, new_event_id
from fmforge.ledger.upcasting import UpcasterRegistry


def chain_hash(**fields: object) -> bytes:
    return blake3.blake3(chain_preimage(**fields)).digest()  # type: ignore[arg-type]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


class TestCanonicalJson:
    @given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
    def test_round_trip_is_a_fixed_point(self, value: dict) -> None:
        encoded = canonical_json(value)
        assert decode_json(encoded) == value
        assert canonical_json(decode_json(encoded)) == encoded

    def test_key_order_does_not_matter(self) -> None:
        assert (
            canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1}) == b'{"a":2,"b":1}'
        )

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), [1, {"x": float("-inf")}]])
    def test_non_finite_numbers_are_refused(self, bad: object) -> None:
        with pytest.raises(InvalidEvent, match="NaN or Infinity"):
            canonical_json({"v": bad})

    def test_null_itself_is_fine(self) -> None:
        assert canonical_json({"v": None}) == b'{"v":null}'

    @pytest.mark.parametrize("bad", [{1: "int key"}, {"x": 2**70}, {"x": b"bytes"}])
    def test_non_json_values_are_refused(self, bad: object) -> None:
        with pytest.raises(InvalidEvent, match="not plain JSON"):
            canonical_json(bad)


class TestEventIds:
    def test_uuid7_layout_and_order(self) -> None:
        ids = [new_event_id() for _ in range(1000)]
        parsed = [uuid.UUID(i) for i in ids]
        assert all(p.version == 7 and p.variant == uuid.RFC_4122 for p in parsed)
        assert len(set(ids)) == 1000
        millis = [p.int >> 80 for p in parsed]
        assert millis == sorted(millis)


class TestChainHash:
    def test_every_header_field_changes_the_hash(self) -> None:
        base = dict(
            prev_hash=bytes(32), seq=1, event_id=new_event_id(), stream="s", version=1,
            event_type="T", schema_version=1, key_id=None, refs="", meta=b"{}",
            payload_hash=bytes(32),
        )  # fmt: skip
        reference = chain_hash(**base)  # type: ignore[arg-type]
        changes = dict(
            prev_hash=b"\x01" * 32, seq=2, event_id=new_event_id(), stream="t", version=2,
            event_type="U", schema_version=2, key_id="subject-1", refs="a" * 64, meta=b'{"a":1}',
            payload_hash=b"\x02" * 32,
        )  # fmt: skip
        for field, value in changes.items():
            assert chain_hash(**{**base, field: value}) != reference, field  # type: ignore[arg-type]

    def test_fields_cannot_be_shifted_between_neighbours(self) -> None:
        common = dict(prev_hash=bytes(32), seq=1, event_id=new_event_id(), version=1,
                      schema_version=1, key_id=None, refs="", meta=b"{}",
                      payload_hash=bytes(32))  # fmt: skip
        a = chain_hash(stream="ab", event_type="C", **common)  # type: ignore[arg-type]
        b = chain_hash(stream="a", event_type="BC", **common)  # type: ignore[arg-type]
        assert a != b


class TestUpcasters:
    def test_chain_is_applied_in_order_without_mutating_input(self) -> None:
        registry = UpcasterRegistry()
        registry.register("E", 1, lambda d: {"v2": d["v1"]})
        registry.register("E", 2, lambda d: {"v3": d["v2"] + 1})
        original = {"v1": 1}
        assert registry.upcast("E", 1, original) == (3, {"v3": 2})
        assert original == {"v1": 1}
        assert registry.upcast("E", 3, {"v3": 5}) == (3, {"v3": 5})
        assert registry.upcast("Other", 1, {"x": 1}) == (1, {"x": 1})

    def test_gaps_and_duplicates_are_refused(self) -> None:
        registry = UpcasterRegistry()
        registry.register("E", 1, lambda d: d)
        registry.register("E", 3, lambda d: d)
        with pytest.raises(UpcasterError, match="version\\(s\\) 2"):
            registry.validate()
        with pytest.raises(UpcasterError, match=r"already|registered"):
            registry.register("E", 1, lambda d: d)

    def test_a_failing_upcaster_names_the_type(self) -> None:
        registry = UpcasterRegistry()
        registry.register("E", 1, lambda d: {"x": d["missing"]})
        with pytest.raises(UpcasterError, match="E: upcaster from v1 failed"):
            registry.upcast("E", 1, {})
