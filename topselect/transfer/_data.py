"""Target data for transfer: checks, and class splits of one data set into two tasks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from topselect.exceptions import InvalidInputError

if TYPE_CHECKING:
    import torch

    from topselect.datasets import DataSplit

__all__ = ["check_target_data", "split_classes"]


def check_target_data(data: DataSplit) -> None:
    """Raise unless ``data`` is a usable target: three non-empty parts with matching
    lengths, finite inputs, integer labels in ``[0, data.n_classes)``, and at least two
    classes among the training labels.

    Raises:
        InvalidInputError: Naming the part and the value that is wrong.
    """
    import torch

    from topselect.datasets import DataSplit

    if not isinstance(data, DataSplit):
        raise InvalidInputError(
            f"data must be a topselect.datasets.DataSplit, but got {type(data).__name__}; "
            f"build one with DataSplit(x_train, y_train, x_val, y_val, x_test, y_test, "
            f"n_classes)."
        )
    if not isinstance(data.n_classes, int) or data.n_classes < 2:
        raise InvalidInputError(f"n_classes must be an integer >= 2, but got {data.n_classes!r}.")
    parts = (
        ("train", data.x_train, data.y_train),
        ("val", data.x_val, data.y_val),
        ("test", data.x_test, data.y_test),
    )
    for part, x, y in parts:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise InvalidInputError(
                f"x_{part} and y_{part} must be torch tensors, but got "
                f"{type(x).__name__} and {type(y).__name__}."
            )
        if len(x) == 0 or len(x) != len(y) or y.ndim != 1:
            raise InvalidInputError(
                f"x_{part} {tuple(x.shape)} and y_{part} {tuple(y.shape)} must hold the "
                f"same number (>= 1) of examples, with labels of shape (n,)."
            )
        if y.dtype != torch.int64:
            raise InvalidInputError(f"y_{part} must be int64 class indices, but has {y.dtype}.")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= data.n_classes:
            raise InvalidInputError(
                f"y_{part} must lie in [0, {data.n_classes}), but spans [{low}, {high}]; "
                f"relabel the classes or raise n_classes."
            )
        if not bool(torch.isfinite(x).all()):
            count = int((~torch.isfinite(x)).sum())
            raise InvalidInputError(
                f"x_{part} contains {count} non-finite values (NaN or inf); drop or impute "
                f"those examples before transfer."
            )
    first = data.y_train[0]
    if not bool((data.y_train != first).any()):
        raise InvalidInputError(
            f"y_train must contain at least 2 distinct classes, but contains only class "
            f"{int(first)}; give the training set examples of at least two of the "
            f"{data.n_classes} classes."
        )
    if not torch.is_floating_point(data.x_train):
        raise InvalidInputError(
            f"x_train must be a floating-point tensor, but has {data.x_train.dtype}."
        )


def _select(
    x: torch.Tensor, y: torch.Tensor, classes: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    mapping = torch.full((int(y.max()) + 1,), -1, dtype=torch.int64)
    for new, old in enumerate(classes):
        if old < len(mapping):
            mapping[old] = new
    labels = mapping[y]
    keep = labels >= 0
    return x[keep], labels[keep]


def split_classes(
    data: DataSplit, source_classes: Sequence[int], target_classes: Sequence[int]
) -> tuple[DataSplit, DataSplit]:
    """Split a data set into a source task and a target task by class.

    Every part (train, validation, test) keeps its examples whose label is in the task's
    classes, relabelled ``0 .. len(classes) - 1`` in the order given. Digits 0-4 to 5-9
    is ``split_classes(load_digits_split(), range(5), range(5, 10))``.

    Args:
        data: The full data set.
        source_classes: Labels of the source task.
        target_classes: Labels of the target task; disjoint from ``source_classes``.

    Returns:
        ``(source, target)`` data splits.

    Raises:
        InvalidInputError: For an empty, repeated, overlapping or out-of-range class list.
    """
    from topselect.datasets import DataSplit

    source, target = [int(c) for c in source_classes], [int(c) for c in target_classes]
    for name, classes in (("source_classes", source), ("target_classes", target)):
        if not classes or len(set(classes)) != len(classes):
            raise InvalidInputError(
                f"{name} must list distinct labels, at least one, but got {classes}."
            )
        outside = [c for c in classes if not 0 <= c < data.n_classes]
        if outside:
            raise InvalidInputError(
                f"{name} contains {outside}, outside the data's labels 0..{data.n_classes - 1}."
            )
    shared = sorted(set(source) & set(target))
    if shared:
        raise InvalidInputError(
            f"source_classes and target_classes must be disjoint, but share {shared}."
        )
    tasks = []
    for classes in (source, target):
        parts = [
            _select(x, y, classes)
            for x, y in (
                (data.x_train, data.y_train),
                (data.x_val, data.y_val),
                (data.x_test, data.y_test),
            )
        ]
        tasks.append(DataSplit(*parts[0], *parts[1], *parts[2], n_classes=len(classes)))
    return tasks[0], tasks[1]
