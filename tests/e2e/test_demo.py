"""The README's main job, run the way a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from fmforge.demo import STEPS, run_demo
from fmforge.repository import Repository


def test_fmforge_demo_runs_every_step(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fmforge", "demo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for number, step in enumerate(STEPS, 1):
        assert f"{number}. {step.title}" in result.stdout
    assert "deduplicated=True, nothing written" in result.stdout
    assert "rebuilt from seq 1: identical=True" in result.stdout
    assert "every file's blake3 equal to the original: True" in result.stdout
    assert "saved against full copies" in result.stdout
    assert "was stopped by non_finite on loss at step 150" in result.stdout
    assert "spam-head      finished" in result.stdout
    assert "fmforge ui served 2 runs" in result.stdout
    assert "applied: comments@v2, every change recorded with its rule" in result.stdout
    assert "in comments@v3 (label)" in result.stdout
    assert "(LabelingFunctionReviewed events by" in result.stdout
    assert "synthesized " in result.stdout
    assert "-> minilm-spam@main " in result.stdout
    assert "-> minilm-video@main " in result.stdout
    assert "conflict report (object " in result.stdout
    assert "spam  test accuracy: merge " in result.stdout
    assert "LogME and the probe agree with Kendall tau" in result.stdout
    assert "minilm-spam@rebased " in result.stdout
    assert "re-evaluated on comments@v3:valid: accuracy" in result.stdout
    served = re.search(r"(\d+) requests through the openai client: .*; (\d+) failed", result.stdout)
    assert served is not None, "the serving chapter reports its requests"
    assert int(served[1]) > 50
    assert served[2] == "0"
    moved = re.search(r"(\d+) started after it: .*?(\d+) by v2", result.stdout)
    assert moved is not None
    assert int(moved[2]) > 0  # the move reached new requests
    recorded = re.search(
        r"deployment/tiny-llama in the ledger: 1 replica\(s\) started, 1 stopped, (\d+) requests",
        result.stdout,
    )
    assert recorded is not None
    assert int(recorded[1]) > 0
    assert "service:ci reads people: denied (no_grant)" in result.stdout
    assert "user:alice reads it: author '***'" in result.stdout
    assert "use spam-people: refused (forbid:licence)" in result.stdout
    assert "standalone verify_proof.py (no fmforge): ok: event" in result.stdout
    assert "places holding the name: 0" in result.stdout
    assert "still verifies, extended to" in result.stdout
    assert "demo finished" in result.stdout
    assert list(tmp_path.iterdir()) == [], "the default demo cleans up after itself"


def test_demo_leaves_a_repository_that_verifies(tmp_path: Path) -> None:
    reports = dict((step.title, lines) for step, lines in run_demo(tmp_path))
    assert len(reports) == len(STEPS)
    with Repository.open(tmp_path) as repo:
        report = repo.verify()
        assert report.events == repo.ledger.count() >= 6
        assert report.objects_checked > 100  # MiniLM's tensors, files and manifests
