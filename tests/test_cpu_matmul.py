"""The few-rows linear layer computes what nn.Linear computes, for every row count and shape."""

import copy

import pytest
import torch
from torch import nn

from medusa_core.accel import cpu_matmul
from medusa_core.accel.cpu_matmul import KERNEL_MAX_ROWS, MAX_ROWS, WIDE_MAX_ROWS, FewRowsLinear, use_few_rows_linears


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 7, 16, MAX_ROWS, MAX_ROWS + 1, WIDE_MAX_ROWS + 1, KERNEL_MAX_ROWS + 1, 100])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("outputs, max_rows", [(40, MAX_ROWS), (400, WIDE_MAX_ROWS)], ids=["block", "vocab"])
@pytest.mark.parametrize("inference", [True, False], ids=["inference", "autograd"])
def test_few_rows_linear_equals_linear(rows, bias, outputs, max_rows, inference):
    """Inference mode takes the compiled kernel where it applies; autograd the PyTorch paths."""
    torch.manual_seed(rows)
    plain = nn.Linear(24, outputs, bias=bias)
    fast = use_few_rows_linears(copy.deepcopy(plain))
    assert type(fast) is FewRowsLinear and fast.max_rows == max_rows
    for shape in [(rows, 24), (1, rows, 24)]:
        x = torch.randn(shape)
        with torch.inference_mode(inference):
            out = fast(x)
        assert out.shape == shape[:-1] + (outputs,)
        assert out.is_contiguous()
        torch.testing.assert_close(out, plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, kernel_used", [(1, True), (KERNEL_MAX_ROWS, True), (KERNEL_MAX_ROWS + 1, False)])
def test_kernel_serves_few_rows_without_autograd(monkeypatch, rows, kernel_used):
    calls = []

    def spy(x, w):
        calls.append(x.shape)
        return x @ w.T

    monkeypatch.setattr(cpu_matmul, "few_rows_kernel", lambda: spy)
    fast = use_few_rows_linears(nn.Linear(8, 6))
    x = torch.randn(rows, 8)
    with torch.no_grad():
        fast(x)
    assert calls == ([(rows, 8)] if kernel_used else [])
    fast(x)  # the weight needs gradients here: autograd's path
    assert len(calls) == int(kernel_used)


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
