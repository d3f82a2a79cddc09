"""Forward-pass latency versus tree size, for the hardware-aware objective.

A :class:`LatencyProfile` maps the number of tokens verified in one forward pass (tree nodes + the
root) to seconds, measured on one device for one model, and is saved as JSON
``{"format": "medusa-latency/1", "sizes": [...], "seconds": [...], "device", "model", "dtype",
"prefix_len", "batch_size", "meta"}``. The predicted speed of a tree is its expected tokens per step
divided by the latency of a pass over its nodes plus the root. A profile of batch size B times
passes over B rows, each with a tree of that size (`batch_size` absent: 1); a row's speed is then
the same ratio, and the batch's throughput B times it.

Format 2 (``"medusa-latency/2"``, measured through the decoder's own step by
:mod:`optimizer.step_cost`) adds the step's cost model: ``pass_seconds`` (a verification pass per
token count in ``sizes``) and the fitted ``depth_seconds`` (per head computed),
``internal_seconds`` (per node projected), ``lookup_seconds`` (the lookup search) and
``leaf_seconds`` (a step whose accepted path ends in a leaf projects that leaf in a second pass);
:meth:`LatencyProfile.step_seconds` prices a whole step from them. Its ``seconds`` are that
model's cost of breadth-first 4-ary trees, so callers that know only a token count still compare.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

LATENCY_FORMAT = "medusa-latency/2"
LATENCY_FORMATS = ("medusa-latency/1", LATENCY_FORMAT)
DEFAULT_SIZES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 80, 96, 112, 128)


class ProfileError(ValueError):
    """A latency profile that cannot be used; the message says which entry is wrong."""


@dataclass(frozen=True)
class LatencyProfile:
    """Median seconds of one forward pass per number of tokens in it, sizes ascending."""

    sizes: tuple[int, ...]
    seconds: tuple[float, ...]
    device: str = ""
    model: str = ""
    dtype: str = ""
    prefix_len: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)
    batch_size: int = 1  # rows in each timed pass
    # The decoder step's cost model (format 2); empty pass_seconds: a format-1 profile, tokens only.
    pass_seconds: tuple[float, ...] = ()
    depth_seconds: float = 0.0
    internal_seconds: float = 0.0
    lookup_seconds: float = 0.0
    leaf_seconds: float = 0.0

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise ProfileError(f"batch_size must be >= 1, got {self.batch_size}")
        sizes = tuple(int(s) for s in self.sizes)
        seconds = tuple(float(s) for s in self.seconds)
        if not sizes or len(sizes) != len(seconds):
            raise ProfileError(f"a profile needs as many seconds as sizes (>= 1), got {len(sizes)} and {len(seconds)}")
        if sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ProfileError(f"sizes must be ascending integers >= 1, got {list(sizes)}")
        if not all(math.isfinite(s) and s > 0 for s in seconds):
            raise ProfileError(f"seconds must be finite and > 0, got {list(seconds)}")
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "seconds", seconds)
        passes = tuple(float(s) for s in self.pass_seconds)
        if passes and len(passes) != len(sizes):
            raise ProfileError(f"pass_seconds needs one value per size, got {len(passes)} for {len(sizes)}")
        terms = (*passes, self.depth_seconds, self.internal_seconds, self.lookup_seconds, self.leaf_seconds)
        if not all(math.isfinite(float(t)) for t in terms):
            raise ProfileError("the step cost model's terms must be finite")
        object.__setattr__(self, "pass_seconds", passes)

    @property
    def has_step_model(self) -> bool:
        """Whether the profile prices depth, internal nodes and the lookup (format 2), not just tokens."""
        return bool(self.pass_seconds)

    def step_seconds(
        self, tree: Sequence[Sequence[int]], chain: float = 0.0, lookup: bool | None = None, leaf: float = 0.0
    ) -> float:
        """Seconds of one decoding step with this heads' tree and a lookup chain of ``chain``
        tokens (a mean over steps may be fractional); ``lookup`` (default: chain > 0) says whether
        the lookup search ran, ``leaf`` whether (or how often) the accepted path ended in a leaf.
        A format-1 profile prices the token count only."""
        tokens, depth, internal = step_features(tree, chain)
        if not self.has_step_model:
            return self.latency(tokens)
        searched = chain > 0 if lookup is None else lookup
        return float(np.interp(tokens, self.sizes, self.pass_seconds) + self.depth_seconds * depth
                     + self.internal_seconds * internal + (self.lookup_seconds if searched else 0.0)
                     + self.leaf_seconds * leaf)

    def latencies(self, tokens: np.ndarray | Sequence[float]) -> np.ndarray:
        """Seconds per pass for each token count: linear interpolation between measured sizes,
        the first value below the range, linear extrapolation of the last two points above it."""
        x = np.asarray(tokens, dtype=np.float64)
        inside = np.interp(x, self.sizes, self.seconds)
        if len(self.sizes) < 2:
            return inside
        slope = (self.seconds[-1] - self.seconds[-2]) / (self.sizes[-1] - self.sizes[-2])
        beyond = self.seconds[-1] + max(slope, 0.0) * (x - self.sizes[-1])
        return np.where(x > self.sizes[-1], beyond, inside)

    def latency(self, tokens: float) -> float:
        return float(self.latencies([tokens])[0])

    def mean_step_seconds(
        self, tree: Sequence[Sequence[int]], chains: np.ndarray, lookup: bool, weights: np.ndarray | None = None,
        leaves: np.ndarray | None = None,
    ) -> float:
        """Mean seconds of steps with this tree whose lookup chains were ``chains`` and whose
        accepted paths ended in a leaf where ``leaves`` (one each per step, weighted by
        ``weights``): the pass curve is not linear (kernels change with the row count), so each
        chain length is priced on its own rather than the mean chain."""
        chains = np.asarray(chains, dtype=np.int64)
        if not len(chains):
            return self.step_seconds(tree, 0.0, lookup)
        ends = np.zeros(len(chains), dtype=np.int64) if leaves is None else np.asarray(leaves, dtype=np.int64)
        kinds, inverse = np.unique(np.stack([chains, ends], axis=1), axis=0, return_inverse=True)
        share = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(kinds))
        prices = np.array([self.step_seconds(tree, float(c), lookup, float(e)) for c, e in kinds])
        return float(prices @ share / share.sum())

    def to_json(self) -> dict[str, Any]:
        model = {"pass_seconds": list(self.pass_seconds), "depth_seconds": self.depth_seconds,
                 "internal_seconds": self.internal_seconds, "lookup_seconds": self.lookup_seconds,
                 "leaf_seconds": self.leaf_seconds}
        return {
            "format": LATENCY_FORMAT if self.has_step_model else LATENCY_FORMATS[0],
            "sizes": list(self.sizes),
            "seconds": list(self.seconds),
            "device": self.device,
            "model": self.model,
            "dtype": self.dtype,
            "prefix_len": self.prefix_len,
            "batch_size": self.batch_size,
            "meta": dict(self.meta),
        } | (model if self.has_step_model else {})


def step_features(tree: Sequence[Sequence[int]], chain: float = 0.0) -> tuple[float, int, float]:
    """(tokens verified, heads' depth, internal nodes) of a step: the root, the tree's nodes and a
    lookup chain of ``chain`` tokens under the root; every chain token but the last has a child,
    and the root has children whenever anything is drafted."""
    paths = [tuple(p) for p in tree]
    parents = {p[:-1] for p in paths} | ({()} if chain > 0 else set())
    internal = max(len(parents), 1) + max(chain - 1, 0.0)
    return 1 + len(paths) + chain, max((len(p) for p in paths), default=0), internal


def tokens_per_second(expected_length: float, nodes: int, profile: LatencyProfile) -> float:
    """Predicted speed: expected tokens per step / latency of a pass over ``nodes`` + the root."""
    return expected_length / profile.latency(nodes + 1)


def profile_from_json(data: object) -> LatencyProfile:
    if not isinstance(data, dict):
        raise ProfileError("a latency profile must be a JSON object")
    if data.get("format") not in LATENCY_FORMATS:
        raise ProfileError(f"latency profile format is {data.get('format')!r}, expected one of {list(LATENCY_FORMATS)}")
    if not isinstance(data.get("sizes"), list) or not isinstance(data.get("seconds"), list):
        raise ProfileError("a latency profile needs 'sizes' and 'seconds' lists")
    return LatencyProfile(
        sizes=tuple(data["sizes"]),
        seconds=tuple(data["seconds"]),
        device=str(data.get("device", "")),
        model=str(data.get("model", "")),
        dtype=str(data.get("dtype", "")),
        prefix_len=int(data.get("prefix_len", 0)),
        meta=dict(data.get("meta", {})),
        batch_size=int(data.get("batch_size", 1)),
        pass_seconds=tuple(data.get("pass_seconds") or ()),
        depth_seconds=float(data.get("depth_seconds", 0.0)),
        internal_seconds=float(data.get("internal_seconds", 0.0)),
        lookup_seconds=float(data.get("lookup_seconds", 0.0)),
        leaf_seconds=float(data.get("leaf_seconds", 0.0)),
    )


def load_latency_profile(path: str | Path) -> LatencyProfile:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ProfileError(f"latency profile {path} is not valid JSON: {err}") from err
    return profile_from_json(data)


def save_latency_profile(profile: LatencyProfile, path: str | Path) -> None:
    Path(path).write_text(json.dumps(profile.to_json(), indent=1))


def measure_latency_profile(
    forward: Callable[[int], None],
    sizes: Sequence[int] = DEFAULT_SIZES,
    repeats: int = 7,
    warmup: int = 2,
    sync: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    info: Mapping[str, Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyProfile:
    """Time ``forward(n)`` (one forward pass over n tree tokens) for every size; median of ``repeats``.

    Every size gets ``warmup`` untimed calls first. Then each of ``repeats`` rounds times every
    size once, so drift in the machine's speed (other tenants, clocks) hits all sizes alike
    instead of bending the curve. ``sync`` (e.g. ``torch.cuda.synchronize``) runs before the clock
    starts and before it stops, so asynchronous devices are timed honestly.
    ``progress(done, total)`` is called after each round. ``info`` fills the profile's
    device/model/dtype/prefix_len; its other keys go to ``meta``.
    """
    if repeats < 1 or warmup < 0:
        raise ProfileError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    wait = sync or (lambda: None)
    for size in sizes:
        for _ in range(warmup):
            forward(size)
    wait()
    times: dict[int, list[float]] = {size: [] for size in sizes}
    for done in range(1, repeats + 1):
        for size in sizes:
            start = clock()
            forward(size)
            wait()
            times[size].append(clock() - start)
        if progress is not None:
            progress(done, repeats)
    medians = [statistics.median(times[size]) for size in sizes]
    details = dict(info or {})
    return LatencyProfile(
        sizes=tuple(sizes),
        seconds=tuple(medians),
        device=str(details.pop("device", "")),
        model=str(details.pop("model", "")),
        dtype=str(details.pop("dtype", "")),
        prefix_len=int(details.pop("prefix_len", 0)),
        batch_size=int(details.pop("batch_size", 1)),
        meta=details | {"repeats": repeats, "warmup": warmup},
    )
