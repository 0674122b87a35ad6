"""PyTorch forward hooks wrapped in context managers that always remove them.

Every context manager here removes the hooks it registered when its ``with`` block ends, also when
the block raises. Captured tensors go to a callback, so callers can reduce them on the fly (select a
few positions, accumulate a sum) instead of keeping whole sequences. Without a callback the latest
tensor per key is kept in the dict that the context manager yields.

Example::

    with capture_inputs({"mlp3": layer.mlp}) as captured, stop_after(layer.block):
        model(**inputs)
    captured["mlp3"]  # (batch, seq, d_model)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "capture_inputs",
    "capture_outputs",
    "registered_hooks",
    "run_until",
    "stop_after",
]

K = TypeVar("K", bound=Hashable)


class _StopForward(Exception):
    """Raised by a :func:`stop_after` hook to abandon the rest of a forward pass."""

    def __init__(self, token: object) -> None:
        super().__init__("forward pass stopped early by swe_toolkit.hooks.stop_after")
        self.token = token


@contextmanager
def registered_hooks() -> Iterator[list[RemovableHandle]]:
    """Yield a list for hook handles and remove every handle in it when the block exits."""
    handles: list[RemovableHandle] = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()
        handles.clear()


def _first_input(name: object, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    if args and isinstance(args[0], Tensor):
        return args[0]
    hidden_states = kwargs.get("hidden_states")
    if isinstance(hidden_states, Tensor):
        return hidden_states
    raise TypeError(
        f"Cannot capture the input of module {name!r} ({type(module).__name__}): it was called without a "
        "tensor as first positional argument or as the hidden_states keyword."
    )


def _first_output(name: object, module: nn.Module, output: Any) -> Tensor:
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if isinstance(output, Tensor):
        return output
    raise TypeError(
        f"Cannot capture the output of module {name!r} ({type(module).__name__}): it returned "
        f"{type(output).__name__}, expected a tensor or a tuple whose first element is a tensor."
    )


@contextmanager
def capture_inputs(
    modules: Mapping[K, nn.Module], callback: Callable[[K, Tensor], None] | None = None
) -> Iterator[dict[K, Tensor]]:
    """Capture the first positional input (or the ``hidden_states`` keyword) of each module.

    ``callback(key, tensor)`` runs inside the forward pass for every call of a hooked module. The
    tensor is the live activation, so a callback that keeps it must not modify it in place. Without
    a callback the yielded dict stores the latest input per key, detached.
    """
    captured: dict[K, Tensor] = {}

    def store(key: K, tensor: Tensor) -> None:
        captured[key] = tensor.detach()

    sink = callback if callback is not None else store

    def make_hook(key: K) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            sink(key, _first_input(key, module, args, kwargs))

        return hook

    with registered_hooks() as handles:
        for key, module in modules.items():
            handles.append(module.register_forward_pre_hook(make_hook(key), with_kwargs=True))
        yield captured


@contextmanager
def capture_outputs(
    modules: Mapping[K, nn.Module], callback: Callable[[K, Tensor], None] | None = None
) -> Iterator[dict[K, Tensor]]:
    """Capture the output of each module, or its first element when the module returns a tuple.

    ``callback`` and the yielded dict behave as in :func:`capture_inputs`.
    """
    captured: dict[K, Tensor] = {}

    def store(key: K, tensor: Tensor) -> None:
        captured[key] = tensor.detach()

    sink = callback if callback is not None else store

    def make_hook(key: K) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            sink(key, _first_output(key, module, output))

        return hook

    with registered_hooks() as handles:
        for key, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(key)))
        yield captured


@contextmanager
def stop_after(module: nn.Module) -> Iterator[None]:
    """Abandon any forward pass inside the block as soon as ``module`` has run.

    The hook raises a private exception after ``module``'s forward, and this context manager
    suppresses it, so execution resumes after the ``with`` block and the rest of the block body is
    skipped. Forward hooks run in registration order, so hooks on ``module`` registered before this
    context still fire. Nested ``stop_after`` blocks each suppress only their own exception.
    """
    token = object()

    def hook(hooked: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        raise _StopForward(token)

    handle = module.register_forward_hook(hook)
    try:
        yield
    except _StopForward as stop:
        if stop.token is not token:
            raise
    finally:
        handle.remove()


def run_until(model: nn.Module, module: nn.Module, /, **inputs: Any) -> bool:
    """Run ``model(**inputs)`` under ``torch.no_grad`` and stop right after ``module`` has run.

    Returns True when the forward pass was stopped at ``module`` and False when it completed
    without calling ``module``. The model output is discarded in both cases.
    """
    completed = False
    with stop_after(module), torch.no_grad():
        model(**inputs)
        completed = True
    return not completed
