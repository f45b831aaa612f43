"""Fixtures of the transfer tests: digits 0-4 as source task, 5-9 as target, and a
small source MLP trained for a few seeded epochs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from topselect.datasets import DataSplit, load_digits_split
from topselect.transfer import TransferConfig, split_classes

SEED = 0
SOURCE_EPOCHS = 5


def build_source(seed: int = SEED) -> nn.Module:
    """Return a seeded 64-32-32-5 ReLU MLP."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5)
        )


@pytest.fixture(scope="session")
def tasks() -> tuple[DataSplit, DataSplit]:
    """Digits split by class: ``(source 0-4, target 5-9)``, both relabelled 0-4."""
    return split_classes(load_digits_split(seed=SEED), range(5), range(5, 10))


@pytest.fixture(scope="session")
def target(tasks: tuple[DataSplit, DataSplit]) -> DataSplit:
    """The target task, digits 5-9."""
    return tasks[1]


@pytest.fixture(scope="session")
def trained_state(tasks: tuple[DataSplit, DataSplit]) -> dict[str, torch.Tensor]:
    """State dict of the source MLP after ``SOURCE_EPOCHS`` seeded Adam epochs on 0-4."""
    source = tasks[0]
    model = build_source()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(SEED)
    for _ in range(SOURCE_EPOCHS):
        for index in torch.randperm(len(source.x_train), generator=order).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(source.x_train[index]), source.y_train[index]).backward()
            optimizer.step()
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


@pytest.fixture
def source_model(trained_state: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh copy of the trained source MLP that the test may use freely."""
    model = build_source()
    model.load_state_dict(trained_state)
    return model


@pytest.fixture
def untrained_source() -> nn.Module:
    """The source architecture with another seed's initialization, as before loading."""
    return build_source(seed=99)


@pytest.fixture(scope="session")
def fast_config() -> TransferConfig:
    """Settings with a two-epoch budget and a short MLP head, so a comparison takes
    well under a second on digits."""
    return TransferConfig(epochs=2, mlp_steps=20, mlp_eval_every=5, seed=SEED)
