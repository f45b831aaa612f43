"""Cut layers: names, defaults, the output layer, and capturing outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import topselect
from topselect.transfer import (
    compute_features,
    default_layers,
    find_head,
    layer_names,
    pullback_transfer,
)


def test_layer_names_registration_order(source_model: nn.Module) -> None:
    assert layer_names(source_model) == ["0", "1", "2", "3", "4"]


def test_default_layers_activations_before_head(source_model: nn.Module) -> None:
    assert default_layers(source_model) == ["1", "3"]


def test_default_layers_none_raises() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(topselect.InvalidInputError, match=r"pass layers= with names from \['0'\]"):
        default_layers(model)


def test_bad_cut_layer_lists_valid_names(source_model: nn.Module, target) -> None:
    with pytest.raises(topselect.InvalidInputError) as caught:
        pullback_transfer(source_model, target, layers=["1", "encoder.relu"])
    message = str(caught.value)
    assert "['encoder.relu']" in message
    assert "valid names: ['0', '1', '2', '3', '4']" in message


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ([], "at least one module"),
        ("1", "pass \\['1'\\]"),
        (["1", "1"], "must not repeat names"),
        (["9"], "valid names"),
    ],
)
def test_bad_layers_raise(source_model: nn.Module, layers, match: str) -> None:
    x = torch.zeros(3, 64)
    with pytest.raises(topselect.InvalidInputError, match=match):
        compute_features(source_model, layers, x)


def test_find_head_last_linear(source_model: nn.Module) -> None:
    assert find_head(source_model) == "4"


def test_find_head_not_linear_raises() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Conv1d(1, 2, 3))
    with pytest.raises(topselect.InvalidInputError, match="'2' is a Conv1d, not an nn.Linear"):
        find_head(model)


def test_find_head_unknown_name_raises(source_model: nn.Module) -> None:
    with pytest.raises(topselect.InvalidInputError, match="head 'fc' is not a module"):
        find_head(source_model, "fc")


def test_layer_never_run_raises() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 4)
            self.unused = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(
        topselect.InvalidInputError, match=r"never ran the layer\(s\) \['unused'\]"
    ):
        compute_features(Branchy(), ["unused"], torch.zeros(2, 4))
