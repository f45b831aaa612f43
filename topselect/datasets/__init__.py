"""Real data sets that ship with topselect's dependencies or are generated locally."""

from topselect.datasets._digits import DataSplit, load_digits_split
from topselect.datasets._mnist1d import load_mnist1d_split

__all__ = ["DataSplit", "load_digits_split", "load_mnist1d_split"]
