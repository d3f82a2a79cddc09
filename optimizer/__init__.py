"""Medusa tree-topology optimiser: accuracy tables, expected length, exact optimum, Optuna search,
measured tuning (``tune``; the decoder loads only inside ``load_measurer``), latency profiles and
serving-engine exports. ``python -m optimizer --help`` is its CLI.

Works without Gradio; the explorer UI calls only the names exported here.
"""

from .accuracy import (
    ACCURACY_FORMAT,
    REFERENCE_TABLES,
    AccuracyError,
    AccuracyTable,
    accuracy_from_ranks,
    load_accuracy_table,
    reference_table,
    resolve_accuracy,
    save_accuracy_table,
    table_from_json,
    with_geometric_tail,
)
from .engines import ENGINES, TRTLLM_MAX_DRAFT_LEN, EngineError, check_tree_for_engine, level_branching, product_tree
from .exact import ExactOptimum, exact_optimum, greedy_order, speed_optimum
from .expected_length import (
    LENGTH_MODELS,
    LengthModelError,
    TreeScorer,
    expected_length,
    expected_lengths,
    replay_accepted,
    resolve_length_model,
)
from .formats import FORMATS, IMPORT_FORMATS, SGLangParams, export_tree, import_tree, to_sglang_params
from .profile import (
    DEFAULT_SIZES,
    LATENCY_FORMAT,
    LatencyProfile,
    ProfileError,
    load_latency_profile,
    measure_latency_profile,
    profile_from_json,
    save_latency_profile,
    tokens_per_second,
)
from .measure import DecoderMeasurer, load_measurer
from .predict import Prediction, predict_setup
from .step_cost import StepShape, measure_step_profile
from .walk import Walk, WalkOptimum, walk, walk_optimum
from .search import (
    DEFAULT_STORAGE,
    EXACT_OBJECTIVES,
    OBJECTIVES,
    CrossCheck,
    ExactnessError,
    SearchConfig,
    SearchError,
    SearchProgress,
    SearchResult,
    TreeTrial,
    best_so_far,
    cross_check,
    exact_reference,
    objective_names,
    open_study,
    run_search,
    trials_to_reach,
)
from .space import TreeSpace
from .tune import (
    MAX_LOOKUP_TOKENS,
    TUNE_OBJECTIVES,
    Confirmed,
    Measurement,
    Setup,
    TuneConfig,
    TuneError,
    TuneInputs,
    TuneProgress,
    TuneResult,
    TuneSpace,
    TunedSetup,
    confirm_fastest,
    read_tuning_prompts,
    run_tune,
    save_tuned_tree,
    starting_setups,
    tune_result,
)

__all__ = [name for name in dir() if not name.startswith("_")]
