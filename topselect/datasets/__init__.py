"""Real data sets that ship with topselect's dependencies."""

from topselect.datasets._digits import DataSplit, load_digits_split

__all__ = ["DataSplit", "load_digits_split"]
