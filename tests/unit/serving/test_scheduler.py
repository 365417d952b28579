"""The scheduler's order: priorities, fair sharing under skew, readiness, back-pressure,
timeouts and cancellation."""

from __future__ import annotations

import pytest

from fmforge.errors import Overloaded
from fmforge.serving.scheduler import Scheduler, Ticket


def pick_all(scheduler: Scheduler, limit: int = 1000) -> list[Ticket]:
    chosen, _ = scheduler.pick(limit, ready=lambda key: True, place=lambda ticket: True)
    return chosen


class TestOrder:
    def test_a_quiet_adapter_is_not_starved_by_a_hot_one(self) -> None:
        scheduler = Scheduler()
        hot = [Ticket("hot", cost=10, payload=i) for i in range(50)]
        for ticket in hot:
            scheduler.submit(ticket)
        cold = Ticket("cold", cost=10)
        scheduler.submit(cold)  # arrives last
        order = [pick_all(scheduler, 1)[0] for _ in range(3)]
        assert cold in order[:2]  # FIFO would give it the 51st place

    def test_service_is_shared_between_busy_adapters(self) -> None:
        scheduler = Scheduler()
        for i in range(20):
            scheduler.submit(Ticket("a", cost=10, payload=i))
            scheduler.submit(Ticket("b", cost=10, payload=i))
        first = [pick_all(scheduler, 1)[0].key for _ in range(10)]
        assert first.count("a") == first.count("b") == 5

    def test_generated_tokens_count_as_service(self) -> None:
        scheduler = Scheduler()
        scheduler.submit(Ticket("a", cost=1))
        scheduler.submit(Ticket("b", cost=1))
        pick_all(scheduler)
        scheduler.charge({"a": 500})
        scheduler.submit(Ticket("b", cost=1))
        scheduler.submit(Ticket("a", cost=1))  # lifted to b's counter at most: still ahead
        assert pick_all(scheduler, 1)[0].key == "b"

    def test_an_idle_adapter_banks_no_credit(self) -> None:
        scheduler = Scheduler()
        for _ in range(30):
            scheduler.submit(Ticket("busy", cost=10))
        for _ in range(20):
            pick_all(scheduler, 1)
        late = [Ticket("late", cost=10) for _ in range(5)]
        for ticket in late:
            scheduler.submit(ticket)
        order = [pick_all(scheduler, 1)[0].key for _ in range(6)]
        assert order.count("busy") >= 2  # lifted to the busy counter: they alternate

    def test_priority_goes_first_across_adapters(self) -> None:
        scheduler = Scheduler()
        scheduler.submit(Ticket("a", cost=1))
        urgent = Ticket("b", cost=1, priority=5)
        scheduler.charge({"b": 10_000})
        scheduler.submit(urgent)
        assert pick_all(scheduler, 1) == [urgent]

    def test_adapters_not_ready_or_without_a_slot_wait(self) -> None:
        scheduler = Scheduler()
        loading, no_slot, fine = Ticket("l", 1), Ticket("s", 1), Ticket("f", 1)
        for ticket in (loading, no_slot, fine):
            scheduler.submit(ticket)
        chosen, blocked = scheduler.pick(
            10, ready=lambda key: key != "l", place=lambda ticket: ticket.key != "s"
        )
        assert chosen == [fine]
        assert blocked == {"s"}
        assert scheduler.waiting == 2


class TestLimits:
    def test_past_the_queue_limit_submit_is_refused_with_retry_after(self) -> None:
        scheduler = Scheduler(max_queued=2)
        scheduler.submit(Ticket("a", 1))
        scheduler.submit(Ticket("b", 1))
        with pytest.raises(Overloaded) as refused:
            scheduler.submit(Ticket("c", 1))
        assert refused.value.http_status == 429
        assert 1 <= refused.value.retry_after <= 60

    def test_the_per_adapter_limit(self) -> None:
        scheduler = Scheduler(max_queued=100, max_queued_per_adapter=1)
        scheduler.submit(Ticket("a", 1))
        with pytest.raises(Overloaded, match="limit per adapter"):
            scheduler.submit(Ticket("a", 1))
        scheduler.submit(Ticket("b", 1))

    def test_expired_and_cancelled_tickets_leave_the_queue(self) -> None:
        scheduler = Scheduler()
        late = Ticket("a", 1, deadline=0.0)
        gone = Ticket("a", 1)
        kept = Ticket("a", 1)
        for ticket in (late, gone, kept):
            scheduler.submit(ticket)
        assert scheduler.expire() == [late]
        assert scheduler.cancel(gone) is True
        assert gone.cancelled
        assert pick_all(scheduler) == [kept]
        assert scheduler.cancel(kept) is False  # admitted already: the engine drops it
        assert scheduler.waiting == 0
