"""Tree exporters and importers for serving engines.

* ``json``: our tree file (format "medusa-tree/1", :mod:`medusa_core.spec.trees`).
* ``medusa``: Medusa's ``medusa_choices`` Python literal ``[[0], [0, 0], [1]]``; the importer also
  takes an assignment such as a line of Medusa's ``medusa_choices.py``.
* ``trtllm``: TensorRT-LLM's ``--medusa_choices="[[0], [0, 0], ...]"`` (at most 63 nodes, depth
  <= number of heads when known); the importer takes the bare list too.
* ``vllm``: vLLM's ``speculative_token_tree`` string ``[(0,), (1,), (0, 0), (0, 1)]``, only for
  product trees (see :mod:`optimizer.engines`); other trees raise :class:`EngineError`.
* ``sglang``: export only, an approximation. SGLang has no explicit trees: its EAGLE drafter grows
  a tree of ``--speculative-eagle-topk`` children per node for ``--speculative-num-steps`` levels
  and keeps the ``--speculative-num-draft-tokens`` most confident tokens (root included). The
  triple (depth, widest branching, nodes + 1) gives it the same depth, width and size budget as
  the tree, not the tree itself.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from medusa_core.spec.trees import TreeError, tree_depth, tree_from_json, tree_to_json, tree_top_k, validate_tree

from .engines import check_tree_for_engine

Path_ = tuple[int, ...]
FORMATS: tuple[str, ...] = ("json", "medusa", "trtllm", "vllm", "sglang")
IMPORT_FORMATS: tuple[str, ...] = ("json", "medusa", "trtllm", "vllm")
TRTLLM_FLAG = "--medusa_choices="


@dataclass(frozen=True)
class SGLangParams:
    num_steps: int  # --speculative-num-steps: tree depth
    eagle_topk: int  # --speculative-eagle-topk: the most children of any node (root included)
    num_draft_tokens: int  # --speculative-num-draft-tokens: tree nodes + the root

    def as_args(self) -> str:
        return (
            f"--speculative-num-steps {self.num_steps} --speculative-eagle-topk {self.eagle_topk} "
            f"--speculative-num-draft-tokens {self.num_draft_tokens}"
        )


def to_medusa_choices(paths: Sequence[Sequence[int]]) -> str:
    return repr([list(p) for p in validate_tree(paths)])


def from_medusa_choices(text: str) -> tuple[Path_, ...]:
    return validate_tree(_literal(text, "medusa_choices"))


def to_trtllm_choices(paths: Sequence[Sequence[int]], num_heads: int | None = None) -> str:
    tree = validate_tree(paths, num_heads)
    check_tree_for_engine(tree, "trtllm", num_heads)
    return f'{TRTLLM_FLAG}"{to_medusa_choices(tree)}"'


def from_trtllm_choices(text: str) -> tuple[Path_, ...]:
    value = text.strip().removeprefix(TRTLLM_FLAG).strip().strip("'\"")
    return validate_tree(_literal(value, "--medusa_choices"))


def to_vllm_tree(paths: Sequence[Sequence[int]]) -> str:
    tree = validate_tree(paths)
    check_tree_for_engine(tree, "vllm")
    return repr(list(tree))


def from_vllm_tree(text: str) -> tuple[Path_, ...]:
    return validate_tree(_literal(text.strip().strip("'\""), "speculative_token_tree"))


def to_sglang_params(paths: Sequence[Sequence[int]]) -> SGLangParams:
    tree = validate_tree(paths)
    children: dict[Path_, int] = {}
    for path in tree:
        children[path[:-1]] = children.get(path[:-1], 0) + 1
    return SGLangParams(
        num_steps=tree_depth(tree),
        eagle_topk=max(children.values(), default=0),
        num_draft_tokens=len(tree) + 1,
    )


def _literal(text: str, what: str) -> Any:
    """A Python literal, or the value of a single assignment ``name = literal``."""
    try:
        module = ast.parse(text.strip())
    except SyntaxError as err:
        raise TreeError(f"{what} is not a Python literal: {err.msg}") from err
    if len(module.body) != 1 or not isinstance(module.body[0], (ast.Expr, ast.Assign)):
        raise TreeError(f"{what} must be one list of paths (or one assignment of it)")
    try:
        return ast.literal_eval(module.body[0].value)
    except (ValueError, TypeError) as err:
        raise TreeError(f"{what} is not a literal list of paths: {err}") from err


def export_tree(
    paths: Sequence[Sequence[int]],
    fmt: str,
    num_heads: int | None = None,
    top_k: int | None = None,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """The tree as text in one of :data:`FORMATS` (``meta`` is kept by the json format only)."""
    tree = validate_tree(paths, num_heads, top_k)
    if fmt == "json":
        heads = num_heads if num_heads is not None else tree_depth(tree)
        return json.dumps(tree_to_json(tree, heads, top_k or tree_top_k(tree), dict(meta or {})), indent=1)
    if fmt == "medusa":
        return to_medusa_choices(tree)
    if fmt == "trtllm":
        return to_trtllm_choices(tree, num_heads)
    if fmt == "vllm":
        return to_vllm_tree(tree)
    if fmt == "sglang":
        return to_sglang_params(tree).as_args()
    raise ValueError(f"unknown tree format {fmt!r}; use {', '.join(FORMATS)}")


def import_tree(text: str, fmt: str) -> tuple[Path_, ...]:
    """A tree from text in one of :data:`IMPORT_FORMATS` (SGLang parameters do not define a tree)."""
    if fmt == "json":
        try:
            return tree_from_json(json.loads(text))
        except json.JSONDecodeError as err:
            raise TreeError(f"tree JSON is not valid JSON: {err}") from err
    if fmt == "medusa":
        return from_medusa_choices(text)
    if fmt == "trtllm":
        return from_trtllm_choices(text)
    if fmt == "vllm":
        return from_vllm_tree(text)
    raise ValueError(f"cannot import format {fmt!r}; use {', '.join(IMPORT_FORMATS)}")
