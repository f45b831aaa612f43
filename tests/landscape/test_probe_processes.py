"""A landscape probe gives the same bits in a fresh process as in this one."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = """
import json, sys
import torch
import torch.nn.functional as F
import topselect

torch.manual_seed(3)
model = torch.nn.Sequential(
    torch.nn.Linear(6, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
)
model.train()
model(torch.randn(32, 6))  # Moves the BatchNorm running statistics off their defaults.
generator = torch.Generator().manual_seed(0)
x = torch.randn(64, 6, generator=generator)
y = torch.randint(0, 3, (64,), generator=generator)
probe = topselect.make_probe_set(x, y, size=48, seed=1)
output = {}
for seed in (11, 12):
    result = topselect.probe_landscape(
        model, F.cross_entropy, probe, grid_size=7, radius=0.5, seed=seed
    )
    output[seed] = {
        "values": [v.hex() for v in result.values.ravel().tolist()],
        "h0": [v.hex() for v in result.diagrams.h0.ravel().tolist()],
        "h1": [v.hex() for v in result.diagrams.h1.ravel().tolist()],
        "fingerprint": result.probe_fingerprint,
    }
torch.manual_seed(4)
mlp = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
stacked = topselect.probe_landscape(mlp, F.cross_entropy, probe, grid_size=7, seed=11)
subspace = topselect.probe_subspace(mlp, F.cross_entropy, probe, dim=3, n_samples=40, seed=11)
for name, result in (("stacked", stacked), ("subspace", subspace)):
    output[name] = {
        "strategy": result.strategy,
        "values": [v.hex() for v in result.values.ravel().tolist()],
        "h0": [v.hex() for v in result.diagrams.h0.ravel().tolist()],
        "h1": [v.hex() for v in result.diagrams.h1.ravel().tolist()],
    }
json.dump(output, sys.stdout)
"""


def _probes_in_new_process() -> dict:
    """Return the probes of seeds 11 and 12, as exact hex floats, from a new process."""
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def two_processes() -> tuple[dict, dict]:
    return _probes_in_new_process(), _probes_in_new_process()


def test_probe_identical_across_processes(two_processes: tuple[dict, dict]) -> None:
    first, second = (run["11"] for run in two_processes)

    assert first["fingerprint"] == second["fingerprint"]
    assert first["values"] == second["values"]
    assert first["h0"] == second["h0"]
    assert first["h1"] == second["h1"]
    assert len(first["values"]) == 49


@pytest.mark.parametrize("name", ["stacked", "subspace"])
def test_stacked_and_subspace_identical_across_processes(two_processes, name) -> None:
    first, second = (run[name] for run in two_processes)

    assert first["strategy"] == "stacked"
    assert first["values"] == second["values"]
    assert first["h0"] == second["h0"]
    assert first["h1"] == second["h1"]


def test_probe_seed_changes_values(two_processes: tuple[dict, dict]) -> None:
    first, other = two_processes[0]["11"], two_processes[0]["12"]
    values = np.array([float.fromhex(v) for v in first["values"]])
    other_values = np.array([float.fromhex(v) for v in other["values"]])

    assert not np.array_equal(values, other_values)
    assert values[24] == other_values[24]  # The centre is the model itself for any seed.
