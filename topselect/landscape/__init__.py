"""Loss-landscape slices around trained parameters, and the sharpness baselines."""

from topselect.landscape._baselines import (
    BaselineResult,
    hessian_trace,
    sam_sharpness,
    top_hessian_eigenvalue,
)
from topselect.landscape._directions import filter_normalized_direction, trajectory_plane
from topselect.landscape._evaluate import (
    LossFn,
    ParameterEvaluator,
    eval_mode,
    parameters_of,
    unflatten_parameters,
)
from topselect.landscape._probe import (
    LANDSCAPE_SCHEMA_VERSION,
    LandscapeResult,
    check_probe_arguments,
    probe_landscape,
)
from topselect.landscape._probe_set import ProbeSet, fingerprint, make_probe_set
from topselect.landscape._subspace import (
    SUBSPACE_SCHEMA_VERSION,
    SubspaceResult,
    probe_subspace,
)

__all__ = [
    "LANDSCAPE_SCHEMA_VERSION",
    "SUBSPACE_SCHEMA_VERSION",
    "BaselineResult",
    "LandscapeResult",
    "LossFn",
    "ParameterEvaluator",
    "ProbeSet",
    "SubspaceResult",
    "check_probe_arguments",
    "eval_mode",
    "filter_normalized_direction",
    "fingerprint",
    "hessian_trace",
    "make_probe_set",
    "parameters_of",
    "probe_landscape",
    "probe_subspace",
    "trajectory_plane",
    "sam_sharpness",
    "top_hessian_eigenvalue",
    "unflatten_parameters",
]
