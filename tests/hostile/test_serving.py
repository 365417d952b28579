"""Hostile requests to `fmforge serve`: each is refused with a 4xx OpenAI error object in one
line naming the problem, the repository is unchanged, and the server keeps answering everyone
else (a good request right after every bad one)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fmforge.models import commit_model
from fmforge.repository import Repository
from fmforge.serving.api import create_serving_app
from fmforge.serving.deployment import Deployment, ServingConfig
from fmforge.serving.engine import GenerationParams
from tests.hostile.harness import cli_refused, openai_refused, unchanged
from tests.integration.serving.helpers import submit
from tests.servingfiles import write_lora, write_tiny_llama

JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Served:
    client: TestClient
    root: Path


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    root = tmp_path_factory.mktemp("hostile-serving")
    base = write_tiny_llama(root / "base")
    other = write_tiny_llama(root / "other", hidden=32)
    return (
        base,
        write_lora(base, root / "lora", seed=1),
        other,
        write_lora(other, root / "x", seed=2),
    )


@pytest.fixture
def served(repo: Repository, model_files: tuple[Path, Path, Path, Path]) -> Iterator[Served]:
    base, lora, other, other_lora = model_files
    commit_model(repo, "tiny", base, "base")
    commit_model(repo, "good", lora, "adapter", base="tiny@main")
    commit_model(repo, "other", other, "another base")
    commit_model(repo, "foreign", other_lora, "adapter of another base", base="other@main")
    commit_model(repo, "unrecorded", other_lora, "no base recorded")
    config = ServingConfig(flush_s=3600, max_prompt_tokens=64)
    dep = Deployment(repo.root, "tiny@main", ["good"], config)
    with TestClient(create_serving_app(dep), base_url="http://127.0.0.1") as client:
        yield Served(client, repo.root)


def completion(model: str = "good", **fields: object) -> dict[str, object]:
    return {"model": model, "prompt": "hello", "max_tokens": 2, **fields}


# (route, body as bytes or JSON, status, words the message contains, param)
CASES = {
    "unknown adapter": ("/v1/completions", completion("nope"), 404, "no model named", "model"),
    "unknown ref": ("/v1/completions", completion("good@v9"), 404, "no branch, tag", "model"),
    "bad model name": ("/v1/completions", completion("../x"), 400, "", "model"),
    "adapter of another base": (
        "/v1/completions", completion("foreign"), 400, "adapts other@", "model",
    ),
    "adapter shaped for another base": (
        "/v1/completions", completion("unrecorded"), 400, "another base", "model",
    ),
    "another version of the base": (
        "/v1/completions", completion("other"), 400, "", "model",
    ),
    "a full model as adapter": ("/v1/completions", completion("other@main"), 400, "", "model"),
    "over-long prompt": (
        "/v1/completions", completion(prompt="hello " * 100), 400, "tokens", "prompt",
    ),
    "prompt plus max_tokens over the context": (
        "/v1/completions", completion(prompt="hi", max_tokens=1000), 400, "context", "prompt",
    ),
    "token id outside the vocabulary": (
        "/v1/completions", completion(prompt=[1, 99999]), 400, "vocabulary", "prompt",
    ),
    "empty prompt": ("/v1/completions", completion(prompt=""), 400, "empty", "prompt"),
    "malformed JSON": (
        "/v1/completions", b'{"model": "good", "prompt": ', 400, "not valid JSON", None,
    ),
    "body not an object": ("/v1/completions", b"[1, 2]", 400, "", None),
    "missing model": ("/v1/completions", {"prompt": "x"}, 400, "model", "model"),
    "max_tokens zero": (
        "/v1/completions", completion(max_tokens=0), 400, "max_tokens", "max_tokens",
    ),
    "temperature out of range": (
        "/v1/completions", completion(temperature=9), 400, "temperature", "temperature",
    ),
    "n above one": ("/v1/completions", completion(n=3), 400, "n=3", "n"),
    "echo": ("/v1/completions", completion(echo=True), 400, "echo", "echo"),
    "penalties": ("/v1/completions", completion(presence_penalty=1.0), 400, "presence", None),
    "chat without messages": (
        "/v1/chat/completions", {"model": "good", "messages": []}, 400, "", "messages",
    ),
    "chat with an unknown role": (
        "/v1/chat/completions", {"model": "good", "messages": [{"role": "x", "content": "a"}]},
        400, "", "messages[0].role",
    ),
    "chat with an image part": (
        "/v1/chat/completions",
        {"model": "good", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400, "image_url", "messages",
    ),
    "classify on a causal base": (
        "/v1/classify", {"model": "good", "input": "x"}, 400, "encoder", "model",
    ),
    "embedding dimensions": (
        "/v1/embeddings", {"model": "good", "input": "x", "dimensions": 8}, 400, "dimensions",
        "input",
    ),
    "no such route": ("/v1/nothing", {}, 404, "no route", None),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_and_the_server_keeps_serving(served: Served, case: str) -> None:
    route, body, status, words, param = CASES[case]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with unchanged(served.root):
        answer = served.client.post(route, content=data, headers=JSON)
        error = openai_refused(answer, status, words or None)
    if param is not None:
        assert error["param"] == param, error
    ok = served.client.post("/v1/completions", json=completion())
    assert ok.status_code == 200, ok.text


def test_a_full_queue_answers_429_with_retry_after(
    repo: Repository, model_files: tuple[Path, Path, Path, Path]
) -> None:
    base, lora, *_ = model_files
    commit_model(repo, "tiny", base, "base")
    commit_model(repo, "good", lora, "adapter", base="tiny@main")
    dep = Deployment(repo.root, "tiny", [], ServingConfig(max_queued=1, max_batch=1))
    with TestClient(create_serving_app(dep), base_url="http://127.0.0.1") as client:
        long = GenerationParams(max_tokens=250, temperature=0, ignore_eos=True)
        running = submit(dep, "good", [[5, 6]], params=long)  # holds the one batch row
        assert dep.engine is not None
        deadline = time.monotonic() + 30
        while dep.engine.scheduler.waiting and time.monotonic() < deadline:
            time.sleep(0.01)  # until the engine has admitted it (a busy machine is slow to)
        waiting = submit(dep, "good", [[5, 6]])  # fills the queue
        answer = client.post("/v1/completions", json=completion())
        error = openai_refused(answer, 429, "waiting")
        assert error["type"] == "rate_limit_error"
        assert int(answer.headers["Retry-After"]) >= 1
        running.wait()
        waiting.wait()
        assert client.post("/v1/completions", json=completion()).status_code == 200


def test_a_foreign_host_is_refused_in_the_openai_shape(served: Served) -> None:
    answer = served.client.post(
        "/v1/completions", json=completion(), headers={"Host": "evil.example"}
    )
    openai_refused(answer, 403, "not served here")


SERVE_CASES = {
    "unknown base": (["serve", "nope@main"], "no model named 'nope'"),
    "unknown ref of the base": (["serve", "tiny@v9"], "no branch, tag or commit 'v9'"),
    "adapter of another base": (["serve", "tiny", "--adapter", "foreign"], "adapts other@"),
    "unknown adapter": (["serve", "tiny", "--adapter", "nope"], "no model named 'nope'"),
    "size that is not a size": (["serve", "tiny", "--host-cache", "lots"], "--host-cache"),
    "batch of zero": (["serve", "tiny", "--max-batch", "0"], "--max-batch must be at least 1"),
    "device without CUDA": (["serve", "tiny", "--device", "cuda:7"], "cuda"),
    "rollback of an unknown deployment": (
        ["deployment", "rollback", "prod", "good@main"], "no deployment named 'prod'",
    ),
    "show an unknown deployment": (["deployment", "show", "prod"], "no deployment named"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SERVE_CASES))
def test_serve_refuses_in_one_line(
    repo: Repository, model_files: tuple[Path, Path, Path, Path], case: str
) -> None:
    base, lora, other, other_lora = model_files
    commit_model(repo, "tiny", base, "base")
    commit_model(repo, "good", lora, "adapter", base="tiny@main")
    commit_model(repo, "other", other, "another base")
    commit_model(repo, "foreign", other_lora, "adapter of another base", base="other@main")
    args, words = SERVE_CASES[case]
    cli_refused(repo.root, *args, contains=words)
