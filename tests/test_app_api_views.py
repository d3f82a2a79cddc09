"""Explorer v2's new views through gradio_client: why rejected, compare, and a saved trace re-opened."""

from __future__ import annotations

import html
import json

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from medusa_core import DecodeConfig, generate  # noqa: E402
from app_server import record_of, value  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

PROMPT = "Name three colours."


def plot_traces(plot: dict) -> list[dict]:
    return json.loads(value(plot)["plot"])["data"]


def run(client: Client, prompt: str = PROMPT, **settings) -> tuple:
    return client.predict(**(dict(prompt=prompt, max_new_tokens=12, tree_choice="full-2x3") | settings),
                          api_name="/generate")


def spans(text_html: str) -> str:
    return text_html.split('id="medusa-output">')[1]  # the text, without the legend


def caption_of(client: Client, step: int) -> str:
    _, caption = client.predict(step, "depth", api_name="/show_step")
    return html.unescape(caption)


# ---------------------------------------------------------------- why rejected


def expected_reason(steps: list[dict], s: int) -> str:
    """What the caption must say at step s's first wrong node, worked out from the record alone."""
    step = steps[s]
    last = step["accepted"][-1]
    if not any(n["parent"] == last for n in step["nodes"]):
        return "reached the end of its branch"
    if s + 1 == len(steps):
        return "this is the run's last step"
    root = steps[s + 1]["nodes"][0]
    head = step["nodes"][last]["depth"]
    guesses = step["head_topk"][head]
    where = (f"rank {guesses.index(root['token_id'])} in head {head + 1}'s list" if root["token_id"] in guesses
             else f"not in head {head + 1}'s top {len(guesses)}")
    return f"the model chose **{root['text']!r}** (model probability {root['prob']:.2f}) instead: it was **{where}"


def test_why_rejected_shows_the_models_choice_its_probability_and_rank_for_every_step(client):
    record = record_of(run(client))
    steps = record["steps"]
    # full-2x3 is 2 wide and 3 deep: each step drafted from 3 heads' top-2 lists
    assert len(steps) >= 3 and all(len(s["head_topk"]) == 3 and len(s["head_topk"][0]) == 2 for s in steps)
    for s in range(len(steps)):
        caption = caption_of(client, s + 1)
        assert caption.startswith(f"**Step {s + 1} of {len(steps)}**") and "**Why rejected**" in caption
        assert expected_reason(steps, s) in caption, (s, caption)


def test_why_rejected_on_a_chain_names_the_heads_single_guess(client):
    record = record_of(run(client, tree_choice="chain-4", lookup="0"))
    wrong = [s for s in range(record["num_steps"] - 1)
             if len(record["steps"][s]["accepted"]) <= 4]  # a chain-4 path shorter than the chain: a wrong node
    assert wrong
    for s in wrong:
        assert expected_reason(record["steps"], s) in caption_of(client, s + 1)


# ---------------------------------------------------------------- compare


def accepted_lengths(steps) -> list[int]:
    return [len(s["accepted"]) - 1 if isinstance(s, dict) else s.accepted_length for s in steps]


def test_compare_runs_a_second_tree_on_the_same_prompt_and_shows_both(server, client):
    store = server[1]
    outputs = run(client, compare=True, compare_with="chain-4", lookup="0")
    record = record_of(outputs)
    second = generate(store.get(), PROMPT, [(0,), (0, 0), (0, 0, 0), (0, 0, 0, 0)], DecodeConfig(max_new_tokens=12))
    comparison = html.unescape(outputs[6])
    assert "Speed-up" in comparison and "over chain-4" in comparison and "outputs identical" in comparison
    assert f"<td>full-2x3</td><td>{record['tokens_per_step']:.2f}</td>" in comparison
    assert f"<td>chain-4</td><td>{second.tokens_per_step:.2f}</td>" in comparison
    traces = plot_traces(client.predict(api_name="/comparison"))
    assert [t["y"] for t in traces] == [accepted_lengths(record["steps"]), accepted_lengths(second.steps)]
    assert traces[0]["name"].startswith("full-2x3") and traces[1]["name"].startswith("chain-4")


def test_compare_with_plain_decoding_is_truly_plain_and_the_next_run_clears_it(client):
    outputs = run(client, prompt="Repeat: the red fox, the red fox.", compare=True, compare_with="plain", lookup="6")
    assert "over plain decoding" in outputs[6] and "✓ identical" in outputs[6]
    traces = plot_traces(client.predict(api_name="/comparison"))
    record = record_of(outputs)
    assert traces[1]["y"] == [0] * len(record["tokens"])  # one token a step: no tree and no lookup
    assert run(client)[6] == ""  # a run without a comparison leaves none on the page
    assert client.predict(api_name="/comparison")["visible"] is False


def test_a_second_tree_the_heads_cannot_run_is_refused_before_the_run(client):
    with pytest.raises(AppError, match="no tree file uploaded"):
        run(client, compare=True, compare_with="uploaded")


# ---------------------------------------------------------------- trace import


def test_a_saved_record_reopens_for_scrubbing_and_a_bad_file_keeps_the_page(client, tmp_path):
    saved = run(client, max_new_tokens=16)
    record = record_of(saved)
    path = tmp_path / "generation.json"
    path.write_text(json.dumps(record))
    laptop = Client(client.src, verbose=False)  # another session, which never ran anything
    opened = laptop.predict(handle_file(str(path)), "depth", api_name="/open_record")
    text, _, caption, slider, stats, stats_plot, comparison, _ = opened
    steps = record["num_steps"]
    assert spans(text) == spans(saved[0]) and caption == saved[2]  # the same text and last step's caption
    assert slider["maximum"] == max(steps, 2) and slider["value"] == steps
    assert "Opened from a file" in stats and "/" not in stats.split("Opened from a file: ")[1].split(" with")[0]
    assert sum(plot_traces(stats_plot)[0]["y"]) == steps and comparison == ""
    assert record_of(opened) == record  # it downloads again as it came
    assert caption_of(laptop, 1).startswith(f"**Step 1 of {steps}**")  # the slider scrubs the file's steps
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "medusa-generation/1", "steps": []}))
    with pytest.raises(AppError, match="not a generation record .the record has no 'tree'"):
        laptop.predict(handle_file(str(bad)), "depth", api_name="/open_record")
    bad.write_text("not json")
    with pytest.raises(AppError, match="not valid JSON"):
        laptop.predict(handle_file(str(bad)), "depth", api_name="/open_record")
    assert caption_of(laptop, 2).startswith(f"**Step 2 of {steps}**")  # the opened record is still there
