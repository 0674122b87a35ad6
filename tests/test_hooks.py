from __future__ import annotations

import pytest
import torch
from torch import nn

from swe_toolkit.hooks import capture_inputs, capture_outputs, registered_hooks, run_until, stop_after


class _CountingLinear(nn.Linear):
    """A linear layer that counts its forward calls."""

    def __init__(self, size: int) -> None:
        super().__init__(size, size)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


class _TupleOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        return x * 2, "extra"


class _KeywordCaller(nn.Module):
    """Calls its child with ``hidden_states=`` as a keyword, like some decoder layers do."""

    def __init__(self) -> None:
        super().__init__()
        self.child = _KeywordChild()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.child(hidden_states=x + 1)


class _KeywordChild(nn.Module):
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * 3


def _stack() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(_CountingLinear(4), _CountingLinear(4), _CountingLinear(4))


def _hook_count(module: nn.Module) -> int:
    return len(module._forward_hooks) + len(module._forward_pre_hooks)


def _all_hooks_removed(model: nn.Module) -> bool:
    return all(_hook_count(module) == 0 for module in model.modules())


def test_capture_inputs_and_outputs():
    model = _stack()
    x = torch.randn(2, 4)

    with capture_inputs({"second": model[1]}) as inputs, capture_outputs({"second": model[1]}) as outputs:
        result = model(x)

    expected_input = model[0](x)
    torch.testing.assert_close(inputs["second"], expected_input)
    torch.testing.assert_close(outputs["second"], model[1](expected_input))
    torch.testing.assert_close(model[2](outputs["second"]), result)
    assert _all_hooks_removed(model)


def test_capture_callback_receives_every_call():
    model = _stack()
    calls: list[tuple[str, tuple[int, ...]]] = []

    with capture_inputs({"a": model[0], "c": model[2]}, lambda key, tensor: calls.append((key, tuple(tensor.shape)))):
        model(torch.randn(3, 4))
        model(torch.randn(1, 4))

    assert calls == [("a", (3, 4)), ("c", (3, 4)), ("a", (1, 4)), ("c", (1, 4))]


def test_capture_outputs_takes_first_tuple_element():
    module = _TupleOutput()

    with capture_outputs({"tuple": module}) as outputs:
        module(torch.ones(2))

    torch.testing.assert_close(outputs["tuple"], torch.full((2,), 2.0))


def test_capture_inputs_reads_hidden_states_keyword():
    module = _KeywordCaller()

    with capture_inputs({"child": module.child}) as inputs:
        module(torch.zeros(2))

    torch.testing.assert_close(inputs["child"], torch.ones(2))


def test_hooks_removed_after_exception():
    model = _stack()

    with pytest.raises(RuntimeError, match="boom"):
        with capture_inputs({"a": model[0]}), capture_outputs({"b": model[1]}), stop_after(model[2]):
            assert _hook_count(model[0]) == 1
            assert _hook_count(model[1]) == 1
            raise RuntimeError("boom")

    assert _all_hooks_removed(model)


def test_hooks_removed_after_callback_error():
    model = _stack()

    def failing_callback(key: str, tensor: torch.Tensor) -> None:
        raise ValueError(f"rejected {key}")

    with pytest.raises(ValueError, match="rejected b"):
        with capture_inputs({"b": model[1]}, failing_callback):
            model(torch.randn(1, 4))

    assert _all_hooks_removed(model)


def test_registered_hooks_removes_handles():
    model = _stack()

    with pytest.raises(KeyError):
        with registered_hooks() as handles:
            handles.append(model[0].register_forward_hook(lambda *args: None))
            handles.append(model[1].register_forward_pre_hook(lambda *args: None))
            raise KeyError("stop")

    assert handles == []
    assert _all_hooks_removed(model)


def test_stop_after_skips_later_modules():
    model = _stack()
    fired: list[str] = []
    reached_end_of_block = False

    with capture_outputs({"last": model[2]}, lambda key, tensor: fired.append(key)), stop_after(model[1]):
        model(torch.randn(2, 4))
        reached_end_of_block = True

    assert [layer.calls for layer in model] == [1, 1, 0]
    assert fired == []
    assert not reached_end_of_block
    assert _all_hooks_removed(model)


def test_stop_after_runs_earlier_hooks_on_same_module():
    model = _stack()

    with capture_outputs({"second": model[1]}) as outputs, stop_after(model[1]):
        model(torch.randn(2, 4))

    assert outputs["second"].shape == (2, 4)


def test_run_until_reports_early_stop():
    model = _stack()
    unused = _CountingLinear(4)

    assert run_until(model, model[0], input=torch.randn(1, 4)) is True
    assert [layer.calls for layer in model] == [1, 0, 0]
    assert run_until(model, unused, input=torch.randn(1, 4)) is False
    assert [layer.calls for layer in model] == [2, 1, 1]
    assert _all_hooks_removed(model)
    assert _hook_count(unused) == 0


def test_nested_stop_after_suppresses_own_stop_only():
    model = _stack()
    x = torch.randn(1, 4)

    with stop_after(model[1]):
        with stop_after(model[0]):
            model(x)
        assert [layer.calls for layer in model] == [1, 0, 0]
        model(x)
        pytest.fail("the outer stop_after should have stopped the second forward pass")

    assert [layer.calls for layer in model] == [2, 1, 0]
    assert _all_hooks_removed(model)


def test_outer_stop_passes_through_inner_block():
    model = _stack()
    inner_finished = False

    with stop_after(model[0]):
        with stop_after(model[2]):
            model(torch.randn(1, 4))
        inner_finished = True

    assert not inner_finished
    assert [layer.calls for layer in model] == [1, 0, 0]
    assert _all_hooks_removed(model)


def test_nested_captures_on_same_module():
    model = _stack()
    x = torch.randn(2, 4)

    with capture_outputs({"outer": model[0]}) as outer:
        with capture_outputs({"inner": model[0]}) as inner:
            model(x)
        assert _hook_count(model[0]) == 1
        model(x * 2)

    torch.testing.assert_close(inner["inner"], model[0](x))
    torch.testing.assert_close(outer["outer"], model[0](x * 2))
    assert _all_hooks_removed(model)
