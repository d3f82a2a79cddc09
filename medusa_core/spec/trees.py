"""Candidate trees: validation, named presets and the tree file format (torch-free).

A tree is a prefix-closed set of paths of top-k ranks (Medusa's ``medusa_choices``): path
(r0, ..., rd) is the rank-r0 token of head 0, then the rank-r1 token of head 1, and so on.
The root (the base model's own next token) is implicit and is node 0 of the flat layout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Iterable, Sequence

from medusa_core.spec.lookup import LookupConfig

TREE_FORMAT = "medusa-tree/1"

Path_ = tuple[int, ...]

# Medusa's published 63-node tree for Vicuna-7B (FasterDecoding/Medusa, medusa_choices.py).
MC_SIM_7B_63: tuple[Path_, ...] = tuple(
    tuple(p)
    for p in [
        [0], [0, 0], [1], [0, 1], [2], [0, 0, 0], [1, 0], [0, 2], [3], [0, 3], [4], [0, 4],
        [2, 0], [0, 5], [0, 0, 1], [5], [0, 6], [6], [0, 7], [0, 1, 0], [1, 1], [7], [0, 8],
        [0, 0, 2], [3, 0], [0, 9], [8], [9], [1, 0, 0], [0, 2, 0], [1, 2], [0, 0, 3], [4, 0],
        [2, 1], [0, 0, 4], [0, 0, 5], [0, 0, 0, 0], [0, 1, 1], [0, 0, 6], [0, 3, 0], [5, 0],
        [1, 3], [0, 0, 7], [0, 0, 8], [0, 0, 9], [6, 0], [0, 4, 0], [1, 4], [7, 0], [0, 1, 2],
        [2, 0, 0], [3, 1], [2, 2], [8, 0], [0, 5, 0], [1, 5], [1, 0, 1], [0, 2, 1], [9, 0],
        [0, 6, 0], [0, 0, 0, 1], [1, 6], [0, 7, 0],
    ]
)


class TreeError(ValueError):
    """A tree that is not a valid candidate tree; the message names the offending path."""


def validate_tree(
    paths: Iterable[Sequence[int]], num_heads: int | None = None, top_k: int | None = None
) -> tuple[Path_, ...]:
    """Check a tree and return it as canonical tuples in breadth-first (depth, path) order."""
    seen: set[Path_] = set()
    ordered: list[Path_] = []
    for raw in paths:
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
            raise TreeError(f"path {raw!r} is not a list of ranks")
        if len(raw) == 0:
            raise TreeError("empty path [] (the root is implicit; list only its descendants)")
        if not all(isinstance(r, int) and not isinstance(r, bool) for r in raw):
            raise TreeError(f"path {list(raw)!r} has a rank that is not an integer")
        path = tuple(int(r) for r in raw)
        if any(r < 0 for r in path):
            raise TreeError(f"path {list(path)} has a negative rank")
        if path in seen:
            raise TreeError(f"path {list(path)} appears twice")
        if num_heads is not None and len(path) > num_heads:
            raise TreeError(f"path {list(path)} has depth {len(path)} > {num_heads} heads")
        if top_k is not None and max(path) >= top_k:
            raise TreeError(f"path {list(path)} has rank {max(path)} >= top_k {top_k}")
        seen.add(path)
        ordered.append(path)
    for path in ordered:
        if len(path) > 1 and path[:-1] not in seen:
            raise TreeError(
                f"path {list(path)} has no parent {list(path[:-1])} (trees must be prefix-closed)"
            )
    return tuple(sorted(ordered, key=lambda p: (len(p), p)))


def tree_depth(paths: Sequence[Path_]) -> int:
    return max((len(p) for p in paths), default=0)


def tree_top_k(paths: Sequence[Path_]) -> int:
    """Smallest top_k that covers every rank in the tree (at least 1)."""
    return max((r for p in paths for r in p), default=0) + 1


def chain_tree(length: int) -> tuple[Path_, ...]:
    """Heads' top-1 guesses only: [[0], [0, 0], ...] of the given length."""
    if length < 0:
        raise TreeError(f"chain length must be >= 0, got {length}")
    return tuple((0,) * d for d in range(1, length + 1))


def full_tree(branching: int, depth: int) -> tuple[Path_, ...]:
    """Every path of ranks < branching up to the given depth."""
    if branching < 1 or depth < 0:
        raise TreeError(f"full tree needs branching >= 1 and depth >= 0, got {branching}, {depth}")
    level: list[Path_] = [()]
    paths: list[Path_] = []
    for _ in range(depth):
        level = [p + (r,) for p in level for r in range(branching)]
        paths.extend(level)
    return validate_tree(paths)


def preset_tree(name: str) -> tuple[Path_, ...]:
    """Named presets: ``chain-N``, ``full-KxD`` (branching K, depth D), ``mc_sim_7b_63``."""
    try:
        if name == "mc_sim_7b_63":
            return validate_tree(MC_SIM_7B_63)
        if name.startswith("chain-"):
            return chain_tree(int(name.removeprefix("chain-")))
        if name.startswith("full-"):
            k, d = name.removeprefix("full-").split("x")
            return full_tree(int(k), int(d))
    except ValueError as err:
        if isinstance(err, TreeError):
            raise
        raise TreeError(f"bad preset name {name!r}: {err}") from err
    raise TreeError(
        f"unknown tree preset {name!r}; use mc_sim_7b_63, chain-N or full-KxD, or a tree file"
    )


def tree_to_json(
    paths: Sequence[Sequence[int]], num_heads: int, top_k: int, meta: dict | None = None, lookup: LookupConfig | None = None
) -> dict:
    """The tree file's object; `lookup` records a context-lookup chain to verify beside the tree."""
    tree = validate_tree(paths, num_heads, top_k)
    lookup_key = {"lookup": asdict(lookup)} if lookup else {}
    return {
        "format": TREE_FORMAT,
        "paths": [list(p) for p in tree],
        "num_heads": num_heads,
        "top_k": top_k,
        "meta": dict(meta or {}),
    } | lookup_key


def tree_from_json(data: object) -> tuple[Path_, ...]:
    if not isinstance(data, dict):
        raise TreeError("a tree file must hold a JSON object with a 'paths' list")
    if data.get("format") != TREE_FORMAT:
        raise TreeError(f"tree file format is {data.get('format')!r}, expected {TREE_FORMAT!r}")
    paths = data.get("paths")
    if not isinstance(paths, list):
        raise TreeError("tree file has no 'paths' list")
    return validate_tree(paths, data.get("num_heads"), data.get("top_k"))


def lookup_from_json(data: dict) -> LookupConfig | None:
    """A tree file's optional "lookup": {"tokens": T, "max_ngram": N, "min_ngram": M}; None when absent."""
    raw = data.get("lookup")
    if raw is None:
        return None
    allowed = {f.name for f in fields(LookupConfig)}
    if not isinstance(raw, dict) or "tokens" not in raw or not raw.keys() <= allowed or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in raw.values()
    ):
        raise TreeError(f"tree file's lookup {raw!r} is not {{'tokens': int, optionally 'max_ngram', 'min_ngram': int}}")
    try:
        return LookupConfig(**raw)
    except ValueError as err:
        raise TreeError(f"tree file's lookup {raw!r} is invalid: {err}") from err


def save_tree_file(
    path: str | Path, paths: Sequence[Sequence[int]], num_heads: int, top_k: int, meta: dict | None = None, lookup: LookupConfig | None = None
) -> None:
    Path(path).write_text(json.dumps(tree_to_json(paths, num_heads, top_k, meta, lookup), indent=1))


def load_tree_with_lookup(path: str | Path) -> tuple[tuple[Path_, ...], LookupConfig | None]:
    """A tree file's paths and the context lookup it recommends (None when it has none)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise TreeError(f"tree file {path} is not valid JSON: {err}") from err
    return tree_from_json(data), lookup_from_json(data)


def load_tree_file(path: str | Path) -> tuple[Path_, ...]:
    return load_tree_with_lookup(path)[0]


def is_tree_file(spec: str) -> bool:
    return not spec.lstrip().startswith("[") and Path(spec).is_file()


def resolve_tree_with_lookup(spec: str) -> tuple[tuple[Path_, ...], LookupConfig | None]:
    """A tree spec's paths and, for a tree file, the context lookup it records (None otherwise)."""
    return load_tree_with_lookup(spec) if is_tree_file(spec) else (resolve_tree(spec), None)


def resolve_tree(spec: str) -> tuple[Path_, ...]:
    """A preset name, a path to a tree file, or a JSON list of paths."""
    if spec.lstrip().startswith("["):
        try:
            return validate_tree(json.loads(spec))
        except json.JSONDecodeError as err:
            raise TreeError(f"tree {spec!r} is not a JSON list of paths: {err}") from err
    if Path(spec).is_file():
        return load_tree_file(spec)
    return preset_tree(spec)
