"""Settings of a transfer comparison, checked before any training runs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from topselect.exceptions import InvalidInputError

__all__ = ["BASELINES", "LinearSolver", "TransferConfig"]

#: Baselines that :func:`topselect.transfer.evaluate_transfer` can run.
BASELINES = ("finetune", "scratch", "lp_ft")

LinearSolver = Literal["ridge", "lbfgs"]


@dataclass(frozen=True)
class TransferConfig:
    """Settings of pullback transfer and of the baselines it is compared with.

    Fine-tuning, training from scratch and linear-probe-then-fine-tune share one budget:
    ``epochs`` passes over the target training set in mini-batches of ``batch_size``,
    Adam at ``lr``. Each of them, and the MLP head, keeps the parameters of the epoch with
    the best validation accuracy when ``keep_best`` is set.

    Attributes:
        epochs: Training epochs of every baseline (>= 1).
        batch_size: Mini-batch size of the baselines (>= 1).
        lr: Adam learning rate of the baselines (> 0).
        weight_decay: Adam L2 penalty of the baselines (>= 0).
        keep_best: Whether baselines and the MLP head keep the epoch (or step) with the
            best validation accuracy instead of the last one.
        linear_solver: ``"ridge"`` fits the linear head in closed form: least squares on
            one-hot targets, with the penalty chosen on validation from
            ``ridge_penalties`` (one Cholesky solve each). ``"lbfgs"``
            fits multinomial logistic regression by full-batch L-BFGS with
            ``lbfgs_penalty``. In ``benchmarks/transfer.py`` (5 seeds each of digits
            and MNIST-1D, one CPU thread) both reached the same mean accuracy within
            0.7 points, and the whole pullback on digits took 0.014 s with ridge
            against 0.21 s with L-BFGS.
        ridge_penalties: Candidate ridge penalties, each multiplied by the number of
            training examples (so they do not scale with the data size).
        lbfgs_penalty: L2 penalty on the logistic weights (per unit of mean loss).
        lbfgs_max_iter: L-BFGS iterations of the logistic head.
        mlp_head: Whether to also fit a one-hidden-layer MLP head on every layer's cache.
            Off by default because in the same benchmark MLP heads raised the mean
            accuracy by at most 1 point and made pullback 2-3 times slower than
            fine-tuning.
        mlp_hidden: Hidden units of the MLP head.
        mlp_steps: Full-batch Adam steps of the MLP head on the cached features.
        mlp_lr: Adam learning rate of the MLP head.
        mlp_eval_every: Steps between validation checks of the MLP head.
        chunk_size: Examples per forward pass when features are computed and models
            evaluated; bounds the memory of one pass.
        seed: Seed of head initialization, baseline initialization and batch order.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    keep_best: bool = True
    linear_solver: LinearSolver = "ridge"
    ridge_penalties: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    lbfgs_penalty: float = 1e-3
    lbfgs_max_iter: int = 100
    mlp_head: bool = False
    mlp_hidden: int = 128
    mlp_steps: int = 300
    mlp_lr: float = 3e-3
    mlp_eval_every: int = 10
    chunk_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive_int("epochs", self.epochs)
        _check_positive_int("batch_size", self.batch_size)
        _check_positive_int("lbfgs_max_iter", self.lbfgs_max_iter)
        _check_positive_int("mlp_hidden", self.mlp_hidden)
        _check_positive_int("mlp_steps", self.mlp_steps)
        _check_positive_int("mlp_eval_every", self.mlp_eval_every)
        _check_positive_int("chunk_size", self.chunk_size)
        _check_positive_float("lr", self.lr)
        _check_positive_float("mlp_lr", self.mlp_lr)
        _check_non_negative("weight_decay", self.weight_decay)
        _check_non_negative("lbfgs_penalty", self.lbfgs_penalty)
        if self.linear_solver not in ("ridge", "lbfgs"):
            raise InvalidInputError(
                f"linear_solver must be 'ridge' or 'lbfgs', but got {self.linear_solver!r}."
            )
        penalties = self.ridge_penalties
        if not penalties or not all(
            _is_number(p) and math.isfinite(p) and p > 0 for p in penalties
        ):
            raise InvalidInputError(
                f"ridge_penalties must be a non-empty sequence of finite numbers > 0, but "
                f"got {penalties!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-safe dictionary."""
        settings = asdict(self)
        settings["ridge_penalties"] = list(self.ridge_penalties)
        return settings


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"{name} must be an integer >= 1, but got {value!r}.")


def _check_positive_float(name: str, value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{name} must be a finite number > 0, but got {value!r}.")


def _check_non_negative(name: str, value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{name} must be a finite number >= 0, but got {value!r}.")
