"""``fmforge serve``'s HTTP API: OpenAI-compatible routes over a ``Deployment``.

``/v1/completions`` and ``/v1/chat/completions`` (JSON, or Server-Sent Events with
``"stream": true``), ``/v1/embeddings`` and ``/v1/classify`` take ``model``: the base
(``NAME`` or ``NAME@REF`` as served) or an adapter ``NAME@REF`` (``NAME`` alone: the reference
the deployment declares for it, else ``main``). ``/v1/models`` lists the base and the adapters
held, each with its commit and cache tier (``device``, ``host``, ``disk``, ``registry``) so a
load balancer can route by adapter affinity; ``/health`` and ``/metrics`` (Prometheus) are for
the orchestrator.

Every answer names the version that produced it: ``system_fingerprint`` is ``fmforge-`` and
the commit's first 12 characters, and the header ``X-Fmforge-Commit`` the whole commit id.
Errors are OpenAI's error object (``server.errors.install_openai``); a client that goes away
cancels its request at the next token.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from fmforge.errors import BackendUnavailable, FmforgeError, InvalidRequest, PromptTooLong
from fmforge.server.errors import openai_error_body, openai_error_response
from fmforge.serving.deployment import Deployment, Target
from fmforge.serving.engine import GenerationParams, Work
from fmforge.serving.schemas import (
    ChatRequest,
    ClassifyRequest,
    CompletionRequest,
    EmbeddingRequest,
)

router = APIRouter()


def deployment_of(request: Request) -> Deployment:
    dep: Deployment = request.app.state.deployment
    if dep.engine is None or not dep.engine.alive:
        raise BackendUnavailable("the server is starting or its engine stopped; try again")
    return dep


@contextmanager
def naming(param: str) -> Iterator[None]:
    """Errors raised inside name ``param`` in OpenAI's error object."""
    try:
        yield
    except FmforgeError as error:
        if getattr(error, "param", None) is None:
            error.param = param  # type: ignore[attr-defined]
        raise


def _fingerprint(dep: Deployment, target: Target) -> tuple[str, str]:
    commit = target.spec.commit if target.spec is not None else dep.base_commit
    return commit, f"fmforge-{commit[:12]}"


# ---- turning a request into engine work -------------------------------------------------------


def _tokens(dep: Deployment, prompt: Any, param: str) -> list[list[int]]:
    """Token ids of each prompt (text, or ids checked against the vocabulary)."""
    assert dep.base is not None
    tokenizer = dep.base.tokenizer
    items = (
        prompt
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int)
        else [prompt]
    )
    out = []
    vocab = len(tokenizer)
    for item in items:
        ids = tokenizer(item)["input_ids"] if isinstance(item, str) else list(item)
        if not ids:
            raise InvalidRequest(f"{param} is empty")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise InvalidRequest(
                f"{param} has token id {bad[0]}, outside the vocabulary (0..{vocab - 1})"
            )
        out.append(ids)
    if not out:
        raise InvalidRequest(f"{param} is empty")
    return out


def _check_length(dep: Deployment, ids: list[int], new_tokens: int, param: str) -> None:
    assert dep.base is not None
    context = dep.base.context_len
    limit = min(context, dep.config.max_prompt_tokens or context)
    if len(ids) > limit or len(ids) + new_tokens > context:
        raise PromptTooLong(
            f"the {param} has {len(ids)} tokens and {new_tokens} more are asked for; this "
            f"deployment serves {context} tokens of context"
            + (f" and prompts up to {limit}" if limit < context else ""),
            limit,
        )


async def _submit(
    dep: Deployment, target: Target, kind: str, inputs: list[list[int]],
    params: GenerationParams, priority: int,
) -> tuple[Work, asyncio.Queue[tuple[Any, ...]]]:  # fmt: skip
    assert dep.cache is not None
    assert dep.engine is not None
    queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def sink(event: tuple[Any, ...]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    dep.cache.hold(target.content)
    try:
        if target.spec is not None:
            with naming("model"):  # an adapter that cannot be loaded
                await asyncio.wrap_future(dep.cache.ensure(target.spec))
        work = Work(kind, inputs, target.content, target.label, sink, params)
        dep.engine.submit(work, priority=priority, timeout_s=dep.config.queue_timeout_s)
    except BaseException:
        dep.cache.release(target.content)
        raise
    return work, queue


async def _collect(
    request: Request, dep: Deployment, work: Work, queue: asyncio.Queue[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """Every event of ``work`` up to its end; the client going away cancels it."""
    assert dep.engine is not None
    events = []
    while True:
        try:
            event = await asyncio.wait_for(queue.get(), timeout=0.5)
        except TimeoutError:
            if await request.is_disconnected():
                dep.engine.cancel(work)
                raise asyncio.CancelledError from None
            continue
        if event[0] == "error":
            raise event[1]
        events.append(event)
        if event[0] in ("done", "result"):
            return events


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _generation(body: CompletionRequest | ChatRequest, max_tokens: int) -> GenerationParams:
    body.check_supported()
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        seed=body.seed,
        stop=body.stops(),
        ignore_eos=body.ignore_eos,
    )


def _causal(dep: Deployment, route: str) -> None:
    assert dep.base is not None
    if dep.base.kind != "causal":
        raise InvalidRequest(
            f"{route} needs a causal language model; this deployment serves an encoder "
            "(use /v1/embeddings or /v1/classify)"
        )


# ---- routes -------------------------------------------------------------------------------------


@router.post("/v1/completions")
async def completions(request: Request, body: CompletionRequest) -> Response:
    dep = deployment_of(request)
    _causal(dep, "/v1/completions")
    with naming("model"):
        target = await dep.resolve(body.model)
    with naming("prompt"):
        prompts = _tokens(dep, body.prompt, "prompt")
        if len(prompts) != 1:
            raise InvalidRequest("one prompt per request (send the others separately)")
        params = _generation(body, body.max_tokens or 16)
        _check_length(dep, prompts[0], params.max_tokens, "prompt")
    return await _answer(request, dep, target, body, prompts, params, chat=False)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, body: ChatRequest) -> Response:
    dep = deployment_of(request)
    _causal(dep, "/v1/chat/completions")
    assert dep.base is not None
    with naming("model"):
        target = await dep.resolve(body.model)
    with naming("messages"):
        if not dep.base.chat_template:
            raise InvalidRequest("this model's tokenizer has no chat template: use /v1/completions")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        ids = dep.base.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
        room = dep.base.context_len - len(ids)
        params = _generation(body, body.max_completion_tokens or body.max_tokens or max(room, 1))
        _check_length(dep, ids, params.max_tokens, "messages")
    return await _answer(request, dep, target, body, [ids], params, chat=True)


async def _answer(
    request: Request, dep: Deployment, target: Target, body: CompletionRequest | ChatRequest,
    prompts: list[list[int]], params: GenerationParams, *, chat: bool,
) -> Response:  # fmt: skip
    work, queue = await _submit(dep, target, "generate", prompts, params, body.priority)
    commit, fingerprint = _fingerprint(dep, target)
    head = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()), "model": body.model, "system_fingerprint": fingerprint,
    }  # fmt: skip
    headers = {"X-Fmforge-Commit": commit}
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _stream(dep, work, queue, head, chat=chat, usage=usage)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    events = await _collect(request, dep, work, queue)
    text = "".join(e[1] for e in events if e[0] == "text")
    _, finish, prompt_tokens, completion_tokens = events[-1]
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    usage_body = {
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }  # fmt: skip
    return JSONResponse({**head, "choices": [choice], "usage": usage_body}, headers=headers)


async def _stream(
    dep: Deployment, work: Work, queue: asyncio.Queue[tuple[Any, ...]], head: dict[str, Any],
    *, chat: bool, usage: bool,
) -> AsyncIterator[bytes]:  # fmt: skip
    assert dep.engine is not None
    head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
    finished = False

    def chunk(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": text or ""}
        choice.update(finish_reason=finish, logprobs=None)
        return {**head, "choices": [choice]}

    try:
        if chat:
            yield _sse(chunk(None, None, first=True))
        while True:
            event = await queue.get()
            if event[0] == "text":
                yield _sse(chunk(event[1], None))
            elif event[0] == "error":
                finished = True
                yield _sse(openai_error_body(event[1]))
                return
            elif event[0] == "done":
                finished = True
                _, finish, prompt_tokens, completion_tokens = event
                yield _sse(chunk(None, finish))
                if usage:
                    yield _sse({**head, "choices": [], "usage": {
                        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    }})  # fmt: skip
                yield b"data: [DONE]\n\n"
                return
    finally:
        if not finished:  # the client went away mid-stream
            dep.engine.cancel(work)


@router.post("/v1/embeddings")
async def embeddings(request: Request, body: EmbeddingRequest) -> Response:
    dep = deployment_of(request)
    with naming("model"):
        target = await dep.resolve(body.model)
    with naming("input"):
        if body.dimensions is not None:
            raise InvalidRequest("dimensions is not served (the model's own size only)")
        inputs = _tokens(dep, body.input, "input")
        for ids in inputs:
            _check_length(dep, ids, 0, "input")
    work, queue = await _submit(dep, target, "embed", inputs, GenerationParams(), body.priority)
    _, values, tokens = (await _collect(request, dep, work, queue))[-1]
    data = []
    for index, vector in enumerate(values):
        encoded: Any = vector
        if body.encoding_format == "base64":
            encoded = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    commit, _ = _fingerprint(dep, target)
    return JSONResponse(
        {"object": "list", "data": data, "model": body.model,
         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
        headers={"X-Fmforge-Commit": commit},
    )  # fmt: skip


@router.post("/v1/classify")
async def classify(request: Request, body: ClassifyRequest) -> Response:
    dep = deployment_of(request)
    assert dep.base is not None
    with naming("model"):
        target = await dep.resolve(body.model)
        if dep.base.kind != "encoder":
            raise InvalidRequest("/v1/classify needs an encoder base with classification adapters")
        if target.spec is None:
            raise InvalidRequest(f"{body.model} is the base model: name a classification adapter")
        config = target.spec.config
        if config.get("task_type") != "SEQ_CLS" and not config.get("modules_to_save"):
            raise InvalidRequest(f"{target.spec.short} is not a classification adapter")
    with naming("input"):
        inputs = _tokens(dep, body.input, "input")
        for ids in inputs:
            _check_length(dep, ids, 0, "input")
    work, queue = await _submit(dep, target, "classify", inputs, GenerationParams(), body.priority)
    _, values, tokens = (await _collect(request, dep, work, queue))[-1]
    data = []
    for index, (labels, probs) in enumerate(values):
        best = max(range(len(probs)), key=probs.__getitem__)
        data.append(
            {"index": index, "label": labels[best], "probs": probs, "labels": labels,
             "num_classes": len(labels)}
        )  # fmt: skip
    commit, _ = _fingerprint(dep, target)
    return JSONResponse(
        {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
         "model": body.model, "data": data,
         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
        headers={"X-Fmforge-Commit": commit},
    )  # fmt: skip


@router.get("/v1/models")
async def models(request: Request) -> Response:
    dep = deployment_of(request)
    return JSONResponse(
        {"object": "list", "deployment": dep.name, "replica": dep.replica, "data": model_cards(dep)}
    )


def model_cards(dep: Deployment) -> list[dict[str, Any]]:
    assert dep.cache is not None
    cards = [{
        "id": dep.base_text, "object": "model", "created": 0, "owned_by": "fmforge",
        "root": dep.base_commit, "parent": None, "kind": "base", "commit": dep.base_commit,
        "tier": "device",
    }]  # fmt: skip
    named = dep.held_names()
    listed = set()
    declared = {f"{m}@{r}" for m, r in dep.declared}
    for name, spec in sorted(named.items()):
        listed.add(spec.content)
        cards.append(_adapter_card(dep, name, spec, name in declared))
    for content, spec in sorted(dep.cache.specs.items()):
        if content not in listed:
            cards.append(_adapter_card(dep, spec.short, spec, False))
    return cards


def _adapter_card(dep: Deployment, name: str, spec: Any, declared: bool) -> dict[str, Any]:
    assert dep.cache is not None
    return {
        "id": name, "object": "model", "created": 0, "owned_by": "fmforge", "root": spec.commit,
        "parent": dep.base_text, "kind": "adapter", "commit": spec.commit,
        "content": spec.content, "tier": dep.cache.tier(spec.content),
        "pinned": spec.content in dep.cache.pinned, "declared": declared,
    }  # fmt: skip


@router.get("/health")
async def health(request: Request) -> Response:
    dep: Deployment = request.app.state.deployment
    alive = dep.engine is not None and dep.engine.alive
    body = {
        "status": "ok" if alive else "unavailable", "deployment": dep.name,
        "replica": dep.replica, "base": dep.base_text,
        "running": len(dep.engine.rows) if dep.engine else 0,
        "waiting": dep.engine.scheduler.waiting if dep.engine else 0,
    }  # fmt: skip
    return JSONResponse(body, status_code=200 if alive else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    dep: Deployment = request.app.state.deployment
    return PlainTextResponse(
        dep.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


# ---- the app ----------------------------------------------------------------------------------


def _access_repository(deployment: Deployment, opened: list[Any]) -> Callable[[Any], Any]:
    """The repository requests are decided in (opened on the first request, into
    ``opened``)."""
    lock = threading.Lock()

    def repository(scope: Any) -> Any:
        if not opened:
            from fmforge.repository import Repository

            with lock:
                if not opened:
                    opened.append(Repository.open(deployment.root))
        return opened[0]

    return repository


def create_serving_app(
    deployment: Deployment, *, bind_host: str | None = None, manage: bool = True
) -> FastAPI:
    """The app over ``deployment``; ``manage``: start it with the app and stop it after."""
    from fmforge.access.http import SERVING_OPEN, serving_routes
    from fmforge.repository import DIRNAME
    from fmforge.server import errors
    from fmforge.server.guards import Limits, RequestGuard, allowed_hosts
    from fmforge.server.identity import PrincipalMiddleware
    from fmforge.settings import load_settings

    settings = load_settings(deployment.root / DIRNAME / "config.toml")
    access_repos: list[Any] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage:
            await asyncio.get_running_loop().run_in_executor(None, deployment.start)
        try:
            yield
        finally:
            if manage:
                await asyncio.get_running_loop().run_in_executor(None, deployment.stop)
            for repo in access_repos:
                repo.close()

    app = FastAPI(title="fmforge serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.deployment = deployment
    app.include_router(router)
    app.add_middleware(
        PrincipalMiddleware, repository=_access_repository(deployment, access_repos),
        table=serving_routes(deployment.parse_model), open_paths=frozenset(SERVING_OPEN),
        render=openai_error_response, purpose=deployment.config.purpose,
    )  # fmt: skip
    app.add_middleware(
        RequestGuard, hosts=allowed_hosts(settings, bind_host),
        limits=Limits.from_settings(settings), render=openai_error_response,
    )  # fmt: skip
    errors.install_openai(app)
    return app
