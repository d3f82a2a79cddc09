"""Explorer v2's new views in a real browser: why rejected, compare, a saved trace re-opened, the Batch tab."""

from __future__ import annotations

import json
import re

import pytest

from test_browser_explorer import TREE_POINTS, choose, error_toast, run_prompt, steps_in_caption, wait_for_count
from test_browser_v2 import upload_file

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

CAPTION = "#step-caption"


def go_to_step(page, step: int) -> None:
    page.locator("#step-slider input[type=range]").focus()
    page.keyboard.press("Home")
    for _ in range(step - 1):
        page.keyboard.press("ArrowRight")
    page.wait_for_selector(f"{CAPTION}:has-text('Step {step} of')")


def first_step_with_a_wrong_node(record: dict) -> int | None:
    """1-based: a step (not the last) whose last accepted node has children, all rejected."""
    for s, step in enumerate(record["steps"][:-1]):
        if any(n["parent"] == step["accepted"][-1] for n in step["nodes"]):
            return s + 1
    return None


def download_record(page, tmp_path) -> dict:
    with page.expect_download() as download:
        page.locator("#record-file a").first.click()
    saved = tmp_path / "generation.json"
    download.value.save_as(saved)
    return json.loads(saved.read_text())


def test_why_rejected_shows_the_models_choice_under_the_tree_of_the_shown_step(page, screenshot, tmp_path):
    choose(page, "tree-choice", "full-2x3")
    run_prompt(page, "Write one sentence about the moon.", 16)
    record = download_record(page, tmp_path)
    step = first_step_with_a_wrong_node(record)
    assert step is not None, "no step had a wrong node"
    go_to_step(page, step)
    caption = page.locator(CAPTION).inner_text()
    root = record["steps"][step]["nodes"][0]  # the next step's root: the model's own choice
    assert "Why rejected" in caption and f"the model chose {root['text']!r}" in caption
    assert f"(model probability {root['prob']:.2f})" in caption
    assert re.search(r"rank \d+ in head \d's list|not in head \d's top 2", caption)
    wait_for_count(page, TREE_POINTS, 2)
    screenshot(page, "why-rejected", "#step-view")
    go_to_step(page, record["num_steps"])  # the last step has no next root to compare with
    last = page.locator(CAPTION).inner_text()
    assert "Why rejected" in last and ("last step" in last or "end of its branch" in last)


def test_compare_draws_both_runs_accepted_depth_per_step_and_a_table(page, screenshot):
    choose(page, "tree-choice", "full-2x3")
    page.locator("#compare input[type=checkbox]").check()
    choose(page, "compare-with", "chain-4")
    run_prompt(page, "Write one sentence about the moon.", 24)
    page.wait_for_selector("#comparison table.medusa-compare")
    rows = page.locator("#comparison table.medusa-compare tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("td").first.inner_text() == "full-2x3"
    assert rows.nth(1).locator("td").first.inner_text() == "chain-4"
    assert "identical" in page.locator("#comparison").inner_text()
    page.wait_for_selector("#compare-plot .js-plotly-plot")
    assert page.locator("#compare-plot .scatterlayer .trace").count() == 2
    legend = page.locator("#compare-plot .legend").text_content()
    assert "full-2x3" in legend and "chain-4" in legend
    screenshot(page, "compare", "#run-view")
    page.locator("#compare input[type=checkbox]").uncheck()
    run_prompt(page, "Say hi.", 4)  # a run without a comparison hides the last one's figure
    page.wait_for_selector("#compare-plot", state="hidden")


def test_a_saved_record_reopens_in_a_fresh_page_and_a_bad_file_keeps_it(page, browser, app_url, tmp_path):
    run_prompt(page, "Count from one to ten.", 12)
    record = download_record(page, tmp_path)
    saved = tmp_path / "generation.json"
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    laptop = context.new_page()
    laptop.set_default_timeout(60_000)
    laptop.goto(app_url)
    laptop.wait_for_selector("#model-status:has-text('Loaded')")
    try:
        upload_file(laptop, "#record-upload", saved)
        steps = record["num_steps"]
        laptop.wait_for_selector("#stats:has-text('Opened from a file')")
        assert steps_in_caption(laptop) == (steps, steps)
        assert laptop.locator("#output-text .tok").count() == len(record["tokens"])
        assert laptop.locator("#step-slider input[type=number]").input_value() == str(steps)
        go_to_step(laptop, 1)
        assert laptop.locator(TREE_POINTS).count() >= 1
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"format": "medusa-tree/1", "paths": [[0]]}))
        upload_file(laptop, "#record-upload", bad)
        error_toast(laptop, "not a generation record").wait_for()
        assert steps_in_caption(laptop) == (1, steps)  # the opened record stays
        assert "Opened from a file" in laptop.locator("#stats").inner_text()
    finally:
        context.close()


def test_the_batch_tab_decodes_prompts_at_once_and_scrubs_their_trees(page, screenshot):
    page.click("button[role=tab]:has-text('Batch')")
    box = page.locator("#batch-max-new-tokens input[type=number]")
    box.fill("16")
    box.press("Tab")
    page.click("#batch-run")
    page.wait_for_selector("#batch-texts:has-text('tokens in')")  # the rows' records: the batch finished
    page.wait_for_selector("#batch-caption:has-text('rows verified their trees in one pass')")
    assert page.locator("#batch-trees .js-plotly-plot .scatterlayer .point").count() >= 2
    # Back to the first step, where every row has a tree: a click at the slider's left end (the tab's slider
    # answers on release, which the number box does not send).
    track = page.locator("#batch-step input[type=range]")
    box = track.bounding_box()
    track.click(position={"x": 2, "y": box["height"] / 2})
    page.wait_for_selector("#batch-caption:has-text('Step 1 of')")
    assert "4 of 4 rows verified" in page.locator("#batch-caption").inner_text()
    screenshot(page, "batch")
