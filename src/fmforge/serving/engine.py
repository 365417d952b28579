"""The generation loop: continuous batching over a Hugging Face model with batched LoRA.

One thread runs the model. Each turn of its loop:

1. expires requests that waited past their deadline and drops cancelled ones (a client that
   went away), at a token boundary;
2. admits waiting requests while the batch has room (``scheduler.pick``), each given a device
   slot for its adapter (``cache.place``); when a ready adapter finds every slot busy, adapters
   whose slots have been busy longer than the cycle time stop admitting, so their slots free
   up as their sequences end;
3. runs the encoder requests (embeddings, classification) as one forward pass;
4. prefills the joining prompts as one left-padded forward pass, samples their first tokens
   and appends their key/value cache to the running batch's (``batching.BatchKV``);
5. runs one decode step for every running sequence: one forward pass with a token per row,
   each row on its own adapter; samples (greedy, or temperature / top-k / top-p with the
   request's seed), streams the text, and removes the rows that finished.

Text is decoded incrementally (a few tokens of context so word boundaries come out right);
stop strings are found across token boundaries, and text that may begin one is held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fmforge.errors import BackendUnavailable, FmforgeError, QueueTimeout
from fmforge.serving.batching import BatchKV, LoRASlots
from fmforge.serving.cache import AdapterCache
from fmforge.serving.metrics import Metrics
from fmforge.serving.scheduler import Scheduler, Ticket

logger = logging.getLogger(__name__)
Event = tuple[Any, ...]


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass(eq=False)
class Work:
    """One request for the engine. ``sink`` receives, from the engine's thread:
    ``("text", delta)``, ``("done", finish_reason, prompt_tokens, completion_tokens)``,
    ``("result", values, prompt_tokens)`` or ``("error", FmforgeError)``."""

    kind: str  # generate | embed | classify
    inputs: list[list[int]]
    content: str | None  # the adapter's content hash; None for the base
    label: str  # the model as metrics name it
    sink: Callable[[Event], None]
    params: GenerationParams = field(default_factory=GenerationParams)
    slot: int = 0
    ticket: Ticket | None = None
    on_finish: Callable[[Work], None] | None = None


class Detokenizer:
    """Incremental text of generated tokens, decoded with a few tokens of context."""

    def __init__(self, tokenizer: Any, context: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.ids = list(context[-4:])
        self.prefix = 0
        self.read = len(self.ids)

    def add(self, token: int) -> str:
        self.ids.append(token)
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        after = decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return str(after[len(before) :])
        return ""

    def flush(self) -> str:
        """What is held back at the end (an incomplete character comes out as U+FFFD)."""
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        after = decode(self.ids[self.prefix :], skip_special_tokens=True)
        self.prefix = self.read = len(self.ids)
        return str(after[len(before) :])


@dataclass(eq=False)
class _Row:
    work: Work
    pad: int
    pos: int
    detok: Detokenizer
    generator: torch.Generator | None
    prompt_tokens: int
    next_token: int = 0
    generated: int = 0
    text: str = ""
    emitted: int = 0


class Engine:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        kind: str,
        slots: LoRASlots,
        cache: AdapterCache,
        scheduler: Scheduler,
        metrics: Metrics,
        device: torch.device,
        max_batch: int = 64,
        cycle_time_s: float = 2.0,
        context_len: int = 2048,
        eos_ids: Sequence[int] = (),
        threads: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind  # causal | encoder
        self.slots = slots
        self.cache = cache
        self.scheduler = scheduler
        self.metrics = metrics
        self.device = device
        self.max_batch = max_batch
        self.cycle_time_s = cycle_time_s
        self.context_len = context_len
        self.eos_ids = frozenset(eos_ids)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad if pad is not None else (min(eos_ids) if eos_ids else 0))
        self.rows: list[_Row] = []
        self.kv = BatchKV()
        self._ctx_rows = False  # whether the LoRA context describes the running rows
        self._blocked: set[Any] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.alive = False
        self.requests = 0
        self.generated_tokens = 0
        self._keep = _logits_to_keep(model)
        # torch's CPU thread count is per thread: the engine's is ``threads``, else its creator's.
        self._threads = threads or torch.get_num_threads()

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fmforge-engine", daemon=True)
        self.alive = True
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self.scheduler.cond:
            self.scheduler.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        for ticket in self.scheduler.drain():
            self._fail(ticket.payload, BackendUnavailable("the server is stopping"))

    def submit(self, work: Work, *, priority: int = 0, timeout_s: float | None = None) -> Ticket:
        """Queue ``work`` (``Overloaded`` past the queue limits)."""
        cost = sum(len(ids) for ids in work.inputs)
        deadline = time.monotonic() + timeout_s if timeout_s else None
        ticket = Ticket(work.content, cost, priority, deadline, work)
        work.ticket = ticket
        self.scheduler.submit(ticket)
        return ticket

    def cancel(self, work: Work) -> None:
        """The client went away: drop ``work`` now if waiting, else at the next token."""
        if work.ticket is not None and self.scheduler.cancel(work.ticket):
            self._finish(work, "cancelled")

    # ---- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        torch.set_num_threads(self._threads)
        try:
            with torch.inference_mode():
                while not self._stopping.is_set():
                    try:
                        self._step()
                    except Exception as exc:  # a bug or out of memory: fail those involved
                        logger.exception("engine step failed")
                        error = BackendUnavailable(f"the engine failed ({type(exc).__name__})")
                        for row in self.rows:
                            self._fail(row.work, error)
                        self.rows, self.kv, self._ctx_rows = [], BatchKV(), False
        finally:
            self.alive = False

    def _step(self) -> None:
        for ticket in self.scheduler.expire():
            self._fail(
                ticket.payload,
                QueueTimeout(
                    f"the request waited {ticket.waited:.1f} s in the queue, past its timeout"
                ),
            )
        self._drop_cancelled()
        admitted: list[Ticket] = []
        room = self.max_batch - len(self.rows)
        if room > 0 and self.scheduler.waiting:
            admitted, self._blocked = self.scheduler.pick(
                room, ready=self.cache.ready, place=self._place, excluded=self._draining()
            )
        for ticket in admitted:
            self.metrics.observe("queue_seconds", ticket.waited, model=ticket.payload.label)
        encode = [t.payload for t in admitted if t.payload.kind != "generate"]
        prefill = [t.payload for t in admitted if t.payload.kind == "generate"]
        if encode:
            self._encode(encode)
        if prefill:
            self._prefill(prefill)
        if self.rows:
            self._decode()
        elif not admitted:
            self.scheduler.wait(0.05)

    def _place(self, ticket: Ticket) -> bool:
        work: Work = ticket.payload
        slot = self.cache.place(work.content)
        if slot is None:
            return False
        work.slot = slot
        self.cache.use(slot)
        return True

    def _draining(self) -> set[Any]:
        """Adapters that stop admitting so a blocked one gets their slot (the cycle time)."""
        if not self._blocked or not self.cache.slots_full():
            return set()
        now = time.monotonic()
        running = {row.work.content for row in self.rows if row.work.content is not None}
        return {c for c in running if self.cache.busy_for(c, now) >= self.cycle_time_s}

    def _drop_cancelled(self) -> None:
        gone = [
            i for i, row in enumerate(self.rows) if row.work.ticket and row.work.ticket.cancelled
        ]
        if gone:
            for i in gone:
                self._finish(self.rows[i].work, "cancelled")
            self._keep_rows([i for i in range(len(self.rows)) if i not in set(gone)])

    # ---- encoder requests -------------------------------------------------------------------

    def _encode(self, works: list[Work]) -> None:
        rows = [(w, ids) for w in works for ids in w.inputs]
        width = max(len(ids) for _, ids in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (_, tokens) in enumerate(rows):
            ids[i, : len(tokens)] = torch.tensor(tokens)
            mask[i, : len(tokens)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        slots = [w.slot for w, _ in rows]
        self.slots.context.set(slots, self.device)
        self._ctx_rows = False
        self.metrics.observe("batch_size", len(rows))
        if self.kind == "causal":
            out = self.model(
                input_ids=ids, attention_mask=mask, output_hidden_states=True, **self._keep
            )
            hidden, pooled = out.hidden_states[-1], None
        else:
            out = self.model(input_ids=ids, attention_mask=mask)
            hidden, pooled = out.last_hidden_state, getattr(out, "pooler_output", None)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        means = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        embeddings = torch.nn.functional.normalize(means.float(), dim=-1)
        logits = None
        if any(w.kind == "classify" for w in works):
            logits = self.slots.classify(
                pooled if pooled is not None else means, slots, hidden[:, 0]
            ).float()
        start = 0
        for work in works:
            count = len(work.inputs)
            used = sum(len(x) for x in work.inputs)
            if work.kind == "embed":
                values: list[Any] = embeddings[start : start + count].cpu().tolist()
            else:
                assert logits is not None
                labels = self.slots.labels[work.slot]
                part = logits[start : start + count, : len(labels)]
                probs = torch.softmax(part, dim=-1).cpu().tolist()
                values = [(labels, p) for p in probs]
            start += count
            self.metrics.inc("prompt_tokens_total", used, model=work.label)
            work.sink(("result", values, used))
            self._finish(work, "stop")

    # ---- generation -------------------------------------------------------------------------

    def _prefill(self, works: list[Work]) -> None:
        prompts = [w.inputs[0] for w in works]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(works), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(works), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = torch.tensor(prompt)
            mask[i, width - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self.slots.context.set([w.slot for w in works], self.device)
        self._ctx_rows = False
        self.metrics.observe("batch_size", len(works))
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            **self._keep,
        )
        joined = BatchKV(out.past_key_values)
        rows = []
        for work, prompt in zip(works, prompts, strict=True):
            generator = None
            if work.params.seed is not None:
                generator = torch.Generator(device=self.device)
                generator.manual_seed(work.params.seed)
            rows.append(
                _Row(work, width - len(prompt), len(prompt), Detokenizer(self.tokenizer, prompt),
                     generator, len(prompt))
            )  # fmt: skip
            self.metrics.inc("prompt_tokens_total", len(prompt), model=work.label)
        tokens = self._sample(out.logits[:, -1, :], rows)
        keep = [
            i
            for i, (row, token) in enumerate(zip(rows, tokens, strict=True))
            if not self._emit(row, token)
        ]
        if not keep:
            return
        if len(keep) < len(rows):
            joined.select(torch.tensor(keep, device=self.device))
        rows = [rows[i] for i in keep]
        mine, theirs = self.kv.extend(joined)
        for row in self.rows:
            row.pad += mine
        for row in rows:
            row.pad += theirs
        self.rows.extend(rows)
        self._ctx_rows = False

    def _decode(self) -> None:
        rows = self.rows
        if not self._ctx_rows:
            self.slots.context.set([row.work.slot for row in rows], self.device)
            self._ctx_rows = True
        width = self.kv.width
        pads = torch.tensor([row.pad for row in rows], device=self.device)
        mask = (torch.arange(width + 1, device=self.device)[None, :] >= pads[:, None]).long()
        ids = torch.tensor([[row.next_token] for row in rows], device=self.device)
        positions = torch.tensor([[row.pos] for row in rows], device=self.device)
        self.metrics.observe("batch_size", len(rows))
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self.kv.cache,
            use_cache=True,
        )
        self.kv = BatchKV(out.past_key_values)
        for row in rows:
            row.pos += 1
        tokens = self._sample(out.logits[:, -1, :], rows)
        service: dict[Any, int] = {}
        keep = []
        for i, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            service[row.work.content] = service.get(row.work.content, 0) + 1
            if not self._emit(row, token):
                keep.append(i)
        self.scheduler.charge(service)
        if len(keep) < len(rows):
            self._keep_rows(keep)

    def _keep_rows(self, keep: list[int]) -> None:
        self.rows = [self.rows[i] for i in keep]
        self._ctx_rows = False
        if not self.rows:
            self.kv = BatchKV()
            return
        self.kv.select(torch.tensor(keep, device=self.device))
        trim = min(row.pad for row in self.rows)
        if trim:
            self.kv.trim(trim)
            for row in self.rows:
                row.pad -= trim

    def _sample(self, logits: torch.Tensor, rows: Sequence[_Row]) -> list[int]:
        chosen: list[int] = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            params = row.work.params
            if params.temperature <= 0:
                continue
            scores = logits[i].float() / params.temperature
            if params.top_k > 0:
                kth = torch.topk(scores, min(params.top_k, scores.shape[-1])).values[-1]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            if params.top_p < 1.0:
                ordered, order = torch.sort(scores, descending=True)
                cumulative = torch.softmax(ordered, dim=-1).cumsum(-1)
                drop = cumulative - torch.softmax(ordered, dim=-1) >= params.top_p
                scores = scores.scatter(0, order[drop], float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            chosen[i] = int(torch.multinomial(probs, 1, generator=row.generator).item())
        return chosen

    def _emit(self, row: _Row, token: int) -> bool:
        """Record ``token`` for ``row``, stream its text; True when the row finished."""
        work, params = row.work, row.work.params
        row.generated += 1
        row.next_token = token
        self.generated_tokens += 1
        self.metrics.inc("generated_tokens_total", 1, model=work.label)
        finish: str | None = None
        hit = False
        if token in self.eos_ids and not params.ignore_eos:
            finish = "stop"
        else:
            row.text += row.detok.add(token)
            if params.stop:
                start = max(0, row.emitted - max(len(s) for s in params.stop))
                hits = [i for i in (row.text.find(s, start) for s in params.stop) if i >= 0]
                if hits:
                    row.text = row.text[: min(hits)]
                    finish, hit = "stop", True
        if finish is None and (row.generated >= params.max_tokens or row.pos >= self.context_len):
            finish = "length"
        if finish is not None and not hit:
            row.text += row.detok.flush()
        hold = 0 if finish or not params.stop else max(len(s) for s in params.stop) - 1
        upto = len(row.text) - hold
        if upto > row.emitted:
            work.sink(("text", row.text[row.emitted : upto]))
            row.emitted = upto
        if finish is not None:
            work.sink(("done", finish, row.prompt_tokens, row.generated))
            self._finish(work, finish)
            return True
        return False

    def _finish(self, work: Work, status: str) -> None:
        self.requests += 1
        self.metrics.inc("requests_total", 1, model=work.label, status=status)
        if work.ticket is not None and work.ticket.admitted is not None:
            self.cache.unuse(work.slot)
        self.cache.release(work.content)
        if work.on_finish is not None:
            work.on_finish(work)

    def _fail(self, work: Work, error: FmforgeError) -> None:
        work.sink(("error", error))
        self._finish(work, error.code)


def _logits_to_keep(model: Any) -> dict[str, int]:
    """``logits_to_keep=1`` where the model takes it: only the last position's logits."""
    import inspect

    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in parameters:
            return {name: 1}
    return {}
