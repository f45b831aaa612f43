"""Seeded, filter-normalized random directions in parameter space."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["filter_normalized_direction", "trajectory_plane"]


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


def trajectory_plane(
    params: Mapping[str, torch.Tensor], waypoints: Mapping[float, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Return two directions that span the plane of a training trajectory.

    ``d1 = start - theta``, so the point ``a = 1, b = 0`` of a slice around ``theta`` is the
    trajectory's first waypoint. ``d2`` is the top principal direction of the waypoints
    with its ``d1`` component removed, scaled to the length of ``d1``, so the slice shows
    how far the path bends away from the straight line. Topology between the
    initialization and the minimum can only show in such a plane, because random
    directions almost never pass through the initialization.

    Args:
        params: The trained parameters ``theta`` by name (the slice's centre).
        waypoints: Flat float32 parameter vectors by progress fraction, in the order of
            ``params`` (as ``TrajectoryRecorder.waypoints`` stores them). At least three.

    Returns:
        ``(d1, d2)`` as mappings from parameter name to tensors shaped like ``params``.

    Raises:
        InvalidInputError: With fewer than three waypoints, waypoints whose length does
            not match ``params``, a trajectory that ends where it started, or waypoints
            that lie on one line (no second direction).
    """
    import torch

    from topselect.exceptions import InvalidInputError
    from topselect.landscape._evaluate import unflatten_parameters

    if len(waypoints) < 3:
        raise InvalidInputError(
            f"a trajectory plane needs at least 3 waypoints, but got {len(waypoints)}."
        )
    theta = torch.cat([p.detach().reshape(-1).to("cpu", torch.float64) for p in params.values()])
    points = torch.stack([waypoints[f].to(torch.float64) for f in sorted(waypoints)])
    if points.shape[1] != theta.numel():
        raise InvalidInputError(
            f"waypoints have {points.shape[1]} entries, but the parameters have {theta.numel()}."
        )
    d1 = points[0] - theta
    length = float(d1.norm())
    if length == 0.0:
        raise InvalidInputError("the trajectory ends where it started, so it spans no plane.")
    centred = points - points.mean(dim=0, keepdim=True)
    _, vectors = torch.linalg.eigh(centred @ centred.T)  # T x T Gram matrix: cheap.
    top = centred.T @ vectors[:, -1]
    unit = d1 / length
    residual = top - (top @ unit) * unit
    # Waypoints are float32, so points on one line keep a residual of about 1e-7 of the
    # direction's length. Anything below 1e-5 counts as no second direction.
    if float(residual.norm()) <= 1e-5 * float(top.norm()):
        raise InvalidInputError("the waypoints lie on one line, so they span no plane.")
    d2 = residual / residual.norm() * length
    return (
        unflatten_parameters(d1.to(torch.float32), params, "d1"),
        unflatten_parameters(d2.to(torch.float32), params, "d2"),
    )
