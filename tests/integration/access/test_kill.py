"""Audit before release, under fire: a real `fmforge ui` with access control on is killed
with SIGKILL during concurrent authenticated reads; after a restart, every response that
reached a client has its ``AccessGranted`` (the acceptance figure of issue 15; the benchmark
runs 1,000 requests, this test 300)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.access_mediated import bench_kill


def test_every_response_released_before_a_kill_was_audited(tmp_path: Path) -> None:
    (row,) = bench_kill(tmp_path, requests=300)
    received = int(row.ours.split(" of ")[1])
    assert received > 0, row  # some responses did reach a client before the kill
    assert row.met, row.ours  # and each of them is on the record
