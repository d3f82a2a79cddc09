"""HTML and Markdown of the Explore tab: the coloured output text and the statistics panels."""

from __future__ import annotations

import html
from collections.abc import Sequence

from medusa_core import Divergence, GenerationRecord, StepRecord

from .acceptance import from_heads, from_lookup
from .figures import BASE_COLOUR, LOOKUP_COLOUR, depth_colour
from .runs import STOPPED

END_MARK = "⏹"
STEP_BACKGROUNDS = ("#fff1c1", "#d8eeff", "#e2f5d6", "#fde0e3", "#ebe2ff", "#ffe6cc")


def step_background(step_index: int) -> str:
    return STEP_BACKGROUNDS[step_index % len(STEP_BACKGROUNDS)]


def token_source(position: int, source: str) -> str:
    """Position 0 of a step's emitted tokens is the base model's root; a later one is head d's own
    guess, or a token copied from the context by the lookup."""
    if position == 0:
        return "the base model"
    if from_heads(source):
        return f"head {position}" + (" (the context lookup copied it too)" if from_lookup(source) else "")
    return "the context lookup"


def span_style(position: int, source: str) -> tuple[str, str]:
    """CSS class and underline colour of an emitted token."""
    if position == 0:
        return "src-base", BASE_COLOUR
    if from_heads(source):
        return "src-head", depth_colour(position)
    return "src-head src-lookup", LOOKUP_COLOUR


def step_spans(step_index: int, step: StepRecord, special: frozenset[int] = frozenset()) -> list[str]:
    """One <span> per emitted token: background = step, underline colour = source. Special tokens
    (end of turn, end of text) show as a small end mark, not as '<|im_end|>'."""
    spans = []
    for position, token_id in enumerate(step.emitted):
        node = step.nodes[step.accepted[position]]
        source, colour = span_style(position, node.source)
        rank = f", rank {node.rank}" if position and from_heads(node.source) else ""
        title = f"step {step_index + 1}: token {token_id} from {token_source(position, node.source)}{rank}"
        shown = html.escape(node.text)
        if token_id in special:
            source += " special"
            title += " (a special token: the answer ends here)"
            shown = END_MARK
        spans.append(
            f'<span class="tok {source}" data-step="{step_index + 1}" title="{html.escape(title)}" '
            f'style="background:{step_background(step_index)};--head-colour:{colour}">{shown}</span>'
        )
    return spans


def legend_html(num_heads: int) -> str:
    sources = [f'<span style="border-bottom:3px solid {BASE_COLOUR}">base model</span>'] + [
        f'<span style="border-bottom:3px solid {depth_colour(h)};font-weight:600">head {h}</span>' for h in range(1, num_heads + 1)
    ] + [f'<span style="border-bottom:3px solid {LOOKUP_COLOUR};font-weight:600">context lookup</span>']
    steps = "".join(f'<span style="background:{c}">&nbsp;</span>' for c in STEP_BACKGROUNDS[:4])
    return (f'<div class="medusa-legend">background: one colour per step {steps} · underline: {" ".join(sources)}'
            f' · {END_MARK} end of the answer</div>')


def text_html(spans: Sequence[str], num_heads: int) -> str:
    return f'{legend_html(num_heads)}<div class="medusa-text" id="medusa-output">{"".join(spans)}</div>'


def stat_cards(items: Sequence[tuple[str, str]], note: str = "") -> str:
    cards = "".join(f'<div class="card"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}</div></div>' for k, v in items)
    return f'<div class="medusa-stats">{cards}</div>' + (f'<div class="medusa-note">{html.escape(note)}</div>' if note else "")


def live_stats_html(steps: Sequence[StepRecord], seconds: float) -> str:
    tokens = sum(len(s.emitted) for s in steps)
    speed = tokens / seconds if seconds > 0 else 0.0
    return stat_cards(
        [("tokens", str(tokens)), ("steps", str(len(steps))), ("tokens / step", f"{tokens / max(1, len(steps)):.2f}"), ("tokens / s", f"{speed:.1f}")],
        "generating…",
    )


def lookup_suffix(tokens: int) -> str:
    return f" + {tokens} lookup" if tokens else ""


def acceptance_by_depth(steps: Sequence[StepRecord]) -> str:
    """How often a step got past each depth of its tree: 'depth 1: 40% · depth 2: 12%'."""
    deepest = max((s.accepted_length for s in steps), default=0)
    if not steps or deepest == 0:
        return "no drafted token was accepted"
    shares = [sum(s.accepted_length >= d for s in steps) / len(steps) for d in range(1, deepest + 1)]
    return "accepted past depth " + " · ".join(f"{d}: {100 * share:.0f}%" for d, share in enumerate(shares, start=1))


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def stop_text(record: GenerationRecord) -> str:
    if record.stop_reason == STOPPED:
        return f"step {record.num_steps} (Stop)"
    return record.stop_reason.replace("_", " ")


def stats_html(record: GenerationRecord, num_nodes: int, extra_note: str = "") -> str:
    mode = record.settings.get("mode", "greedy")
    note = acceptance_by_depth(record.steps) + " of the steps."
    if record.stop_reason == STOPPED:
        note = f"Stopped at step {record.num_steps}: everything shown is this run's part before Stop. " + note
    return stat_cards([
        ("mode", {"exact": "exact sampling", "typical": "typical (Medusa)"}.get(mode, mode)),
        ("tokens / step", f"{record.tokens_per_step:.2f}"),
        ("tokens / s", f"{record.tokens_per_second:.1f}"),
        ("tokens", str(len(record.tokens))),
        ("steps", str(record.num_steps)),
        ("seconds", f"{record.seconds:.2f}"),
        ("tree nodes", str(num_nodes) + lookup_suffix(record.settings.get("lookup_tokens", 0))),
        ("stopped at", stop_text(record)),
        ("device", f"{record.device} {record.dtype}"),
    ], note + (" " + extra_note if extra_note else ""))


def step_caption(step_index: int, step: StepRecord, total: int) -> str:
    accepted_text = "".join(step.nodes[i].text for i in step.accepted[1:])
    copied = any(not from_heads(step.nodes[i].source) for i in step.accepted[1:])
    caption = (
        f"**Step {step_index + 1} of {total}**: {plural(len(step.nodes), 'candidate token')} verified in one pass, "
        f"{step.accepted_length} accepted from the {'context lookup' if copied else 'heads'} ({html.escape(repr(accepted_text))}), "
        f"{len(step.emitted)} emitted · {step.seconds * 1000:.0f} ms"
    )
    return caption + (drawn_caption(step) if step.drawn else "")


def drawn_caption(step: StepRecord) -> str:
    """Exact sampling: what the model drew at each visited node, and whether a child had it."""
    parts = []
    for node, token in zip(step.accepted, step.drawn):
        child = next((i for i in step.accepted if step.nodes[i].parent == node), None)
        if child is not None and step.nodes[child].token_id == token:
            parts.append(f"at {html.escape(repr(step.nodes[node].text))} drew {html.escape(repr(step.nodes[child].text))} ✓ a child")
        else:
            parts.append(f"at {html.escape(repr(step.nodes[node].text))} drew token {token} ✗ no child: the next root")
    return "<br>Drawn from the model: " + "; ".join(parts)


def outcome_text(first: GenerationRecord, second: GenerationRecord, greedy: bool,
                 divergence: Divergence | None) -> str:
    """Whether the two outputs match, and for greedy outputs that differ, where and how close the call was."""
    if first.tokens == second.tokens:
        if greedy:
            return "outputs identical, as greedy acceptance guarantees."
        return "outputs identical (sampling: not expected to match)."
    if not greedy:
        return "outputs differ (sampling: not expected to match)."
    if divergence is None:
        return "outputs differ!"
    why = (f"In {first.dtype} a tree pass rounds differently from a one-token pass, so near-ties can flip."
           if divergence.near_tie else "That is not explained by rounding: please report it.")
    return f"outputs differ: {divergence.describe()}. {why}"


def mean_accepted(record: GenerationRecord) -> float:
    return sum(s.accepted_length for s in record.steps) / max(1, record.num_steps)


def comparison_table(rows: Sequence[tuple[str, GenerationRecord]]) -> str:
    """One row per run: tokens per step, accepted depth per step, speed, steps and seconds."""
    titles = ("run", "tokens / step", "accepted depth / step", "tokens / s", "steps", "seconds")
    head = "".join(f"<th>{h}</th>" for h in titles)
    body = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{r.tokens_per_step:.2f}</td><td>{mean_accepted(r):.2f}</td>"
        f"<td>{r.tokens_per_second:.1f}</td><td>{r.num_steps}</td><td>{r.seconds:.2f}</td></tr>"
        for label, r in rows
    )
    return f'<table class="medusa-compare"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def comparison_html(first: GenerationRecord, second: GenerationRecord, greedy: bool,
                    divergence: Divergence | None = None, first_label: str = "Medusa",
                    second_label: str = "plain decoding") -> str:
    """The run against a second run of the same prompt (plain decoding or another tree): speed-up,
    a table of both runs, and whether the outputs match."""
    speedup = first.tokens_per_second / second.tokens_per_second if second.tokens_per_second > 0 else 0.0
    verdict = "✓ identical" if first.tokens == second.tokens else "✗ differ"
    note = (f"Speed-up {speedup:.2f}x over {second_label} ({second.num_steps} steps, {second.seconds:.2f} s); "
            + outcome_text(first, second, greedy, divergence))
    cards = stat_cards([
        ("speed-up", f"{speedup:.2f}x"),
        (f"{first_label} tokens / s", f"{first.tokens_per_second:.1f}"),
        (f"{second_label} tokens / s", f"{second.tokens_per_second:.1f}"),
        ("outputs", verdict),
    ], note)
    return cards + comparison_table([(first_label, first), (second_label, second)])
