"""The merge spec, the registry of methods and the CLI options derived from the spec."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fmforge.cli.app import app
from fmforge.cli.merge import SPEC_OPTIONS
from fmforge.errors import InvalidMerge
from fmforge.merging import METHODS, MergeSpec, get_method, parse_spec


class TestRegistry:
    def test_every_method_has_its_short_name_title_and_paper(self) -> None:
        assert list(METHODS) == [
            "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "fisher", "slerp",
        ]  # fmt: skip
        for name, method in METHODS.items():
            assert method.name == name
            assert method.title
            assert method.reference.startswith("https://")
            assert get_method(name) is method

    def test_the_spec_lists_every_method(self) -> None:
        description = MergeSpec.model_fields["method"].description or ""
        assert all(name in description for name in METHODS)

    def test_an_unknown_name_gets_the_closest_ones(self) -> None:
        with pytest.raises(InvalidMerge, match=r"'dare'; did you mean 'dare_ties'"):
            get_method("dare")


class TestSpec:
    def test_frozen_and_parameters_by_their_public_names(self) -> None:
        spec = MergeSpec.build("ties", ["a@main", "b@main"], weights=[1, 2], base="m@main",
                               density=0.2, **{"lambda": 0.5})  # fmt: skip
        assert spec.lambda_ == 0.5
        assert spec.given_parameters() == {"density", "lambda"}
        assert [i.weight for i in spec.inputs] == [1.0, 2.0]
        with pytest.raises(Exception, match="frozen"):
            spec.density = 0.3  # type: ignore[misc]

    def test_a_recorded_spec_validates_again_to_the_same_spec(self) -> None:
        spec = MergeSpec.build("dare_linear", ["a@main"], base="m@main", density=0.3, seed=7)
        recorded = spec.model_dump(mode="json", by_alias=True)
        again = parse_spec(recorded)
        assert again == spec
        assert again.given_parameters() == {"density", "seed"}

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"method": "linear", "inputs": [{"model": "a"}], "density": 2},
             "merge spec: density: Input should be less than or equal to 1"),
            ({"method": "linear", "inputs": [{"model": "a", "weight": float("inf")}]},
             "merge spec: inputs.0.weight: "),
            ({"method": "linear", "inputs": [{"model": ""}]}, "merge spec: inputs.0.model: "),
            ({"method": "linear", "inputs": [{"model": "a"}], "rank": 4},
             "rank is the rank of an adapter output"),
            ({"method": "nope", "inputs": [{"model": "a"}]}, "unknown merge method 'nope'"),
        ],
    )  # fmt: skip
    def test_refused_in_one_line(self, data: dict[str, object], message: str) -> None:
        with pytest.raises(InvalidMerge) as caught:
            parse_spec(data)
        assert str(caught.value).startswith(message) or message in str(caught.value)
        assert "\n" not in str(caught.value)


class TestCliOptions:
    def test_every_spec_field_has_an_option(self) -> None:
        assert set(SPEC_OPTIONS) == set(MergeSpec.model_fields)
        help_text = CliRunner().invoke(app, ["model", "merge", "--help"], terminal_width=200)
        assert help_text.exit_code == 0
        for option in SPEC_OPTIONS.values():
            for flag in option.replace(" and ", " ").replace("/", " ").split():
                if flag.startswith("--"):
                    assert flag in help_text.output, flag
        for field in ("density", "seed", "rank"):
            description = MergeSpec.model_fields[field].description
            assert description is not None
            assert description.split()[0] in help_text.output
