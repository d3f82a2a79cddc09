"""The Optimise tab's measured tuning in a real browser: open it, run two trials, see the plots and the table."""

from __future__ import annotations

import json
import re

import pytest

from app import optimise as app_optimise
from medusa_core import ThreadBudget
from medusa_core.spec.trees import load_tree_with_lookup

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

TUNE_TIMEOUT_MS = 240_000  # two trials on a shared 2-core machine


def fill_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def test_measured_tuning_draws_its_history_and_the_best_setups(page, screenshot, tmp_path, monkeypatch):
    # The server runs in this process; on a machine shared with other jobs two torch threads oversubscribe it.
    monkeypatch.setattr(ThreadBudget, "threads_for", lambda self, running: 1)
    monkeypatch.setattr(app_optimise, "PROFILE_SIZES", (1, 4, 16, 64, 96))  # a quick profile, for predicted tokens/s
    trials = 8 if screenshot.enabled else 2  # a fuller picture for the README
    page.click("button[role=tab]:has-text('Optimise')")
    page.click("text=Latency profile of this device")
    page.click("#profile-button")
    page.wait_for_selector("#profile-note:has-text('Profile of')")
    page.click("#tune-accordion .label-wrap")
    prompts = page.locator("#tune-prompts textarea")
    prompts.wait_for()
    assert prompts.input_value().strip()  # prefilled with calibration prompts
    prompts.fill("Name three colours.\nWhat is the capital of France?")
    fill_number(page, "tune-trials", trials)
    fill_number(page, "tune-max-new-tokens", 8)
    page.click("#tune-run")
    page.wait_for_selector("#tune-note:has-text('Done')", timeout=TUNE_TIMEOUT_MS)
    points = "#tune-history .js-plotly-plot .scatterlayer .point"
    page.wait_for_function("sel => document.querySelectorAll(sel).length >= 2", arg=points)
    assert page.locator("#tune-pareto .js-plotly-plot .scatterlayer .point").count() >= 1
    table = page.locator("#tune-best")
    assert "measured tokens/s" in table.inner_text() and "predicted tokens/step" in table.inner_text()
    assert table.locator("tbody tr").count() >= 1
    assert f"{trials} finished trials" in page.locator("#tune-note").inner_text()
    assert len(re.findall(r"\d\.\d\dx", table.inner_text())) >= 2  # measured / predicted, tokens/s and /step
    with page.expect_download() as download:
        page.click("#tune-download")
    saved = tmp_path / "tuned-tree.json"
    download.value.save_as(saved)
    tree, _ = load_tree_with_lookup(saved)
    assert tree and json.loads(saved.read_text())["meta"]["trials"] == trials
    screenshot(page, "tune", "#tune-accordion")
