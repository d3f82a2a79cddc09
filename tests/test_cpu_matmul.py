"""The few-rows linear layer computes what nn.Linear computes, for every row count and shape."""

import copy

import pytest
import torch
from torch import nn

from medusa_core.accel import cpu_matmul
from medusa_core.accel.cpu_matmul import FewRowsLinear, use_few_rows_linears


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 7, 16, 17, 100])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("outputs, shape_class", [(40, "block"), (400, "wide")])
@pytest.mark.parametrize("way", ["torch", "transposed", "kernel"])
@pytest.mark.parametrize("inference", [True, False], ids=["inference", "autograd"])
def test_few_rows_linear_equals_linear_whichever_way_is_chosen(monkeypatch, rows, bias, outputs, shape_class, way, inference):
    if way == "kernel" and cpu_matmul.built_kernel()[0] is None:
        pytest.skip("no C compiler here: the kernel cannot be chosen")
    monkeypatch.setattr(cpu_matmul, "matmul_decision", lambda: decided(way, way))
    torch.manual_seed(rows)
    plain = nn.Linear(24, outputs, bias=bias)
    fast = use_few_rows_linears(copy.deepcopy(plain))
    assert type(fast) is FewRowsLinear and fast.shape_class == shape_class
    for shape in [(rows, 24), (1, rows, 24)]:
        x = torch.randn(shape)
        with torch.inference_mode(inference):
            out = fast(x)
        assert out.shape == shape[:-1] + (outputs,)
        assert out.is_contiguous()
        torch.testing.assert_close(out, plain(x), rtol=1e-5, atol=1e-5)


def decided(block: str, wide: str) -> dict:
    """A made-up measurement where `block` / `wide` is the fastest way at every row count."""
    def times(best):
        return {way: (1.0 if way == best else 2.0) for way in (cpu_matmul.TORCH, cpu_matmul.TRANSPOSED, cpu_matmul.KERNEL)}
    return {"threads": 2, "kernel": "k", "timings": {
        shape: {str(r): times(best) for r in cpu_matmul.MEASURED_ROWS} for shape, best in (("block", block), ("wide", wide))}}


@pytest.mark.parametrize("rows, best, expect", [
    (1, "kernel", "kernel"), (16, "kernel", "kernel"), (17, "kernel", "torch"), (3, "transposed", "transposed"), (4, "torch", "torch"),
])
def test_each_layer_takes_the_way_measured_fastest(monkeypatch, rows, best, expect):
    calls = []

    def spy(x, w):
        calls.append("kernel")
        return x @ w.T

    monkeypatch.setattr(cpu_matmul, "matmul_decision", lambda: decided(best, "torch"))
    monkeypatch.setattr(cpu_matmul, "built_kernel", lambda: (spy, None, ""))
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda *a: calls.append("transposed") or real_mm(*a))
    fast = use_few_rows_linears(nn.Linear(8, 6))
    x = torch.randn(rows, 8)
    with torch.no_grad():
        out = fast(x)
    torch.testing.assert_close(out, nn.functional.linear(x, fast.weight, fast.bias))
    assert calls == ([] if expect == "torch" else [expect])
    calls.clear()
    fast(x)  # the weight needs gradients here: never the kernel
    assert "kernel" not in calls


def test_real_measurement_times_every_way_at_every_count():
    cpu_matmul.reset()
    decision = cpu_matmul.measure_matmuls()
    for shape in cpu_matmul.SHAPES:
        assert set(decision["timings"][shape]) == {str(r) for r in cpu_matmul.MEASURED_ROWS}
        for t in decision["timings"][shape].values():
            assert {cpu_matmul.TORCH, cpu_matmul.TRANSPOSED} <= t.keys() and all(ms > 0 for ms in t.values())
    assert "measured" in cpu_matmul.matmul_report() and "measured at" in cpu_matmul.matmul_details()


def test_the_choice_is_measured_once_per_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path))
    monkeypatch.setenv("MEDUSA_CPU_KERNEL", "0")
    cpu_matmul.reset()
    try:
        monkeypatch.setattr(cpu_matmul, "measure_matmuls", lambda: decided("transposed", "torch"))
        assert cpu_matmul.fastest("block", 2, True) == "transposed"
        cpu_matmul.matmul_decision.cache_clear()
        monkeypatch.setattr(cpu_matmul, "measure_matmuls", lambda: pytest.fail("measured twice"))
        assert cpu_matmul.fastest("block", 2, True) == "transposed"  # read back from the cache folder
        assert list(tmp_path.glob("kernels/matmul-choice-*.json"))
    finally:
        monkeypatch.delenv("MEDUSA_CPU_KERNEL")
        cpu_matmul.reset()


def test_gradients_flow_through_the_few_rows_path():
    torch.manual_seed(0)
    plain = nn.Linear(8, 5)
    fast = use_few_rows_linears(copy.deepcopy(plain))
    x = torch.randn(3, 8)
    plain(x).square().sum().backward()
    fast(x).square().sum().backward()
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad)
    torch.testing.assert_close(fast.bias.grad, plain.bias.grad)


def test_only_plain_linears_are_swapped_and_weights_kept():
    class Custom(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(4, 4), Custom(4, 4), nn.Embedding(10, 4))
    weight = model[0].weight
    use_few_rows_linears(model)
    assert type(model[0]) is FewRowsLinear and model[0].weight is weight
    assert type(model[1]) is Custom
    assert set(model.state_dict()) == {"0.weight", "0.bias", "1.weight", "1.bias", "2.weight"}
