"""Submitting work to a running deployment from a test thread, and waiting for its end."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from fmforge.serving.deployment import Deployment
from fmforge.serving.engine import GenerationParams, Work


@dataclass
class Job:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    work: Work | None = None

    def sink(self, event: tuple[Any, ...]) -> None:
        self.events.append(event)
        if event[0] in ("done", "error", "result"):
            self.done.set()

    def wait(self, timeout: float = 60) -> Job:
        assert self.done.wait(timeout), "the engine did not finish the request"
        return self

    @property
    def text(self) -> str:
        return "".join(e[1] for e in self.events if e[0] == "text")

    @property
    def end(self) -> tuple[Any, ...]:
        return self.events[-1]


def submit(
    dep: Deployment,
    model: str,
    inputs: list[list[int]],
    *,
    kind: str = "generate",
    params: GenerationParams | None = None,
    priority: int = 0,
) -> Job:
    assert dep.cache is not None
    assert dep.engine is not None
    target = dep.resolve_now(model)
    job = Job()
    dep.cache.hold(target.content)
    if target.spec is not None:
        dep.cache.ensure(target.spec).result()
    job.work = Work(
        kind, inputs, target.content, target.label, job.sink, params or GenerationParams()
    )
    dep.engine.submit(job.work, priority=priority)
    return job
