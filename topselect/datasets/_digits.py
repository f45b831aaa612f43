"""scikit-learn's handwritten digits, split into train, validation and test sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from topselect.exceptions import InvalidInputError

if TYPE_CHECKING:
    import torch

__all__ = ["DataSplit", "load_digits_split"]


@dataclass(frozen=True)
class DataSplit:
    """A classification data set split three ways, as float32 inputs and int64 labels.

    Attributes:
        x_train, y_train: Training examples ``(n_train, n_features)`` and labels.
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
        """Number of input features."""
        return int(self.x_train.shape[1])


def load_digits_split(
    seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> DataSplit:
    """Load the 1,797 8x8 digit images bundled with scikit-learn and split them.

    The split is stratified by class and fixed by ``seed``. Pixel values (0 to 16) are
    scaled to [0, 1]. Nothing is downloaded.

    Raises:
        InvalidInputError: When the fractions are not in (0, 1) or leave no training data.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise InvalidInputError(f"{name} must lie in (0, 1), but got {value}.")
    if val_fraction + test_fraction >= 1:
        raise InvalidInputError(
            f"val_fraction + test_fraction must be < 1 to leave training data, but got "
            f"{val_fraction} + {test_fraction}."
        )
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype("float32") / 16.0
    y = digits.target.astype("int64")
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
        t(x_train), t(y_train), t(x_val), t(y_val), t(x_test), t(y_test), n_classes=10
    )
