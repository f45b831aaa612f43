"""The trial tracker: records a trial's trajectory and topology and reports them."""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import optuna

from topselect.exceptions import InvalidInputError
from topselect.homotopy import (
    ClassDecision,
    ClassMode,
    HomotopyTester,
    MlflowWaypointStore,
    WaypointDtype,
    WaypointStore,
    architecture_signature,
    assign_class,
)
from topselect.homotopy._classes import (
    DEFAULT_CONFIRM_MERGES,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_PREFIX_CANDIDATES,
)
from topselect.landscape import (
    LandscapeResult,
    LossFn,
    ProbeSet,
    check_probe_arguments,
    hessian_trace,
    parameters_of,
    probe_landscape,
    sam_sharpness,
    top_hessian_eigenvalue,
    trajectory_plane,
)
from topselect.search import _attrs, _classes, _optuna_compat
from topselect.topology import DEFAULT_BASIN_LEVELS
from topselect.trajectory import (
    DEFAULT_FRACTIONS,
    TrajectoryRecorder,
    TrajectorySummary,
    waypoint_losses,
)

if TYPE_CHECKING:
    import torch

    from topselect.tracking import StudyLogger

__all__ = ["TrackerConfig", "TrialTracker", "track"]

_logger = logging.getLogger(__name__)

# One waypoint store per tracking URI and process, so downloaded representatives are
# cached across the trials a worker runs.
_MLFLOW_STORES: dict[str, MlflowWaypointStore] = {}


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of the trial tracker. Keep them equal across the trials of a study.

    Attributes:
        grid_size: Points per axis of the landscape slice (odd, >= 3).
        radius: Half-width of the slice in filter-normalized units.
        seed: Seed of the slice directions and of the waypoint sketches, in
            ``[0, 2**32 - 1]``.
        fractions: Progress fractions at which waypoints are recorded.
        sketch_dim: Dimension of the waypoint sketches.
        epsilon: Largest loss barrier (loss units) counted as homotopic.
        fit_loss: A trial is fitted when its final probe-set loss is at most this.
        class_warmup: Progress from which a running trial is placed in a class, on the
            prefix of its waypoints.
        max_candidates: Class representatives tested by the final membership search,
            nearest sketches first. It tests all of them, so that a trial linking two
            classes merges them, and skips representatives of a merged class that the
            trial already joined without counting them.
        prefix_candidates: Class representatives tested by each membership search on a
            running trial's prefix; the search stops at the first witnessed one.
        class_mode: ``"representatives"`` (membership against one founder per class) or
            ``"all_pairs"`` (every fitted trial stored, exact single-linkage classes by
            union-find; up to N(N-1)/2 pair tests, for small studies and validation).
        confirm_merges: Whether two classes merge only when their representatives are
            also witnessed against each other, not only through the linking trial. With
            it, classes stay close to stars around their founders, narrower but
            dependent on trial order; without it (the default) they chain and approach
            the all-pairs classes. Both are measured in BENCHMARKS.md.
        waypoint_dtype: Precision of stored representative waypoints (``"float16"``
            halves their size).
        basin_levels: Loss increments at which the basin area is reported.
        strategy: Landscape evaluation strategy (``"auto"``, ``"loop"``, ``"vmap"``,
            ``"stacked"``; see :func:`topselect.probe_landscape`).
        classes: Whether to assign homotopy classes at all.
        trajectory_slice: Whether to probe a second slice, through the plane of the
            trajectory (see ``trajectory_plane``), with radius 1 so the initialization
            lies on its edge.
        baselines: Whether to compute the sharpness baselines (Hessian trace, top Hessian
            eigenvalue, adaptive SAM) on the probe set.
    """

    grid_size: int = 31
    radius: float = 1.0
    seed: int = 0
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    sketch_dim: int = 32
    # NOTE: epsilon and fit_loss are starting values in cross-entropy nats, chosen on
    # digits MLPs; other losses and tasks need their own.
    epsilon: float = 0.05
    fit_loss: float = 0.1
    class_warmup: float = 0.5
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    prefix_candidates: int = DEFAULT_PREFIX_CANDIDATES
    class_mode: ClassMode = "representatives"
    confirm_merges: bool = DEFAULT_CONFIRM_MERGES
    waypoint_dtype: WaypointDtype = "float32"
    basin_levels: tuple[float, ...] = DEFAULT_BASIN_LEVELS
    strategy: Literal["auto", "loop", "vmap", "stacked"] = "auto"
    classes: bool = True
    trajectory_slice: bool = True
    baselines: bool = True

    def __post_init__(self) -> None:
        # Integer settings first, so the range checks below and the probe's own checks
        # never compare a string, None or a float. check_probe_arguments checks that
        # grid_size is odd.
        integer_settings = {
            "grid_size": (3, None, "an odd integer"),
            "seed": (0, _MAX_SEED, "an integer"),
            "sketch_dim": (1, None, "an integer"),
            "max_candidates": (1, None, "an integer"),
            "prefix_candidates": (1, None, "an integer"),
        }
        for name, (minimum, maximum, kind) in integer_settings.items():
            value = _checked_integer(name, getattr(self, name), minimum, maximum, kind)
            # NumPy integers are stored as int, so the settings stay JSON-serializable.
            object.__setattr__(self, name, value)
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise InvalidInputError(
                f"epsilon must be a finite number >= 0, but got {self.epsilon}."
            )
        if not (math.isfinite(self.fit_loss) and self.fit_loss > 0):
            raise InvalidInputError(
                f"fit_loss must be a finite number > 0, but got {self.fit_loss}."
            )
        if not 0 <= self.class_warmup <= 1:
            raise InvalidInputError(
                f"class_warmup must lie in [0, 1], but got {self.class_warmup}."
            )
        if self.class_mode not in ("representatives", "all_pairs"):
            raise InvalidInputError(
                f"class_mode must be 'representatives' or 'all_pairs', but got "
                f"{self.class_mode!r}."
            )
        if self.waypoint_dtype not in ("float32", "float16"):
            raise InvalidInputError(
                f"waypoint_dtype must be 'float32' or 'float16', but got {self.waypoint_dtype!r}."
            )
        # The probe's own checks, run now so a bad setting fails before any training.
        check_probe_arguments(self.grid_size, self.radius, self.strategy)
        if not self.basin_levels or any(not (level >= 0) for level in self.basin_levels):
            raise InvalidInputError(
                f"basin_levels must be a non-empty sequence of numbers >= 0, but got "
                f"{self.basin_levels}."
            )
        if not self.fractions or list(self.fractions) != sorted(set(self.fractions)):
            raise InvalidInputError(
                f"fractions must be strictly ascending, but got {self.fractions}."
            )

    def to_params(self) -> dict[str, Any]:
        """Return the settings as flat MLflow params."""
        return {
            "grid_size": self.grid_size,
            "radius": self.radius,
            "seed": self.seed,
            "fractions": ",".join(f"{f:g}" for f in self.fractions),
            "sketch_dim": self.sketch_dim,
            "epsilon": self.epsilon,
            "fit_loss": self.fit_loss,
            "class_warmup": self.class_warmup,
            "max_candidates": self.max_candidates,
            "prefix_candidates": self.prefix_candidates,
            "class_mode": self.class_mode,
            "confirm_merges": self.confirm_merges,
            "waypoint_dtype": self.waypoint_dtype,
            "basin_levels": ",".join(f"{level:g}" for level in self.basin_levels),
            "strategy": self.strategy,
            "classes": self.classes,
            "trajectory_slice": self.trajectory_slice,
            "baselines": self.baselines,
        }


# Largest seed: the top of NumPy's RandomState seed range (which Optuna's samplers use),
# and small enough that the sketch's block seed, seed * 1_000_003 + block, stays within
# the range torch.Generator.manual_seed accepts.
_MAX_SEED = 2**32 - 1


def _checked_integer(
    name: str, value: object, minimum: int, maximum: int | None, kind: str
) -> int:
    """Return ``value`` as an int, or raise :class:`InvalidInputError` unless it is an
    integer (a Python or NumPy one, not a bool) in ``[minimum, maximum]``, with no upper
    bound when ``maximum`` is ``None``."""
    if maximum is None:
        valid = f"{kind} >= {minimum}"
    else:
        valid = f"{kind} in [{minimum}, {maximum}]"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{name} must be {valid}, but got {value!r}.")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        raise InvalidInputError(f"{name} must be {valid}, but got {value!r}.")
    return number


def track(
    trial: optuna.trial.Trial,
    model: torch.nn.Module,
    *,
    probe: ProbeSet,
    loss_fn: LossFn | None = None,
    config: TrackerConfig | None = None,
    logger: StudyLogger | Literal[False] | None = None,
    waypoint_store: WaypointStore | None = None,
    prune: bool = True,
) -> TrialTracker:
    """Open the tracker of one trial; use it as a context manager around training.

    Example:
        >>> with topselect.track(trial, model, probe=probe) as tracker:  # doctest: +SKIP
        ...     for epoch in range(epochs):
        ...         train_one_epoch(model)
        ...         tracker.report(accuracy(model), step=epoch, progress=(epoch + 1) / epochs)
        ...     return tracker.finish(accuracy(model))

    Args:
        trial: The running Optuna trial.
        model: The network being trained (the tracker only reads it).
        probe: Probe set on which every loss is measured (see ``make_probe_set``).
        loss_fn: Mean loss ``loss_fn(outputs, targets)``; cross-entropy when ``None``.
        config: Tracker settings; defaults when ``None``.
        logger: Where to log in MLflow: ``None`` for a :class:`~topselect.tracking.StudyLogger`
            at the default tracking URI, ``False`` for no MLflow logging.
        waypoint_store: Where class representatives' waypoints go; the trial's MLflow run
            when ``None`` and MLflow is on. Without either, classes are not assigned.
        prune: Whether :meth:`TrialTracker.report` raises ``optuna.TrialPruned`` when the
            study's pruner decides to prune.

    Returns:
        The tracker, not yet entered.
    """
    return TrialTracker(
        trial,
        model,
        probe=probe,
        loss_fn=loss_fn,
        config=config or TrackerConfig(),
        logger=logger,
        waypoint_store=waypoint_store,
        prune=prune,
    )


class TrialTracker:
    """Record a trial's trajectory, report its values and analyse its topology on exit.

    Created by :func:`track`. On a normal exit the tracker probes the landscape around the
    final parameters, summarizes the trajectory and places the trial in a homotopy class.
    It writes JSON-safe summaries to the trial's user attributes and to MLflow. The
    attributes are written before Optuna finishes the trial, because finished trials are
    immutable. On ``optuna.TrialPruned`` the tracker records the partial trajectory, and
    on any other exception it marks the MLflow run failed. It never suppresses an
    exception. A failing analysis step is logged and stored in
    ``topselect.analysis_error`` instead of failing the trial.
    """

    def __init__(
        self,
        trial: optuna.trial.Trial,
        model: torch.nn.Module,
        *,
        probe: ProbeSet,
        loss_fn: LossFn | None,
        config: TrackerConfig,
        logger: StudyLogger | Literal[False] | None,
        waypoint_store: WaypointStore | None,
        prune: bool,
    ) -> None:
        if not isinstance(trial, optuna.trial.Trial):
            raise InvalidInputError(
                f"trial must be the optuna.trial.Trial passed to the objective, but got "
                f"{type(trial).__name__}."
            )
        if not isinstance(probe, ProbeSet):
            raise InvalidInputError(
                f"probe must be a ProbeSet (see topselect.make_probe_set), but got "
                f"{type(probe).__name__}."
            )
        import torch.nn.functional as F

        self.trial = trial
        self.study = trial.study
        self.model = model
        self.probe = probe
        self.loss_fn: LossFn = loss_fn or F.cross_entropy
        self.config = config
        self.prune = prune and len(self.study.directions) == 1
        self.logger = self._resolve_logger(logger)
        self.run_id: str | None = None
        self.waypoint_store = waypoint_store
        # The initial parameters (progress 0) are recorded here, when the tracker is made.
        self.recorder = TrajectoryRecorder(model, config.fractions, config.sketch_dim, config.seed)
        self.architecture = architecture_signature(model)
        self.multi_objective = len(self.study.directions) > 1
        self.final_values: list[float] | None = None
        self.last_value: float | None = None
        self._errors: list[str] = []
        self.landscape: LandscapeResult | None = None
        self.plane: LandscapeResult | None = None
        self._plane_path: np.ndarray | None = None
        self.baselines: dict[str, float] | None = None
        self.summary: TrajectorySummary | None = None
        self._tester: HomotopyTester | None = None
        self._entered = False

    @staticmethod
    def _resolve_logger(logger: StudyLogger | Literal[False] | None) -> StudyLogger | None:
        if logger is False:
            return None
        if logger is None:
            from topselect.tracking import StudyLogger

            return StudyLogger()
        return logger

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> TrialTracker:
        self._entered = True
        if self.logger is not None:
            self.run_id = self.logger.start_trial(self.study, self.trial)
            if self.waypoint_store is None and self.run_id is not None:
                self.waypoint_store = _mlflow_store(self.logger)
            if isinstance(self.waypoint_store, MlflowWaypointStore) and self.run_id is not None:
                self.waypoint_store.run_ids[self.trial.number] = self.run_id
        self._set_attrs(
            {
                _attrs.MLFLOW_RUN_ID: self.run_id,
                _attrs.ARCHITECTURE: self.architecture,
                _attrs.PROBE_FINGERPRINT: self.probe.fingerprint,
            }
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        if exc_type is None:
            if self.final_values is not None and any(math.isnan(v) for v in self.final_values):
                self._on_failed(None, reason=f"the objective value is NaN: {self.final_values}")
            else:
                self._on_complete()
        elif issubclass(exc_type, optuna.TrialPruned):
            self._on_pruned()
        else:
            self._on_failed(exc)
        return False

    # -- during training --------------------------------------------------------------

    def report(self, value: float, step: int, progress: float | None = None) -> None:
        """Report an intermediate value, record waypoints, and prune if the pruner decides to.

        In a multi-objective study Optuna stores no intermediate values and cannot prune,
        so ``value`` only goes to MLflow.

        Args:
            value: Intermediate objective value (e.g. validation accuracy after an epoch).
            step: Step of the value (e.g. the epoch index), as in ``trial.report``.
            progress: Fraction of training done, in ``[0, 1]``. Waypoints are recorded when
                it reaches the configured fractions; without it none are recorded.

        Raises:
            optuna.TrialPruned: When pruning is on and the study's pruner prunes the trial.
            InvalidInputError: When ``progress`` lies outside ``[0, 1]``.
        """
        self._require_entered()
        if progress is not None and self.recorder.update(progress):
            if self._classes_enabled() and self.config.class_warmup <= progress < 1.0:
                self._place_in_class(final=False)
        if not self.multi_objective:  # Optuna keeps no intermediate values for those.
            self.trial.report(value, step)
        self.last_value = float(value)
        if self.logger is not None:
            self.logger.log_metrics(self.run_id, {"intermediate_value": value}, step=step)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"Trial {self.trial.number} was pruned at step {step}.")

    def finish(self, value: float | Sequence[float]) -> Any:
        """Record the trial's final objective value(s) for MLflow and return them unchanged.

        Return its result from the objective: Optuna records the returned value, and the
        tracker cannot see it otherwise. A NaN value marks the trial failed, as Optuna
        does.

        Raises:
            InvalidInputError: Outside the ``with`` block, or for a value that is not a
                number (or, in a multi-objective study, a sequence of numbers).
        """
        self._require_entered()
        values = list(value) if isinstance(value, Sequence) else [value]
        try:
            self.final_values = [float(v) for v in values]
        except (TypeError, ValueError) as error:
            raise InvalidInputError(
                f"finish() takes the objective value(s) as numbers, but got {value!r}."
            ) from error
        expected = len(self.study.directions)
        if len(self.final_values) != expected:
            raise InvalidInputError(
                f"the study has {expected} objective(s), but finish() got "
                f"{len(self.final_values)} value(s): {value!r}."
            )
        return value

    # -- outcomes ---------------------------------------------------------------------

    def _on_complete(self) -> None:
        self.recorder.update(1.0)
        started = time.perf_counter()
        self.landscape = self._guarded("probe the landscape", self._probe)
        if self.config.trajectory_slice:
            self.plane = self._guarded("probe the trajectory plane", self._probe_plane)
        if self.config.baselines:
            self.baselines = self._guarded("compute sharpness baselines", self._baselines)
        self.summary = self._guarded("summarize the trajectory", self._summarize)
        train_loss = self._train_loss()
        fitted = train_loss is not None and train_loss <= self.config.fit_loss
        attrs: dict[str, Any] = {_attrs.TRAIN_LOSS: train_loss, _attrs.FITTED: fitted}
        if self.landscape is not None:
            attrs[_attrs.SCORES] = self.landscape.scores
        if self.plane is not None:
            attrs[_attrs.PLANE_SCORES] = self.plane.scores
        if self.baselines is not None:
            attrs[_attrs.BASELINES] = self.baselines
        self._set_attrs(attrs)
        if self._classes_enabled():
            if fitted:
                self._guarded("assign a homotopy class", lambda: self._place_in_class(final=True))
            else:
                self._set_attrs({_attrs.CLASS_ID: None, _attrs.CLASS_FINAL: True})
        analysis_seconds = time.perf_counter() - started
        self._log_outcome("COMPLETE", "FINISHED", analysis_seconds)

    def _on_pruned(self) -> None:
        self.summary = self._guarded("summarize the trajectory", self._summarize)
        train_loss = self._train_loss()
        self._set_attrs(
            {
                _attrs.TRAIN_LOSS: train_loss,
                _attrs.FITTED: train_loss is not None and train_loss <= self.config.fit_loss,
            }
        )
        self._log_outcome("PRUNED", "KILLED", 0.0)

    def _on_failed(self, exc: BaseException | None, reason: str | None = None) -> None:
        self.summary = self._guarded("summarize the trajectory", self._summarize)
        if self.logger is None:
            return
        message = reason if reason is not None else f"{type(exc).__name__}: {exc}"
        self.logger.log_params(self.run_id, self._params())
        self.logger.set_tags(
            self.run_id, {"topselect.state": "FAIL", "topselect.error": message[:500]}
        )
        self._guarded("upload artifacts", self._upload_artifacts)
        self.logger.end_run(self.run_id, "FAILED")

    def _params(self) -> dict[str, Any]:
        """Return the trial's params and the tracker settings, as logged to MLflow."""
        params: dict[str, Any] = dict(self.trial.params)
        params.update({f"topselect.{k}": v for k, v in self.config.to_params().items()})
        return params

    # -- analysis steps ---------------------------------------------------------------

    def _probe(self) -> LandscapeResult:
        return probe_landscape(
            self.model,
            self.loss_fn,
            self.probe,
            grid_size=self.config.grid_size,
            radius=self.config.radius,
            seed=self.config.seed,
            strategy=self.config.strategy,
            basin_levels=self.config.basin_levels,
        )

    def _probe_plane(self) -> LandscapeResult | None:
        if len(self.recorder.waypoints) < 3:
            return None
        params = parameters_of(self.model)
        directions = trajectory_plane(params, self.recorder.waypoints)
        self._plane_path = _plane_coordinates(params, directions, self.recorder.waypoints)
        return probe_landscape(
            self.model,
            self.loss_fn,
            self.probe,
            grid_size=self.config.grid_size,
            radius=1.0,
            strategy=self.config.strategy,
            basin_levels=self.config.basin_levels,
            directions=directions,
        )

    def _baselines(self) -> dict[str, float]:
        results = {
            "hessian_trace": hessian_trace(
                self.model, self.loss_fn, self.probe, seed=self.config.seed
            ),
            "hessian_top_eigenvalue": top_hessian_eigenvalue(
                self.model, self.loss_fn, self.probe, seed=self.config.seed
            ),
            "asam_sharpness": sam_sharpness(self.model, self.loss_fn, self.probe),
        }
        out: dict[str, float] = {}
        for name, result in results.items():
            out[name] = result.value
            out[f"{name}_seconds"] = result.seconds
        return out

    def _summarize(self) -> TrajectorySummary:
        losses = waypoint_losses(self.model, self.loss_fn, self.probe, self.recorder.waypoints)
        return self.recorder.summary(list(losses))

    def _train_loss(self) -> float | None:
        if self.landscape is not None:
            return float(self.landscape.scores["center_loss"])
        if (
            self.summary is not None
            and self.summary.losses
            and self.summary.losses[-1] is not None
        ):
            return float(self.summary.losses[-1])
        return None

    def _classes_enabled(self) -> bool:
        return self.config.classes and self.waypoint_store is not None

    def _homotopy_tester(self) -> HomotopyTester:
        if self._tester is None:
            self._tester = HomotopyTester(
                self.model, self.loss_fn, self.probe, epsilon=self.config.epsilon
            )
        return self._tester

    def _place_in_class(self, final: bool) -> None:
        """Place the trial on the waypoints recorded so far, from storage state alone.

        The representatives, the merges and the trial's own previous decision are read
        from Optuna storage, so any worker with the same storage and waypoints decides
        the same. A final decision is made only for a fitted trial: it founds a class when
        it joins none (in all-pairs mode always) and records the merges it found.
        """
        store = self.waypoint_store
        assert store is not None, "classes are enabled only with a waypoint store"
        # NOTE: every decision reads all trials from storage to find the representatives.
        # That read grows with the study, and its cost in large studies is not measured.
        trials = _optuna_compat.get_trials(self.study, deepcopy=False)
        reps = _classes.representatives_from_trials(
            trials,
            architecture=self.architecture,
            probe_fingerprint=self.probe.fingerprint,
            exclude=self.trial.number,
        )
        all_pairs = final and self.config.class_mode == "all_pairs"
        if all_pairs:
            candidates = max(len(reps), 1)
        elif final:
            candidates = self.config.max_candidates
        else:
            candidates = self.config.prefix_candidates
        own_attrs = _optuna_compat.stored_user_attrs(self.trial)
        waypoints = dict(self.recorder.waypoints)
        sketches = {f: self.recorder.sketches[f] for f in waypoints}
        decision = assign_class(
            waypoints,
            sketches,
            reps,
            store.load,
            self._homotopy_tester(),
            max_candidates=candidates,
            final=final,
            previous=_classes.previous_decision(own_attrs),
            confirm_merges=self.config.confirm_merges and not all_pairs,
            components=_classes.class_components(trials),
        )
        attrs = self._decision_attrs(decision, final, own_attrs)
        if final and (decision.class_id is None or all_pairs):
            attrs.update(self._found_class(store, waypoints))
        if all_pairs:
            founded = attrs[_attrs.CLASS_ID]
            attrs[_attrs.CLASS_MERGES] = [[founded, other] for other in decision.witnessed]
        self._set_attrs(attrs)
        _logger.debug(
            "Trial %d class %s after %d pair tests and %d barriers (final=%s).",
            self.trial.number,
            attrs[_attrs.CLASS_ID],
            decision.pair_tests,
            decision.barrier_evaluations,
            final,
        )

    def _decision_attrs(
        self, decision: ClassDecision, final: bool, own_attrs: dict[str, Any]
    ) -> dict[str, Any]:
        sketches = self.recorder.sketches
        return {
            _attrs.CLASS_ID: decision.class_id,
            _attrs.CLASS_FINAL: final,
            _attrs.CLASS_FRACTIONS: [f"{f:g}" for f in decision.fractions],
            _attrs.CLASS_BARRIERS: decision.barriers,
            _attrs.CLASS_MERGES: [list(pair) for pair in decision.merges],
            _attrs.CLASS_PAIR_TESTS: int(own_attrs.get(_attrs.CLASS_PAIR_TESTS) or 0)
            + decision.pair_tests,
            _attrs.CLASS_BARRIER_EVALUATIONS: int(
                own_attrs.get(_attrs.CLASS_BARRIER_EVALUATIONS) or 0
            )
            + decision.barrier_evaluations,
            _attrs.SKETCHES: {f"{f:g}": sketches[f].round(6).tolist() for f in sorted(sketches)},
        }

    def _found_class(
        self, store: WaypointStore, waypoints: dict[float, torch.Tensor]
    ) -> dict[str, Any]:
        # Two workers that found classes at the same moment both become representatives;
        # a later trial witnessed against both merges them.
        stored = store.save(self.trial.number, waypoints, dtype=self.config.waypoint_dtype)
        return {
            _attrs.CLASS_ID: f"c{self.trial.number}",
            _attrs.REPRESENTATIVE: True,
            _attrs.WAYPOINTS_REF: stored.reference,
            _attrs.WAYPOINTS_BYTES: stored.nbytes,
        }

    # -- writing ----------------------------------------------------------------------

    def _log_outcome(self, state: str, status: str, analysis_seconds: float) -> None:
        if self.logger is None:
            return
        attrs = _optuna_compat.stored_user_attrs(self.trial)
        metrics: dict[str, float | None] = {}
        if state == "COMPLETE":
            metrics.update(self._value_metrics())
        if self.landscape is not None:
            metrics.update({f"topselect.{k}": v for k, v in self.landscape.scores.items()})
            metrics["topselect.landscape_seconds"] = self.landscape.seconds
        if self.plane is not None:
            metrics.update({f"topselect.plane.{k}": v for k, v in self.plane.scores.items()})
            metrics["topselect.plane.landscape_seconds"] = self.plane.seconds
        if self.baselines is not None:
            metrics.update({f"topselect.baseline.{k}": v for k, v in self.baselines.items()})
        metrics["topselect.train_loss"] = attrs.get(_attrs.TRAIN_LOSS)
        for key in (
            _attrs.CLASS_PAIR_TESTS,
            _attrs.CLASS_BARRIER_EVALUATIONS,
            _attrs.WAYPOINTS_BYTES,
        ):
            if attrs.get(key) is not None:
                metrics[key] = attrs[key]
        metrics["topselect.analysis_seconds"] = analysis_seconds
        self.logger.log_params(self.run_id, self._params())
        self.logger.log_metrics(self.run_id, metrics)
        self.logger.set_tags(
            self.run_id,
            {
                "topselect.state": state,
                "topselect.fitted": attrs.get(_attrs.FITTED),
                # NOTE: the class as placed; a later merge renames it without
                # updating this tag (topselect.search.study_classes applies merges).
                "topselect.class_id": attrs.get(_attrs.CLASS_ID) or "",
                "topselect.class_representative": bool(attrs.get(_attrs.REPRESENTATIVE)),
                "topselect.prune_reason": attrs.get(_attrs.PRUNE_REASON) or "",
                "topselect.architecture": self.architecture,
                "topselect.probe_fingerprint": self.probe.fingerprint,
                "topselect.analysis_error": attrs.get(_attrs.ANALYSIS_ERROR) or "",
            },
        )
        self._guarded("upload artifacts", self._upload_artifacts)
        self.logger.end_run(self.run_id, status)

    def _value_metrics(self) -> dict[str, float | None]:
        if self.final_values is None:
            _logger.warning(
                "Trial %d returned without tracker.finish(value), so MLflow has no final "
                "value for it and `topselect compare` cannot rank it. Return "
                "tracker.finish(value) from the objective.",
                self.trial.number,
            )
            return {}
        if len(self.final_values) == 1:
            return {"value": self.final_values[0]}
        return {f"value_{i}": v for i, v in enumerate(self.final_values)}

    def _upload_artifacts(self) -> None:
        logger = self.logger
        assert logger is not None, "artifacts are uploaded only with MLflow on"
        from topselect.plots import diagram_figure, landscape_figure, trajectory_figure
        from topselect.tracking import SCHEMA_VERSION, diagram_to_json

        json_files: dict[str, Any] = {}
        figures = {}
        if self.landscape is not None:
            json_files["diagram.json"] = diagram_to_json(self.landscape)
            json_files["landscape.json"] = self.landscape.to_dict()
            figures["diagram.png"] = diagram_figure(
                self.landscape.diagrams, f"Trial {self.trial.number}: sublevel persistence"
            )
            figures["landscape.png"] = landscape_figure(self.landscape)
        if self.plane is not None:
            json_files["landscape_plane.json"] = self.plane.to_dict()
            figures["landscape_plane.png"] = landscape_figure(
                self.plane,
                axis_labels=("towards the initialization", "trajectory bend"),
                path=self._plane_path,
            )
        if self.summary is not None:
            trajectory = self.summary.to_dict()
            trajectory["schema_version"] = SCHEMA_VERSION
            trajectory["class_id"] = _optuna_compat.stored_user_attrs(self.trial).get(
                _attrs.CLASS_ID
            )
            json_files["trajectory.json"] = trajectory
            figures["trajectory.png"] = trajectory_figure(self.summary)
        files = self._guarded("record probe outputs", self._probe_outputs)
        logger.log_artifacts(self.run_id, json_files=json_files, figures=figures, files=files)

    def _probe_outputs(self) -> dict[str, bytes]:
        """Return ``probe_outputs.npz``: predictions and penultimate features on the probe set."""
        from topselect.tracking import encode_probe_outputs, record_probe_outputs

        outputs = record_probe_outputs(self.model, self.probe)
        return {"probe_outputs.npz": encode_probe_outputs(outputs)}

    def _set_attrs(self, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self.trial.set_user_attr(key, _attrs.json_safe(value))

    def _guarded(self, action: str, call):
        try:
            return call()
        except Exception as error:  # An analysis failure must not fail the trial.
            message = f"failed to {action}: {type(error).__name__}: {error}"
            _logger.warning("Trial %d: %s", self.trial.number, message)
            self._errors.append(message)
            self._set_attrs({_attrs.ANALYSIS_ERROR: " | ".join(self._errors)[:2000]})
            return None

    def _require_entered(self) -> None:
        if not self._entered:
            raise InvalidInputError(
                "the tracker is not open: use it as `with topselect.track(...) as tracker:`."
            )


def _plane_coordinates(
    params: dict[str, torch.Tensor],
    directions: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
    waypoints: dict[float, torch.Tensor],
) -> np.ndarray:
    """Return the ``(T, 2)`` slice coordinates of the waypoints projected onto the plane."""
    import torch

    def flat(mapping: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat(
            [t.detach().reshape(-1).to("cpu", torch.float64) for t in mapping.values()]
        )

    theta, d1, d2 = flat(params), flat(directions[0]), flat(directions[1])
    points = torch.stack([waypoints[f].to(torch.float64) for f in sorted(waypoints)]) - theta
    # d1 and d2 are orthogonal, so the projection splits into two independent coordinates.
    coords = torch.stack([points @ d1 / (d1 @ d1), points @ d2 / (d2 @ d2)], dim=1)
    return coords.numpy()


def _mlflow_store(logger: StudyLogger) -> MlflowWaypointStore:
    store = _MLFLOW_STORES.get(logger.tracking_uri)
    if store is None:
        store = MlflowWaypointStore(logger.client)
        _MLFLOW_STORES[logger.tracking_uri] = store
    return store
