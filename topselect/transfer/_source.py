"""Checks that the source model is a module that runs on the target inputs.

They run before any feature is cached or any baseline trains, so a wrong model or
input shape fails with a message that names the value, not with a torch error halfway
through a comparison.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from topselect.exceptions import InvalidInputError
from topselect.transfer._features import eval_mode, model_device

if TYPE_CHECKING:
    import torch
    from torch import nn

    from topselect.datasets import DataSplit

__all__ = ["check_source_inputs", "check_source_model"]

#: Training examples in the forward pass of :func:`check_source_inputs`.
_PROBE_SIZE = 2


def check_source_model(source: object) -> None:
    """Raise unless ``source`` is a ``torch.nn.Module``.

    Raises:
        InvalidInputError: Naming the type that was passed.
    """
    from torch import nn

    if not isinstance(source, nn.Module):
        got = "None" if source is None else f"a {type(source).__name__}"
        raise InvalidInputError(
            f"source must be a torch.nn.Module, but got {got}; pass the trained model "
            f"itself (for example one built and filled with load_model_weights)."
        )


def _floating_dtype(model: nn.Module) -> torch.dtype | None:
    """Return the dtype of the model's first floating-point parameter or buffer."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def check_source_inputs(source: nn.Module, data: DataSplit) -> None:
    """Raise unless ``source`` accepts the target inputs and returns ``(n, classes)``.

    The inputs of every part must have the dtype of the model's floating-point
    parameters. Then the model runs once on the first two training examples, in eval
    mode and without gradients, so its parameters, buffers and train/eval modes are
    left as they were. Call it after :func:`check_source_model` and
    :func:`topselect.transfer._data.check_target_data`.

    Raises:
        InvalidInputError: For inputs of another dtype than the model, a forward pass
            that fails (the message includes the input shape and torch's error), or an
            output that is not a 2-D tensor with one row per example.
    """
    import torch

    # NOTE: a model whose forward casts its inputs itself is rejected here too, because
    # only the first floating-point parameter's dtype is compared with the data's.
    model_dtype = _floating_dtype(source)
    if model_dtype is not None:
        for part, x in (("train", data.x_train), ("val", data.x_val), ("test", data.x_test)):
            if x.dtype != model_dtype:
                model_fix = "model.float()" if x.dtype == torch.float32 else f"model.to({x.dtype})"
                raise InvalidInputError(
                    f"x_{part} has dtype {x.dtype}, but the source model's parameters are "
                    f"{model_dtype}; convert the model with {model_fix} or cast the data "
                    f"with x_{part}.to({model_dtype})."
                )

    batch = data.x_train[:_PROBE_SIZE].to(model_device(source))
    shape = tuple(batch.shape)
    try:
        with eval_mode(source), torch.no_grad():
            output = source(batch)
    except torch.OutOfMemoryError:  # A lack of memory is not an input error.
        raise
    except (RuntimeError, ValueError, IndexError) as error:  # torch's shape errors
        raise InvalidInputError(
            f"the source model failed on the training inputs x_train[:{len(batch)}] of "
            f"shape {shape}: {error}. Pass inputs of the shape the model was trained on."
        ) from error
    if not isinstance(output, torch.Tensor):
        raise InvalidInputError(
            f"the source model returned a {type(output).__name__} for inputs of shape "
            f"{shape}, but transfer needs a tensor of logits of shape (n, classes); wrap "
            f"the model so that its forward returns the logits."
        )
    if output.ndim != 2 or output.shape[0] != len(batch):
        raise InvalidInputError(
            f"the source model mapped inputs of shape {shape} to an output of shape "
            f"{tuple(output.shape)}, but transfer needs logits of shape (n, classes); pass "
            f"inputs of the shape the model was trained on (without extra axes)."
        )
