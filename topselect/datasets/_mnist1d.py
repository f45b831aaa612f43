"""MNIST-1D, generated locally by the ``mnist1d`` package and split three ways."""

from __future__ import annotations

import random
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING

from topselect.datasets._split import DataSplit, check_fractions, split_sizes, stratified_split
from topselect.exceptions import IncompatibleVersionError, InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["load_mnist1d_split"]

_N_CLASSES = 10
_SEQUENCE_LENGTH = 40


def load_mnist1d_split(
    seed: int = 0,
    n_samples: int = 4000,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> DataSplit:
    """Generate ``n_samples`` MNIST-1D sequences in memory and split them.

    MNIST-1D (Sam Greydanus's ``mnist1d`` package) turns ten 1-D digit templates into
    length-40 signals by random padding, scaling, translation, correlated and i.i.d.
    noise, and shear. The examples come from ``mnist1d.data.make_dataset`` with the
    package's default settings (its own generator seed, 42) and only ``num_samples``
    changed, so they do not depend on ``seed``, which fixes the stratified split alone.
    The package's train/test division is pooled and re-split here. Inputs are
    standardized to mean 0 and standard deviation 1 over the whole set (as
    ``make_dataset`` does) and shaped ``(n, 1, 40)`` for a 1-D CNN.

    Nothing is downloaded and no file is written: ``make_dataset`` builds the arrays in
    memory, unlike ``mnist1d.data.get_dataset``, which caches a pickle in the working
    directory. The generator reseeds Python's and NumPy's global random generators, so
    their states are saved and restored around it.

    Args:
        seed: Seed of the split.
        n_samples: Examples to generate; a multiple of 10 (an equal number per class).
        val_fraction: Share of the examples that goes to validation.
        test_fraction: Share of the examples that goes to the test set.

    Raises:
        InvalidInputError: When the fractions are not in (0, 1), leave no training data,
            or leave a part with fewer than 10 examples, or when ``n_samples`` is not a
            positive multiple of 10.
        ImportError: When the ``mnist1d`` package is not installed.
        IncompatibleVersionError: When the installed ``mnist1d`` lacks ``make_dataset``.
    """
    check_fractions(val_fraction, test_fraction)
    _check_n_samples(n_samples, val_fraction, test_fraction)
    x, y = _generate(n_samples)
    return stratified_split(
        x.reshape(-1, 1, _SEQUENCE_LENGTH),
        y,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        n_classes=_N_CLASSES,
    )


def _check_n_samples(n_samples: int, val_fraction: float, test_fraction: float) -> None:
    # make_dataset draws n_samples // 10 examples per class and silently drops the rest.
    if n_samples < _N_CLASSES or n_samples % _N_CLASSES != 0:
        raise InvalidInputError(
            f"n_samples must be a positive multiple of {_N_CLASSES} (one share per class), "
            f"but got {n_samples}."
        )
    sizes = split_sizes(n_samples, val_fraction, test_fraction)
    if min(sizes) < _N_CLASSES:
        raise InvalidInputError(
            f"n_samples={n_samples} with val_fraction={val_fraction} and "
            f"test_fraction={test_fraction} gives train, validation and test sizes {sizes}; "
            f"a stratified split needs at least {_N_CLASSES} examples in each. Raise "
            f"n_samples or the smallest fraction."
        )


def _generate(n_samples: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    import numpy as np

    data_module = _import_mnist1d_data()
    args = data_module.get_dataset_args()  # A fresh settings object on every call.
    args.num_samples = n_samples
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    try:
        dataset = data_module.make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    x = np.concatenate([dataset["x"], dataset["x_test"]]).astype(np.float32)
    y = np.concatenate([dataset["y"], dataset["y_test"]]).astype(np.int64)
    return x, y


def _import_mnist1d_data() -> ModuleType:
    try:
        import mnist1d.data as data_module
    except ImportError as error:
        raise ImportError(
            "MNIST-1D needs the mnist1d package, which is not installed. Install it with "
            "pip install 'topselect[bench]'."
        ) from error
    missing = [
        name for name in ("get_dataset_args", "make_dataset") if not hasattr(data_module, name)
    ]
    if missing:
        version = metadata.version("mnist1d")
        raise IncompatibleVersionError(
            f"mnist1d.data (version {version}) lacks {missing}. topselect was tested with "
            f"mnist1d 0.0.2.post1: install a version in the range of topselect's bench extra."
        )
    return data_module
