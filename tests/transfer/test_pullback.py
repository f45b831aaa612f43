"""Pullback transfer: the frozen encoder stays bitwise unchanged, and the choice is by
validation accuracy."""

from __future__ import annotations

import torch
from torch import nn

from topselect.transfer import (
    TransferConfig,
    cache_features,
    evaluate_accuracy,
    pullback_transfer,
)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_encoder_bitwise_unchanged(source_model: nn.Module, target, fast_config) -> None:
    config = TransferConfig(mlp_head=True, mlp_steps=20, mlp_eval_every=5)
    before = snapshot(source_model)
    flags = [p.requires_grad for p in source_model.parameters()]
    source_model.train()
    result = pullback_transfer(source_model, target, config=config)
    # Training the returned model's head must not reach the encoder either.
    optimizer = torch.optim.SGD(result.model.parameters(), lr=1.0)
    loss = result.model(target.x_train[:32]).logsumexp(dim=1).sum()
    if loss.requires_grad:
        loss.backward()
        optimizer.step()
    after = snapshot(source_model)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert [p.requires_grad for p in source_model.parameters()] == flags
    assert all(p.grad is None for p in source_model.parameters())
    assert source_model.training


def test_chosen_head_has_best_validation(source_model: nn.Module, target) -> None:
    config = TransferConfig(mlp_head=True, mlp_steps=20, mlp_eval_every=5)
    result = pullback_transfer(source_model, target, config=config)
    assert {(r.layer, r.head) for r in result.results} == {
        ("1", "linear"), ("1", "mlp"), ("3", "linear"), ("3", "mlp"),
    }  # fmt: skip
    best = max(r.val_accuracy for r in result.results)
    assert result.chosen.val_accuracy == best
    first_best = next(r for r in result.results if r.val_accuracy == best)
    assert result.chosen is first_best


def test_pullback_model_matches_chosen_head(source_model: nn.Module, target) -> None:
    result = pullback_transfer(source_model, target, layers=["1", "3"])
    accuracy = evaluate_accuracy(result.model, target.x_test, target.y_test)
    assert abs(accuracy - result.test_accuracy) < 1e-9
    assert result.model.layer == result.chosen.layer


def test_pullback_times_cover_features(source_model: nn.Module, target) -> None:
    result = pullback_transfer(source_model, target)
    assert 0 < result.feature_seconds <= result.seconds
    assert sum(r.seconds for r in result.results) <= result.seconds


def test_default_layers_skip_equal_features(target) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Flatten(), nn.Linear(16, 5))
    result = pullback_transfer(model, target)
    assert result.layers_skipped == ["2"]
    assert {r.layer for r in result.results} == {"1"}


def test_explicit_layers_keep_equal_features(target) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Flatten(), nn.Linear(16, 5))
    result = pullback_transfer(model, target, layers=["1", "2"])
    assert result.layers_skipped == []
    assert [r.layer for r in result.results] == ["1", "2"]


def test_cached_features_feed_the_heads(source_model: nn.Module, target) -> None:
    result = pullback_transfer(source_model, target, layers=["3"])
    cache = cache_features(source_model, ["3"], target.x_train, target.x_val, target.x_test)
    head = result.model.head
    with torch.no_grad():
        predictions = head(cache.layers["3"].test).argmax(dim=1)
    accuracy = int((predictions == target.y_test).sum()) / len(target.y_test)
    assert abs(accuracy - result.chosen.test_accuracy) < 1e-9
