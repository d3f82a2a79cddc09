"""The decoder-step cost model: shapes, features, the least-squares fit, format 2 on disk."""

import json

import pytest

from optimizer.profile import LatencyProfile, ProfileError, load_latency_profile, profile_from_json, step_features
from optimizer.step_cost import (
    StepShape,
    fit_step_cost,
    measure_step_profile,
    natural_depth,
    profile_shapes,
    shaped_tree,
    spine_tree,
)
from medusa_core.spec.trees import validate_tree


def test_step_features_count_root_tree_chain_and_internal_nodes():
    assert step_features([]) == (1, 0, 1)  # plain decoding: the root alone is projected
    assert step_features([(0,), (1,), (0, 0)]) == (4, 2, 2)  # root and (0,) have children
    assert step_features([(0,)], chain=3) == (5, 1, 3)  # root + chain tokens 1 and 2


@pytest.mark.parametrize("nodes,depth,branching", [(1, 1, 10), (7, 3, 2), (10, 1, 10), (30, 4, 10), (14, 3, 2)])
def test_shaped_trees_have_the_asked_size_and_depth(nodes, depth, branching):
    tree = shaped_tree(nodes, depth, branching)
    assert tree is not None and validate_tree(tree) == tree
    assert len(tree) == nodes and max(len(p) for p in tree) == depth


def test_spine_trees_are_almost_all_internal_nodes():
    tree = spine_tree(12, 4, 10)
    assert validate_tree(tree) == tree and len(tree) == 12 and max(map(len, tree)) == 4
    assert step_features(tree)[2] == 1 + 9  # the root and every node but the three spines' ends
    assert spine_tree(41, 4, 10) is None and spine_tree(5, 1, 10) is None


def test_shapes_that_cannot_exist_are_refused():
    assert shaped_tree(11, 1, 10) is None and shaped_tree(2, 3, 2) is None and shaped_tree(15, 3, 2) is None


def test_natural_depth_of_breadth_first_trees():
    assert [natural_depth(n) for n in (0, 1, 4, 5, 20, 21)] == [0, 1, 1, 2, 2, 3]


def fake_step(costs):
    """A step whose cost follows the model exactly, on a fake clock."""
    now = [0.0]

    def step(shape: StepShape) -> None:
        tokens, depth, internal = shape.features
        now[0] += costs["base"] + costs["token"] * tokens + costs["depth"] * depth + costs["internal"] * internal
        now[0] += costs["lookup"] if shape.chain else 0.0
        now[0] += costs.get("leaf", 0.0) if shape.leaf else 0.0

    return step, lambda: now[0]


def test_the_fit_recovers_every_term_of_a_step_that_follows_the_model():
    costs = {"base": 0.01, "token": 0.001, "depth": 0.004, "internal": 0.0005, "lookup": 0.002, "leaf": 0.003}
    step, clock = fake_step(costs)
    profile = measure_step_profile(step, 4, 10, sizes=(1, 2, 4, 8, 16, 32, 64), repeats=2, warmup=1, clock=clock,
                                   info={"model": "m", "prefix_len": 5})
    assert profile.depth_seconds == pytest.approx(0.004)
    assert profile.internal_seconds == pytest.approx(0.0005)
    assert profile.lookup_seconds == pytest.approx(0.002)
    assert profile.leaf_seconds == pytest.approx(0.003)
    tree = [(0,), (1,), (0, 0), (0, 0, 0)]
    truth = 0.01 + 0.001 * 5 + 0.004 * 3 + 0.0005 * 3
    assert profile.step_seconds(tree) == pytest.approx(truth)
    assert profile.step_seconds(tree, 8) == pytest.approx(truth + 0.001 * 8 + 0.0005 * 7 + 0.002)
    assert profile.model == "m" and profile.prefix_len == 5 and profile.meta["fit_relative_error"] < 1e-9
    assert len(profile.meta["shape_seconds"]) == len(profile_shapes((1, 2, 4, 8, 16, 32, 64), 4, 10))


def test_shapes_separate_the_terms_and_a_single_size_cannot():
    shapes = profile_shapes((1, 2, 4, 8, 16), 4, 10)
    assert {s.features[1] for s in shapes} == {0, 1, 2, 3, 4} and any(s.chain for s in shapes)
    assert all(s.tree[0] == (0,) and max(map(len, s.tree)) == 1 for s in shapes if s.leaf)
    with pytest.raises(ProfileError, match="separate"):
        fit_step_cost([StepShape(((0,),))], [0.1])


def test_format_2_round_trips_and_format_1_still_loads(tmp_path):
    step, clock = fake_step({"base": 0.01, "token": 0.001, "depth": 0.004, "internal": 0.0005, "lookup": 0.0})
    profile = measure_step_profile(step, 2, 4, sizes=(1, 2, 4, 8), repeats=1, warmup=0, clock=clock)
    data = json.loads(json.dumps(profile.to_json()))
    assert data["format"] == "medusa-latency/2" and profile_from_json(data) == profile
    old = {"format": "medusa-latency/1", "sizes": [1, 5], "seconds": [0.01, 0.02]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = load_latency_profile(tmp_path / "old.json")
    assert not loaded.has_step_model and loaded.step_seconds([(0,), (1,), (2,)], 1) == pytest.approx(0.02)
    assert loaded.to_json()["format"] == "medusa-latency/1"


def test_a_cost_model_of_the_wrong_length_is_refused():
    with pytest.raises(ProfileError, match="pass_seconds"):
        LatencyProfile((1, 2), (0.1, 0.2), pass_seconds=(0.1,))


def test_noise_cannot_make_a_cost_negative():
    shapes = profile_shapes((1, 2, 4, 8), 2, 4)
    # the internal nodes look like they save time: the fit keeps that slope at 0 instead
    seconds = [0.01 * s.features[0] - 0.001 * s.features[2] + 0.002 * s.features[1] for s in shapes]
    fit = fit_step_cost(shapes, seconds)
    assert fit["internal_seconds"] == 0.0 and min(fit["depth_seconds"], fit["lookup_seconds"]) >= 0


def test_steps_are_priced_per_chain_length_not_at_the_mean_chain():
    # a kinked pass curve: 3 tokens slower than 5 (kernels change with the row count)
    profile = LatencyProfile((1, 3, 5, 11), (0.04, 0.06, 0.05, 0.08), pass_seconds=(0.04, 0.06, 0.05, 0.08))
    tree = [(0,), (1,)]
    both = profile.mean_step_seconds(tree, [0, 8], lookup=True)
    assert both == pytest.approx((0.06 + 0.08) / 2)
    assert both != pytest.approx(profile.step_seconds(tree, 4, lookup=True))
    weighted = profile.mean_step_seconds(tree, [0, 8, 8], True, weights=[2.0, 0.5, 0.5])
    assert weighted == pytest.approx((2 * 0.06 + 0.08) / 3)
