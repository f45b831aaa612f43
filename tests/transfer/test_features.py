"""The feature cache: equal to features recomputed from the model, chunked, on device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import topselect
from topselect.transfer import cache_features, compute_features

CHUNK = 37  # Not a divisor of any part's size, so the last chunk is short.


def sliced_features(model: nn.Sequential, index: int, x: torch.Tensor) -> torch.Tensor:
    """Recompute a layer's features by running the first ``index + 1`` modules."""
    with torch.no_grad():
        return model[: index + 1](x).flatten(1)


def test_cache_equals_recomputed_features(source_model: nn.Sequential, target) -> None:
    cache = cache_features(
        source_model, ["1", "3"], target.x_train, target.x_val, target.x_test, chunk_size=CHUNK
    )
    for name, index in (("1", 1), ("3", 3)):
        cached = cache.layers[name]
        for part, x in (("train", target.x_train), ("val", target.x_val), ("test", target.x_test)):
            chunked = torch.cat([sliced_features(source_model, index, c) for c in x.split(CHUNK)])
            assert torch.equal(getattr(cached, part), chunked), (name, part)
            whole = sliced_features(source_model, index, x)
            torch.testing.assert_close(getattr(cached, part), whole, rtol=1e-6, atol=1e-6)


def test_cache_does_not_depend_on_chunk_size(source_model: nn.Module, target) -> None:
    small = compute_features(source_model, ["3"], target.x_val, chunk_size=7)["3"]
    large = compute_features(source_model, ["3"], target.x_val, chunk_size=4096)["3"]
    torch.testing.assert_close(small, large, rtol=1e-6, atol=1e-6)
    assert small.shape == (len(target.x_val), 32)


def test_cache_restores_train_mode(source_model: nn.Module, target) -> None:
    source_model.train()
    source_model[1].eval()
    compute_features(source_model, ["3"], target.x_val)
    assert source_model.training
    assert not source_model[1].training


def test_cache_records_device_and_time(source_model: nn.Module, target) -> None:
    cache = cache_features(source_model, ["1"], target.x_train, target.x_val, target.x_test)
    assert cache.device == "cpu"
    assert cache.seconds > 0
    assert cache.layers["1"].train.device.type == "cpu"


@pytest.mark.parametrize(("chunk_size", "match"), [(0, "chunk_size must be >= 1")])
def test_compute_features_bad_chunk_raises(source_model, target, chunk_size, match) -> None:
    with pytest.raises(topselect.InvalidInputError, match=match):
        compute_features(source_model, ["1"], target.x_val, chunk_size=chunk_size)


def test_compute_features_empty_input_raises(source_model) -> None:
    with pytest.raises(topselect.InvalidInputError, match="x must contain at least one example"):
        compute_features(source_model, ["1"], torch.zeros(0, 64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cache_stays_on_cuda(source_model: nn.Module, target) -> None:
    model = source_model.to("cuda")
    cache = cache_features(model, ["3"], target.x_train, target.x_val, target.x_test)
    assert cache.layers["3"].train.device.type == "cuda"
