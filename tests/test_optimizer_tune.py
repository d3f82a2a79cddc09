"""optimizer tune: measured tuning of tree and context lookup with the real decoder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import load_tree_with_lookup, validate_tree
from optimizer.__main__ import main
from optimizer.walk import walk_optimum
from optimizer.space import TreeSpace
from optimizer.tune import (
    TUNE_SPACE_VERSION,
    Measurement,
    Setup,
    SurplusTrial,
    TuneConfig,
    TuneInputs,
    TuneSpace,
    check_quota,
    confirm_fastest,
    heads_accuracy,
    run_tune,
    starting_setups,
)
from tests.tiny_models import VOCAB, StubTokenizer, medusa_of, random_heads, tiny_base

REPO = Path(__file__).resolve().parent.parent
HEADS = REPO / "heads" / "smollm2-135m-instruct"
TINY = "tests.test_optimizer_tune:tiny_medusa"
PROMPTS = "the cat sat on the mat, the cat sat\nabc abc abc abc\none two one two one two\n"


class CharTokenizer(StubTokenizer):
    """Prompts as character codes, so a test prompt file decodes on the tiny models."""

    def __call__(self, text: str) -> dict:
        return {"input_ids": [ord(c) % VOCAB for c in text]}


def tiny_medusa():
    """A MedusaModel factory for `--model tests.test_optimizer_tune:tiny_medusa` (worker processes too)."""
    base = dataclasses.replace(tiny_base("llama"), tokenizer=CharTokenizer())
    return medusa_of(base, random_heads(4))


@dataclasses.dataclass
class FakeMeasurer:
    """Seconds grow with the verified rows, tokens per step with the tree: a known best size."""

    num_prompts: int = 4
    calls: int = 0

    def measure(self, setup: Setup, prompt: int) -> Measurement:
        self.calls += 1
        rows = len(setup.tree) + (setup.lookup.tokens if setup.lookup else 0)
        steps = round(32 / min(1 + 0.1 * len(setup.tree), 2.0))
        return Measurement(32, steps, steps * (0.01 + 0.001 * rows))


def space(budget: int = 16) -> TuneSpace:
    return TuneSpace(TreeSpace(top_k=4, max_depth=3, budget=budget, sized=True))


INPUTS = TuneInputs("fake", "fake-heads", ("p1", "p2", "p3", "p4"), 32)


def test_setups_round_trip_through_the_trial_parameters():
    tune_space = space()
    costs = {f"depth_cost{d}": 1.0 for d in range(3)} | {f"rank_gap{d}_{j}": 1.0 for d in range(3) for j in range(3)}
    for lookup in (None, LookupConfig(8, 3, 2), LookupConfig(16, 3, 1)):
        setup = Setup(validate_tree([[0], [0, 0], [1], [0, 0, 3]]), lookup)
        assert tune_space.suggest(optuna.trial.FixedTrial(tune_space.params_for(setup) | costs)) == setup
    with pytest.raises(ValueError, match="outside the tuning space"):
        tune_space.params_for(Setup(((0,),), LookupConfig(17, 3, 2)))


def test_first_setups_are_the_default_the_shipped_trees_and_the_walk_optima():
    tune_space = TuneSpace(TreeSpace(top_k=10, max_depth=4, budget=64, sized=True))
    default = Setup(*load_tree_with_lookup(HEADS / "tree.json"))
    setups = starting_setups(tune_space, default, str(HEADS))
    assert setups[0] == default
    for name in ("tree-length.json", "tree-speed.json"):
        assert Setup(*load_tree_with_lookup(HEADS / name)) in setups
    table = heads_accuracy(str(HEADS))  # with segments and lookups: the walk optima with the default lookup
    assert Setup(walk_optimum(table, 64, lookup=default.lookup).tree, default.lookup) in setups
    assert Setup(walk_optimum(table, 4, lookup=default.lookup).tree, default.lookup) in setups
    assert len(set(setups)) == len(setups)
    small = TuneSpace(TreeSpace(top_k=10, max_depth=4, budget=16, sized=True))  # the 54-node tree does not fit
    assert all(len(s.tree) <= 16 for s in starting_setups(small, default, str(HEADS)))


def test_a_speed_study_prunes_slower_trials_and_keeps_the_fastest(tmp_path):
    config = TuneConfig(budget=16, n_trials=24, storage=f"sqlite:///{tmp_path}/s.db", study_name="s", seed=0)
    start = [Setup(((0,),)), Setup(tuple((r,) for r in range(4)) + ((0, 0),))]
    measurer = FakeMeasurer()
    result = run_tune(measurer, space(), config, INPUTS, start)
    study = optuna.load_study(study_name="s", storage=config.storage)
    states = [t.state for t in study.trials]
    assert result.finished == 24 == states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
    assert states.count(TrialState.PRUNED) >= 1
    assert [t.user_attrs["setup"]["paths"] for t in study.trials[:2]] == [[list(p) for p in s.tree] for s in start]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    assert result.best.number == best.number and result.best.tokens_per_second == pytest.approx(best.value)
    for trial in study.trials:
        if trial.state == TrialState.PRUNED:  # stopped after fewer prompts, and slower than the best
            assert trial.user_attrs["measured"]["prompts"] < 4
            assert trial.user_attrs["tokens_per_second"] < result.best.tokens_per_second
    assert measurer.calls < 24 * 4


def test_confirmation_measures_the_fastest_distinct_setups_again_in_interleaved_rounds(tmp_path):
    config = TuneConfig(budget=16, n_trials=8, storage=f"sqlite:///{tmp_path}/c.db", study_name="c", seed=0)
    same = Setup(((0,),))
    run_tune(FakeMeasurer(), space(), config, INPUTS, [same, same, Setup(((0,), (1,)))])
    measurer = FakeMeasurer()
    confirmed = confirm_fastest(measurer, "c", config.storage, candidates=3, rounds=2)
    assert len({c.tuned.setup for c in confirmed}) == 3 and measurer.calls == 3 * 2 * measurer.num_prompts
    speeds = [c.tokens_per_second for c in confirmed]
    assert speeds == sorted(speeds, reverse=True)
    for c in confirmed:  # the fake machine does not drift: every round measures what the trial measured
        assert c.rounds == pytest.approx((c.tuned.tokens_per_second,) * 2)
    slowest = min((c.tuned for c in confirm_fastest(FakeMeasurer(), "c", config.storage, 8, 1)),
                  key=lambda t: t.tokens_per_second)
    with_reference = confirm_fastest(FakeMeasurer(), "c", config.storage, 1, 1, reference=slowest.setup)
    assert [c.tuned.setup for c in with_reference][1:] == [slowest.setup]  # the default is measured beside the best


def test_a_pareto_study_gives_the_front_of_speed_against_nodes(tmp_path):
    config = TuneConfig(budget=16, n_trials=12, objective="pareto", storage=f"sqlite:///{tmp_path}/p.db", seed=1)
    result = run_tune(FakeMeasurer(), space(), config, INPUTS)
    nodes = [len(p.setup.tree) for p in result.front]
    speeds = [p.tokens_per_second for p in result.front]
    assert nodes == sorted(nodes) and len(set(nodes)) == len(nodes)
    assert speeds == sorted(speeds)  # more nodes on the front only if faster
    assert result.best.tokens_per_second == max(speeds)


def test_a_trial_past_the_target_is_refused_unmeasured(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/q.db")
    for _ in range(3):
        study.add_trial(optuna.create_trial(value=1.0))
    check_quota(study, 3, 4)
    with pytest.raises(SurplusTrial):
        check_quota(study, 3, 3)


def test_tune_decodes_with_the_real_decoder_and_writes_the_fastest_setup(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS)
    out = tmp_path / "tuned.json"
    storage = f"sqlite:///{tmp_path}/t.db"
    argv = ["tune", "--model", TINY, "--prompts", str(prompts), "--trials", "6", "--max-new-tokens", "12",
            "--budget", "8", "--storage", storage, "--study-name", "t", "--seed", "0", "--no-progress",
            "--confirm", "2", "--confirm-rounds", "2", "--out", str(out)]
    assert main(argv) == 0
    assert "fastest setup" in capsys.readouterr().out
    tree, lookup = load_tree_with_lookup(out)
    meta = json.loads(out.read_text())["meta"]
    study = optuna.load_study(study_name="t", storage=storage)
    best = study.trials[meta["trial"]]
    assert meta["source"] == "optimizer tune" and meta["trials"] == 6 and meta["study"] == "t"
    # the two fastest trials again, and the heads' default (trial 0), 2 rounds each; the fastest median chosen
    confirmation = meta["confirmation"]
    assert confirmation[0]["trial"] == meta["trial"]
    fastest = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)[:2]
    assert {c["trial"] for c in confirmation} == {t.number for t in fastest} | {0}
    assert [c["heads_default"] for c in confirmation].count(True) == 1
    assert meta["measured_tokens_per_second"] == confirmation[0]["median_tokens_per_second"]
    medians = [c["median_tokens_per_second"] for c in confirmation]
    assert medians == sorted(medians, reverse=True)
    assert all(len(c["rounds_tokens_per_second"]) == 2 for c in confirmation)
    assert confirmation[0]["trial_tokens_per_second"] == pytest.approx(best.value)
    assert meta["measured_tokens_per_step"] == best.user_attrs["tokens_per_step"] >= 1.0
    assert best.user_attrs["measured"]["tokens"] == 3 * 12  # the tiny model has no EOS: every prompt runs to the end
    assert [list(p) for p in tree] == best.user_attrs["setup"]["paths"] and len(tree) <= 8
    assert (dataclasses.asdict(lookup) if lookup else None) == best.user_attrs["setup"]["lookup"]
    assert meta["prompts_count"] == 3 and meta["max_new_tokens"] == 12 and meta["machine"]["device"] == "cpu"
    assert study.user_attrs["tune_space_version"] == TUNE_SPACE_VERSION
    assert study.trials[0].user_attrs["setup"]["paths"] == [[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]]  # the default first


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_bad_tuning_input_ends_with_one_clear_line(tmp_path, capsys):
    good = tmp_path / "prompts.txt"
    good.write_text(PROMPTS)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    base = ["tune", "--model", TINY, "--trials", "2", "--max-new-tokens", "4", "--no-progress"]
    storage = ["--storage", f"sqlite:///{tmp_path}/e.db"]
    assert "has no prompts" in _error(base + ["--prompts", str(empty)] + storage, capsys)
    assert "does not exist" in _error(base + ["--prompts", str(tmp_path / "none.txt")] + storage, capsys)
    assert "--budget must be >= 1" in _error(base + ["--prompts", str(good), "--budget", "0"] + storage, capsys)
    unreachable = ["--storage", "postgresql://nobody@127.0.0.1:1/optuna"]
    assert "cannot open the Optuna storage" in _error(base + ["--prompts", str(good)] + unreachable, capsys)
    missing_dir = ["--storage", f"sqlite:///{tmp_path}/no/such/dir.db"]
    assert "cannot open the Optuna storage" in _error(base + ["--prompts", str(good)] + missing_dir, capsys)
    old = optuna.create_study(storage=f"sqlite:///{tmp_path}/e.db", study_name="old")
    old.set_user_attr("tune_space_version", 0)
    err = _error(base + ["--prompts", str(good), "--study-name", "old"] + storage, capsys)
    assert "search-space version 0" in err and f"is {TUNE_SPACE_VERSION}" in err
    assert main(base + ["--prompts", str(good), "--study-name", "mine", "--confirm", "0"] + storage) == 0
    capsys.readouterr()
    other = tmp_path / "other.txt"
    other.write_text("other prompts\n")
    err = _error(base + ["--prompts", str(other), "--study-name", "mine"] + storage, capsys)  # other inputs
    assert "other settings (inputs.prompts 3, here 1; inputs.prompts_sha1" in err
