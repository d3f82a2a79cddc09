"""Serving-engine constraints on tree shape.

* ``none``: any valid tree.
* ``trtllm`` (TensorRT-LLM): at most ``max_draft_len`` = 63 nodes and depth <= number of heads.
* ``vllm``: vLLM's tree proposer computes one child count per level and drafts each node's
  children as the top-c tokens, so a tree it runs faithfully is a *product tree*: every node of
  level d has the same c_d children, of ranks 0..c_d - 1. Such a tree is given by its branching
  vector (c_1, ..., c_D).
"""

from __future__ import annotations

from itertools import product
from typing import Iterator, Literal, Sequence

from medusa_core.spec.trees import validate_tree

Engine = Literal["none", "trtllm", "vllm"]
ENGINES: tuple[str, ...] = ("none", "trtllm", "vllm")
TRTLLM_MAX_DRAFT_LEN = 63
Path_ = tuple[int, ...]


class EngineError(ValueError):
    """A tree or budget that a serving engine cannot take; the message says why."""


def check_engine(engine: str) -> Engine:
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; use {', '.join(ENGINES)}")
    return engine  # type: ignore[return-value]


def check_engine_budget(engine: str, budget: int) -> None:
    if budget < 1:
        raise EngineError(f"the node budget must be >= 1, got {budget}")
    if check_engine(engine) == "trtllm" and budget > TRTLLM_MAX_DRAFT_LEN:
        raise EngineError(
            f"TensorRT-LLM takes at most max_draft_len = {TRTLLM_MAX_DRAFT_LEN} tree nodes, budget is {budget}"
        )


def level_branching(paths: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Branching vector of a product tree; :class:`EngineError` naming the first offending node otherwise."""
    tree = validate_tree(paths)
    levels: list[list[Path_]] = [[()]]
    for path in tree:
        if len(path) > len(levels) - 1:
            levels.append([])
        levels[len(path)].append(path)
    branching: list[int] = []
    for depth in range(1, len(levels)):
        count = len(levels[depth]) // len(levels[depth - 1])
        for parent in levels[depth - 1]:
            children = sorted(p[-1] for p in levels[depth] if p[:-1] == parent)
            if children != list(range(count)) or count * len(levels[depth - 1]) != len(levels[depth]):
                raise EngineError(
                    f"node {list(parent) or 'root'} has children of ranks {children}, but vLLM needs every "
                    f"node of level {depth - 1} to have the same children, of ranks 0..c-1 (a product tree)"
                )
        branching.append(count)
    return tuple(branching)


def product_tree(branching: Sequence[int]) -> tuple[Path_, ...]:
    """The tree in which every node of level d has children of ranks 0..branching[d]-1."""
    if any(c < 1 for c in branching):
        raise EngineError(f"branching factors must be >= 1, got {list(branching)}")
    paths: list[Path_] = []
    for depth in range(1, len(branching) + 1):
        paths.extend(product(*(range(c) for c in branching[:depth])))
    return validate_tree(paths)


def product_tree_size(branching: Sequence[int]) -> int:
    size, level = 0, 1
    for count in branching:
        level *= count
        size += level
    return size


def uniform_branchings(top_k: int, max_depth: int, budget: int) -> Iterator[tuple[int, ...]]:
    """Every branching vector (including the empty tree) with ranks < top_k, depth <= max_depth and
    at most ``budget`` nodes."""

    def extend(prefix: tuple[int, ...], size: int, level: int) -> Iterator[tuple[int, ...]]:
        yield prefix
        if len(prefix) == max_depth:
            return
        for count in range(1, top_k + 1):
            if size + level * count > budget:
                break
            yield from extend(prefix + (count,), size + level * count, level * count)

    return extend((), 0, 1)


def check_tree_for_engine(paths: Sequence[Sequence[int]], engine: str, num_heads: int | None = None) -> None:
    """Raise :class:`EngineError` if the engine cannot run this tree."""
    tree = validate_tree(paths, num_heads)
    check_engine(engine)
    if engine == "trtllm" and len(tree) > TRTLLM_MAX_DRAFT_LEN:
        raise EngineError(f"TensorRT-LLM takes at most {TRTLLM_MAX_DRAFT_LEN} nodes, the tree has {len(tree)}")
    if engine == "vllm":
        level_branching(tree)
