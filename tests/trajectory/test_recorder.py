"""The trajectory recorder, sketches, summaries and the trajectory artifacts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import topselect
from topselect.trajectory import (
    DEFAULT_FRACTIONS,
    TrajectoryRecorder,
    flatten_parameters,
    sketch,
    summarize_waypoints,
    waypoint_losses,
    write_trajectory_artifacts,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _set_flat(model: nn.Module, values: torch.Tensor) -> None:
    torch.nn.utils.vector_to_parameters(values, model.parameters())


def _n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- recording ---------------------------------------------------------------------------


def test_recorder_records_each_fraction_once() -> None:
    model = _model()
    recorder = TrajectoryRecorder(model)
    steps = 80

    recorded = []
    for step in range(1, steps + 1):
        with torch.no_grad():
            model[0].bias.add_(1.0)
        if recorder.update(step / steps):
            recorded.append(step)

    assert recorder.recorded_fractions == list(DEFAULT_FRACTIONS)
    assert recorded == [10, 20, 30, 40, 50, 60, 70, 80]
    assert recorder.complete
    # Each waypoint contains the parameters at the step that reached it.
    for fraction, step in zip(DEFAULT_FRACTIONS[1:], recorded, strict=True):
        assert recorder.progress[fraction] == step / steps
        bias = recorder.waypoints[fraction][32:40]
        assert torch.allclose(bias - recorder.waypoints[0.0][32:40], torch.full((8,), float(step)))


def test_recorder_progress_jump_records_highest_fraction() -> None:
    recorder = TrajectoryRecorder(_model())

    assert recorder.update(0.3)  # Passes 0.125 and 0.25 at once.
    assert not recorder.update(0.3)

    assert recorder.recorded_fractions == [0.0, 0.25]
    assert recorder.progress[0.25] == 0.3
    assert not recorder.complete


def test_recorder_waypoints_are_copies() -> None:
    model = _model()
    recorder = TrajectoryRecorder(model)
    before = recorder.waypoints[0.0].clone()

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)

    assert torch.equal(recorder.waypoints[0.0], before)
    assert torch.equal(before, flatten_parameters(_model()))


def test_recorder_sketches_match_sketch_function() -> None:
    recorder = TrajectoryRecorder(_model(), sketch_dim=8, sketch_seed=3)
    recorder.update(1.0)

    for fraction, flat in recorder.waypoints.items():
        np.testing.assert_array_equal(recorder.sketches[fraction], sketch(flat, 8, 3))
        assert recorder.sketches[fraction].shape == (8,)


def test_recorder_without_zero_fraction_starts_empty() -> None:
    recorder = TrajectoryRecorder(_model(), fractions=(0.5, 1.0))

    assert recorder.recorded_fractions == []
    assert recorder.update(0.5)
    assert recorder.recorded_fractions == [0.5]


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"fractions": ()}, "non-empty, strictly ascending"),
        ({"fractions": (0.0, 0.5, 0.5)}, "non-empty, strictly ascending"),
        ({"fractions": (0.5, 0.25)}, "non-empty, strictly ascending"),
        ({"fractions": (0.0, 1.5)}, r"must lie in \[0, 1\]"),
        ({"fractions": (-0.1, 1.0)}, r"must lie in \[0, 1\]"),
        ({"sketch_dim": 0}, "sketch_dim must be >= 1, but got 0"),
    ],
)
def test_recorder_invalid_settings_raise(options, pattern) -> None:
    with pytest.raises(topselect.InvalidInputError, match=pattern):
        TrajectoryRecorder(_model(), **options)


@pytest.mark.parametrize("progress", [-0.01, 1.01, math.nan])
def test_recorder_invalid_progress_raises(progress) -> None:
    recorder = TrajectoryRecorder(_model())

    with pytest.raises(topselect.InvalidInputError, match="progress must lie in"):
        recorder.update(progress)


# -- sketches ------------------------------------------------------------------------------


def test_sketch_linear_across_blocks() -> None:
    # 150,000 entries span three blocks of the regenerated projection.
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(150_000, generator=generator)
    b = torch.randn(150_000, generator=generator)

    combined = sketch(a + 2 * b, 16, 5)

    # float32 products summed over 150,000 entries: agreement to about 1e-5 relative.
    np.testing.assert_allclose(
        combined, sketch(a, 16, 5) + 2 * sketch(b, 16, 5), rtol=1e-4, atol=1e-2
    )


def test_sketch_preserves_distances_roughly() -> None:
    generator = torch.Generator().manual_seed(1)
    points = [torch.randn(20_000, generator=generator) for _ in range(6)]
    sketches = [sketch(p, 256, 0) for p in points]

    for i in range(6):
        for j in range(i + 1, 6):
            true = float((points[i] - points[j]).norm())
            estimate = float(np.linalg.norm(sketches[i] - sketches[j]))
            # Johnson-Lindenstrauss with k = 256: within 25% with overwhelming odds.
            assert abs(estimate / true - 1) < 0.25, (i, j, estimate, true)


def test_sketch_seed_and_device_independent() -> None:
    flat = torch.randn(1000, generator=torch.Generator().manual_seed(2))

    np.testing.assert_array_equal(sketch(flat, 8, 1), sketch(flat.double(), 8, 1))
    assert not np.array_equal(sketch(flat, 8, 1), sketch(flat, 8, 2))


# -- summaries -----------------------------------------------------------------------------


def test_summary_straight_path_values() -> None:
    model = _model()
    n = _n_parameters(model)
    direction = torch.zeros(n)
    direction[0] = 3.0
    direction[1] = 4.0  # Length 5.
    start = flatten_parameters(model)
    waypoints = {f: start + f * 8 * direction for f in DEFAULT_FRACTIONS}

    summary = summarize_waypoints(waypoints)

    assert summary.path_length == pytest.approx(40.0, rel=1e-5)
    assert summary.displacement == pytest.approx(40.0, rel=1e-5)
    assert summary.tortuosity == pytest.approx(1.0, rel=1e-5)
    assert summary.explained_variance[0] == pytest.approx(1.0, abs=1e-6)
    assert summary.complete


def test_summary_detour_tortuosity() -> None:
    n = _n_parameters(_model())
    unit_x, unit_y = torch.zeros(n), torch.zeros(n)
    unit_x[0], unit_y[1] = 1.0, 1.0
    waypoints = {0.0: torch.zeros(n), 0.5: unit_x, 1.0: unit_x + unit_y}

    summary = summarize_waypoints(waypoints, losses=[2.0, 1.0, None])

    assert summary.path_length == pytest.approx(2.0)
    assert summary.displacement == pytest.approx(math.sqrt(2))
    assert summary.tortuosity == pytest.approx(math.sqrt(2))
    assert sum(summary.explained_variance) == pytest.approx(1.0)
    assert summary.losses == [2.0, 1.0, None]


def test_summary_losses_length_checked() -> None:
    with pytest.raises(topselect.InvalidInputError, match=r"one entry per waypoint \(2\)"):
        summarize_waypoints({0.0: torch.zeros(3), 1.0: torch.ones(3)}, losses=[1.0])


def test_summary_recorder_partial_and_json_safe() -> None:
    recorder = TrajectoryRecorder(_model())
    recorder.update(0.4)

    document = recorder.summary([math.inf, 0.5]).to_dict()

    assert document["fractions"] == [0.0, 0.375]
    assert document["progress"] == [0.0, 0.4]
    assert document["complete"] is False
    assert document["losses"] == [None, 0.5]
    # The parameters never moved: no displacement, so tortuosity is undefined.
    assert document["displacement"] == 0.0
    assert document["tortuosity"] is None
    json.dumps(document, allow_nan=False)


def test_waypoint_losses_match_direct_evaluation() -> None:
    model = _model()
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    probe = topselect.make_probe_set(x, y, size=32)
    recorder = TrajectoryRecorder(model)
    other = flatten_parameters(model) + 0.5
    _set_flat(model, other.clone())
    recorder.update(1.0)
    current = flatten_parameters(model)

    losses = waypoint_losses(model, F.cross_entropy, probe, recorder.waypoints)

    with torch.no_grad():
        expected_end = float(F.cross_entropy(model(x), y))
        _set_flat(model, recorder.waypoints[0.0].clone())
        expected_start = float(F.cross_entropy(model(x), y))
    assert losses == pytest.approx([expected_start, expected_end], rel=1e-6)
    assert torch.equal(current, other)


def test_trajectory_artifacts_written(tmp_path: Path) -> None:
    model = _model()
    recorder = TrajectoryRecorder(model)
    for step in range(1, 9):
        with torch.no_grad():
            model[0].weight.add_(0.1 * step)
            model[2].bias.sub_(0.05 * step**2)
        recorder.update(step / 8)
    summary = recorder.summary([1.0 / (1 + f) for f in recorder.recorded_fractions])

    json_path, png_path = write_trajectory_artifacts(summary, tmp_path / "out")

    document = json.loads(json_path.read_text())
    assert document["fractions"] == list(DEFAULT_FRACTIONS)
    assert len(document["sketches"]) == 9
    assert len(document["sketches"][0]) == 32
    assert png_path.read_bytes()[:8] == PNG_MAGIC
