"""The few-rows CPU kernel computes x @ w.T, row by row the same whatever the row count, and is
built once per machine into its cache."""

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medusa_core.accel import cpu_kernel


@pytest.fixture(scope="module")
def kernel():
    built = cpu_kernel.built_kernel()[0]
    if built is None:
        if os.environ.get("CI"):
            pytest.fail("CI machines have a C compiler: the few-rows kernel must build there")
        pytest.skip("no C compiler here: the kernel falls back to PyTorch's matmul")
    return built


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 40), outputs=st.integers(1, 70), inputs=st.integers(1, 100), seed=st.integers(0, 9))
def test_kernel_equals_matmul(kernel, rows, outputs, inputs, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, inputs, generator=gen)
    w = torch.randn(outputs, inputs, generator=gen)
    out = kernel(x, w)
    assert out.shape == (rows, outputs) and out.dtype == torch.float32
    torch.testing.assert_close(out, x @ w.T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("rows", [1, 4, 9, 16])
def test_threaded_layers_equal_matmul_also_from_two_threads_at_once(kernel, rows):
    """Layers this size split over OpenMP threads; the app runs two generations at once."""
    gen = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 579, generator=gen)
    weights = [torch.randn(203 + i, 579, generator=gen) for i in range(4)]
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda w: kernel(x, w), weights))
    for w, out in zip(weights, outs):
        torch.testing.assert_close(out, x @ w.T, rtol=1e-5, atol=1e-4)


def test_each_row_is_bitwise_the_same_in_any_batch(kernel):
    """A verification pass's rows get exactly the numbers a one-row decoding step would."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(11, 579, generator=gen)
    w = torch.randn(203, 579, generator=gen)
    alone = torch.cat([kernel(x[i : i + 1], w) for i in range(11)])
    for rows in (2, 3, 5, 11):
        assert torch.equal(kernel(x[:rows], w), alone[:rows])


def test_build_is_cached_per_cache_folder(kernel, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path))
    compiler = shutil.which(os.environ.get("CC", "cc"))
    first = cpu_kernel.build_kernel(compiler)
    assert first.parent == tmp_path / "kernels" and first.exists()
    stamp = first.stat().st_mtime_ns
    assert cpu_kernel.build_kernel(compiler) == first
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary files left


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv(cpu_kernel.DISABLE_ENV, "0")
    cpu_kernel.reset()
    try:
        assert cpu_kernel.few_rows_kernel() is None
    finally:
        monkeypatch.delenv(cpu_kernel.DISABLE_ENV)
        cpu_kernel.reset()


@pytest.mark.parametrize("compiler", ["no-such-compiler-here", "false"], ids=["missing", "failing"])
def test_no_kernel_without_a_working_compiler(monkeypatch, tmp_path, compiler):
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", compiler)
    cpu_kernel.reset()
    try:
        assert cpu_kernel.few_rows_kernel() is None
    finally:
        monkeypatch.delenv("CC")
        cpu_kernel.reset()


def test_the_kernel_is_used_only_where_it_measured_faster(monkeypatch, tmp_path, kernel):
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path))
    cpu_kernel.reset()
    slower = {"threads": torch.get_num_threads(), "faster": False, "timings": {"1": {"kernel_ms": 2.0, "torch_ms": 1.0}}}
    faster = slower | {"faster": True, "timings": {"1": {"kernel_ms": 1.0, "torch_ms": 2.0}}}
    try:
        monkeypatch.setattr(cpu_kernel, "measure_kernel", lambda k: slower)
        assert cpu_kernel.few_rows_kernel() is None
        assert "measured slower here: 1 rows 2.00 vs 1.00 ms" in cpu_kernel.kernel_report()
        cpu_kernel.reset()
        monkeypatch.setattr(cpu_kernel, "measure_kernel", lambda k: pytest.fail("measured twice on one machine"))
        assert cpu_kernel.few_rows_kernel() is None  # the decision is cached per build and thread count
        for cached in tmp_path.glob("kernels/*.json"):
            cached.write_text(__import__("json").dumps(faster))
        cpu_kernel.reset()
        assert cpu_kernel.few_rows_kernel() is not None and "measured faster" in cpu_kernel.kernel_report()
    finally:
        cpu_kernel.reset()


def test_real_measurement_compares_both_at_every_row_count(kernel):
    decision = cpu_kernel.measure_kernel(kernel)
    assert set(decision["timings"]) == {str(r) for r in cpu_kernel.MEASURED_ROWS}
    assert all(t["kernel_ms"] > 0 and t["torch_ms"] > 0 for t in decision["timings"].values())
    assert decision["faster"] == all(t["kernel_ms"] < t["torch_ms"] for t in decision["timings"].values())
