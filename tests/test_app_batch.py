"""The Batch tab through gradio_client: batched rows equal their own runs; throughput measured."""

from __future__ import annotations

import html
import json

import pytest

pytest.importorskip("gradio")
from gradio_client.exceptions import AppError  # noqa: E402

from medusa_core import DecodeConfig, generate  # noqa: E402


pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")
PROMPTS = ["Name three colours.", "What is 2+2?", "Say hello in French."]


def traces(plot: dict) -> list[dict]:
    return json.loads(plot["plot"])["data"]


def test_a_batch_shows_every_row_and_each_equals_its_own_run(server, client):
    _, store = server
    medusa = store.get()
    texts, trees, caption, slider, *_ = client.predict("\n".join(PROMPTS), 10, True, api_name="/run_batch")
    for i, prompt in enumerate(PROMPTS):
        alone = generate(medusa, prompt, None, DecodeConfig(10, lookup=medusa.default_lookup))
        assert f"**Row {i + 1}**" in texts and html.escape(alone.text) in texts
    assert "rows verified their trees in one pass" in caption
    assert slider["maximum"] >= 2
    roots = [t for t in traces(trees) if t.get("mode") == "markers+text" or t.get("type") == "scatter"]
    assert len({t.get("xaxis", "x") for t in roots}) == len(PROMPTS)  # one small tree per row
    first, first_caption = client.predict(1, api_name="/batch_step")
    assert first_caption.startswith("Step 1 of")


@pytest.mark.parametrize("text, message", [("", "at least one prompt"), ("\n".join(["hi"] * 9), "at most 8")])
def test_bad_batches_get_a_message(client, text, message):
    with pytest.raises(AppError, match=message):
        client.predict(text, 4, True, api_name="/run_batch")


def test_measured_throughput_against_batch_size(client):
    plot, table = client.predict("\n".join(PROMPTS[:2]), ["1", "2"], False, api_name="/measure_batches")
    names = {t["name"] for t in traces(plot)}
    assert {"hf-greedy tokens/s", "medusa-default tokens/s", "medusa-default speed-up"} <= names
    assert "| 1 |" in table and "| 2 |" in table
