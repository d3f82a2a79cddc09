"""The benchmark's Markdown table, from its JSON (so a saved results file renders the same)."""

from __future__ import annotations


def _f(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _ties(m: dict) -> str:
    """Mismatches whose first difference was a near-tie of the baseline's logits (rounding, not a bug)."""
    differ = sum(not r["identical"] for r in m.get("runs") or [])
    ties = m.get("near_tie_mismatches")
    return f" ({ties}/{differ} differ at near-ties)" if differ and ties is not None else ""


def _hist(counts: list[int] | None) -> str:
    """Accepted-length counts as shares, e.g. `0:40% 1:35% 2:25%`."""
    if not counts:
        return "–"
    total = sum(counts)
    return " ".join(f"{n}:{100 * c / total:.0f}%" for n, c in enumerate(counts) if c)


def _nodes(tree_nodes: int | None, lookup: int) -> str:
    """Heads' nodes, plus the context-lookup chain's (`3+6`)."""
    if tree_nodes is None:
        return "–"
    return f"{tree_nodes - lookup}+{lookup}" if lookup else str(tree_nodes)


def machine_line(result: dict) -> str:
    m = result["machine"]
    where = m["device_name"] if m["device"] == "cpu" else f"{m['device_name']} (CUDA {m.get('cuda')})"
    kernel = f"; CPU matmul: {m['cpu_matmul_kernel']}" if m.get("cpu_matmul_kernel") else ""
    return (
        f"{where}, {m['cores']} cores, {m['torch_threads']} torch threads, {result['dtype']}; "
        f"torch {m['torch']}, transformers {m['transformers']}{kernel}"
    )


def markdown_table(result: dict) -> str:
    """A header naming model, heads, prompts and machine, then one row per method."""
    lines = [
        f"**{result['model']}** + heads `{result['heads']}`, {result['prompts']} prompts x "
        f"{result['max_new_tokens']} new tokens, greedy; {machine_line(result)}; {result['created']}.",
        "",
        "| method | tree nodes | tokens/s median (min–max) | speed-up median (min–max) | tokens/step | s/step (vs hf-greedy) | identical | accepted-length histogram |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in result["methods"]:
        name = m["name"] + (f" (= {', '.join(m['aliases'])})" if m.get("aliases") else "")
        nodes = _nodes(m["tree_nodes"], m.get("lookup_tokens", 0))
        if m["skipped"]:
            lines.append(f"| {name} | {nodes} | skipped: {m['skip_reason']} | | | | | |")
            continue
        lines.append(
            f"| {name} | {nodes} "
            f"| {_f(m['tokens_per_second_median'])} ({_f(m['tokens_per_second_min'])}–{_f(m['tokens_per_second_max'])}) "
            f"| {_f(m['speedup_median'], 2, 'x')} ({_f(m['speedup_min'], 2)}–{_f(m['speedup_max'], 2)}) "
            f"| {_f(m['tokens_per_step'], 2)} | {_f(m['seconds_per_step'], 3)} ({_f(m['relative_step_cost'], 2, 'x')}) "
            f"| {_f(100 * m['identical_fraction'], 0, '%')}{_ties(m)} | {_hist(m['acceptance_histogram'])} |"
        )
    lines += [
        "",
        "Speed-up is per prompt over hf-greedy (`model.generate(do_sample=False)`) on the same prompt; "
        "identical = same token ids as hf-greedy. A step is one forward pass of the target model for "
        "hf-* methods and one tree verification pass (prefill not counted) for ours-greedy and medusa-*; "
        "speed-up is about tokens/step divided by the step's cost relative to hf-greedy. "
        "Tree nodes `a+b`: a heads' nodes plus a b-token chain copied from the context (context lookup; "
        "a step verifies the chain only when the context has a match).",
    ]
    return "\n".join(lines + prompt_lookup_table(result)) + "\n"


def prompt_lookup_table(result: dict) -> list[str]:
    """Our loop's methods against the fastest prompt lookup, prompt by prompt (none without one)."""
    reference = result.get("prompt_lookup")
    paired = [m for m in result["methods"] if m.get("over_prompt_lookup_median") is not None]
    if not reference or not paired:
        return []
    lines = [
        "",
        f"Against {reference} (the fastest prompt lookup here), prompt by prompt:",
        "",
        f"| method | tokens/s over {reference}'s, median (min–max) | prompts faster |",
        "|---|---:|---:|",
    ]
    for m in paired:
        lines.append(
            f"| {m['name']} | {_f(m['over_prompt_lookup_median'], 2, 'x')} "
            f"({_f(m['over_prompt_lookup_min'], 2)}–{_f(m['over_prompt_lookup_max'], 2)}) "
            f"| {m['prompts_faster_than_prompt_lookup']} of {m['prompts_compared_with_prompt_lookup']} |"
        )
    return lines


def batch_table(result: dict) -> str:
    """Throughput per batch size: one row per batch size, a column per method, and where each of
    our methods stops paying (its throughput no longer above hf-greedy's)."""
    methods = list(dict.fromkeys(m["name"] for m in result["methods"]))
    sizes = sorted({m["batch_size"] for m in result["methods"]})
    cell = {(m["name"], m["batch_size"]): m for m in result["methods"]}
    lines = [
        f"**{result['model']}** + heads `{result['heads']}`, {result['prompts']} prompts x "
        f"{result['max_new_tokens']} new tokens, greedy, batched; {machine_line(result)}; {result['created']}.",
        "",
        "| batch | " + " | ".join(f"{name} tok/s" for name in methods) + " | tokens/step | row latency (s) | identical |",
        "|---:|" + "---:|" * (len(methods) + 3),
    ]
    for size in sizes:
        entries = [cell.get((name, size)) for name in methods]
        figures = ["–" if m is None else _f(m["throughput"]) + _over_greedy(m) for m in entries]
        per_step = " / ".join(_f(m["tokens_per_step"], 2) for m in entries if m)
        latency = " / ".join(_f(m["row_seconds_median"], 2) for m in entries if m)
        same = " / ".join(_f(100 * m["identical_fraction"], 0, "%") for m in entries if m)
        lines.append(f"| {size} | " + " | ".join(figures) + f" | {per_step} | {latency} | {same} |")
    lines += ["", "Throughput is all new tokens over all seconds at that batch size; (x) is over hf-greedy "
              "(`model.generate`, left padding) at the same batch size; tokens/step, median row latency and the "
              "share of rows identical to hf-greedy on the prompt alone are listed in the columns' order."]
    for name in methods[1:]:
        losing = [s for s in sizes if (name, s) in cell and (cell[(name, s)]["throughput_speedup"] or 0) <= 1]
        verdict = f"stops paying at batch {losing[0]}." if losing else "pays at every batch size measured."
        lines.append(f"- {name}: {verdict}")
    return "\n".join(lines) + "\n"


def _over_greedy(m: dict) -> str:
    return "" if m["kind"] == "hf-greedy" else f" ({_f(m['throughput_speedup'], 2, 'x')})"
