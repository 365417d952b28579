"""The streaming merge engine: tensor by tensor, a batch of rows at a time.

For each tensor of the base (a ``Job``), the engine reads the same rows of the base and of every
input (``sources``: ``os.pread`` on files, hash-checked tensors from commits), computes the task
vectors in the compute dtype, trims them when the method asks, gathers the conflict statistics,
calls the method's kernel, and hands the merged rows to ``emit`` at once (a file writer's
``pwrite``, or the buffer of a tensor a commit stores as soon as it is complete). Memory holds
one batch of rows per input (``chunk_bytes`` each) and, for a commit, the tensor being built:
never a whole model, and never an input mapped into memory.

A tensor that no input changes (every input's raw hash equals the base's, or no adapter touches
it) is passed through without being read: a commit stores it by hash, at no cost. Rows whose task
vectors are all zero are the base's rows, bit for bit. Whole-tensor statistics take extra passes
over the rows: TIES' top-k threshold (radix selection, ``methods.ties``) and SLERP's angle. A
tensor that fits in one batch is read once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from fmforge.errors import InvalidMerge
from fmforge.merging.adapters import BiasUpdate, LoraUpdate
from fmforge.merging.conflicts import TensorStats
from fmforge.merging.method import MergeMethod, Rows
from fmforge.merging.methods.dare import drop_stream, keep_mask
from fmforge.merging.methods.ties import (
    KeepTopK,
    RadixSelect,
    magnitude_keys,
    threshold_in_memory,
    top_k_count,
)
from fmforge.merging.sources import (
    FLOATS,
    TensorSource,
    row_count,
    row_shape,
    torch_dtype,
)
from fmforge.models.tensorcommit import KnownTensor, safetensors_header
from fmforge.tensors.codec import TensorSpec

if TYPE_CHECKING:
    from fmforge.merging.base import MergeSpec

Emit = Callable[[int, torch.Tensor], None]
CHUNK_BYTES = 512 << 10


@dataclass
class Part:
    """How one input contributes to one tensor: not at all (``zero``), by a tensor of its own
    (``tensor``: a full model's, or an adapter's saved module), or by an update (a LoRA)."""

    kind: Literal["zero", "tensor", "update"]
    source: TensorSource | None = None
    name: str = ""
    update: LoraUpdate | BiasUpdate | None = None


@dataclass
class Job:
    name: str
    spec: TensorSpec  # of the merged tensor
    parts: list[Part]
    fisher: list[tuple[TensorSource, str]] | None = None
    passthrough: str | None = None  # raw hash of the unchanged tensor, when known unread


@dataclass
class Plan:
    method: MergeMethod
    spec: MergeSpec
    base: TensorSource | None
    jobs: list[Job]
    labels: list[str]
    chunk_bytes: int = CHUNK_BYTES


@dataclass
class Outcome:
    """What the engine did, for the report."""

    records: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0
    merged: int = 0


class Engine:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.method = plan.method
        self.spec = plan.spec
        self.dtype = torch.float64 if plan.spec.compute_dtype == "float64" else torch.float32
        weights = [i.weight for i in plan.spec.inputs]
        self.weights = torch.tensor(weights, dtype=self.dtype)
        self.outcome = Outcome()

    # ---- outputs ------------------------------------------------------------------------

    def tensors(self) -> Iterator[tuple[str, Any]]:
        """(name, merged tensor) of every tensor, each complete before the next is read; an
        unchanged one as a ``KnownTensor``."""
        for job in self.plan.jobs:
            if job.passthrough is not None:
                self.outcome.unchanged += 1
                yield job.name, KnownTensor(job.passthrough)
                continue
            out = torch.empty((row_count(job.spec), *row_shape(job.spec)),
                              dtype=torch_dtype(job.spec, job.name))  # fmt: skip

            def emit(start: int, rows: torch.Tensor, out: torch.Tensor = out) -> None:
                out[start : start + rows.shape[0]] = rows

            self.run(job, emit, "full")
            yield job.name, out.reshape(job.spec.shape)

    def deltas(self) -> Iterator[tuple[Job, torch.Tensor | None]]:
        """(job, merged task vector in the compute dtype) of every tensor; None where no
        input changes it."""
        for job in self.plan.jobs:
            if job.passthrough is not None:
                self.outcome.unchanged += 1
                yield job, None
                continue
            out = torch.empty((row_count(job.spec), *row_shape(job.spec)), dtype=self.dtype)

            def emit(start: int, rows: torch.Tensor, out: torch.Tensor = out) -> None:
                out[start : start + rows.shape[0]] = rows

            changed = self.run(job, emit, "delta")
            yield job, out.reshape(job.spec.shape) if changed else None

    def write_file(self, path: str | os.PathLike[str]) -> None:
        """Write the merged model as one safetensors file, each batch of rows written
        (``pwrite``) as soon as it is merged; the file appears complete or not at all."""
        target = Path(path)
        jobs = self.plan.jobs
        header = safetensors_header([(j.name, j.spec, j.spec.nbytes) for j in jobs])
        staging = target.with_name(f".{target.name}.partial")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, len(header).to_bytes(8, "little") + header)
            offset = 8 + len(header)
            for job in jobs:
                per_row = job.spec.nbytes // max(row_count(job.spec), 1)

                def emit(start: int, rows: torch.Tensor, at: int = offset, size: int = per_row
                         ) -> None:  # fmt: skip
                    data = rows.contiguous().reshape(-1).view(torch.uint8).numpy()
                    os.pwrite(fd, data.data, at + start * size)

                self.run(job, emit, "full")
                offset += job.spec.nbytes
            os.ftruncate(fd, offset)
        except BaseException:
            os.close(fd)
            staging.unlink(missing_ok=True)
            raise
        os.close(fd)
        staging.replace(target)

    # ---- one tensor -----------------------------------------------------------------------

    def run(self, job: Job, emit: Emit, want: Literal["full", "delta"]) -> bool:
        """Merge one tensor, emitting its rows; whether any input changes it."""
        try:
            if job.spec.dtype not in FLOATS:
                return self._exact(job, emit, want)
            return self._merge(job, emit, want)
        finally:
            self._release(job)

    def _batches(self, job: Job) -> list[tuple[int, int]]:
        rows = row_count(job.spec)
        per_row = max(math.prod(row_shape(job.spec)), 1) * self.dtype.itemsize
        step = max(1, self.plan.chunk_bytes // per_row)
        return [(s, min(s + step, rows)) for s in range(0, rows, step)] or [(0, 0)]

    def _merge(self, job: Job, emit: Emit, want: Literal["full", "delta"]) -> bool:
        batches = self._batches(job)
        single = len(batches) == 1
        first = self._read(job, *batches[0]) if single else None
        method, spec = self.method, self.spec
        keepers = self._trimming(job, batches, first)
        state = method.scan_state(spec, job.spec.shape)
        for index in range(method.scan_passes(spec)):
            for start, stop in batches:
                rows = (first or self._read(job, start, stop))[0]
                state = method.scan(state, rows, spec, index)
            state = method.scan_finish(state, spec, index)
        stats = TensorStats.of(len(job.parts), job.spec.shape) if self.plan.base else None
        changed = False
        for start, stop in batches:
            rows, deltas, base_native = first or self._read(job, start, stop)
            if keepers is not None:
                assert deltas is not None
                masks = [keeper(delta) for keeper, delta in zip(keepers, deltas, strict=True)]
                rows.keep = torch.stack(masks).to(self.dtype)
            squares = 0.0
            if stats is not None and deltas is not None:
                kept = deltas if rows.keep is None else deltas * rows.keep
                squares = stats.add(deltas, kept, rows.weights, start)
            # a non-zero sum of squares settles it; zero may hide entries too small to square
            zero = deltas is not None and squares == 0 and not bool(deltas.any())
            changed = changed or not zero
            if zero and base_native is not None and deltas is not None:
                out = base_native if want == "full" else torch.zeros_like(deltas[0])
                emit(start, out)
                continue
            merged = method.combine(rows, spec, state)
            emit(start, self._finish(job, merged, rows.base, want))
        if stats is not None and changed:
            self.outcome.records.append(stats.record(job.name, job.spec.shape))
            self.outcome.merged += 1
        elif stats is not None:
            self.outcome.unchanged += 1
        else:
            self.outcome.merged += 1
        return changed or stats is None

    def _finish(
        self, job: Job, merged: torch.Tensor, base: torch.Tensor | None, want: str
    ) -> torch.Tensor:
        dtype = torch_dtype(job.spec, job.name)
        if self.method.space == "delta":
            assert base is not None
            return (base + merged).to(dtype) if want == "full" else merged
        if want == "full":
            return merged.to(dtype)
        assert base is not None
        return merged - base

    def _read(
        self, job: Job, start: int, stop: int
    ) -> tuple[Rows, torch.Tensor | None, torch.Tensor | None]:
        """The rows of the base and of every input: (rows for the kernel, task vectors or
        None without a base, the base's rows as stored). Each input's rows are written into
        one stacked buffer as they are read: one batch of one input is held at a time."""
        dtype, base_source = self.dtype, self.plan.base
        base_native = base_source.rows(job.name, start, stop) if base_source else None
        base = base_native.to(dtype) if base_native is not None else None
        weights_space = self.method.space == "weights"
        shape = (len(job.parts), stop - start, *row_shape(job.spec))
        values = torch.empty(shape, dtype=dtype)
        # in delta space the values are the task vectors; in weight space, kept apart
        deltas = values if not weights_space else None
        if weights_space and base is not None:
            deltas = torch.empty(shape, dtype=dtype)
        for i, part in enumerate(job.parts):
            if part.kind == "zero":
                assert base is not None
                if deltas is not None:
                    deltas[i].zero_()
                if weights_space:
                    values[i].copy_(base)
            elif part.kind == "tensor":
                assert part.source is not None
                full = part.source.rows(part.name, start, stop).to(dtype)
                if weights_space:
                    values[i].copy_(full)
                if deltas is not None and base is not None:
                    torch.sub(full, base, out=deltas[i])
                del full
            else:
                assert part.update is not None
                delta = part.update.rows(start, stop, base)
                if deltas is not None:
                    deltas[i].copy_(delta)
                if weights_space:
                    assert base is not None
                    torch.add(base, delta, out=values[i])
                del delta
        weights = self.weights.reshape((-1,) + (1,) * (values.dim() - 1))
        rows = Rows(base, values, weights)
        if job.fisher is not None:
            fisher = torch.empty(shape, dtype=dtype)
            for i, (source, name) in enumerate(job.fisher):
                fisher[i].copy_(source.rows(name, start, stop))
            rows.extra["fisher"] = fisher
        return rows, (deltas if base is not None else None), base_native

    def _trimming(
        self,
        job: Job,
        batches: list[tuple[int, int]],
        first: tuple[Rows, torch.Tensor | None, torch.Tensor | None] | None,
    ) -> list[Callable[[torch.Tensor], torch.Tensor]] | None:
        """Per input, a function giving the keep mask of its next batch of task vector."""
        trim, density = self.method.trim, self.spec.density
        if trim is None or density >= 1:
            return None
        n = len(job.parts)
        if trim == "random":
            streams = [drop_stream(self.spec.seed, job.name, i) for i in range(n)]
            return [partial(_drop, stream, density) for stream in streams]
        k = top_k_count(density, math.prod(job.spec.shape) if job.spec.shape else 1)
        if first is not None:
            deltas = first[1]
            assert deltas is not None
            thresholds = [threshold_in_memory(magnitude_keys(d), k) for d in deltas]
        else:
            selects = [RadixSelect(k, 8 * self.dtype.itemsize) for _ in range(n)]
            while not all(s.done for s in selects):
                for start, stop in batches:
                    deltas = self._read(job, start, stop)[1]
                    assert deltas is not None
                    for select, delta in zip(selects, deltas, strict=True):
                        if not select.done:
                            select.feed(magnitude_keys(delta))
                for select in selects:
                    if not select.done:
                        select.advance()
            thresholds = [s.result for s in selects if s.result is not None]
        return [partial(_top, KeepTopK(t)) for t in thresholds]

    def _exact(self, job: Job, emit: Emit, want: str) -> bool:
        """Integer and other non-float tensors are not merged: every input must hold the
        base's (or, without a base, the first input's) values."""
        reference = self.plan.base or job.parts[0].source
        assert reference is not None
        for start, stop in self._batches(job):
            expected = reference.rows(job.name, start, stop)
            for part, label in zip(job.parts, self.plan.labels, strict=True):
                if part.kind == "zero":
                    continue
                if (
                    part.kind != "tensor"
                    or part.source is None
                    or not torch.equal(part.source.rows(part.name, start, stop), expected)
                ):
                    raise InvalidMerge(
                        f"{label}: tensor {job.name!r} ({job.spec.dtype}) differs from the "
                        "base's, and only floating-point tensors can be merged"
                    )
            emit(
                start, expected if want == "full" else torch.zeros(expected.shape, dtype=self.dtype)
            )
        self.outcome.unchanged += 1
        return False

    def _release(self, job: Job) -> None:
        if self.plan.base is not None:
            self.plan.base.release(job.name)
        for part in job.parts:
            if part.source is not None:
                part.source.release(part.name)
            if part.update is not None:
                part.update.release()
        for source, name in job.fisher or []:
            source.release(name)


def _drop(stream: Any, density: float, delta: torch.Tensor) -> torch.Tensor:
    return keep_mask(stream, tuple(delta.shape), density)


def _top(keeper: KeepTopK, delta: torch.Tensor) -> torch.Tensor:
    return keeper.mask(magnitude_keys(delta))
