"""Tests of k-dimensional subspace sampling: positions, values, graph, scores and checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import topselect
from topselect.landscape import filter_normalized_direction
from topselect.landscape._subspace import neighbor_edges, subspace_scores
from topselect.topology import graph_sublevel_persistence


def _model_and_probe() -> tuple[nn.Module, topselect.ProbeSet]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(120, 5, generator=generator)
    targets = (inputs[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return model, topselect.make_probe_set(inputs, targets, size=64, seed=0)


def _subspace(model, probe, **kwargs):
    settings = {"dim": 4, "n_samples": 60, "radius": 0.5, "neighbors": 6, "seed": 2, **kwargs}
    return topselect.probe_subspace(model, F.cross_entropy, probe, **settings)


def test_subspace_samples_inside_ball_origin_first():
    model, probe = _model_and_probe()

    result = _subspace(model, probe)

    assert result.coefficients.shape == (60, 4)
    assert np.array_equal(result.coefficients[0], np.zeros(4))
    assert np.all(np.linalg.norm(result.coefficients, axis=1) <= 0.5 + 1e-12)
    assert result.values.shape == (60,)
    model.eval()
    with torch.no_grad():
        direct = float(F.cross_entropy(model(probe.inputs), probe.targets))
    assert result.values[0] == pytest.approx(direct, rel=1e-6)
    assert result.scores["center_loss"] == result.values[0]


def test_subspace_value_is_loss_at_sample():
    # Sample i is the loss at theta + sum_j c[i, j] d_j with the directions drawn from the
    # seed in order, as probe_landscape draws its first two.
    model, probe = _model_and_probe()
    result = _subspace(model, probe, strategy="loop")

    params = {n: p.detach() for n, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(2)
    directions = [filter_normalized_direction(params, generator) for _ in range(4)]
    i = 17
    moved = {
        n: p + sum(float(result.coefficients[i, j]) * directions[j][n] for j in range(4))
        for n, p in params.items()
    }
    with torch.no_grad():
        outputs = torch.func.functional_call(model, moved, (probe.inputs,))
    expected = float(F.cross_entropy(outputs, probe.targets))

    assert result.values[i] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("strategy", ["vmap", "stacked"])
def test_subspace_strategies_agree_with_loop(strategy):
    model, probe = _model_and_probe()

    loop = _subspace(model, probe, strategy="loop")
    other = _subspace(model, probe, strategy=strategy)

    assert other.strategy == strategy
    np.testing.assert_allclose(other.values, loop.values, rtol=1e-5, atol=1e-6)


def test_subspace_reproducible_and_seeded():
    model, probe = _model_and_probe()

    first = _subspace(model, probe)
    second = _subspace(model, probe)
    other_seed = _subspace(model, probe, seed=3)

    assert np.array_equal(first.values, second.values)
    assert np.array_equal(first.coefficients, second.coefficients)
    assert not np.array_equal(first.coefficients, other_seed.coefficients)


def test_subspace_graph_and_diagrams():
    model, probe = _model_and_probe()

    result = _subspace(model, probe)

    assert result.edges.shape[1] == 2
    assert np.all(result.edges[:, 0] < result.edges[:, 1])
    assert len(np.unique(result.edges, axis=0)) == len(result.edges)
    # Every sample has at least `neighbors` edges in the symmetric k-NN graph.
    degree = np.bincount(result.edges.ravel(), minlength=60)
    assert degree.min() >= 6
    assert result.diagrams.h1.shape == (0, 2)  # H0 only on a sampling graph.
    essential = result.diagrams.h0[np.isinf(result.diagrams.h0[:, 1])]
    assert essential.shape == (1, 2)  # The k-NN graph here is connected.
    assert essential[0, 0] == pytest.approx(result.values.min())


def test_subspace_to_dict_is_strict_json():
    model, probe = _model_and_probe()

    payload = _subspace(model, probe).to_dict()

    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text)["schema_version"] == topselect.landscape.SUBSPACE_SCHEMA_VERSION
    assert len(payload["values"]) == 60
    assert payload["settings"]["dim"] == 4


def test_subspace_scores_basin_fraction_on_path_graph():
    # Five samples on a path 0-1-2-3-4 with a barrier at sample 2: the basin of sample 0
    # contains samples 0 and 1 below the barrier and all five above it.
    values = np.array([0.0, 0.05, 0.5, 0.01, 0.02])
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    diagrams = graph_sublevel_persistence(values, edges, max_dim=0)

    scores = subspace_scores(values, edges, diagrams, levels=(0.1, 1.0))

    assert scores["basin_area_0.1"] == pytest.approx(2 / 5)
    assert scores["basin_area_1"] == pytest.approx(1.0)
    assert scores["tp_h0"] == pytest.approx(0.5 - 0.01)
    assert "tp_h1" not in scores


def test_subspace_scores_nonfinite_samples_never_join():
    values = np.array([0.0, np.nan, 0.01, np.inf])
    edges = np.array([[0, 1], [1, 2], [0, 2], [2, 3]])
    diagrams = graph_sublevel_persistence(values, edges, max_dim=0)

    scores = subspace_scores(values, edges, diagrams, levels=(100.0,))

    assert diagrams.n_nonfinite == 2
    assert scores["basin_area_100"] == pytest.approx(2 / 4)


def test_subspace_scores_nonfinite_centre_raises():
    values = np.array([np.nan, 0.0])
    edges = np.array([[0, 1]])
    diagrams = graph_sublevel_persistence(values, edges, max_dim=0)

    with pytest.raises(topselect.InvalidInputError, match="loss at the trained parameters is nan"):
        subspace_scores(values, edges, diagrams)


def test_neighbor_edges_symmetric_knn():
    points = np.array([[0.0], [1.0], [3.0], [7.0]])

    edges = neighbor_edges(points, 1)

    # Nearest: 0->1, 1->0, 2->1, 3->2; as undirected pairs {0,1}, {1,2}, {2,3}.
    assert edges.tolist() == [[0, 1], [1, 2], [2, 3]]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"dim": 0}, r"dim must be >= 1, but got 0"),
        ({"neighbors": 0}, r"neighbors must be >= 1, but got 0"),
        ({"n_samples": 6}, r"n_samples must exceed neighbors \(6\), but got 6"),
        ({"radius": -1.0}, r"radius must be a finite number > 0, but got -1\.0"),
        ({"strategy": "grid"}, r"strategy must be one of"),
        ({"chunk_size": 0}, r"chunk_size must be >= 1 or None"),
    ],
)
def test_subspace_bad_arguments_raise(kwargs, pattern):
    model, probe = _model_and_probe()

    with pytest.raises(topselect.InvalidInputError, match=pattern):
        _subspace(model, probe, **kwargs)
