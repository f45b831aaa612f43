"""The train, validation and test split that every data set in this package returns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from topselect.exceptions import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from numpy.typing import NDArray

__all__ = ["DataSplit", "check_fractions", "split_sizes", "stratified_split"]


@dataclass(frozen=True)
class DataSplit:
    """A classification data set split three ways, as float32 inputs and int64 labels.

    Attributes:
        x_train, y_train: Training examples ``(n_train, ...)`` and labels ``(n_train,)``.
        x_val, y_val: Validation examples and labels, used to select models.
        x_test, y_test: Held-out test examples and labels, only for reporting.
        n_classes: Number of classes.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        """Size of the inputs' second axis: features of flat inputs ``(n, features)``,
        channels of sequences ``(n, channels, length)``."""
        return int(self.x_train.shape[1])


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise :class:`InvalidInputError` unless both fractions lie in (0, 1) and leave
    training data."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise InvalidInputError(f"{name} must lie in (0, 1), but got {value}.")
    if val_fraction + test_fraction >= 1:
        raise InvalidInputError(
            f"val_fraction + test_fraction must be < 1 to leave training data, but got "
            f"{val_fraction} + {test_fraction}."
        )


def split_sizes(n_samples: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Return the train, validation and test sizes that :func:`stratified_split` produces.

    The test set is split off first and validation from the rest. Each time
    scikit-learn's ``train_test_split`` rounds the fractional size up and gives the
    remainder to training.
    """
    n_test = math.ceil(test_fraction * n_samples)
    n_rest = n_samples - n_test
    n_val = math.ceil(val_fraction / (1 - test_fraction) * n_rest)
    return n_rest - n_val, n_val, n_test


def stratified_split(
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    n_classes: int,
) -> DataSplit:
    """Split examples three ways, stratified by label, with the draw fixed by ``seed``.

    Args:
        x: Examples ``(n, ...)``, already float32.
        y: Integer labels ``(n,)``, already int64.
        seed: Seed of both draws, so the same seed and data give the same split.
        val_fraction: Share of all examples that goes to validation.
        test_fraction: Share of all examples that goes to the test set.
        n_classes: Number of classes, stored in the result.
    """
    import torch
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_fraction / (1 - test_fraction),
        stratify=y_rest,
        random_state=seed,
    )
    t = torch.from_numpy
    return DataSplit(
        t(x_train), t(y_train), t(x_val), t(y_val), t(x_test), t(y_test), n_classes=n_classes
    )
