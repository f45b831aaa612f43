"""Heads fitted on cached features: ridge, L-BFGS logistic regression and the MLP."""

from __future__ import annotations

import pytest
import torch

import topselect
from topselect.transfer import fit_logistic_head, fit_mlp_head, fit_ridge_head


@pytest.fixture(scope="module")
def blobs() -> tuple[torch.Tensor, ...]:
    """Three well separated Gaussian classes in 6-D, train and validation."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 6, generator=generator) * 4
    labels = torch.arange(3).repeat(40)
    points = centres[labels] + torch.randn(120, 6, generator=generator)
    return points[:90], labels[:90], points[90:], labels[90:]


def test_ridge_separates_blobs(blobs) -> None:
    head = fit_ridge_head(*blobs, n_classes=3)
    assert head.kind == "linear"
    assert head.val_accuracy == 1.0
    assert head.details["penalty"] in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def test_ridge_dual_form_matches_primal(blobs) -> None:
    train, y_train, val, y_val = blobs
    primal = fit_ridge_head(train, y_train, val, y_val, 3, penalties=(0.1,))
    # Six copies of each column: d = 36 > n = 30 takes the dual (n x n) form. Ridge on k
    # copies of a column with penalty p equals ridge on the column with penalty p / k.
    wide = train[:30].repeat(1, 6)
    dual = fit_ridge_head(wide, y_train[:30], val.repeat(1, 6), y_val, 3, penalties=(0.1,))
    narrow = fit_ridge_head(train[:30], y_train[:30], val, y_val, 3, penalties=(0.1 / 6,))
    with torch.no_grad():
        torch.testing.assert_close(
            dual.module(val.repeat(1, 6)), narrow.module(val), rtol=1e-4, atol=1e-4
        )
    assert primal.val_accuracy == 1.0


def test_folded_linear_equals_head(blobs) -> None:
    head = fit_ridge_head(*blobs, n_classes=3)
    weight, bias = head.module.folded_linear()
    _, _, val, _ = blobs
    with torch.no_grad():
        torch.testing.assert_close(val @ weight.T + bias, head.module(val), rtol=1e-5, atol=1e-5)


def test_folded_linear_mlp_raises(blobs) -> None:
    head = fit_mlp_head(*blobs, n_classes=3, steps=5)
    with pytest.raises(topselect.InvalidInputError, match="inner module is a Sequential"):
        head.module.folded_linear()


def test_logistic_head_separates_blobs(blobs) -> None:
    head = fit_logistic_head(*blobs, n_classes=3, max_iter=50)
    assert head.val_accuracy == 1.0
    assert head.details["solver"] == "lbfgs"
    assert 1 <= head.details["iterations"] <= 50


def test_mlp_head_seeded(blobs) -> None:
    first = fit_mlp_head(*blobs, n_classes=3, steps=30, eval_every=10, seed=3)
    second = fit_mlp_head(*blobs, n_classes=3, steps=30, eval_every=10, seed=3)
    first_state, second_state = first.module.state_dict(), second.module.state_dict()
    assert first_state.keys() == second_state.keys()
    for name in first_state:
        assert torch.equal(first_state[name], second_state[name]), name
    assert first.details["best_step"] in (10, 20, 30)


def test_constant_column_centred_not_scaled(blobs) -> None:
    train, y_train, val, y_val = blobs
    constant = torch.cat([train, torch.full((len(train), 1), 5.0)], dim=1)
    head = fit_ridge_head(
        constant, y_train, torch.cat([val, torch.full((30, 1), 5.0)], 1), y_val, 3
    )
    assert head.module.scale[-1] == 1.0
    assert torch.isfinite(head.module.inner.weight).all()


def test_mismatched_features_raise(blobs) -> None:
    train, y_train, val, y_val = blobs
    with pytest.raises(topselect.InvalidInputError, match="equal widths"):
        fit_ridge_head(train, y_train, val[:, :3], y_val, 3)
    with pytest.raises(topselect.InvalidInputError, match="equal lengths"):
        fit_ridge_head(train, y_train[:10], val, y_val, 3)
