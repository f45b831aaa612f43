"""Loss of a model on the probe set at parameters other than its own, without touching it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from topselect.exceptions import InvalidInputError

if TYPE_CHECKING:
    import torch

    from topselect.landscape._probe_set import ProbeSet

__all__ = ["LossFn", "ParameterEvaluator", "eval_mode", "parameters_of", "unflatten_parameters"]

#: ``loss_fn(outputs, targets)`` returns the mean loss over the batch as a scalar tensor.
LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def parameters_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Return detached views of the model's floating-point parameters, by name."""
    return {name: p.detach() for name, p in model.named_parameters() if p.is_floating_point()}


def unflatten_parameters(
    flat: torch.Tensor, reference: Mapping[str, torch.Tensor], label: str = "flat"
) -> dict[str, torch.Tensor]:
    """Split a flat vector into tensors shaped, typed and placed like ``reference``.

    Raises:
        InvalidInputError: When ``flat`` is not 1-D with as many entries as ``reference``.
    """
    total = sum(t.numel() for t in reference.values())
    if flat.dim() != 1 or flat.numel() != total:
        raise InvalidInputError(
            f"flat parameters {label} must have shape ({total},) to match the model, "
            f"but got {tuple(flat.shape)}."
        )
    out, start = {}, 0
    for name, ref in reference.items():
        part = flat[start : start + ref.numel()].reshape(ref.shape)
        out[name] = part.to(device=ref.device, dtype=ref.dtype)
        start += ref.numel()
    return out


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own mode on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class ParameterEvaluator:
    """Evaluate the probe-set loss of ``model`` at arbitrary parameter values.

    The model's own parameters and buffers are never written: every evaluation goes
    through ``torch.func.functional_call`` with substitute tensors. Callers enter
    :func:`eval_mode` around evaluations so BatchNorm uses its running statistics and
    dropout is off.

    Args:
        model: The network. Its device is used for every evaluation.
        loss_fn: Mean loss over a batch, e.g. ``torch.nn.functional.cross_entropy``.
        probe: The probe set. It is moved to the model's device once.
        batch_size: Examples per forward pass; ``None`` evaluates the probe set at once.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        probe: ProbeSet,
        batch_size: int | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.device = _device_of(model)
        self.probe = probe.to(self.device)
        self.batch_size = batch_size or len(probe)
        self.buffers = {name: b.detach() for name, b in model.named_buffers()}

    def loss(self, params: Mapping[str, torch.Tensor]) -> float:
        """Return the mean probe-set loss at ``params`` (a full parameter mapping)."""
        import torch
        from torch.func import functional_call

        state = {**self.buffers, **params}
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(self.probe), self.batch_size):
                x = self.probe.inputs[start : start + self.batch_size]
                y = self.probe.targets[start : start + self.batch_size]
                out = functional_call(self.model, state, (x,))
                total += float(self.loss_fn(out, y)) * len(x)
                count += len(x)
        return total / count

    def batched_losses(self, stacked: Mapping[str, torch.Tensor]) -> list[float]:
        """Return the probe-set losses at a stack of parameter sets in one vmapped call.

        Args:
            stacked: Each tensor has a leading dimension ``k`` (one entry per point).
        """
        import torch
        from torch.func import functional_call, vmap

        x, y = self.probe.inputs, self.probe.targets

        def one(params: dict[str, torch.Tensor]) -> torch.Tensor:
            out = functional_call(self.model, {**self.buffers, **params}, (x,))
            return self.loss_fn(out, y)

        with torch.no_grad():
            return [float(v) for v in vmap(one)(dict(stacked))]


def _device_of(model: torch.nn.Module) -> torch.device:
    import torch

    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
