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
        self.plain_cross_entropy = is_plain_cross_entropy(loss_fn) and are_class_indices(
            self.probe.targets
        )

    def batch_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return ``loss_fn(outputs, targets)``; plain cross-entropy over few classes on
        the CPU reads the classes from a middle axis, which is faster there (see
        :func:`class_major_pays`) and equal to float rounding."""
        import torch

        if (
            self.plain_cross_entropy
            and outputs.dim() == 2
            and class_major_pays(outputs.shape[1], outputs.device)
        ):
            return torch.nn.functional.cross_entropy(outputs.T.unsqueeze(0), targets.unsqueeze(0))
        return self.loss_fn(outputs, targets)

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
                total += float(self.batch_loss(out, y)) * len(x)
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
            return self.batch_loss(out, y)

        with torch.no_grad():
            return [float(v) for v in vmap(one)(dict(stacked))]


def class_major_pays(n_classes: int, device: torch.device) -> bool:
    """Return whether cross-entropy should read classes from a middle axis.

    On the CPU, torch 2.13's cross-entropy over a last axis narrower than 16 was slow,
    presumably a path without vector instructions. For 8,192 rows on one thread, 15
    classes took 2.0 ms and 16 classes 0.15 ms. With 3 to 15 classes on the middle axis
    of ``(batch, classes, rows)`` it took 0.07-0.2 ms, 5-10x less than the last axis.
    From 16 to 256 classes the last axis was as fast (within 10% at 17 and 20) or faster.
    CUDA keeps the usual layout, which has not been measured against.
    """
    return device.type == "cpu" and n_classes < 16


def is_plain_cross_entropy(loss_fn) -> bool:
    """Return whether ``loss_fn`` is cross-entropy averaged over examples, unweighted."""
    import torch

    if loss_fn is torch.nn.functional.cross_entropy:
        return True
    return (
        type(loss_fn) is torch.nn.CrossEntropyLoss
        and loss_fn.weight is None
        and loss_fn.reduction == "mean"
        and loss_fn.label_smoothing == 0.0
        and not loss_fn._forward_hooks
        and not loss_fn._forward_pre_hooks
    )


def are_class_indices(targets: torch.Tensor) -> bool:
    """Return whether ``targets`` is a 1-D integer tensor with no ignored entry (-100),
    so that the mean over examples divides by the number of examples."""
    return (
        targets.dim() == 1
        and not targets.is_floating_point()
        and not targets.is_complex()
        and bool((targets >= 0).all())
    )


def _device_of(model: torch.nn.Module) -> torch.device:
    import torch

    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
