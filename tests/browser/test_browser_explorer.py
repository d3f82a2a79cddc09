"""The explorer in a real browser: run, scrub, upload errors, calibration and optimisation with downloads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

# gradio's own Dataframe code trips pandas 3 deprecation warnings; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

TREE_POINTS = "#tree-plot .js-plotly-plot .scatterlayer .point"


def set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} [role=option]", has_text=option).first.click()


def wait_for_choice(page, elem_id: str, label: str) -> None:
    page.wait_for_function("([id, label]) => document.querySelector(`#${id} input`).value === label", arg=[elem_id, label])


def run_prompt(page, prompt: str, tokens: int) -> None:
    page.locator("#prompt textarea").fill(prompt)
    set_slider(page, "max-new-tokens", tokens)
    page.evaluate("document.querySelector('#stats .medusa-stats').remove()")  # so only this run's stats count
    page.click("#run-button")
    page.wait_for_selector("#stats .card:has-text('stopped at')")


def steps_in_caption(page) -> tuple[int, int]:
    match = re.search(r"Step (\d+) of (\d+)", page.locator("#step-caption").inner_text())
    assert match, page.locator("#step-caption").inner_text()
    return int(match[1]), int(match[2])


def wait_for_count(page, selector: str, at_least: int) -> None:
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[selector, at_least])


def accepted_in_caption(page) -> int:
    return int(re.search(r"(\d+) accepted from the heads", page.locator("#step-caption").inner_text())[1])


def show_best_step(page) -> None:
    """Scrub to the step with the longest accepted path (for the screenshot)."""
    _, total = steps_in_caption(page)
    accepted = {}
    slider = page.locator("#step-slider input[type=range]")
    slider.focus()
    page.keyboard.press("Home")
    for step in range(1, total + 1):
        page.wait_for_selector(f"#step-caption:has-text('Step {step} of')")
        accepted[step] = accepted_in_caption(page)
        page.keyboard.press("ArrowRight")
    best = max(accepted, key=accepted.get)
    page.keyboard.press("Home")
    for _ in range(best - 1):
        page.keyboard.press("ArrowRight")
    page.wait_for_selector(f"#step-caption:has-text('Step {best} of')")


def error_toast(page, text: str):
    return page.locator(".toast-body", has_text=text)


def test_run_draws_the_tree_with_its_accepted_path_and_the_stats(page, screenshot):
    choose(page, "tree-choice", "full-2x3")
    run_prompt(page, "Write one sentence about the moon.", 16)
    wait_for_count(page, TREE_POINTS, 15)  # 14 candidates + root, plus the accepted rings
    legend = page.locator("#tree-plot .legend").text_content()
    assert "accepted path" in legend and "root (base model)" in legend and "head 1" in legend
    assert page.locator("#tree-plot .scatterlayer .trace").count() >= 5
    assert page.locator("#output-text .tok").count() >= 1
    assert float(page.locator("#stats .card:has-text('tokens / step') .v").inner_text()) >= 1.0
    assert page.locator("#stats-plot .js-plotly-plot .bars .point").count() >= 2
    if screenshot.enabled:
        show_best_step(page)
    screenshot(page, "explore")


def test_step_slider_scrubs_back_to_the_first_step(page):
    run_prompt(page, "Count from one to ten.", 12)
    current, total = steps_in_caption(page)
    assert current == total >= 2
    page.locator("#step-slider input[type=range]").focus()
    page.keyboard.press("Home")
    page.wait_for_selector("#step-caption:has-text('Step 1 of')")
    assert steps_in_caption(page) == (1, total)
    assert page.locator(TREE_POINTS).count() >= 1


def test_stop_cancels_a_long_run_and_the_next_run_works(page):
    page.locator("#prompt textarea").fill("Write a long essay about rivers.")
    set_slider(page, "max-new-tokens", 400)
    page.click("#run-button")
    page.wait_for_selector("#stats:has-text('generating')")
    page.click("#stop-button")
    # The streamed text stops growing (judged from the page, not from a progress indicator).
    output = page.locator("#output-text")
    page.wait_for_timeout(1500)  # updates already on their way land
    stopped_at = output.inner_text()
    page.wait_for_timeout(3000)
    assert output.inner_text() == stopped_at, "tokens kept coming after Stop"
    assert "(Stop)" in page.locator("#stats").inner_text()  # the run ended at Stop, with its own stats
    run_prompt(page, "Say hi.", 4)
    assert page.locator(TREE_POINTS).count() >= 1


def test_invalid_upload_and_unknown_model_show_errors_and_the_next_run_works(page, tmp_path):
    bad = tmp_path / "bad-tree.json"
    bad.write_text(json.dumps({"format": "medusa-tree/1", "paths": [[0, 1]]}))
    with page.expect_file_chooser() as chooser:
        page.click("#tree-upload")
    chooser.value.set_files(str(bad))
    error_toast(page, "no parent").wait_for()
    page.click("#model-box")
    page.locator("#model-name textarea, #model-name input").first.fill("/no/such/model")
    page.click("#load-model")
    error_toast(page, "cannot load").wait_for()
    assert "Loaded" in page.locator("#model-status").inner_text()
    run_prompt(page, "Say hi.", 4)
    assert page.locator(TREE_POINTS).count() >= 1


def test_calibration_shows_progress_then_the_heatmap(page, screenshot):
    page.click("button[role=tab]:has-text('Heads')")
    page.wait_for_selector("#accuracy-heatmap .heatmaplayer .hm, #accuracy-heatmap .js-plotly-plot:has-text('No measured table')")
    screenshot(page, "heads")  # the loaded heads' shipped table, when they have one
    set_slider(page, "calibration-prompts", 3)
    set_slider(page, "calibration-tokens", 32)
    page.click("#calibrate-button")
    page.wait_for_selector("#accuracy-note .progress-text, #accuracy-note .eta-bar", state="attached")
    page.wait_for_selector("#accuracy-info:has-text('calibrated on 3 prompts')")
    assert page.locator("#accuracy-heatmap .js-plotly-plot .heatmaplayer").count() == 1


def test_optimise_then_download_an_export_and_use_it_in_explore(page, screenshot, tmp_path):
    page.click("button[role=tab]:has-text('Optimise')")
    choose(page, "optimise-source", "vicuna-7b")
    set_slider(page, "budget", 12)
    set_slider(page, "trials", 60)
    page.click("#optimise-button")
    page.wait_for_selector("#optimise-summary:has-text('Best tree')")
    wait_for_count(page, "#best-tree-plot .js-plotly-plot .scatterlayer .point", 13)  # 12 nodes + root
    assert page.locator("#preset-comparison:has-text('mc_sim_7b_63')").count() == 1
    with page.expect_download() as download:
        page.click("#download-json")
    saved = tmp_path / "tree.json"
    download.value.save_as(saved)
    tree = json.loads(Path(saved).read_text())
    assert tree["format"] == "medusa-tree/1" and 1 <= len(tree["paths"]) <= 12
    screenshot(page, "optimise")
    page.click("#use-in-explore")
    wait_for_choice(page, "tree-choice", "optimiser's latest tree")
    assert page.locator("button[role=tab][aria-selected=true]").inner_text() == "Explore"
    run_prompt(page, "Say hi.", 4)
    assert page.locator(TREE_POINTS).count() >= 1
