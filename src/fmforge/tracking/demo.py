"""The training-runs chapter of ``fmforge demo``: a real, small training loop logged live.

A spam classifier head is trained on all-MiniLM-L6-v2 embeddings of 320 YouTube comments
(shipped with fmforge, CC BY 4.0, see ``fmforge/demo_data/SOURCE.md``) and evaluated on 80 more.
A second run has a NaN planted in its loss: the detector finds it at ingest and stops the run.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from fmforge.repository import Repository
from fmforge.tracking.reading import load_run
from fmforge.tracking.report import write_report
from fmforge.tracking.runs import AnomalyAction, RunStopped, start_run
from fmforge.tracking.views import RunsView


def _comments() -> list[dict[str, Any]]:
    text = resources.files("fmforge").joinpath("demo_data/youtube_spam.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _embeddings(model_dir: Path, texts: list[str]) -> Any:
    from fmforge.embeddings import embed_texts

    return embed_texts(texts, model_dir)


def _train(repo: Repository, data: dict[str, Any], name: str, plant_nan_at: int | None) -> str:
    import torch

    torch.manual_seed(0)
    head = torch.nn.Linear(data["x"].shape[1], 2)
    lr, steps, batch_size = 0.5, 300, 32
    config = {"lr": lr, "steps": steps, "batch": batch_size, "embedding": "all-MiniLM-L6-v2"}
    optimizer = torch.optim.SGD(head.parameters(), lr=lr)
    action = AnomalyAction(stop=True, detectors=("non_finite",))
    options: dict[str, Any] = {
        "name": name, "config": config, "datasets": ["youtube_spam@demo"],
        "base_model": "minilm@main", "flush_interval": 0.1, "on_anomaly": action,
    }  # fmt: skip
    with start_run("spam-demo", repo=repo, **options) as run:
        for step in range(steps):
            batch = torch.randint(0, len(data["y"]), (batch_size,))
            loss = torch.nn.functional.cross_entropy(head(data["x"][batch]), data["y"][batch])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            value = math.nan if step == plant_nan_at else loss.item()
            accuracy = (head(data["x"][batch]).argmax(1) == data["y"][batch]).float().mean().item()
            run.log({"loss": value, "accuracy": accuracy}, step=step, samples=batch_size)
            if plant_nan_at is not None and step > plant_nan_at:
                run.flush()  # the detector sees the NaN at the next flush and stops the loop
        with torch.no_grad():
            test = (head(data["x_test"]).argmax(1) == data["y_test"]).float().mean().item()
        run.log_eval({"accuracy": test}, dataset="youtube_spam@demo/test")
    return run.id


def train_runs(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    model_dir = facts.get("minilm")
    if model_dir is None:
        return ["skipped (no MiniLM)"]
    import torch

    comments = _comments()
    train = [c for c in comments if c["split"] == "train"]
    test = [c for c in comments if c["split"] == "test"]
    data = {
        "x": _embeddings(model_dir, [c["text"] for c in train]),
        "y": torch.tensor([c["label"] for c in train]),
        "x_test": _embeddings(model_dir, [c["text"] for c in test]),
        "y_test": torch.tensor([c["label"] for c in test]),
    }
    facts["good_run"] = _train(repo, data, "spam-head", None)
    lines = ["trained a spam classifier head on MiniLM embeddings of 320 comments: run spam-head"]
    try:
        _train(repo, data, "spam-head-nan", plant_nan_at=150)
    except RunStopped as exc:
        lines.append(f"a second run with a NaN planted at step 150 was {exc}")
    return lines


def overview(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    if "good_run" not in facts:
        return ["skipped (no runs)"]
    lines = []
    for row in repo.view(RunsView).rows(project="spam-demo"):
        loss = row["metrics"]["loss"]
        evals = load_run(repo, row["id"]).evals
        test = f"test accuracy {evals[0]['metrics']['accuracy']:.2f}" if evals else "no test"
        lines.append(
            f"{row['name']:14} {row['status']:9} loss min {loss['min']:.3f}, {test}, "
            f"{row['anomalies']} anomalies"
        )
    report = write_report(repo, facts["good_run"], scratch.parent / "spam-head-report.html")
    lines.append(f"wrote {report.name}: config, metrics, curves (open it in a browser)")
    lines.append("the same from the shell: fmforge runs ls / runs show spam-head / runs report")
    return lines


def dashboard(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    """Serve the repository with ``fmforge ui`` for a moment and read the runs back through it,
    as the dashboard's pages do."""
    if "good_run" not in facts:
        return ["skipped (no runs)"]
    import socket
    import threading
    import urllib.parse
    import urllib.request

    import uvicorn

    from fmforge.server.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_app(repo.root), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def get(path: str) -> Any:
        with urllib.request.urlopen(url + path, timeout=30) as response:
            body = response.read()
        return json.loads(body) if path.startswith("/api/") else body.decode()

    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        runs = get("/api/runs?where=" + urllib.parse.quote("project = spam-demo"))
        good = facts["good_run"]
        series = get(f"/api/runs/{good}/series?metric=loss&width=300")
        page = get(f"/runs/{good}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return [
        f"fmforge ui served {len(runs)} runs at {url}: the runs table, the run pages "
        f"({'uPlot charts' if 'uPlot' in page else 'no charts?'}) and the compare page",
        f"the spam-head loss curve at 300 px: {len(series['steps'])} points, each column's "
        "min and max, so spikes stay visible",
        "browse it yourself: fmforge demo --keep DIR, then fmforge --store DIR ui",
    ]
