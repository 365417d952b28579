"""``FinetuneSpec``: defaults resolved per method, one-line errors naming the option, digests."""

from __future__ import annotations

import pytest

from fmforge.errors import InvalidSpec
from fmforge.training.spec import FinetuneSpec

BASE = {"base": "minilm@main", "data": "youtube@v3"}


def test_defaults_are_resolved_per_method() -> None:
    assert FinetuneSpec.parse(BASE).lr == 5e-4
    assert FinetuneSpec.parse({**BASE, "method": "full"}).lr == 5e-5
    sparse = FinetuneSpec.parse({**BASE, "method": "sparse"})
    assert (sparse.lr, sparse.keep) == (1e-4, 0.005)
    assert FinetuneSpec.parse({**BASE, "method": "sparse", "keep": "0.5%"}).keep == 0.005
    assert FinetuneSpec.parse({**BASE, "task": "causal-lm"}).objective == "perplexity"


def test_names_lists_accept_commas_and_repeats() -> None:
    spec = FinetuneSpec.parse({**BASE, "targets": ["query,value", "key"], "labels": "ham, spam"})
    assert spec.targets == ("query", "value", "key")
    assert spec.labels == ("ham", "spam")


def test_a_recorded_spec_parses_back_to_the_same_digest() -> None:
    spec = FinetuneSpec.parse({**BASE, "method": "full", "epochs": 3})
    again = FinetuneSpec.parse(spec.model_dump(mode="json"))  # every field given
    assert again == spec
    assert again.digest() == spec.digest()
    assert spec.replace(epochs=4).digest() != spec.digest()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"method": "qlora"}, "finetune spec: --method: Input should be 'lora', 'full' or"),
        ({"bogus": 1}, "finetune spec: unknown option --bogus"),
        ({"method": "full", "alpha": 32}, "--alpha applies to --method lora only"),
        ({"keep": 0.01}, "--keep applies to --method sparse only"),
        ({"method": "sparse", "keep": "0%"}, "--keep: must be in (0, 100%]"),
        ({"batch_size": 0}, "--batch-size: Input should be greater than or equal to 1"),
        ({"targets": "a,,b"}, "--targets: names are non-empty"),
        ({"labels": "a,a"}, "--labels: a name is repeated"),
        ({"task": "causal-lm", "metric": "accuracy"}, "does not apply to causal-lm"),
    ],
)
def test_mistakes_are_one_line_naming_the_option(values: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        FinetuneSpec.parse({**BASE, **values})
    text = str(caught.value)
    assert message in text
    assert len(text.splitlines()) == 1


def test_a_spec_is_frozen() -> None:
    spec = FinetuneSpec.parse(BASE)
    with pytest.raises(ValueError, match="frozen"):
        spec.epochs = 2  # type: ignore[misc]
