"""Latency profiles: honest timing with a fake forward pass and clock, interpolation, JSON."""

from __future__ import annotations

import pytest

from optimizer import (
    LatencyProfile,
    ProfileError,
    load_latency_profile,
    measure_latency_profile,
    profile_from_json,
    save_latency_profile,
    tokens_per_second,
)


class FakeDevice:
    """A forward pass that 'takes' 1 ms + 0.1 ms per token on a fake clock, plus a slow first call
    per size (warm-up) and an event log to check the order of forward and sync calls."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events: list[str] = []
        self.seen: set[int] = set()

    def clock(self) -> float:
        return self.now

    def forward(self, tokens: int) -> None:
        self.events.append(f"forward {tokens}")
        self.now += 0.001 + 0.0001 * tokens + (0.5 if tokens not in self.seen else 0.0)
        self.seen.add(tokens)

    def sync(self) -> None:
        self.events.append("sync")


def test_measure_times_every_size_in_rounds_after_warmup() -> None:
    device = FakeDevice()
    done = []
    profile = measure_latency_profile(
        device.forward, sizes=(1, 8, 64), repeats=4, warmup=1, sync=device.sync,
        progress=lambda i, n: done.append((i, n)), info={"device": "fake", "model": "m", "dtype": "float32",
                                                          "prefix_len": 200, "threads": 2},
        clock=device.clock,
    )
    assert profile.sizes == (1, 8, 64)
    assert profile.seconds == pytest.approx((0.0011, 0.0018, 0.0074))  # warm-up cost excluded
    assert done == [(1, 4), (2, 4), (3, 4), (4, 4)]  # one call per round
    assert (profile.device, profile.model, profile.dtype, profile.prefix_len) == ("fake", "m", "float32", 200)
    assert profile.meta == {"threads": 2, "repeats": 4, "warmup": 1}
    warmups, timed = device.events[:4], device.events[4:]
    assert warmups == ["forward 1", "forward 8", "forward 64", "sync"]
    # rounds over all sizes (drift hits every size alike), every timed call synced
    assert timed == ["forward 1", "sync", "forward 8", "sync", "forward 64", "sync"] * 4


def test_median_ignores_an_outlier() -> None:
    times = iter([0.0, 1.0, 1.0, 1.002, 2.0, 12.0])  # durations 1.0, 0.002, 10.0 -> median 1.0
    profile = measure_latency_profile(lambda n: None, sizes=(4,), repeats=3, warmup=0, clock=lambda: next(times))
    assert profile.seconds == (1.0,)


def test_interpolation_extrapolation_and_speed() -> None:
    profile = LatencyProfile((1, 4, 8), (0.010, 0.016, 0.024))
    assert profile.latency(1) == pytest.approx(0.010)
    assert profile.latency(2) == pytest.approx(0.012)
    assert profile.latency(6) == pytest.approx(0.020)
    assert profile.latency(0.5) == pytest.approx(0.010)  # flat below the range
    assert profile.latency(12) == pytest.approx(0.032)  # last slope above it
    assert tokens_per_second(2.4, 3, profile) == pytest.approx(2.4 / 0.016)  # 3 nodes + root = 4 tokens


def test_json_round_trip_and_errors(tmp_path) -> None:
    profile = LatencyProfile((1, 2), (0.1, 0.2), device="cpu", model="m", dtype="float32", prefix_len=200,
                             meta={"threads": 2})
    path = tmp_path / "p.json"
    save_latency_profile(profile, path)
    loaded = load_latency_profile(path)
    assert loaded == profile and loaded.meta == {"threads": 2} and loaded.batch_size == 1
    batched = LatencyProfile((1, 2), (0.1, 0.2), batch_size=8)
    assert profile_from_json(batched.to_json()).batch_size == 8
    with pytest.raises(ProfileError, match="batch_size must be >= 1"):
        LatencyProfile((1,), (0.1,), batch_size=0)
    with pytest.raises(ProfileError, match="format is None"):
        profile_from_json({"sizes": [1], "seconds": [1]})
    with pytest.raises(ProfileError, match="ascending"):
        LatencyProfile((2, 1), (0.1, 0.2))
    with pytest.raises(ProfileError, match="finite and > 0"):
        LatencyProfile((1,), (float("nan"),))
    with pytest.raises(ProfileError, match="as many seconds as sizes"):
        LatencyProfile((1, 2), (0.1,))
    with pytest.raises(ProfileError, match="repeats must be >= 1"):
        measure_latency_profile(lambda n: None, sizes=(1,), repeats=0)
    path.write_text("{")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_latency_profile(path)
