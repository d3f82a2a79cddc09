"""ShareGPT's own replies as teacher-forced training data: reading the file, the chunks, training on them alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from medusa_core.modeling.models import encode_prompt, load_base_model
from medusa_core.training.distill_chunks import read_chunk
from medusa_core.training.sharegpt import conversations, first_replies, reply_ids
from medusa_core.training.training import split_conversations
from test_cli import cli

ROOT = Path(__file__).resolve().parent.parent


def turns(*pairs: tuple[str, str]) -> dict:
    return {"id": "x", "conversations": [{"from": who, "value": text} for who, text in pairs]}


def sharegpt_file(path: Path, items: list[dict], cut_tail: bool = True) -> Path:
    """A ShareGPT-like JSON array; like the wheel's file, optionally cut off inside its last item."""
    text = json.dumps(items, indent=1)
    path.write_text(text[: text.rindex("}", 0, len(text) - 2) - 5] if cut_tail else text)
    return path


def test_first_replies_keep_the_first_reply_to_each_first_turn_and_drop_a_cut_tail(tmp_path):
    items = [
        turns(("human", "Say  hi.\n"), ("gpt", "Hi!")),
        turns(("human", "Say hi."), ("gpt", "Hello again.")),  # the same prompt once collapsed: first kept
        turns(("gpt", "I start."), ("human", "No.")),  # not a human's first turn
        turns(("human", "Name a planet."), ("human", "Anyone?")),  # no reply
        turns(("human", "Count to three."), ("gpt", "  ")),  # an empty reply
        turns(("human", "What is tea?"), ("gpt", "A drink.")),
        turns(("human", "Cut off"), ("gpt", "never read")),
    ]
    path = sharegpt_file(tmp_path / "s.json", items)
    assert len(list(conversations(path))) == 6
    assert first_replies(path) == {"Say hi.": "Hi!", "What is tea?": "A drink."}


@given(st.integers(1, 60), st.integers(0, 40), st.floats(0.05, 0.5), st.integers(0, 3))
def test_train_only_conversations_train_and_leave_validation_as_it_was(n, extra, fraction, seed):
    train, val = split_conversations(n, fraction, seed, extra)
    alone_train, alone_val = split_conversations(n, fraction, seed)
    assert val == alone_val and train == alone_train + list(range(n, n + extra))
    assert sorted(train + val) == list(range(n + extra))


def test_reply_ids_are_the_templates_assistant_turn_up_to_the_end_of_turn():
    base = load_base_model(None, "cpu", "float32")
    prompt_ids = encode_prompt(base.tokenizer, "What is tea?")
    ids = reply_ids(base, "What is tea?", prompt_ids, "A drink made from leaves.", 256)
    assert ids[-1] in base.eos_token_ids and base.tokenizer.decode(ids[:-1]) == "A drink made from leaves."
    assert reply_ids(base, "What is tea?", prompt_ids, "A drink made from leaves.", 3) == ids[:3]


def test_reply_chunks_train_only_and_validation_stays_on_the_distilled_answers(tmp_path):
    """The script writes chunks of ShareGPT's replies; train-heads adds them to training alone."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("Say hi.\nName a planet.\nWhat is tea?\nName a colour.\nCount to three.\n")
    items = [turns(("human", "Name a colour."), ("gpt", "Blue, like the sky on a clear day.")),
             turns(("human", "Count to three."), ("gpt", "One, two, three.")),
             turns(("human", "Say hi."), ("gpt", "Hi there! How can I help you today?"))]
    source = sharegpt_file(tmp_path / "s.json", items, cut_tail=False)
    replies = tmp_path / "replies"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

    def make(first: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "scripts/make_sharegpt_reply_chunks.py", "--prompts", str(prompts), "--first-prompt",
             first, "--count", "2", "--sharegpt", str(source), "--out", str(replies), "--chunk-size", "1"],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)

    made = make("3")
    assert made.returncode == 0, made.stderr
    assert "2 of 2 prompts have a ShareGPT reply" in made.stdout
    other = make("0")  # other prompts into the same folder: its chunks are refused, not mixed in
    assert other.returncode != 0 and "was made with prompts_sha" in other.stderr
    rows = [read_chunk(p)["rows"][0] for p in sorted(replies.glob("chunk-*.json.xz"))]
    assert [r["prompt"] for r in rows] == [0, 1] and read_chunk(replies / "chunk-00000.json.xz")["source"]
    chunks = tmp_path / "chunks"
    assert cli("distill", "--prompts", str(prompts), "--out", str(chunks), "--max-new-tokens", "24").returncode == 0
    cards = {}
    for name, extra in (("alone", []), ("mixed", ["--train-only", str(replies)])):
        out = cli("train-heads", "--distilled", str(chunks), *extra, "--out", str(tmp_path / name), "--epochs", "1",
                  "--batch-size", "8")
        assert out.returncode == 0, out.stderr
        cards[name] = json.loads((tmp_path / name / "training.json").read_text())
    added = sum(len(r["response_ids"]) for r in rows)
    assert cards["mixed"]["training"]["train_positions"] > cards["alone"]["training"]["train_positions"]
    assert cards["mixed"]["training"]["train_positions"] <= cards["alone"]["training"]["train_positions"] + added + 2
    assert cards["mixed"]["validation"]["samples"] == cards["alone"]["validation"]["samples"]
    assert cards["mixed"]["training"]["train_only"] == [str(replies)]
    refused = cli("train-heads", "--prompts", str(prompts), "--train-only", str(replies), "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "needs distilled folders" in refused.stderr
