"""A decoding step's cost, measured through the decoder's own step: tokens, depth, internal nodes, lookup.

A step of the decoder (medusa_core.engine.step) costs one verification pass over every token it
verifies (the root, the heads' tree, the lookup chain), the heads' proposals down to the tree's
depth (a shallow tree skips the deep heads), the base model's output projection at every node
with children (leaves are projected only when the accepted path ends there), and the host-side
lookup search. So the cost model is

    seconds = pass(tokens) + depth_seconds * depth + internal_seconds * internal + lookup_seconds * [lookup]
              + leaf_seconds * [the accepted path ends in a leaf, projected in a second pass]

with ``pass`` a measured curve over token counts and the four slopes fitted by least squares to
steps of many shapes: for every size, trees of every depth, wide (few internal nodes) and narrow
(many), steps with a lookup chain, and steps that accept a leaf (the timed step makes the leaf's
token the model's own choice). Every round times every shape once, so drift in the
machine's speed hits all shapes alike. Torch-free: the timed step comes from the caller.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from medusa_core.spec.trees import Path_

from .profile import DEFAULT_SIZES, LatencyProfile, ProfileError, step_features

PROBE_LOOKUP_TOKENS = 8  # the lookup chain of the shapes that measure the lookup's own cost
WIDE, NARROW = 10, 2  # branching of the two shapes per (size, depth): few and many internal nodes


@dataclass(frozen=True)
class StepShape:
    """One timed step: the heads' tree and the length of the lookup chain verified beside it."""

    tree: tuple[Path_, ...]
    chain: int = 0
    leaf: bool = False  # node (0,) carries the model's own next token, so the step accepts it (a leaf)

    @property
    def features(self) -> tuple[float, int, float]:
        return step_features(self.tree, self.chain)


def shaped_tree(nodes: int, depth: int, branching: int) -> tuple[Path_, ...] | None:
    """``nodes`` nodes reaching exactly ``depth``: the rank-0 chain, then breadth-first fill of the
    ``branching``-ary tree of that depth; None when it holds fewer nodes."""
    if nodes < depth or (depth == 0 and nodes):
        return None
    chain = [(0,) * d for d in range(1, depth + 1)]
    tree, seen = list(chain), set(chain)
    level: list[Path_] = [()]
    for _ in range(depth):
        level = [p + (r,) for p in level for r in range(branching)]
        for path in level:
            if len(tree) == nodes:
                break
            if path not in seen:
                tree.append(path)
                seen.add(path)
    return tuple(sorted(tree, key=lambda p: (len(p), p))) if len(tree) == nodes else None


def spine_tree(nodes: int, depth: int, top_k: int) -> tuple[Path_, ...] | None:
    """``nodes`` nodes as spines (r,), (r, 0), (r, 0, 0), ... of ``depth`` under each root rank r:
    nearly every node has a child, the most internal nodes a tree of that size and depth can
    have; None when ``top_k`` spines hold fewer nodes."""
    if depth < 2 or nodes > top_k * depth or nodes < depth:
        return None
    spines = [(r,) + (0,) * d for r in range(top_k) for d in range(depth)]
    tree = sorted(spines[:nodes], key=lambda p: (len(p), p))
    return tuple(tree) if max(map(len, tree)) == depth else None


def profile_shapes(sizes: Sequence[int], num_heads: int, top_k: int) -> list[StepShape]:
    """The shapes a step profile times: per size, every depth in a wide, a narrow and a spiny
    tree (few, more and most internal nodes), trees with a lookup chain beside them, and a step
    that accepts a leaf."""
    shapes: list[StepShape] = []
    for size in sizes:
        nodes = size - 1
        if nodes == 0:
            shapes.append(StepShape(()))
        for depth in range(1, num_heads + 1):
            trees = [shaped_tree(nodes, depth, b) for b in dict.fromkeys((min(WIDE, top_k), min(NARROW, top_k)))]
            for tree in [*trees, spine_tree(nodes, depth, top_k)]:
                if tree is not None and StepShape(tree) not in shapes:
                    shapes.append(StepShape(tree))
        chain = min(PROBE_LOOKUP_TOKENS, nodes - 1)
        tree = shaped_tree(nodes - chain, 1, top_k) if chain >= 1 else None
        if tree is not None:
            shapes.append(StepShape(tree, chain))
        wide = shaped_tree(nodes, 1, top_k) if nodes else None
        if wide is not None:
            shapes.append(StepShape(wide, leaf=True))
    return shapes


def fit_step_cost(shapes: Sequence[StepShape], seconds: Sequence[float]) -> dict[str, Any]:
    """Least-squares fit of the cost model: the pass curve at each token count timed and the three slopes."""
    features = np.array([s.features for s in shapes], dtype=np.float64)  # [n, 3]
    sizes = sorted({int(t) for t in features[:, 0]})
    column = {size: i for i, size in enumerate(sizes)}
    design = np.zeros((len(shapes), len(sizes) + 4))  # [n, sizes + depth + internal + lookup + leaf]
    for row, (shape, (tokens, depth, internal)) in enumerate(zip(shapes, features)):
        design[row, column[int(tokens)]] = 1.0
        design[row, len(sizes):] = (depth, internal, 1.0 if shape.chain else 0.0, 1.0 if shape.leaf else 0.0)
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ProfileError("the profile's shapes cannot separate depth, internal nodes, lookup and leaves: "
                           "time more sizes")
    solution = nonnegative_slopes(design, np.asarray(seconds, dtype=np.float64), len(sizes))
    residual = design @ solution - np.asarray(seconds)
    return {
        "sizes": sizes,
        "pass_seconds": solution[: len(sizes)].tolist(),
        "depth_seconds": float(solution[-4]),
        "internal_seconds": float(solution[-3]),
        "lookup_seconds": float(solution[-2]),
        "leaf_seconds": float(solution[-1]),
        "fit_relative_error": float(np.median(np.abs(residual) / np.asarray(seconds))),
    }


def nonnegative_slopes(design: np.ndarray, seconds: np.ndarray, free: int) -> np.ndarray:
    """Least squares with the slopes (columns from ``free`` on) kept >= 0: a cost cannot be
    negative, and timing noise can make a small one look so. The most negative slope is fixed at 0
    and the rest refitted until none is negative."""
    fixed: set[int] = set()
    while True:
        keep = [c for c in range(design.shape[1]) if c not in fixed]
        partial, *_ = np.linalg.lstsq(design[:, keep], seconds, rcond=None)
        solution = np.zeros(design.shape[1])
        solution[keep] = partial
        slopes = solution[free:]
        if slopes.min() >= 0:
            return solution
        fixed.add(free + int(np.argmin(slopes)))


def measure_step_profile(
    step: Callable[[StepShape], None],
    num_heads: int,
    top_k: int,
    sizes: Sequence[int] = DEFAULT_SIZES,
    repeats: int = 7,
    warmup: int = 2,
    progress: Callable[[int, int], None] | None = None,
    info: Mapping[str, Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyProfile:
    """Time ``step(shape)`` (one decoder step, synchronised) for every shape, ``repeats`` rounds
    of all shapes after ``warmup`` untimed calls each; the profile holds the fitted cost model."""
    if repeats < 1 or warmup < 0:
        raise ProfileError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    shapes = profile_shapes(sizes, num_heads, top_k)
    for shape in shapes:
        for _ in range(warmup):
            step(shape)
    times: list[list[float]] = [[] for _ in shapes]
    for done in range(1, repeats + 1):
        for shape_times, seconds in zip(times, time_round(step, shapes, clock)):
            shape_times.append(seconds)
        if progress is not None:
            progress(done, repeats)
    return profile_from_times(shapes, times, info, {"repeats": repeats, "warmup": warmup})


def time_round(
    step: Callable[[StepShape], None], shapes: Sequence[StepShape], clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    """One round: every shape's step timed once, in order."""
    seconds = []
    for shape in shapes:
        start = clock()
        step(shape)
        seconds.append(clock() - start)
    return seconds


def profile_from_times(
    shapes: Sequence[StepShape], times: Sequence[Sequence[float]], info: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> LatencyProfile:
    """The fitted profile from every shape's timed rounds (medians); ``info`` fills the profile's
    device/model/dtype/prefix_len/batch_size, its other keys and ``extra`` go to ``meta``."""
    medians = [statistics.median(t) for t in times]
    fit = fit_step_cost(shapes, medians)
    details = dict(info or {})
    profile = LatencyProfile(
        sizes=tuple(fit["sizes"]),
        seconds=tuple(max(s, 1e-9) for s in fit["pass_seconds"]),
        device=str(details.pop("device", "")),
        model=str(details.pop("model", "")),
        dtype=str(details.pop("dtype", "")),
        prefix_len=int(details.pop("prefix_len", 0)),
        batch_size=int(details.pop("batch_size", 1)),
        meta=details | dict(extra or {}) | {
            "fit_relative_error": fit["fit_relative_error"],
            "shapes": [[len(s.tree), s.chain, int(s.leaf)] for s in shapes], "shape_seconds": medians,
            "round_seconds": first_shape_rounds(shapes, times)},
        pass_seconds=tuple(fit["pass_seconds"]),
        depth_seconds=fit["depth_seconds"],
        internal_seconds=fit["internal_seconds"],
        lookup_seconds=fit["lookup_seconds"],
        leaf_seconds=fit["leaf_seconds"],
    )
    # The 1-D curve: the model's cost of breadth-first 4-ary trees (what format-1 profiles timed).
    curve = [profile.step_seconds(shaped_tree(s - 1, natural_depth(s - 1), 4) or ()) for s in profile.sizes]
    return dataclasses.replace(profile, seconds=tuple(max(c, 1e-9) for c in curve))


def first_shape_rounds(shapes: Sequence[StepShape], times: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """Per token count, the rounds of the first shape timed at it (optimizer.profile_check reads them)."""
    rounds: dict[str, list[float]] = {}
    for shape, seconds in zip(shapes, times):
        rounds.setdefault(str(int(shape.features[0])), list(seconds))
    return rounds


def natural_depth(nodes: int, branching: int = 4) -> int:
    """Depth of the breadth-first ``branching``-ary tree of ``nodes`` nodes."""
    depth, total = 0, 0
    while total < nodes:
        depth += 1
        total += branching**depth
    return depth
