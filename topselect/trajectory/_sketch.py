"""Seeded random projections of parameter vectors that never build the full matrix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import torch

__all__ = ["sketch"]

# Rows of the projection generated at once: the matrix is rebuilt block by block from
# (seed, block index), so memory stays at _BLOCK x k floats whatever the parameter count.
_BLOCK = 65_536


def sketch(flat: torch.Tensor, k: int = 32, seed: int = 0) -> NDArray[np.float64]:
    """Project a flat parameter vector to ``k`` dimensions with a seeded Gaussian matrix.

    The projection ``R`` has i.i.d. ``N(0, 1/k)`` entries, so distances between sketches
    estimate distances between the vectors (Johnson-Lindenstrauss). ``R`` is regenerated
    block by block from ``seed``, so every process computes the same sketch of the same
    vector without storing ``R``.

    Args:
        flat: 1-D tensor of ``P`` parameters (any device, any float dtype).
        k: Sketch dimension.
        seed: Seed of ``R``. Sketches are comparable only under the same seed and ``P``.

    Returns:
        Array of shape ``(k,)``.
    """
    import torch

    vector = flat.detach().to("cpu", torch.float32).reshape(-1)
    out = torch.zeros(k, dtype=torch.float64)
    for block, start in enumerate(range(0, vector.numel(), _BLOCK)):
        part = vector[start : start + _BLOCK]
        generator = torch.Generator().manual_seed(seed * 1_000_003 + block)
        matrix = torch.randn(part.numel(), k, generator=generator, dtype=torch.float32)
        out += (part @ matrix).to(torch.float64)
    return (out / np.sqrt(k)).numpy()
