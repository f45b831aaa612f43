"""scikit-learn's handwritten digits, split into train, validation and test sets."""

from __future__ import annotations

from topselect.datasets._split import DataSplit, check_fractions, stratified_split

__all__ = ["DataSplit", "load_digits_split"]


def load_digits_split(
    seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> DataSplit:
    """Load the 1,797 8x8 digit images bundled with scikit-learn and split them.

    The split is stratified by class and fixed by ``seed``. Pixel values (0 to 16) are
    scaled to [0, 1], and inputs have shape ``(n, 64)``. Nothing is downloaded.

    Raises:
        InvalidInputError: When the fractions are not in (0, 1) or leave no training data.
    """
    check_fractions(val_fraction, test_fraction)
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype("float32") / 16.0
    y = digits.target.astype("int64")
    return stratified_split(
        x, y, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, n_classes=10
    )
