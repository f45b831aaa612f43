"""The probe workloads shared by probe_engine.py and gpu_check.py, and a FLOP counter.

Workloads, each with a 512-example probe set drawn from its training split:

- ``digits-mlp``: ``topselect.demo.build_model(64, 10, 64, 2, seed=0)``, a 64-64-64-10
  ReLU MLP (8,970 parameters) on scikit-learn's digits.
- ``digits-mlp-wide``: ``build_model(64, 10, 128, 3, seed=0)``, a 64-128-128-128-10 ReLU
  MLP (42,634 parameters), above the size where vmap stops beating the loop on the CPU.
- ``mnist1d-cnn``: Conv1d(1, 16, 5), ReLU, Conv1d(16, 32, 5), ReLU, global average pool,
  Linear(32, 10) (3,018 parameters) on 4,000 MNIST-1D examples generated locally.

Both are trained for a few epochs with Adam first, so that the slice is taken around a
fitted model as it would be in a study. Training is seeded and runs on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import topselect
from topselect.datasets import DataSplit, load_digits_split, load_mnist1d_split
from topselect.demo import build_model

PROBE_SIZE = 512
SEED = 0


@dataclass
class Workload:
    """A trained model, its probe set and its forward cost.

    Attributes:
        name: Short label used in tables and JSON.
        model: The trained network (on the CPU).
        probe: Probe set of ``PROBE_SIZE`` training examples.
        n_parameters: Number of trainable parameters.
        flops_per_example: Forward FLOPs of one example, from :func:`count_forward_flops`.
        counter_flops_per_example: The same from ``torch.utils.flop_counter``, or ``None``
            when the counter failed.
    """

    name: str
    model: nn.Module
    probe: topselect.ProbeSet
    n_parameters: int
    flops_per_example: int
    counter_flops_per_example: float | None


def build_cnn(seed: int = SEED) -> nn.Module:
    """Return the small 1-D CNN for MNIST-1D inputs ``(n, 1, 40)``, seeded by ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv1d(1, 16, 5),
            nn.ReLU(),
            nn.Conv1d(16, 32, 5),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(32, 10),
        )


def train(model: nn.Module, data: DataSplit, epochs: int, lr: float = 0.01) -> None:
    """Train ``model`` with Adam on mini-batches of 64 in a seeded order."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(data.x_train), generator=order).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(data.x_train[index]), data.y_train[index]).backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()


def count_forward_flops(model: nn.Module, example: torch.Tensor) -> int:
    """Count the forward FLOPs of one example as 2 x the multiply-accumulates of every
    ``nn.Linear`` and ``nn.Conv1d``.

    Bias additions, activations, pooling, flattening and the loss are not counted. For
    the two workloads here they would add about 1.5% (MLP) and 2.5% (CNN). A layer of any
    other type that has parameters raises ``TypeError``, so nothing is left out silently.

    Args:
        model: The network.
        example: One input with its batch axis, e.g. ``(1, 1, 40)``.
    """
    macs = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features
        elif isinstance(module, nn.Conv1d):
            per_output = (module.in_channels // module.groups) * module.kernel_size[0]
            macs += output.numel() * per_output

    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and not isinstance(module, (nn.Linear, nn.Conv1d)):
            raise TypeError(f"count_forward_flops has no rule for {type(module).__name__}.")
    handles = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return 2 * macs // example.shape[0]


def counter_forward_flops(model: nn.Module, inputs: torch.Tensor) -> float | None:
    """Return forward FLOPs per example by ``torch.utils.flop_counter.FlopCounterMode``,
    or ``None`` when the counter raises."""
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(inputs)
    except RuntimeError:
        return None
    return counter.get_total_flops() / inputs.shape[0]


def make_workload(name: str, model: nn.Module, data: DataSplit) -> Workload:
    probe = topselect.make_probe_set(data.x_train, data.y_train, size=PROBE_SIZE, seed=SEED)
    return Workload(
        name=name,
        model=model,
        probe=probe,
        n_parameters=sum(p.numel() for p in model.parameters()),
        flops_per_example=count_forward_flops(model, probe.inputs[:1]),
        counter_flops_per_example=counter_forward_flops(model, probe.inputs),
    )


def load_workloads(epochs: int = 10) -> list[Workload]:
    """Build, train and measure the workloads (a few seconds on two CPU cores)."""
    digits = load_digits_split(seed=SEED)
    mlp = build_model(digits.n_features, digits.n_classes, width=64, depth=2, seed=SEED)
    train(mlp, digits, epochs)
    wide = build_model(digits.n_features, digits.n_classes, width=128, depth=3, seed=SEED)
    train(wide, digits, epochs)
    mnist1d = load_mnist1d_split(seed=SEED)
    cnn = build_cnn()
    train(cnn, mnist1d, epochs)
    return [
        make_workload("digits-mlp", mlp, digits),
        make_workload("digits-mlp-wide", wide, digits),
        make_workload("mnist1d-cnn", cnn, mnist1d),
    ]
