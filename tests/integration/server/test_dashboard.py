"""The dashboard end to end in headless Chromium: pages render real charts, not only HTTP 200s.

Chromium is Debian's (`apt-get install chromium`, done by `.ci/run`), driven by Playwright with
``executable_path``; no browser is downloaded. Charts are checked in screenshots: the curve's
colour, and the anomaly marks' red, must be there in pixels.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from fmforge.repository import Repository
from fmforge.tracking import start_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):  # CI installs it: there a missing one fails
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

BLUE = (0x09, 0x69, 0xDA)  # the first series' stroke (app.js COLORS[0])
ORANGE = (0xBC, 0x4C, 0x00)  # the second series'
RED = (0xD0, 0x00, 0x00)  # anomaly marks


def pixels_near(png: bytes, colour: tuple[int, int, int], tolerance: int = 40) -> int:
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(image - np.array(colour)).sum(axis=2) <= tolerance).sum())


def record_runs(repo: Repository) -> dict[str, str]:
    weights = {
        "encoder.layer.0.weight": torch.ones(16, 16),
        "encoder.layer.1.weight": torch.ones(16, 16),
    }
    with start_run(
        "cls",
        repo=repo,
        name="steady",
        config={"optim": {"lr": 1e-3}},
        flush_interval=0.05,
        system_interval=0.05,
    ) as steady:
        for step in range(3000):
            if step % 100 == 0:
                time.sleep(0.02)  # long enough for a few system samples
            steady.log({"loss": 2.0 * math.exp(-step / 800) + 0.05 * math.sin(step)}, step=step)
            if step in (1000, 2000):
                weights["encoder.layer.1.weight"] = weights["encoder.layer.1.weight"] * 1.01
                steady.log_checkpoint(weights, model="cls-model")
        steady.log_eval({"accuracy": 0.91}, step=3000, dataset="dev")
        steady.log_sample(3000, "great video, subscribe", "spam")
    with start_run("cls", repo=repo, name="broken", config={"optim": {"lr": 3e-2}}) as broken:
        for step in range(3000):
            loss = math.nan if step == 1700 else 2.0 * math.exp(-step / 400)
            broken.log({"loss": loss}, step=step)
    return {"steady": steady.id, "broken": broken.id}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.mark.browser
def test_dashboard_renders_runs_charts_anomalies_checkpoints_and_compare(
    repo: Repository, server: str, browser: Any
) -> None:
    ids = record_runs(repo)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # The runs table, filtered by a query.
    page.goto(server + "/?where=config.optim.lr%20%3E%201e-2")
    page.wait_for_selector("#runs[data-ready]")
    assert page.locator("#runs a").all_inner_texts() == ["broken"]
    page.goto(server + "/")
    page.wait_for_selector("#runs[data-ready]")
    assert sorted(page.locator("#runs a").all_inner_texts()) == ["broken", "steady"]
    assert "1" in page.locator("#runs td.bad").inner_text()  # the broken run's anomaly count

    # A run page: the loss chart is drawn, with the NaN marked in red on it.
    page.goto(f"{server}/runs/{ids['broken']}")
    page.wait_for_selector("#metrics .chart[data-ready='1'] canvas")
    chart = page.locator("#metrics .chart[data-metric='loss']")
    assert chart.get_attribute("data-anomalies") == "1"
    shot = chart.screenshot()
    assert pixels_near(shot, BLUE) > 200, "no curve in the loss chart"
    assert pixels_near(shot, RED) > 20, "the anomaly is not marked"
    assert "non_finite" in page.locator("#anomalies").inner_text()

    # Zoom: drag across the chart; the range is fetched again at full resolution.
    over = chart.locator(".u-over").bounding_box()
    assert over is not None
    y = over["y"] + over["height"] / 2
    page.mouse.move(over["x"] + over["width"] * 0.40, y)
    page.mouse.down()
    page.mouse.move(over["x"] + over["width"] * 0.60, y, steps=8)
    page.mouse.up()
    hint_js = "document.querySelector(\".chart[data-metric='loss'] .hint\").textContent"
    page.wait_for_function(hint_js + ".startsWith('steps')")
    hint = chart.locator(".hint").inner_text()
    first, last = (int(s) for s in hint.split()[1].rstrip(",").split("-"))
    assert 900 < first < 1500, hint
    assert 1500 < last < 2100, hint
    assert int(hint.split()[2]) == last - first + 1 - (first <= 1700 <= last)  # every step, no NaN
    assert pixels_near(chart.screenshot(), RED) > 20  # the NaN at step 1700 is inside the zoom

    # The steady run: checkpoints, their per-layer weight change, system metrics, samples.
    page.goto(f"{server}/runs/{ids['steady']}")
    page.wait_for_selector("#metrics .chart[data-ready='1'] canvas")
    assert page.locator("#checkpoints code").count() == 2
    page.locator("#checkpoints a.changes").nth(1).click()
    page.wait_for_selector(".bars[data-layers]")
    bars = page.locator(".bars .bar-row").all_inner_texts()
    assert any(b.startswith("encoder.layer.1") and "0.01" in b for b in bars), bars
    assert any(b.startswith("encoder.layer.0") and b.rstrip().endswith("0") for b in bars), bars
    page.wait_for_selector("#system .chart[data-ready='1'] canvas")
    assert page.locator("#system .chart").count() >= 2
    assert "subscribe" in page.locator("#samples").inner_text()
    page.screenshot(path=str(repo.root / "run.png"), full_page=True)
    assert "accuracy=0.91" in page.locator("#evals").inner_text()

    # Compare: both curves overlaid in one chart.
    page.goto(f"{server}/compare?runs={ids['steady']},{ids['broken']}")
    page.wait_for_selector("#metrics .chart[data-ready='1'] canvas")
    assert "optim.lr" in page.locator("#config td.diff").first.inner_text()
    shot = page.locator("#metrics .chart[data-metric='loss']").screenshot()
    assert pixels_near(shot, BLUE) > 200
    assert pixels_near(shot, ORANGE) > 200
    page.screenshot(path=str(repo.root / "compare.png"), full_page=True)
    assert errors == []


def tick_value(label: str) -> float:
    """A tick label's number: ``200k`` is 200,000, ``3.0e-4`` is 0.0003."""
    units = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    if label and label[-1] in units:
        return float(label[:-1]) * units[label[-1]]
    return float(label)


def ink_columns(png: bytes, columns: int = 3) -> int:
    """Dark (text) pixels in the leftmost ``columns`` of an image: where a y-axis label that
    does not fit its axis is cut off."""
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("L")).astype(int)
    return int((image[:, :columns] < 128).sum())


@pytest.mark.browser
def test_axis_labels_fit_and_the_chart_controls_tags_artifacts_and_evaluations(
    repo: Repository, server: str, browser: Any, tmp_path: Any
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello artifacts\n")
    with start_run("axes", repo=repo, name="constants", system_interval=None, detectors=[],
                   flush_interval=0.05) as run:  # fmt: skip
        for step in range(400):
            run.log({"samples_per_second": 200_000.0, "lr": 3e-4,
                     "loss": 2.0 / (step + 1) + 0.01 * math.sin(step)}, step=step)  # fmt: skip
        run.set_tags({"team": "nlp"})
        run.log_eval({"accuracy": 0.91}, step=400, dataset="dev")
        run.log_artifact(notes)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server}/runs/{run.id}")
    page.wait_for_selector("#metrics .chart[data-metric='lr'][data-ready='1'] canvas")
    page.wait_for_selector("#metrics .chart[data-metric='samples_per_second'][data-ready='1']")

    # A large and a tiny constant: every tick label distinct, the value itself among them,
    # and nothing cut off at the canvas's left edge (in the screenshot).
    for metric, value in (("samples_per_second", 200_000.0), ("lr", 3e-4)):
        chart = page.locator(f"#metrics .chart[data-metric='{metric}']")
        labels = json.loads(chart.get_attribute("data-yticks") or "[]")
        numbers = [tick_value(label) for label in labels]
        assert len(labels) >= 3, labels
        assert len(set(numbers)) == len(numbers), labels  # no two ticks print the same
        assert min(numbers) <= value <= max(numbers), labels
        assert metric != "samples_per_second" or "200k" in labels, labels
        shot = chart.locator("canvas").screenshot()
        assert ink_columns(shot) == 0, f"{metric}: a tick label is cut off ({labels})"
    page.screenshot(path=str(repo.root / "axes.png"), full_page=True)

    # Smoothing redraws; a log scale and a time axis build the charts again.
    loss = page.locator("#metrics .chart[data-metric='loss']")
    page.locator("#smoothing").fill("0.9")
    page.wait_for_function(
        "document.querySelector(\".chart[data-metric='loss']\").dataset.smoothing === '0.9'"
    )
    page.locator("#logscale").check()
    page.wait_for_selector(".chart[data-metric='loss'][data-log='true'][data-ready='1']")
    page.select_option("#xaxis", "time")
    page.wait_for_selector(".chart[data-metric='loss'][data-axis='time'][data-ready='1']")
    assert int(loss.get_attribute("data-points") or "0") > 0
    assert pixels_near(loss.screenshot(), BLUE) > 100, "no curve on the time axis"

    # Tags, evaluations and artifacts are on the page; an artifact downloads.
    assert "team=nlp" in page.locator("#overview").inner_text()
    assert "accuracy=0.91" in page.locator("#evals").inner_text()
    link = page.locator("#artifacts a")
    assert link.inner_text() == "notes.txt"
    answer = page.request.get(server + (link.get_attribute("href") or ""))
    assert answer.text() == "hello artifacts\n"
    page.goto(server + "/")
    page.wait_for_selector("#runs[data-ready]")
    assert "team=nlp" in page.locator("#runs").inner_text()
    assert errors == []
