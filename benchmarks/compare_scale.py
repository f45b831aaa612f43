"""Time ``topselect compare`` on an experiment of 5,000 runs, 100 of them with topology data.

Builds two experiments of the same shape in one sqlite store: ``bench-local`` keeps its
artifacts beside the store, ``bench-served`` gets its 100 topology runs through a local
``mlflow server`` (proxied artifacts). Each contains one study run, 100 trial runs with real
topselect artifacts (``diagram.json`` from sublevel persistence of seeded 31 x 31 grids,
``probe_outputs.npz`` of seeded MLPs on a 512-example probe set) and 4,899 runs without
topselect data, as optuna-integration's MLflowCallback writes them. Then it times the
``topselect`` console command (a fresh process, imports included) with several options
against the sqlite store and against the server, side by side, and the unfiltered read of
all runs that server-side filtering avoids.

Run: ``python benchmarks/compare_scale.py [--repeats 3] [--out DIR]``. Writes
``benchmarks/results/compare_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

N_RUNS = 5000
N_TOPOLOGY = 100
GRID = 31
RESULTS = Path(__file__).resolve().parent / "results" / "compare_scale.json"

CASES = {
    "table": [],
    "json": ["--format", "json"],
    "sliced distances, all 100": ["--distances", "sliced", "--top", "0"],
    "bottleneck distances, all 100": ["--distances", "bottleneck", "--top", "0"],
    "equivalence, all 100": ["--equivalence", "--top", "0"],
    "everything, top 25, plot": ["--distances", "sliced", "--equivalence", "--plot", "{plot}"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(store: str, directory: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", store,
        "--artifacts-destination", str(directory / "served-artifacts"),
    ]  # fmt: skip
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (directory / "server.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"mlflow server did not start; see {directory / 'server.log'}")


def topology_payload(index: int, probe) -> tuple[dict, bytes]:
    """Return a diagram.json document and probe_outputs.npz bytes for trial ``index``."""
    import torch
    from torch import nn

    from topselect.topology import sublevel_persistence
    from topselect.tracking import encode_probe_outputs, record_probe_outputs

    rng = np.random.default_rng(index)
    axis = np.linspace(-1, 1, GRID)
    xx, yy = np.meshgrid(axis, axis)
    grid = (1 + index % 5) * (xx**2 + yy**2) + 0.05 * rng.normal(size=(GRID, GRID))
    diagrams = sublevel_persistence(grid)

    def pairs(bars: np.ndarray) -> list:
        return [[float(b), float(d) if np.isfinite(d) else None] for b, d in bars]

    document = {
        "schema_version": 1,
        "infinite_death": "null",
        "h0": pairs(diagrams.h0),
        "h1": pairs(diagrams.h1),
    }
    torch.manual_seed(index % 10)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    return document, encode_probe_outputs(record_probe_outputs(model, probe))


def build_topology_runs(uri: str, experiment: str, directory: Path) -> None:
    """Log the study run and the 100 trial runs through StudyLogger."""
    import optuna
    import torch

    import topselect

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=experiment, direction="maximize")
    logger = topselect.StudyLogger(uri, spool_dir=directory / "spool")
    logger.prepare_study(study)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(2048, 64, generator=generator)
    probe = topselect.make_probe_set(inputs, torch.zeros(2048, dtype=torch.long), size=512)
    distribution = {"optimizer": optuna.distributions.CategoricalDistribution(["adam", "sgd"])}
    for index in range(N_TOPOLOGY):
        trial = study.ask(distribution)
        run_id = logger.start_trial(study, trial)
        diagram, outputs = topology_payload(index, probe)
        value = 0.8 + 0.001 * index
        logger.log_params(run_id, {"optimizer": trial.params["optimizer"]})
        logger.log_metrics(run_id, {"value": value, "topselect.basin_area_0.1": 0.3})
        logger.set_tags(
            run_id,
            {
                "topselect.state": "COMPLETE",
                "topselect.fitted": True,
                "topselect.class_id": f"c{index % 4}",
            },
        )
        logger.log_artifacts(
            run_id, json_files={"diagram.json": diagram}, files={"probe_outputs.npz": outputs}
        )
        logger.end_run(run_id, "FINISHED")
        study.tell(trial, value)
    logger.finish_study(study)


def build_plain_runs(uri: str, experiment: str, count: int) -> None:
    """Create runs like MLflowCallback's: a name, tags, params and a ``value`` metric."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    now = int(time.time() * 1000)
    for number in range(count):
        run = client.create_run(
            experiment_id,
            run_name=str(number),
            tags={"number": str(number), "direction": "MAXIMIZE", "state": "COMPLETE"},
        )
        # Two writes per run keep the build to minutes on two cores. The runs stay
        # RUNNING, and compare never reads them because they have no topselect tags.
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("value", 0.5 + 1e-5 * number, now, 0)],
            params=[Param("lr", str(1e-3 * (1 + number % 7))), Param("width", "64")],
            tags=[RunTag("datetime_start", "2026-12-01")],
        )


def time_command(args: list[str], repeats: int) -> dict:
    seconds, codes = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        completed = subprocess.run(args, capture_output=True, text=True)
        seconds.append(time.perf_counter() - started)
        codes.append(completed.returncode)
        if completed.returncode not in (0, 1):
            raise RuntimeError(f"{' '.join(args)} failed:\n{completed.stderr[-2000:]}")
    return {"median_s": statistics.median(seconds), "runs_s": seconds, "exit_codes": codes}


def time_unfiltered(uri: str, experiment: str) -> float:
    """Seconds to page through every run of the experiment without a server-side filter."""
    code = (
        "import sys,time\nfrom mlflow import MlflowClient\n"
        "c=MlflowClient(sys.argv[1]);e=c.get_experiment_by_name(sys.argv[2]).experiment_id\n"
        "t=time.perf_counter();n=0;tok=None\n"
        "while True:\n"
        " p=c.search_runs([e],max_results=1000,page_token=tok);n+=len(p);tok=p.token\n"
        " if not tok: break\n"
        "print(time.perf_counter()-t, n)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, uri, experiment], capture_output=True)
    seconds, count = out.stdout.decode().split()
    assert int(count) == N_RUNS, count
    return float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="Working folder (kept).")
    args = parser.parse_args()
    directory = args.out or Path(tempfile.mkdtemp(prefix="compare-scale-"))
    directory.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{directory / 'mlflow.db'}"
    topselect_bin = shutil.which("topselect") or str(Path(sys.executable).parent / "topselect")
    env_note = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    os.environ.update(env_note)

    build: dict[str, float] = {}
    started = time.perf_counter()
    build_topology_runs(store, "bench-local", directory)
    build["topology runs, sqlite (s)"] = time.perf_counter() - started
    started = time.perf_counter()
    build_plain_runs(store, "bench-local", N_RUNS - N_TOPOLOGY - 1)
    build["plain runs, sqlite (s)"] = time.perf_counter() - started

    server, url = start_server(store, directory)
    try:
        started = time.perf_counter()
        build_topology_runs(url, "bench-served", directory)
        build["topology runs, through the server (s)"] = time.perf_counter() - started
        started = time.perf_counter()
        build_plain_runs(store, "bench-served", N_RUNS - N_TOPOLOGY - 1)
        build["plain runs, sqlite (s), second experiment"] = time.perf_counter() - started

        timings: dict[str, dict] = {}
        for name, options in CASES.items():
            row = {}
            for label, uri, experiment in (
                ("sqlite", store, "bench-local"),
                ("server", url, "bench-served"),
            ):
                plot = str(directory / f"{label}.png")
                extra = [o.replace("{plot}", plot) for o in options]
                command = [topselect_bin, "compare", experiment, "--tracking-uri", uri, *extra]
                row[label] = time_command(command, args.repeats)
            timings[name] = row
            print(
                f"{name:32s} sqlite {row['sqlite']['median_s']:6.2f} s   "
                f"server {row['server']['median_s']:6.2f} s",
                flush=True,
            )
        unfiltered = {
            "sqlite": time_unfiltered(store, "bench-local"),
            "server": time_unfiltered(url, "bench-served"),
        }
        startup = time_command([topselect_bin, "--help"], args.repeats)["median_s"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    result = {
        "runs_per_experiment": N_RUNS,
        "topology_runs": N_TOPOLOGY,
        "grid": GRID,
        "repeats": args.repeats,
        "build_seconds": build,
        "compare_seconds": timings,
        "unfiltered_search_all_runs_seconds": unfiltered,
        "topselect_help_seconds": startup,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({"build_seconds": build, "unfiltered": unfiltered}, indent=2))
    print(f"Wrote {RESULTS}")


if __name__ == "__main__":
    main()
