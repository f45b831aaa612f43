"""Tests of the digits loader: split sizes, stratification, seeding and argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from topselect.datasets import DataSplit, load_digits_split
from topselect.exceptions import InvalidInputError

N_DIGITS = 1797
# Default fractions 0.2 / 0.2: test = ceil(0.2 * 1797) = 360, validation =
# ceil(0.25 * 1437) = 360, train = the remaining 1077.
EXPECTED_SIZES = {"train": 1077, "val": 360, "test": 360}


def parts(data: DataSplit) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        "train": (data.x_train, data.y_train),
        "val": (data.x_val, data.y_val),
        "test": (data.x_test, data.y_test),
    }


def test_load_digits_split_shapes(digits: DataSplit) -> None:
    for name, (x, y) in parts(digits).items():
        assert x.shape == (EXPECTED_SIZES[name], 64), name
        assert y.shape == (EXPECTED_SIZES[name],), name
    assert digits.n_features == 64
    assert digits.n_classes == 10


def test_load_digits_split_dtypes_and_range(digits: DataSplit) -> None:
    for name, (x, y) in parts(digits).items():
        assert x.dtype == torch.float32, name
        assert y.dtype == torch.int64, name
        assert float(x.min()) >= 0.0, name
        assert float(x.max()) <= 1.0, name
        assert set(y.tolist()) == set(range(10)), name


def test_load_digits_split_stratified(digits: DataSplit) -> None:
    all_labels = torch.cat([digits.y_train, digits.y_val, digits.y_test]).numpy()
    overall_share = np.bincount(all_labels, minlength=10) / N_DIGITS
    for name, (_, y) in parts(digits).items():
        counts = np.bincount(y.numpy(), minlength=10)
        # Each class gets its share of the part, give or take rounding in the two draws.
        deviation = np.abs(counts - overall_share * len(y))
        assert deviation.max() <= 2, (name, counts, overall_share * len(y))


def test_load_digits_split_same_seed_same_split(digits: DataSplit) -> None:
    again = load_digits_split(seed=0)
    assert torch.equal(again.x_train, digits.x_train)
    assert torch.equal(again.y_test, digits.y_test)


def test_load_digits_split_other_seed_other_split(digits: DataSplit) -> None:
    other = load_digits_split(seed=1)
    assert other.x_train.shape == digits.x_train.shape
    assert not torch.equal(other.x_train, digits.x_train)


@pytest.mark.parametrize(
    ("val_fraction", "test_fraction", "message"),
    [
        (0.0, 0.2, r"val_fraction must lie in \(0, 1\), but got 0\.0"),
        (1.0, 0.2, r"val_fraction must lie in \(0, 1\), but got 1\.0"),
        (0.2, -0.1, r"test_fraction must lie in \(0, 1\), but got -0\.1"),
        (0.2, 1.5, r"test_fraction must lie in \(0, 1\), but got 1\.5"),
        (0.5, 0.5, r"val_fraction \+ test_fraction must be < 1 .* got 0\.5 \+ 0\.5"),
        (0.7, 0.4, r"val_fraction \+ test_fraction must be < 1 .* got 0\.7 \+ 0\.4"),
    ],
)
def test_load_digits_split_invalid_fractions(
    val_fraction: float, test_fraction: float, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        load_digits_split(val_fraction=val_fraction, test_fraction=test_fraction)
