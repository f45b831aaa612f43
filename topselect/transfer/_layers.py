"""Cut layers of a source model: listing, checking, and capturing their outputs.

A cut layer is a submodule named as in ``model.named_modules()``. The features at a cut
are the module's output, flattened to ``(n, features)``. They are captured with a
forward hook, and the rest of the forward pass is skipped once every requested layer has
produced its output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from topselect.exceptions import InvalidInputError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "capture_outputs",
    "check_layers",
    "default_layers",
    "find_head",
    "layer_names",
    "replace_module",
]


class _StopForward(Exception):
    """Raised by a hook to skip the layers after the last requested cut."""


def layer_names(model: nn.Module) -> list[str]:
    """Return the names of every submodule of ``model``, in registration order."""
    return [name for name, _ in model.named_modules() if name]


def default_layers(model: nn.Module) -> list[str]:
    """Return the default cut layers: every leaf module without parameters (activations,
    pooling, flattening) registered before the output layer (see :func:`find_head`).

    Registration order is taken as forward order. That is true for ``nn.Sequential``
    and for models that register modules in the order they call them.

    Raises:
        InvalidInputError: When no such layer exists; pass ``layers`` explicitly then.
    """
    head = find_head(model)
    names: list[str] = []
    for name, module in model.named_modules():
        if name == head:
            break
        is_leaf = next(module.children(), None) is None
        has_parameters = next(module.parameters(recurse=False), None) is not None
        if name and is_leaf and not has_parameters:
            names.append(name)
    if not names:
        raise InvalidInputError(
            f"the model has no parameter-free leaf module before its output layer "
            f"{head!r} to cut at; pass layers= with names from {layer_names(model)}."
        )
    return names


def check_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """Return ``layers`` as a list after checking every name exists in ``model``.

    Raises:
        InvalidInputError: For an empty list, a repeated name, or a name that is not a
            submodule; the message lists the valid names.
    """
    if isinstance(layers, str):
        raise InvalidInputError(
            f"layers must be a sequence of module names, but got the string {layers!r}; "
            f"pass [{layers!r}]."
        )
    try:
        chosen = list(layers)
    except TypeError:
        chosen = [layers]  # type: ignore[list-item]
    if not all(isinstance(name, str) for name in chosen):
        raise InvalidInputError(
            f"layers must be a sequence of module names (strings), but got {layers!r}; "
            f"valid names: {layer_names(model)}."
        )
    if not chosen:
        raise InvalidInputError(
            f"layers must name at least one module; valid names: {layer_names(model)}."
        )
    valid = layer_names(model)
    unknown = [name for name in chosen if name not in valid]
    if unknown:
        raise InvalidInputError(
            f"cut layer(s) {unknown} are not modules of the model; valid names: {valid}."
        )
    repeated = sorted({name for name in chosen if chosen.count(name) > 1})
    if repeated:
        raise InvalidInputError(f"layers must not repeat names, but {repeated} appear twice.")
    return chosen


def find_head(model: nn.Module, name: str | None = None) -> str:
    """Return the name of the source model's output layer, an ``nn.Linear``.

    Without ``name``, it is the last leaf module with parameters in registration order.

    Raises:
        InvalidInputError: When that module is not an ``nn.Linear``, or ``name`` is not
            a module of the model.
    """
    from torch import nn

    modules = dict(model.named_modules())
    if name is None:
        leaves = [
            n
            for n, m in modules.items()
            if n
            and next(m.children(), None) is None
            and next(m.parameters(recurse=False), None) is not None
        ]
        if not leaves:
            raise InvalidInputError("the model has no module with parameters to replace.")
        name = leaves[-1]
    elif name not in modules or not name:
        raise InvalidInputError(
            f"head {name!r} is not a module of the model; valid names: {layer_names(model)}."
        )
    if not isinstance(modules[name], nn.Linear):
        raise InvalidInputError(
            f"the output layer {name!r} is a {type(modules[name]).__name__}, not an "
            f"nn.Linear, so a new head cannot be built for it; pass head= with the name of "
            f"the model's final nn.Linear."
        )
    return name


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` in place of the submodule ``name`` (a dotted path) of ``model``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def capture_outputs(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str], *, inputs_of: bool = False
) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` and return each layer's output flattened to ``(n, -1)``.

    The forward pass stops after the last requested layer has run. A module called more
    than once keeps its first output. Gradients flow when the caller enables them.

    Args:
        model: The source model, in the mode the caller chose.
        x: A batch of inputs on the model's device.
        layers: Module names.
        inputs_of: Capture each module's first positional input instead of its output.

    Raises:
        InvalidInputError: When the forward pass ends without running a requested layer.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(layer: str):
        def keep(value: Any) -> None:
            if layer not in captured:
                captured[layer] = value.flatten(1)
            if len(captured) == len(layers):
                raise _StopForward

        if inputs_of:
            return lambda module, args: keep(args[0])
        return lambda module, args, output: keep(output)

    modules = dict(model.named_modules())
    try:
        for layer in layers:
            if inputs_of:
                handles.append(modules[layer].register_forward_pre_hook(make_hook(layer)))
            else:
                handles.append(modules[layer].register_forward_hook(make_hook(layer)))
        try:
            model(x)
        except _StopForward:
            pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [layer for layer in layers if layer not in captured]
    if missing:
        raise InvalidInputError(
            f"the forward pass never ran the layer(s) {missing}; choose layers that the "
            f"model's forward calls."
        )
    return captured
