"""Pullback transfer: reuse a trained model, frozen, on a new task, and compare the
result with fine-tuning.

The source model is cut at candidate layers, and its features on the target data are
computed once per layer and cached on its device. A head is fitted per layer on the
cache, and the layer and head with the best validation accuracy are chosen. The baselines
(full fine-tuning, training from scratch, linear probe then fine-tune) train on one
budget in the same process, so accuracy and wall-time ratios are measured side by side.

Typical use::

    from topselect.transfer import evaluate_transfer, log_transfer, split_classes

    source_task, target = split_classes(load_digits_split(), range(5), range(5, 10))
    report = evaluate_transfer(source_model, target)
    log_transfer(report, run_id=source_run_id)
"""

from topselect.transfer._baselines import BaselineResult, evaluate_accuracy
from topselect.transfer._config import BASELINES, TransferConfig
from topselect.transfer._data import split_classes
from topselect.transfer._features import (
    FeatureCache,
    LayerFeatures,
    cache_features,
    compute_features,
)
from topselect.transfer._figure import transfer_figure
from topselect.transfer._heads import (
    FittedHead,
    fit_logistic_head,
    fit_mlp_head,
    fit_ridge_head,
)
from topselect.transfer._layers import default_layers, find_head, layer_names
from topselect.transfer._mlflow import (
    MODEL_ARTIFACT,
    TRANSFER_EXPERIMENT,
    load_model_weights,
    load_state_dict_file,
    log_transfer,
    save_model_weights,
)
from topselect.transfer._pullback import (
    LayerResult,
    PullbackResult,
    pullback_model,
    pullback_transfer,
)
from topselect.transfer._report import TRANSFER_SCHEMA_VERSION, TransferReport, evaluate_transfer

__all__ = [
    "BASELINES",
    "MODEL_ARTIFACT",
    "TRANSFER_EXPERIMENT",
    "TRANSFER_SCHEMA_VERSION",
    "BaselineResult",
    "FeatureCache",
    "FittedHead",
    "LayerFeatures",
    "LayerResult",
    "PullbackResult",
    "TransferConfig",
    "TransferReport",
    "cache_features",
    "compute_features",
    "default_layers",
    "evaluate_accuracy",
    "evaluate_transfer",
    "find_head",
    "fit_logistic_head",
    "fit_mlp_head",
    "fit_ridge_head",
    "layer_names",
    "load_model_weights",
    "load_state_dict_file",
    "log_transfer",
    "pullback_model",
    "pullback_transfer",
    "save_model_weights",
    "split_classes",
    "transfer_figure",
]
