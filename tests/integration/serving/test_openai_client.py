"""The official ``openai`` client against a real ``fmforge serve``: completions, streaming,
concurrent clients, embeddings, errors as the client's exceptions, and a hot reload in the
middle of a stream of requests with no failed request."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from fmforge.models import commit_model, reset_branch
from fmforge.models.refs import ModelRefs
from fmforge.repository import Repository
from fmforge.serving.events import DOMAIN
from tests.integration.serving.conftest import TinyFiles
from tests.integration.serving.server import running_serve


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.mark.slow
def test_the_openai_client_streams_and_serves_concurrent_clients(
    tiny_repo: Repository,
) -> None:
    with running_serve(tiny_repo.root, "tiny@main", "--adapter", "ad0@main") as url:
        api = client(url)
        first = api.completions.create(
            model="ad0", prompt="hello world", max_tokens=6, temperature=0
        )
        assert first.choices[0].finish_reason == "length"
        assert first.usage is not None
        assert first.usage.completion_tokens == 6
        pieces = [
            chunk.choices[0].text
            for chunk in api.completions.create(
                model="ad0", prompt="hello world", max_tokens=6, temperature=0, stream=True
            )
        ]
        assert "".join(pieces) == first.choices[0].text
        chat = api.chat.completions.create(
            model="ad1", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True,
            temperature=0,
        )  # fmt: skip
        assert sum(1 for _ in chat) >= 2

        def ask(i: int) -> str:
            model = ["tiny", "ad0", "ad1", "ad2"][i % 4]
            answer = client(url).completions.create(
                model=model, prompt=f"prompt {i}", max_tokens=5, temperature=0
            )
            return answer.choices[0].text

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(16)))
        assert answers == [ask(i) for i in range(16)]  # concurrent or alone: the same
        vectors = api.embeddings.create(model="ad2", input=["a", "b"])  # base64 on the wire
        assert len(vectors.data) == 2
        assert len(vectors.data[0].embedding) == 64
        with pytest.raises(openai.NotFoundError) as missing:
            api.completions.create(model="nope@main", prompt="x", max_tokens=2)
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as long:
            api.completions.create(model="ad0", prompt="hello " * 300, max_tokens=2)
        assert long.value.code == "prompt_too_long"
        assert long.value.param == "prompt"


@pytest.mark.slow
def test_a_branch_move_reaches_new_requests_with_none_failing(
    tiny_repo: Repository, tiny_files: TinyFiles
) -> None:
    commit_model(tiny_repo, "svc", tiny_files.adapters[0], "v1", base="tiny@main", branch="live")
    commit_model(tiny_repo, "svc", tiny_files.adapters[1], "v2", base="tiny@main", branch="next")
    refs = tiny_repo.view(ModelRefs)
    v1, v2 = refs.resolve("svc", "live"), refs.resolve("svc", "next")
    with running_serve(tiny_repo.root, "tiny@main", "--adapter", "svc@live") as url:
        seen: list[str] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def load() -> None:
            api = client(url)
            while not stop.is_set():
                try:
                    stream = api.completions.create(
                        model="svc@live", prompt="hello", max_tokens=4, temperature=0, stream=True
                    )
                    chunks = list(stream)
                    seen.append(chunks[-1].system_fingerprint or "")
                except BaseException as exc:  # every failure counts
                    failures.append(exc)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(1.5)
        reset_branch(tiny_repo, "svc", "live", v2)  # the move, mid-stream
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and f"fmforge-{v2[:12]}" not in seen[-4:]:
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        assert not failures, failures[:3]
        assert f"fmforge-{v1[:12]}" in seen
        assert seen[-1] == f"fmforge-{v2[:12]}"
        tail = seen[seen.index(f"fmforge-{v2[:12]}") + 8 :]
        assert set(tail) <= {f"fmforge-{v2[:12]}"}  # no stale answer once the move was seen
    events = [e.type for e in tiny_repo.ledger.read_all(1) if e.stream == "deployment/tiny"]
    assert events[0] == "DeploymentStarted"
    assert events[-1] == "DeploymentStopped"
    assert "AdapterLoaded" in events
    assert len(events) < 20  # never one event per request
    assert {t.name for t in DOMAIN.types} >= set(events)
