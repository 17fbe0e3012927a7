"""Forecast evaluation: errors, causal representations, ridge samples and head, the full protocol, UCR heads."""

import numpy as np
import pytest
import torch

from hf_contrastive.evaluation.forecasting import (
    causal_representations,
    classification_probe,
    fit_ridge_head,
    forecast_errors,
    prediction_samples,
    ridge_forecast_evaluation,
)


def test_forecast_errors_match_hand_values():
    errors = forecast_errors(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 0.0], [4.0, 4.0]]))
    assert errors == pytest.approx({"mse": (0 + 4 + 1 + 0) / 4, "mae": (0 + 2 + 1 + 0) / 4})
    with pytest.raises(ValueError, match="equal shape"):
        forecast_errors(np.zeros(3), np.zeros(4))


def test_causal_representations_see_no_future_step():
    series = np.random.default_rng(0).standard_normal((30, 2))
    encode = lambda windows: windows.sum(dim=1)  # noqa: E731 - depends on every step of the window
    before = causal_representations(encode, series, padding=5, batch_size=7)
    changed = series.copy()
    changed[20:] += 10.0
    after = causal_representations(encode, changed, padding=5, batch_size=7)
    np.testing.assert_allclose(before[:20], after[:20])
    assert not np.allclose(before[20:], after[20:])
    # step 2 sees the zero padding and steps 0..2; step 10 sees steps 5..10
    np.testing.assert_allclose(before[2], series[:3].sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(before[10], series[5:11].sum(axis=0), rtol=1e-6)


def test_prediction_samples_pair_step_t_with_the_next_h_values():
    representations = np.arange(10.0)[:, None]
    targets = np.stack([np.arange(10.0), 100 + np.arange(10.0)], axis=1)
    features, labels = prediction_samples(representations, targets, horizon=3, drop=2)
    np.testing.assert_array_equal(features[:, 0], [2, 3, 4, 5, 6])  # t = 2 .. 10 - 3 - 1
    np.testing.assert_array_equal(labels[0], [3, 103, 4, 104, 5, 105])  # steps t+1..t+3, channels interleaved
    assert labels[-1, -2] == 9  # the last label is the split's last step: nothing beyond it
    with pytest.raises(ValueError, match="no sample for horizon 9"):
        prediction_samples(representations, targets, horizon=9, drop=2)


def test_ridge_head_recovers_a_linear_map_and_prefers_the_smallest_alpha():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((4, 2))
    train_X, valid_X = rng.standard_normal((200, 4)), rng.standard_normal((50, 4))
    head, alpha = fit_ridge_head(train_X, train_X @ weights, valid_X, valid_X @ weights, alphas=(100.0, 0.1, 10.0))
    assert alpha == 0.1
    np.testing.assert_allclose(head.coef_.T, weights, atol=1e-2)


def test_ridge_protocol_on_a_noiseless_sine_with_a_linear_encoder_is_near_exact():
    steps = np.arange(1200)
    series = np.sin(2 * np.pi * steps / 24)[:, None]
    lags = lambda windows: windows[:, -2:, 0]  # noqa: E731 - (x_{t-1}, x_t) determine a pure sine exactly
    representations = causal_representations(lags, series, padding=10)
    metrics = ridge_forecast_evaluation(representations, series, (800, 1000, 1200), horizons=(1, 24), padding=10)
    assert metrics["h1_mse"] < 1e-4 and metrics["h24_mse"] < 1e-4 and metrics["avg_mae"] < 1e-2
    assert set(metrics) == {"h1_mse", "h1_mae", "h1_alpha", "h24_mse", "h24_mae", "h24_alpha", "avg_mse", "avg_mae"}


def test_ridge_protocol_beats_a_constant_representation():
    steps = np.arange(1200)
    series = np.sin(2 * np.pi * steps / 24)[:, None]
    constant = ridge_forecast_evaluation(np.ones((1200, 1)), series, (800, 1000, 1200), horizons=(6,), padding=10)
    np.testing.assert_allclose(constant["h6_mse"], 0.5, atol=0.02)  # predicts the mean: variance of a sine = 1/2


@pytest.mark.parametrize("head", ["svm", "linear"])
def test_classification_heads_separate_clusters(head):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    features = rng.standard_normal((90, 3)) * 0.3 + np.eye(3)[labels] * 3
    order = rng.permutation(90)
    train, test = order[:60], order[60:]
    scores = classification_probe(features[train], labels[train], features[test], labels[test], head=head)
    assert scores["accuracy"] == 1.0
    with pytest.raises(ValueError, match="head must be one of"):
        classification_probe(features, labels, features, labels, head="tree")
