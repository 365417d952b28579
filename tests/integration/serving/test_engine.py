"""The engine's outputs equal, token for token, each adapter merged into its own model copy.

Mixed batches (several adapters and the base in one forward pass), continuous batching
(requests joining a running batch at token boundaries, with other prompt lengths and lengths
to generate), and encoder batches of MiniLM classification adapters, against PEFT's
``merge_and_unload`` of each adapter run alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fmforge.models import commit_model
from fmforge.repository import Repository
from fmforge.serving.deployment import Deployment, ServingConfig
from fmforge.serving.engine import GenerationParams
from tests.integration.serving.conftest import TinyFiles
from tests.integration.serving.helpers import submit
from tests.servingfiles import greedy_reference, merged_causal, minilm_path

PROMPTS = [
    "hello world",
    "the quick brown fox jumps",
    "serving many adapters",
    "fmforge keeps every version of the weights in its ledger",
    "a",
    "tiny language model",
]
MODELS = ["tiny", "ad0", "ad1", "ad2"]


def references(files: TinyFiles, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    out = {"tiny": merged_causal(files.base, None, dtype)}
    for i, path in enumerate(files.adapters):
        out[f"ad{i}"] = merged_causal(files.base, path, dtype)
    return out


def test_a_mixed_batch_equals_each_adapter_merged_alone(
    tiny_deployment: Deployment, tiny_files: TinyFiles
) -> None:
    dep = tiny_deployment
    assert dep.engine is not None
    assert dep.base is not None
    tokenizer = dep.base.tokenizer
    cases = [(MODELS[i % 4], tokenizer(p)["input_ids"]) for i, p in enumerate(PROMPTS * 2)]
    greedy = GenerationParams(max_tokens=10, temperature=0)
    with dep.engine.scheduler.cond:  # the engine waits: every request joins one batch
        jobs = [submit(dep, model, [ids], params=greedy) for model, ids in cases]
    refs = references(tiny_files, torch.float64)
    outputs = {}
    for (model, ids), job in zip(cases, jobs, strict=True):
        job.wait()
        assert job.end[:2] == ("done", "length"), job.end
        expected = greedy_reference(refs[model], ids, 10)
        assert job.end[3] == 10
        assert job.text == tokenizer.decode(expected, skip_special_tokens=True), model
        outputs.setdefault(tuple(ids), set()).add(job.text)
    assert dep.metrics.count("batch_size") >= 1
    # the adapters do change the answers (a test that could not fail otherwise)
    assert any(len(texts) > 1 for texts in outputs.values())


def test_requests_join_and_leave_a_running_batch(
    tiny_deployment: Deployment, tiny_files: TinyFiles
) -> None:
    """Staggered arrivals and lengths: rows join mid-generation and leave early."""
    dep = tiny_deployment
    assert dep.base is not None
    tokenizer = dep.base.tokenizer
    refs = references(tiny_files, torch.float64)
    jobs = []
    for i, prompt in enumerate(PROMPTS):
        model = MODELS[(i + 1) % 4]
        ids = tokenizer(prompt)["input_ids"]
        new = 3 + 5 * (i % 3)
        jobs.append((model, ids, new, submit(dep, model, [ids], params=GenerationParams(new, 0))))
        time.sleep(0.01)
    for model, ids, new, job in jobs:
        job.wait()
        expected = greedy_reference(refs[model], ids, new)
        assert job.text == tokenizer.decode(expected, skip_special_tokens=True), (model, new)


def test_float32_mixed_batch_matches_merged_models(
    tiny_repo: Repository, tiny_files: TinyFiles
) -> None:
    """The serving dtype of CPU deployments: the same greedy tokens as merged copies."""
    dep = Deployment(tiny_repo.root, "tiny", ["ad1"], ServingConfig(dtype="float32"))
    dep.start()
    try:
        assert dep.engine is not None
        assert dep.base is not None
        tokenizer = dep.base.tokenizer
        cases = [(MODELS[i % 4], tokenizer(p)["input_ids"]) for i, p in enumerate(PROMPTS)]
        with dep.engine.scheduler.cond:
            jobs = [submit(dep, m, [ids], params=GenerationParams(8, 0)) for m, ids in cases]
        refs = references(tiny_files, torch.float32)
        for (model, ids), job in zip(cases, jobs, strict=True):
            expected = greedy_reference(refs[model], ids, 8)
            assert job.wait().text == tokenizer.decode(expected, skip_special_tokens=True)
    finally:
        dep.stop()


def test_sampling_is_reproducible_with_a_seed_and_stops_at_a_stop_string(
    tiny_deployment: Deployment,
) -> None:
    dep = tiny_deployment
    assert dep.base is not None
    ids = dep.base.tokenizer("hello world")["input_ids"]
    params = GenerationParams(max_tokens=12, temperature=0.9, top_p=0.9, top_k=50, seed=7)
    first = submit(dep, "ad1", [ids], params=params).wait().text
    second = submit(dep, "ad1", [ids], params=params).wait().text
    assert first == second
    other = submit(dep, "ad1", [ids], params=GenerationParams(12, 0.9, seed=8)).wait().text
    greedy = submit(dep, "ad1", [ids], params=GenerationParams(12, 0)).wait().text
    assert len({first, other, greedy}) > 1
    stop = greedy[3:5]
    stopped = submit(dep, "ad1", [ids], params=GenerationParams(12, 0, stop=(stop,))).wait()
    assert stopped.end[1] == "stop"
    assert stopped.text == greedy[: greedy.index(stop)]


@pytest.fixture
def minilm_deployment(repo: Repository, classifier_files: tuple[Path, ...]) -> Iterator[Deployment]:
    commit_model(repo, "minilm", minilm_path(), "base")
    for path in classifier_files:
        commit_model(repo, path.name, path, "classifier", base="minilm@main")
    dep = Deployment(repo.root, "minilm", ["sentiment"], ServingConfig(dtype="float64"))
    dep.start()
    yield dep
    dep.stop()


@pytest.mark.slow
def test_minilm_classification_adapters_in_one_batch_equal_merged_models(
    minilm_deployment: Deployment, classifier_files: tuple[Path, ...]
) -> None:
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForSequenceClassification

    dep = minilm_deployment
    assert dep.engine is not None
    assert dep.base is not None
    tokenizer = dep.base.tokenizer
    texts = ["a great film", "the match ended in a draw", "new chips are fast", "so sad"]
    inputs = [tokenizer(t)["input_ids"] for t in texts]
    with dep.engine.scheduler.cond:
        jobs = {name: submit(dep, name, inputs, kind="classify") for name in ("sentiment", "topic")}
        embedded = submit(dep, "minilm", inputs, kind="embed")
    for path in classifier_files:
        labels = 3 if path.name == "sentiment" else 4
        model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=labels)
        merged = PeftModel.from_pretrained(model, path).merge_and_unload().double().eval()
        values = jobs[path.name].wait().end[1]
        for text, (names, probs) in zip(texts, values, strict=True):
            with torch.no_grad():
                logits = merged(**tokenizer(text, return_tensors="pt")).logits[0]
            expected = torch.softmax(logits, -1)
            assert torch.allclose(torch.tensor(probs, dtype=torch.float64), expected, atol=1e-9)
            assert len(names) == labels
    base = AutoModel.from_pretrained(minilm_path()).double().eval()
    vectors = embedded.wait().end[1]
    for text, vector in zip(texts, vectors, strict=True):
        encoded = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = base(**encoded).last_hidden_state[0]
        expected = torch.nn.functional.normalize(hidden.mean(0), dim=-1).float()
        assert torch.allclose(torch.tensor(vector), expected, atol=1e-6)


def test_an_adapter_committed_later_loads_on_its_first_request(
    tiny_deployment: Deployment, tiny_repo: Repository, tiny_files: TinyFiles
) -> None:
    dep = tiny_deployment
    assert dep.cache is not None
    commit_model(tiny_repo, "late", tiny_files.adapters[2], "late", base="tiny@main")
    assert dep.base is not None
    ids = dep.base.tokenizer("hello")["input_ids"]
    late = submit(dep, "late", [ids], params=GenerationParams(6, 0)).wait().text
    assert late == submit(dep, "ad2", [ids], params=GenerationParams(6, 0)).wait().text
    spec = dep.resolve_now("late").spec
    assert spec is not None
    assert spec.content == dep.resolve_now("ad2").content  # same weights, one cache entry
