"""The probe set: the fixed examples on which every loss of a study is evaluated."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from topselect.exceptions import InvalidInputError

if TYPE_CHECKING:
    import torch

__all__ = ["ProbeSet", "make_probe_set"]


@dataclass(frozen=True, eq=False)
class ProbeSet:
    """Inputs and targets of the probe set, with a fingerprint of their contents.

    Attributes:
        inputs: Tensor of shape ``(n, ...)`` fed to the model.
        targets: Tensor of shape ``(n, ...)`` passed to the loss function.
        fingerprint: First 16 hex digits of a SHA-256 over both tensors' dtypes, shapes
            and bytes. Results with different fingerprints were measured on different data.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    fingerprint: str

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def to(self, device: torch.device | str) -> ProbeSet:
        """Return the probe set on ``device`` (the fingerprint is unchanged)."""
        return ProbeSet(self.inputs.to(device), self.targets.to(device), self.fingerprint)


def make_probe_set(
    inputs: torch.Tensor, targets: torch.Tensor, size: int = 512, seed: int = 0
) -> ProbeSet:
    """Draw a seeded subset of training examples as the probe set.

    Args:
        inputs: Training inputs, shape ``(n, ...)``.
        targets: Training targets, shape ``(n, ...)``.
        size: Number of examples to keep (all of them when ``n <= size``).
        seed: Seed of the subset draw; the same seed and data give the same probe set.

    Returns:
        The probe set on the device of ``inputs``.

    Raises:
        InvalidInputError: When the tensors disagree in length, are empty, or ``size < 1``.
    """
    import torch

    if inputs.shape[0] != targets.shape[0]:
        raise InvalidInputError(
            f"inputs and targets must have the same length, but got {inputs.shape[0]} "
            f"and {targets.shape[0]}."
        )
    if inputs.shape[0] == 0:
        raise InvalidInputError("inputs must hold at least one example, but it is empty.")
    if size < 1:
        raise InvalidInputError(f"size must be >= 1, but got {size}.")
    n = int(inputs.shape[0])
    if n > size:
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(n, generator=generator)[:size].sort().values
        inputs = inputs[index.to(inputs.device)]
        targets = targets[index.to(targets.device)]
    return ProbeSet(inputs, targets, fingerprint(inputs, targets))


def fingerprint(*tensors: torch.Tensor) -> str:
    """Return the first 16 hex digits of a SHA-256 over the tensors' dtypes, shapes and bytes."""
    import torch

    digest = hashlib.sha256()
    for tensor in tensors:
        cpu = tensor.detach().to("cpu").contiguous()
        digest.update(f"{cpu.dtype}{tuple(cpu.shape)}".encode())
        digest.update(cpu.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
