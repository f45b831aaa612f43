"""Real trajectories of small digits MLPs for the homotopy tests, trained once per session.

Every run starts from one seeded initialization of a 64-32-10 ReLU MLP and trains with
SGD (momentum 0.9) for 8 epochs of batch 64 on scikit-learn's digits, recording the
default nine waypoints. Measured with torch 2.13 on CPU, runs at learning rate 0.05 that
differ only in data order reach a probe-set loss of about 0.15, and the barriers between
their waypoints are at most 0.003. At 0.5, two such runs have a barrier of about 0.6 at
the end of training.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import topselect
from topselect.datasets import load_digits_split
from topselect.homotopy import HomotopyTester, architecture_signature
from topselect.trajectory import TrajectoryRecorder, sketch

SEED = 0
WIDTH = 32
EPOCHS = 8
BATCH_SIZE = 64
SMALL_LR = 0.05
LARGE_LR = 0.5
PROBE_SIZE = 256
EPSILON = 0.05
#: Probe-set loss up to which a test run counts as fitted (the runs above end near 0.15).
FIT_LOSS = 0.3


@dataclass(frozen=True)
class Trajectory:
    """A recorded run: waypoints and sketches by fraction, final probe loss, architecture."""

    waypoints: dict[float, torch.Tensor]
    sketches: dict[float, np.ndarray]
    loss: float
    architecture: str

    def prefix(self, last: float) -> Trajectory:
        """Return the part recorded up to progress ``last``, as a running trial has it."""
        keep = [f for f in self.waypoints if f <= last]
        return Trajectory(
            {f: self.waypoints[f] for f in keep},
            {f: self.sketches[f] for f in keep},
            math.nan,
            self.architecture,
        )


@functools.cache
def digits_data():
    return load_digits_split(seed=SEED)


@functools.cache
def digits_probe() -> topselect.ProbeSet:
    data = digits_data()
    return topselect.make_probe_set(data.x_train, data.y_train, size=PROBE_SIZE, seed=SEED)


def build_mlp(width: int = WIDTH) -> nn.Sequential:
    """Return the shared initialization: the same parameters on every call."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


@functools.cache
def train(order_seed: int, lr: float, width: int = WIDTH) -> Trajectory:
    """Train one run from the shared initialization; cached per session."""
    data = digits_data()
    model = build_mlp(width)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    recorder = TrajectoryRecorder(model)
    order = torch.Generator().manual_seed(order_seed)
    n = len(data.x_train)
    total = EPOCHS * math.ceil(n / BATCH_SIZE)
    step = 0
    for _ in range(EPOCHS):
        for index in torch.randperm(n, generator=order).split(BATCH_SIZE):
            optimizer.zero_grad()
            F.cross_entropy(model(data.x_train[index]), data.y_train[index]).backward()
            optimizer.step()
            step += 1
            recorder.update(step / total)
    probe = digits_probe()
    with torch.no_grad():
        loss = float(F.cross_entropy(model(probe.inputs), probe.targets))
    return Trajectory(
        dict(recorder.waypoints), dict(recorder.sketches), loss, architecture_signature(model)
    )


def permuted_copy(trajectory: Trajectory, seed: int, noise: float) -> Trajectory:
    """Return the trajectory with its hidden units permuted at every waypoint, plus noise.

    A permutation of hidden units leaves the function, and so every loss, unchanged. The
    straight line between a trained network and its permutation averages unrelated units,
    so it has a large barrier. ``noise`` (Gaussian, per parameter) makes the copy a
    different point rather than an exact relabelling.
    """
    model = build_mlp()
    order = torch.randperm(WIDTH, generator=torch.Generator().manual_seed(seed))
    generator = torch.Generator().manual_seed(seed + 1)
    waypoints = {}
    for fraction, flat in trajectory.waypoints.items():
        permuted = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(flat.clone(), permuted.parameters())
        with torch.no_grad():
            permuted[0].weight.copy_(permuted[0].weight[order])
            permuted[0].bias.copy_(permuted[0].bias[order])
            permuted[2].weight.copy_(permuted[2].weight[:, order])
        vector = torch.nn.utils.parameters_to_vector(permuted.parameters()).detach()
        waypoints[fraction] = vector + noise * torch.randn(vector.shape, generator=generator)
    sketches = {f: sketch(w) for f, w in waypoints.items()}
    return Trajectory(waypoints, sketches, trajectory.loss, trajectory.architecture)


def make_tester(width: int = WIDTH, epsilon: float = EPSILON) -> HomotopyTester:
    return HomotopyTester(build_mlp(width), F.cross_entropy, digits_probe(), epsilon=epsilon)
