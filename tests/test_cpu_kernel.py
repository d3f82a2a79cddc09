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
    cpu_kernel.built_kernel.cache_clear()
    try:
        assert cpu_kernel.built_kernel()[0] is None
    finally:
        monkeypatch.delenv(cpu_kernel.DISABLE_ENV)
        cpu_kernel.built_kernel.cache_clear()


@pytest.mark.parametrize("compiler", ["no-such-compiler-here", "false"], ids=["missing", "failing"])
def test_no_kernel_without_a_working_compiler(monkeypatch, tmp_path, compiler):
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", compiler)
    cpu_kernel.built_kernel.cache_clear()
    try:
        assert cpu_kernel.built_kernel()[0] is None
    finally:
        monkeypatch.delenv("CC")
        cpu_kernel.built_kernel.cache_clear()
