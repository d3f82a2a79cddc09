"""Why rejected: at a step's first wrong node, what the model chose instead and where the heads had it.

The children of a step's last accepted node were all rejected; the model's own choice there is the
next step's root (its probability is the base model's), or, for exact sampling, the step's last draw.
The heads' top-k lists the step drafted from (StepRecord.head_topk, head d proposing depth d + 1)
say whether that choice was among a head's guesses at all, and at which rank. Plain data, no Gradio.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from medusa_core import GenerationRecord, Node, StepRecord

from .acceptance import from_heads


@dataclass(frozen=True)
class Choice:
    """The model's own token after a step's accepted path."""

    token_id: int
    text: str  # "" when unknown (a draw of the last step: no next step holds its text)
    prob: float | None  # the base model's probability; None when unknown


def quoted(text: str) -> str:
    return html.escape(repr(text))


def children(step: StepRecord, node: int) -> list[int]:
    return [i for i, n in enumerate(step.nodes) if n.parent == node]


def model_choice(steps: Sequence[StepRecord], index: int) -> Choice | None:
    """The model's choice after step `index`'s accepted path: the next root, else the last draw."""
    if index + 1 < len(steps):
        root = steps[index + 1].nodes[0]
        return Choice(root.token_id, root.text, root.prob)
    drawn = steps[index].drawn
    if drawn:  # exact sampling: the last draw matched no child and would be the next root
        return Choice(drawn[-1], "", None)
    return None


def token_shown(choice: Choice) -> str:
    return quoted(choice.text) if choice.text else f"token {choice.token_id}"


def rank_in_head(step: StepRecord, head: int, choice: Choice, wrong: Sequence[Node]) -> str:
    """Where head `head` (0-based: it proposes depth head + 1) had the model's choice."""
    name = f"head {head + 1}"
    if step.head_topk is None:
        return f"the record has no copy of {name}'s list"
    if head >= len(step.head_topk):
        return f"no head drafted this depth ({name} is not in the tree)"
    guesses = step.head_topk[head]
    if choice.token_id not in guesses:
        return f"it was **not in {name}'s top {len(guesses)}** (the {len(guesses)} guesses this tree drafts from)"
    rank = guesses.index(choice.token_id)
    drafted = sorted({n.rank for n in wrong if from_heads(n.source)})
    if rank in drafted:  # only possible under typical acceptance, which may refuse the model's own token
        return f"it was {name}'s rank {rank}, drafted here but refused by typical acceptance"
    where = f"ranks {', '.join(map(str, drafted))}" if drafted else "no rank of it"
    return f"it was **rank {rank} in {name}'s list**, but the tree drafts only {where} under this node"


def rejected_list(wrong: Sequence[Node]) -> str:
    def one(node: Node) -> str:
        if from_heads(node.source):
            return f"{quoted(node.text)} (rank {node.rank}, head's p={node.prob:.2f})"
        return f"{quoted(node.text)} (copied from the context)"

    return ", ".join(one(n) for n in wrong)


def last_step_note(record: GenerationRecord | None, streaming: bool) -> str:
    if streaming:
        return "the next step has not been decoded yet, so the model's own choice here is not known yet."
    reason = record.stop_reason.replace("_", " ") if record is not None else "the end"
    return (f"this is the run's last step (it ended: {reason}), so no next step shows the model's own choice "
            "after the accepted path.")


def why_rejected(steps: Sequence[StepRecord], index: int, record: GenerationRecord | None = None) -> str:
    """Markdown: the first wrong node of step `index` (0-based), what the model chose, and its rank
    in the head's list; or why there was no wrong node."""
    step = steps[index]
    last = step.accepted[-1]
    depth = step.nodes[last].depth
    wrong = [step.nodes[i] for i in children(step, last)]
    if len(step.nodes) == 1:
        return "**Why rejected**: nothing was drafted in this step (plain decoding): no guess to reject."
    if not wrong:
        return (f"**Why rejected**: nothing was: the accepted path reached the end of its branch (depth {depth}), "
                "so the step had no wrong node.")
    guesses = f"at depth {depth + 1} the tree guessed {rejected_list(wrong)}"
    choice = model_choice(steps, index)
    if choice is None:
        return f"**Why rejected**: {guesses}; {last_step_note(record, streaming=record is None)}"
    prob = f" (model probability {choice.prob:.2f})" if choice.prob is not None else ""
    verb = "drew" if step.drawn else "chose"
    return (f"**Why rejected**: {guesses}; after {quoted(step.nodes[last].text)} the model {verb} "
            f"**{token_shown(choice)}**{prob} instead: {rank_in_head(step, depth, choice, wrong)}.")
