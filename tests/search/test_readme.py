"""The README's snippet that adds topselect to an existing study runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from topselect.search import DEFAULT_SCORE

README = Path(__file__).resolve().parents[2] / "README.md"
EXISTING_TRIALS = 3


def objective(trial: optuna.Trial) -> float:
    """A learning curve with the attributes ``topselect.track`` writes, without training.

    A tracked objective costs about 40 single-attribute sqlite transactions per trial, so
    this stand-in keeps the test fast; the tracker's own tests cover its attributes.
    """
    x = trial.suggest_float("x", -3.0, 3.0)
    final = (x - 1.0) ** 2
    trial.set_user_attr("topselect.scores", {DEFAULT_SCORE: min(1.0, abs(x) / 3.0)})
    trial.set_user_attr("topselect.fitted", final < 1.0)
    for step in range(5):
        trial.report(final + 1.0 / (step + 1), step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return final


def readme_snippet(name: str) -> str:
    """Return the code between ``<!-- name -->`` and ``<!-- /name -->`` in README.md."""
    match = re.search(
        rf"<!-- {name} -->\n```python\n(.*?)```\n<!-- /{name} -->", README.read_text(), re.S
    )
    assert match, f"README.md has no python block marked {name}"
    return match.group(1)


def test_readme_existing_study_snippet_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    snippet = readme_snippet("existing-study")
    monkeypatch.chdir(tmp_path)
    # The study exists before topselect comes in, with trials of its own.
    existing = optuna.create_study(
        study_name="my-study", storage="sqlite:///my-study.db", direction="minimize"
    )
    existing.optimize(objective, n_trials=EXISTING_TRIALS)

    exec(compile(snippet, "README.md", "exec"), {"objective": objective})

    assert len(snippet.strip().splitlines()) < 15
    study = optuna.load_study(study_name="my-study", storage="sqlite:///my-study.db")
    assert len(study.trials) == EXISTING_TRIALS + 20
    printed = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in printed] == ["1", "2", "3", "4", "5"]
    best = min(
        (t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: (t.value, t.number),
    )
    # Fitted trials may move up by at most weight x score (0.01), so the best raw trial
    # is among the first printed.
    assert str(best.number) in [line.split()[1] for line in printed]
