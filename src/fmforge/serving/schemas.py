"""The request bodies of the OpenAI-compatible routes, as pydantic models.

Fields the official clients send and fmforge does not act on (``user``, ``metadata``...) are
accepted and ignored; fields whose other values would change the answer (``n`` above 1,
``echo``, ``logprobs``, penalties) are refused by name rather than silently ignored.
``priority`` is fmforge's extension (as vLLM's): higher goes first.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fmforge.errors import InvalidRequest

Prompt = str | list[str] | list[int] | list[list[int]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=1024)]


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(_Body):
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: Any = None
    priority: int = 0
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says

    def check_supported(self) -> None:
        if self.n not in (None, 1):
            raise _field("n", f"n={self.n} is not served: send one request per completion")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise _field(name, f"{name} is not served (only 0)")
        if self.logprobs not in (None, False, 0):
            raise _field("logprobs", "logprobs are not served")

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 16:
            raise _field("stop", "at most 16 stop sequences")
        return tuple(s for s in stops if s)


class CompletionRequest(_Sampling):
    prompt: Prompt
    max_tokens: Annotated[int, Field(ge=1)] | None = 16
    echo: bool = False

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not served")
        return value


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise _field("messages", f"content parts of type {part.type!r} are not served")
            parts.append(part.text)
        return "".join(parts)


class ChatRequest(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None


class EmbeddingRequest(_Body):
    input: Prompt
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    priority: int = 0


class ClassifyRequest(_Body):
    input: str | list[str]
    priority: int = 0


def _field(param: str, message: str) -> InvalidRequest:
    error = InvalidRequest(message)
    error.param = param  # type: ignore[attr-defined]  # OpenAI's error object names it
    return error
