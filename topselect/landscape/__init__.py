"""Loss-landscape slices: probe set, filter-normalized directions and grid evaluation."""

from topselect.landscape._directions import filter_normalized_direction
from topselect.landscape._evaluate import (
    LossFn,
    ParameterEvaluator,
    eval_mode,
    parameters_of,
    unflatten_parameters,
)
from topselect.landscape._probe import LANDSCAPE_SCHEMA_VERSION, LandscapeResult, probe_landscape
from topselect.landscape._probe_set import ProbeSet, fingerprint, make_probe_set

__all__ = [
    "LANDSCAPE_SCHEMA_VERSION",
    "LandscapeResult",
    "LossFn",
    "ParameterEvaluator",
    "ProbeSet",
    "eval_mode",
    "filter_normalized_direction",
    "fingerprint",
    "make_probe_set",
    "parameters_of",
    "probe_landscape",
    "unflatten_parameters",
]
