"""Probe-set predictions and penultimate features, and functional equivalence between trials.

Two trained models are compared on the study's probe set by

* **prediction agreement**: the fraction of probe examples on which both predict the same
  class (the argmax of the outputs), in ``[0, 1]``; and
* **linear CKA** (centered kernel alignment with a linear kernel, Kornblith et al. 2019,
  "Similarity of Neural Network Representations Revisited") of their penultimate
  features ``X`` (``n x p``) and ``Y`` (``n x q``), columns centered:
  ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``, in ``[0, 1]``. It is invariant to
  rotations and isotropic scaling of either feature space, so models of different
  widths compare.

The tracker saves both as ``topselect/probe_outputs.npz`` for every trial it finishes,
with a bounded size: at most :data:`MAX_EXAMPLES` examples and :data:`MAX_FEATURES`
feature columns (float32, so at most 512 KiB of features).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from topselect.exceptions import InvalidInputError
from topselect.tracking._artifacts import SCHEMA_VERSION

if TYPE_CHECKING:
    import torch

    from topselect.landscape import ProbeSet

__all__ = [
    "MAX_EXAMPLES",
    "MAX_FEATURES",
    "PROBE_OUTPUTS_ARRAYS",
    "ProbeOutputs",
    "decode_probe_outputs",
    "encode_probe_outputs",
    "linear_cka",
    "prediction_agreement",
    "record_probe_outputs",
]

#: Largest number of probe examples whose outputs are stored.
MAX_EXAMPLES = 512
#: Largest number of feature columns stored; wider features keep their top principal
#: components.
MAX_FEATURES = 256
#: Arrays every ``probe_outputs.npz`` contains.
PROBE_OUTPUTS_ARRAYS = (
    "schema_version",
    "predictions",
    "features",
    "kept_variance",
    "feature_dim",
    "feature_layer",
    "probe_fingerprint",
)


@dataclass(frozen=True)
class ProbeOutputs:
    """A trained model's predictions and penultimate features on the probe set.

    Attributes:
        predictions: ``(n,)`` int64 argmax of the outputs; empty when the model has a
            single output column (regression), where agreement is undefined.
        features: ``(n, k)`` float32 centered penultimate features, or their top ``k``
            principal component scores when the layer is wider than
            :data:`MAX_FEATURES`. Linear CKA on the scores equals linear CKA on the
            features up to the dropped variance.
        kept_variance: Share of the features' total variance that ``features`` keeps
            (1.0 when nothing was dropped).
        feature_dim: Width of the penultimate layer.
        feature_layer: Name of the module whose input was recorded (``""`` for the
            model's output, when the model has no parameterized module).
        probe_fingerprint: Fingerprint of the probe set.
    """

    predictions: np.ndarray
    features: np.ndarray
    kept_variance: float
    feature_dim: int
    feature_layer: str
    probe_fingerprint: str


def record_probe_outputs(
    model: torch.nn.Module,
    probe: ProbeSet,
    *,
    max_examples: int = MAX_EXAMPLES,
    max_features: int = MAX_FEATURES,
) -> ProbeOutputs:
    """Run the model on the first ``max_examples`` probe examples in eval mode.

    The penultimate features are the input of the model's last module (in registration
    order) that has parameters and no submodules: the classifier head of a
    ``Sequential`` or of most classification networks.

    Raises:
        InvalidInputError: When ``max_examples`` or ``max_features`` is below 1.
    """
    import torch

    from topselect.landscape import eval_mode

    if max_examples < 1 or max_features < 1:
        raise InvalidInputError(
            f"max_examples and max_features must be >= 1, but got {max_examples} and "
            f"{max_features}."
        )
    name, head = _head_module(model)
    captured: list[torch.Tensor] = []
    handle = None
    if head is not None:
        handle = head.register_forward_hook(
            lambda _module, inputs, _output: captured.append(inputs[0].detach())
        )
    try:
        with eval_mode(model), torch.no_grad():
            outputs = model(probe.inputs[:max_examples])
    finally:
        if handle is not None:
            handle.remove()
    raw = captured[-1] if captured else outputs
    features = raw.reshape(raw.shape[0], -1).to("cpu", torch.float64).numpy()
    scores, kept = _principal_scores(features, max_features)
    flat_outputs = outputs.reshape(outputs.shape[0], -1)
    if flat_outputs.shape[1] > 1:
        predictions = flat_outputs.argmax(dim=1).to("cpu", torch.int64).numpy()
    else:
        predictions = np.empty(0, dtype=np.int64)
    return ProbeOutputs(
        predictions=predictions,
        features=scores.astype(np.float32),
        kept_variance=kept,
        feature_dim=int(features.shape[1]),
        feature_layer=name,
        probe_fingerprint=probe.fingerprint,
    )


def _head_module(model: torch.nn.Module) -> tuple[str, torch.nn.Module | None]:
    last: tuple[str, torch.nn.Module | None] = ("", None)
    for name, module in model.named_modules():
        has_children = next(module.children(), None) is not None
        has_params = next(module.parameters(recurse=False), None) is not None
        if has_params and not has_children:
            last = (name, module)
    return last


def _principal_scores(features: np.ndarray, max_features: int) -> tuple[np.ndarray, float]:
    """Center the columns, and keep the top ``max_features`` principal scores if wider."""
    centered = features - features.mean(axis=0, keepdims=True)
    if centered.shape[1] <= max_features:
        return centered, 1.0
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    total = float(np.sum(s**2))
    kept = float(np.sum(s[:max_features] ** 2)) / total if total > 0 else 1.0
    return u[:, :max_features] * s[:max_features], kept


def encode_probe_outputs(outputs: ProbeOutputs) -> bytes:
    """Serialize to NPZ bytes (no object arrays, so it loads with ``allow_pickle=False``)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        schema_version=np.int64(SCHEMA_VERSION),
        predictions=outputs.predictions.astype(np.int64),
        features=outputs.features.astype(np.float32),
        kept_variance=np.float64(outputs.kept_variance),
        feature_dim=np.int64(outputs.feature_dim),
        feature_layer=np.str_(outputs.feature_layer),
        probe_fingerprint=np.str_(outputs.probe_fingerprint),
    )
    return buffer.getvalue()


def decode_probe_outputs(arrays: dict[str, np.ndarray]) -> ProbeOutputs:
    """Build :class:`ProbeOutputs` from arrays read by ``read_npz_artifact``.

    Raises:
        InvalidInputError: When the arrays have the wrong shapes or dtypes.
    """
    predictions = arrays["predictions"]
    features = arrays["features"]
    if predictions.ndim != 1 or predictions.dtype.kind not in "iu":
        raise InvalidInputError(
            f"predictions must be a 1-D integer array, but got {predictions.dtype} of "
            f"shape {predictions.shape}."
        )
    if features.ndim != 2 or features.dtype.kind != "f":
        raise InvalidInputError(
            f"features must be a 2-D float array, but got {features.dtype} of shape "
            f"{features.shape}."
        )
    if len(predictions) not in (0, features.shape[0]):
        raise InvalidInputError(
            f"predictions and features must cover the same examples, but got "
            f"{len(predictions)} and {features.shape[0]}."
        )
    return ProbeOutputs(
        predictions=predictions.astype(np.int64),
        features=features.astype(np.float64),
        kept_variance=float(arrays["kept_variance"]),
        feature_dim=int(arrays["feature_dim"]),
        feature_layer=str(arrays["feature_layer"]),
        probe_fingerprint=str(arrays["probe_fingerprint"]),
    )


def prediction_agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Return the fraction of examples with equal predictions, or ``None`` when undefined.

    Undefined: either side has no predictions (a single-output model) or the two cover
    different numbers of examples.
    """
    if len(a) == 0 or len(a) != len(b):
        return None
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float | None:
    """Return linear CKA of two feature matrices over the same examples (rows).

    Columns are centered here. Returns ``None`` when the row counts differ, and when
    either matrix is constant (its self-similarity is 0, so CKA is undefined).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        return None
    x = x - x.mean(axis=0, keepdims=True)
    y = y - y.mean(axis=0, keepdims=True)
    cross = float(np.linalg.norm(y.T @ x)) ** 2
    denominator = float(np.linalg.norm(x.T @ x)) * float(np.linalg.norm(y.T @ y))
    if denominator == 0 or not (math.isfinite(denominator) and math.isfinite(cross)):
        return None
    return min(max(cross / denominator, 0.0), 1.0)
