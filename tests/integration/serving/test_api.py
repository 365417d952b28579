"""The OpenAI-compatible routes, in process (``TestClient``): shapes, streaming, residency,
health and metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fmforge.repository import Repository
from fmforge.serving.api import create_serving_app
from fmforge.serving.deployment import Deployment, ServingConfig


@pytest.fixture
def client(tiny_repo: Repository) -> Iterator[TestClient]:
    dep = Deployment(tiny_repo.root, "tiny@main", ["ad0@main"], ServingConfig(flush_s=0.2))
    with TestClient(create_serving_app(dep), base_url="http://127.0.0.1") as test_client:
        yield test_client


def events(body: str) -> list[dict[str, object]]:
    lines = [line for line in body.split("\n\n") if line.strip()]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_a_completion_names_the_version_that_answered(client: TestClient) -> None:
    body = {"model": "ad0", "prompt": "hello world", "max_tokens": 5, "temperature": 0}
    answer = client.post("/v1/completions", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["object"] == "text_completion"
    assert data["model"] == "ad0"
    assert data["usage"]["completion_tokens"] == 5
    assert data["choices"][0]["finish_reason"] == "length"
    commit = answer.headers["X-Fmforge-Commit"]
    assert data["system_fingerprint"] == f"fmforge-{commit[:12]}"
    models = client.get("/v1/models").json()
    (card,) = [c for c in models["data"] if c["id"] == "ad0@main"]
    assert card["commit"] == commit
    assert card["tier"] == "device"
    assert card["pinned"] is True
    assert card["parent"] == "tiny@main"


def test_streaming_gives_the_same_text_as_one_answer(client: TestClient) -> None:
    body = {"model": "ad1@main", "prompt": "the quick", "max_tokens": 8, "temperature": 0}
    whole = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    streamed = client.post(
        "/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = events(streamed.text)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == whole  # type: ignore[index]
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 8  # type: ignore[index]
    assert usage["total_tokens"] == usage["prompt_tokens"] + 8  # type: ignore[index]


def test_chat_completions_use_the_chat_template(client: TestClient) -> None:
    body = {
        "model": "tiny", "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    }  # fmt: skip
    answer = client.post("/v1/chat/completions", json=body).json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["role"] == "assistant"
    streamed = events(client.post("/v1/chat/completions", json={**body, "stream": True}).text)
    assert streamed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # type: ignore[index]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in streamed)  # type: ignore[index,union-attr]
    assert text == answer["choices"][0]["message"]["content"]
    assert streamed[-1]["choices"][0]["finish_reason"] == "length"  # type: ignore[index]


def test_embeddings_of_a_causal_base(client: TestClient) -> None:
    answer = client.post("/v1/embeddings", json={"model": "ad2", "input": ["hello", "world"]})
    data = answer.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    assert len(data[0]["embedding"]) == 64
    assert abs(sum(x * x for x in data[0]["embedding"]) - 1) < 1e-4


def test_health_and_metrics(client: TestClient) -> None:
    body = {"model": "ad0", "prompt": "a", "max_tokens": 2, "ignore_eos": True}
    assert client.post("/v1/completions", json=body).status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["deployment"] == "tiny"
    text = client.get("/metrics").text
    assert 'fmforge_serving_requests_total{model="ad0@main",status="length"} 1' in text
    assert "fmforge_serving_queue_seconds_bucket" in text
    assert "fmforge_serving_batch_size_count" in text
    assert 'fmforge_serving_adapter_resident{adapter="ad0@' in text
    assert 'fmforge_serving_adapter_load_ms_count{tier="host"}' in text


@pytest.mark.slow
def test_classify_and_embed_with_an_encoder_base(
    repo: Repository, classifier_files: tuple[Path, ...]
) -> None:
    from fmforge.models import commit_model
    from tests.servingfiles import minilm_path

    commit_model(repo, "minilm", minilm_path(), "base")
    for path in classifier_files:
        commit_model(repo, path.name, path, "classifier", base="minilm@main")
    dep = Deployment(repo.root, "minilm", ["sentiment"], ServingConfig())
    with TestClient(create_serving_app(dep), base_url="http://127.0.0.1") as client:
        answer = client.post("/v1/classify", json={"model": "topic", "input": ["a", "b c"]})
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        assert [d["index"] for d in data] == [0, 1]
        assert data[0]["labels"] == ["sport", "tech", "art", "food"]
        assert data[0]["label"] in data[0]["labels"]
        assert abs(sum(data[0]["probs"]) - 1) < 1e-5
        vectors = client.post("/v1/embeddings", json={"model": "minilm", "input": "hello"})
        assert len(vectors.json()["data"][0]["embedding"]) == 384
        refused = client.post("/v1/completions", json={"model": "minilm", "prompt": "x"})
        assert refused.status_code == 400
        assert "encoder" in refused.json()["error"]["message"]
        base_classify = client.post("/v1/classify", json={"model": "minilm", "input": "x"})
        assert base_classify.json()["error"]["param"] == "model"
