"""optimizer.profile_check: a latency profile taken on a busy machine is called irregular, in words."""

from __future__ import annotations

from optimizer import LatencyProfile
from optimizer.profile_check import check_profile, samples_from_meta

QUIET = ((1, 2, 4, 8, 16), (0.043, 0.048, 0.052, 0.063, 0.098))
BUSY = ((1, 2, 4, 8, 16), (0.179, 0.120, 0.131, 0.150, 0.210))  # 1 token slower than 2-8 tokens


def test_a_quiet_machines_profile_is_regular():
    check = check_profile(*QUIET, {1: [0.042, 0.043, 0.045]})
    assert check.regular and check.describe().startswith("regular")


def test_a_one_token_pass_slower_than_bigger_ones_is_irregular():
    check = check_profile(*BUSY)
    assert not check.regular
    assert check.problems == ("1 token took 179 ms but 2-8 tokens took less (down to 120 ms)",)
    assert "measure it again when the machine is quiet" in check.describe()


def test_small_noise_is_not_called_irregular():
    assert check_profile((1, 2, 4), (0.050, 0.048, 0.060)).regular  # 4% faster: timing noise


def test_widely_spread_rounds_are_irregular():
    check = check_profile(*QUIET, {8: [0.060, 0.090, 0.063]})
    assert not check.regular and "8 tokens: 60 ms to 90 ms" in check.problems[0]


def test_round_timings_travel_in_the_profiles_meta():
    profile = LatencyProfile(*QUIET, meta={"round_seconds": {"1": [0.04, 0.05]}})
    assert samples_from_meta(profile.meta) == {1: [0.04, 0.05]}
    assert samples_from_meta({}) == {}
