"""Slices through the plane of a training trajectory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import topselect
from topselect.landscape import ParameterEvaluator, parameters_of, trajectory_plane
from topselect.trajectory import flatten_parameters


def _trained_with_waypoints() -> tuple[nn.Module, topselect.ProbeSet, dict[float, torch.Tensor]]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 5, generator=generator)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    waypoints = {0.0: flatten_parameters(model)}
    for step in range(1, 9):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        waypoints[step / 8] = flatten_parameters(model)
    return model, topselect.make_probe_set(x, y, size=64, seed=0), waypoints


def _flat(mapping: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in mapping.values()]).double()


def test_trajectory_plane_first_direction_reaches_start() -> None:
    model, _, waypoints = _trained_with_waypoints()
    d1, _ = trajectory_plane(parameters_of(model), waypoints)
    theta = _flat(parameters_of(model))

    assert torch.allclose(theta + _flat(d1), waypoints[0.0].double(), atol=1e-6)


def test_trajectory_plane_directions_orthogonal_equal_length() -> None:
    model, _, waypoints = _trained_with_waypoints()
    d1, d2 = (_flat(d) for d in trajectory_plane(parameters_of(model), waypoints))

    assert abs(float(d1 @ d2)) <= 1e-5 * float(d1.norm() * d2.norm())
    assert float(d2.norm()) == pytest.approx(float(d1.norm()), rel=1e-5)


def test_plane_slice_contains_initial_loss() -> None:
    model, probe, waypoints = _trained_with_waypoints()
    directions = trajectory_plane(parameters_of(model), waypoints)

    result = topselect.probe_landscape(
        model, F.cross_entropy, probe, grid_size=3, radius=1.0, directions=directions
    )

    reference = parameters_of(model)
    start = topselect.landscape.unflatten_parameters(waypoints[0.0], reference)
    initial_loss = ParameterEvaluator(model, F.cross_entropy, probe).loss(start)
    assert result.values[2, 1] == pytest.approx(initial_loss, rel=1e-5)
    assert result.settings["direction"] == "given"


@pytest.mark.parametrize(
    ("make_waypoints", "pattern"),
    [
        (lambda w: {0.0: w[0.0], 1.0: w[1.0]}, "at least 3 waypoints"),
        (lambda w: {f: v[:-1] for f, v in w.items()}, "waypoints have"),
        (lambda w: {f: w[1.0] + (1 - f) * (w[0.0] - w[1.0]) for f in (0, 0.5, 1)}, "one line"),
        (lambda w: {0.0: w[1.0], 0.5: w[0.5], 1.0: w[1.0]}, "ends where it started"),
    ],
)
def test_trajectory_plane_bad_waypoints_raise(make_waypoints, pattern) -> None:
    model, _, waypoints = _trained_with_waypoints()

    with pytest.raises(topselect.InvalidInputError, match=pattern):
        trajectory_plane(parameters_of(model), make_waypoints(waypoints))


def test_probe_landscape_mismatched_directions_raise() -> None:
    model, probe, _ = _trained_with_waypoints()
    params = parameters_of(model)
    wrong = {name: torch.zeros(3) for name in params}

    with pytest.raises(topselect.InvalidInputError, match=r"directions\[0\]\['0.weight'\]"):
        topselect.probe_landscape(model, F.cross_entropy, probe, directions=(wrong, wrong))
