"""Fixtures of real digits-MLP trajectories (see ``_trajectories``)."""

from __future__ import annotations

import pytest
from _trajectories import LARGE_LR, SMALL_LR, Trajectory, train


@pytest.fixture(scope="session")
def small_lr_runs() -> list[Trajectory]:
    """Three runs at learning rate 0.05 that differ only in data order."""
    return [train(seed, SMALL_LR) for seed in (1, 2, 3)]


@pytest.fixture(scope="session")
def large_lr_runs() -> list[Trajectory]:
    """Two runs at learning rate 0.5 that differ only in data order."""
    return [train(seed, LARGE_LR) for seed in (1, 2)]
