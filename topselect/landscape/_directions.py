"""Seeded, filter-normalized random directions in parameter space."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["filter_normalized_direction"]


def filter_normalized_direction(
    params: Mapping[str, torch.Tensor], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Draw one Gaussian direction scaled filter by filter to the parameters' norms.

    This is the filter normalization of Li et al., 2018, "Visualizing the Loss Landscape
    of Neural Nets". In every weight tensor with two or more dimensions, each slice along
    the first dimension (a neuron of a linear layer, an output channel of a convolution)
    is rescaled to the Euclidean norm of the matching slice of the parameters. Tensors with
    fewer than two dimensions (biases, normalization scales and shifts) get a zero
    direction, so they stay at their trained values across the slice.

    The draw happens on the CPU in float32, in the mapping's order, from ``generator``,
    so the same seed gives the same direction on every device and in every process.

    Args:
        params: Parameters by name, as returned by ``model.named_parameters()``.
        generator: A CPU ``torch.Generator``; it is advanced by the draw.

    Returns:
        Direction tensors with the shapes, dtypes and devices of ``params``.
    """
    import torch

    direction: dict[str, torch.Tensor] = {}
    for name, p in params.items():
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        if p.dim() < 2:
            d.zero_()
        else:
            theta = p.detach().to("cpu", torch.float32)
            theta_norm = theta.flatten(1).norm(dim=1)
            d_norm = d.flatten(1).norm(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
            scale = (theta_norm / d_norm).reshape(-1, *([1] * (p.dim() - 1)))
            d = d * scale
        direction[name] = d.to(device=p.device, dtype=p.dtype)
    return direction
