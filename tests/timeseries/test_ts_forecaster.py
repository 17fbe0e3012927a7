"""TSForecaster + MoCoForecastingLoss + TSForecastingTrainer (arXiv 2306.12086): math, state, shapes, I/O, errors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from hf_contrastive.data.timeseries import ForecastSeries, StandardScaler
from hf_contrastive.models.ts_forecaster import TSForecaster, TSForecasterConfig
from hf_contrastive.objectives.ts_forecasting import MoCoForecastingLoss, jitter_shift_scale, moco_logits
from hf_contrastive.trainers.ts_forecasting import TSForecastingConfig, TSForecastingTrainer, type1_factor
from tests.hub import fake_hub as fake_hub_module

fake_hub = fake_hub_module.fake_hub  # registers the fixture in this module

TINY = {"hidden_size": 8, "representation_dim": 8, "ffn_dim": 8, "num_layers": 1, "num_heads": 2}


def tiny_config(**overrides) -> TSForecasterConfig:
    settings = {"enc_in": 3, "seq_len": 12, "pred_len": 4, "moco_queue_size": 8, **TINY, **overrides}
    return TSForecasterConfig(**settings)


def tiny_model(seed: int = 0, **overrides) -> TSForecaster:
    torch.manual_seed(seed)
    return TSForecaster(tiny_config(**overrides))


def sine_series(steps: int = 400, channels: int = 3) -> np.ndarray:
    t = np.arange(steps)[:, None]
    return 10 + 3 * np.sin(2 * np.pi * t / 24 + np.arange(channels)) + 0.1 * np.cos(t / 7)


def training_args(tmp_path, **overrides) -> TSForecastingConfig:
    settings = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 4,
        "max_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "logging_steps": 1,
        **overrides,
    }
    return TSForecastingConfig(**settings)


# ------------------------------------------------------------------------ objective
def test_moco_logits_match_a_hand_computed_case():
    query = torch.tensor([[3.0, 4.0]])  # normalised: (0.6, 0.8)
    key = torch.tensor([[0.0, 2.0]])  # normalised: (0, 1)
    queue = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # unit columns
    logits = moco_logits(query, key, queue, temperature=0.5, l2_normalize=True)
    torch.testing.assert_close(logits, torch.tensor([[0.8, 0.6, 0.8, -0.6]]) / 0.5)

    objective = MoCoForecastingLoss(contrastive_weight=1.0, embedding_dim=2, queue_size=3, temperature=0.5).eval()
    objective.queue.copy_(queue)
    zeros = torch.zeros(1, 1, 1)
    output = objective(zeros, zeros, query, key)
    expected = -1.6 + math.log(math.exp(1.6) + math.exp(1.2) + math.exp(1.6) + math.exp(-1.2))
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)


def test_loss_mixes_mse_and_contrastive_terms_with_lambda():
    torch.manual_seed(0)
    prediction, target = torch.randn(4, 3, 2), torch.randn(4, 3, 2)
    query, key = torch.randn(4, 5), torch.randn(4, 5)
    objective = MoCoForecastingLoss(contrastive_weight=0.3, embedding_dim=5, queue_size=8).eval()
    output = objective(prediction, target, query, key)
    mse = F.mse_loss(prediction, target)
    logits = moco_logits(query, key, objective.queue, 1.0, True)
    contrastive = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(output.loss, 0.7 * mse + 0.3 * contrastive)
    torch.testing.assert_close(output.logs["loss_contrastive"], contrastive)


def test_enqueue_writes_keys_in_order_and_wraps_modulo_the_queue_size():
    objective = MoCoForecastingLoss(contrastive_weight=0.5, embedding_dim=2, queue_size=5, l2_normalize=False)
    first, second = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]), torch.tensor([[4.0, 40], [5.0, 50]])
    objective.enqueue(first)
    assert objective.queue_ptr.item() == 3
    torch.testing.assert_close(objective.queue[:, :3], first.T)
    objective.enqueue(second)
    assert objective.queue_ptr.item() == 0
    torch.testing.assert_close(objective.queue[:, 3:], second.T)
    objective.enqueue(torch.tensor([[6.0, 60.0], [7.0, 70.0]]))  # newest keys in columns [ptr - B, ptr)
    torch.testing.assert_close(objective.queue[0], torch.tensor([6.0, 7.0, 3.0, 4.0, 5.0]))
    assert objective.queue_ptr.item() == 2


def test_training_forward_enqueues_normalised_keys_after_scoring_against_the_old_queue():
    objective = MoCoForecastingLoss(contrastive_weight=0.5, embedding_dim=3, queue_size=4)
    old_queue = objective.queue.clone()
    query, key = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3)
    zeros = torch.zeros(2, 1, 1)
    output = objective(zeros, zeros, query, key)
    output.loss.backward()  # the in-place enqueue must not break the backward pass
    expected = 0.5 * F.cross_entropy(moco_logits(query, key, old_queue, 1.0, True), torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(output.loss, expected)
    torch.testing.assert_close(objective.queue[:, :2], F.normalize(key, dim=1).T)
    torch.testing.assert_close(objective.queue[:, 2:], old_queue[:, 2:])


def test_evaluation_mode_leaves_the_queue_unchanged():
    model = tiny_model().eval()
    queue, pointer = model.objective.queue.clone(), model.objective.queue_ptr.clone()
    model(torch.randn(4, 12, 3), torch.randn(4, 4, 3))
    assert torch.equal(model.objective.queue, queue) and torch.equal(model.objective.queue_ptr, pointer)


def test_moco_loss_at_initialisation_is_about_minus_log_e_over_e_plus_k():
    torch.manual_seed(0)
    model = TSForecaster(tiny_config(representation_dim=320, moco_queue_size=512)).eval()  # dropout off, k = q
    output = model(torch.randn(16, 12, 3), torch.zeros(16, 4, 3))
    # l_pos = 1, l_neg ~ N(0, 1/320): loss ~ -log(e / (e + 512 e^{1/640}))
    assert output.contrastive_loss.item() == pytest.approx(-math.log(math.e / (math.e + 512)), abs=0.05)


def test_weight_zero_is_exactly_mse_and_skips_the_contrastive_branch():
    model = tiny_model(contrastive_weight=0.0).train()
    assert not hasattr(model, "momentum_encoder") and model.objective.queue.numel() == 0
    past, future = torch.randn(4, 12, 3), torch.randn(4, 4, 3)
    torch.manual_seed(1)
    output = model(past, future)
    torch.manual_seed(1)  # same dropout masks
    prediction = model(past).prediction
    torch.testing.assert_close(output.loss, F.mse_loss(prediction, future), rtol=0, atol=0)
    assert output.contrastive_loss is None


def test_baseline_and_contrastive_models_start_from_the_same_forecaster_weights():
    contrastive, baseline = tiny_model(seed=3), tiny_model(seed=3, contrastive_weight=0.0)
    baseline_state = baseline.state_dict()
    for name, tensor in contrastive.state_dict().items():
        if name.startswith(("encoder.", "forecast_head.")):
            assert torch.equal(tensor, baseline_state[name]), name


def test_jitter_shift_scale_keeps_shape_and_is_identity_with_probability_zero():
    windows = torch.randn(4, 12, 3)
    assert torch.equal(jitter_shift_scale(windows, probability=0.0), windows)
    torch.manual_seed(0)
    augmented = jitter_shift_scale(windows, sigma=0.5, probability=1.0)
    assert augmented.shape == windows.shape and not torch.allclose(augmented, windows)
    jitter = augmented - jitter_shift_scale(windows, sigma=0.0, probability=1.0)
    assert 0.3 < jitter.std().item() < 1.5  # scale, shift and jitter noise of sigma 0.5 each


# ------------------------------------------------------------------------ model
@pytest.mark.parametrize("pred_len", [1, 4, 12])
def test_forecast_shape_for_each_horizon(pred_len):
    model = tiny_model(pred_len=pred_len, target_channels=[2])
    output = model(torch.randn(5, 12, 3), torch.randn(5, pred_len, 1))
    assert output.prediction.shape == (5, pred_len, 1) and output.loss.ndim == 0


def test_forecast_is_read_from_the_last_pred_len_encoder_positions():
    model = tiny_model().eval()
    past = torch.randn(2, 12, 3)
    hidden = model.encoder(past)
    torch.testing.assert_close(model(past).prediction, model.forecast_head(hidden[:, -4:]))


def test_forecast_returns_original_units_with_the_saved_scaler():
    scaler = StandardScaler(mean=np.array([10.0, -5.0, 100.0]), scale=np.array([2.0, 0.5, 20.0]))
    model = tiny_model(target_channels=[2], scaler=scaler.to_dict()).eval()
    history = np.random.default_rng(0).normal(size=(20, 3)) * scaler.scale + scaler.mean
    standardised = torch.as_tensor(scaler.transform(history[-12:]), dtype=torch.float32)[None]
    expected = model(standardised).prediction[0].detach().double().numpy() * 20.0 + 100.0
    np.testing.assert_allclose(model.forecast(history), expected, rtol=1e-5)
    assert model.forecast(np.stack([history, history])).shape == (2, 4, 1)


def test_save_and_reload_keep_weights_queue_and_scaler(tmp_path):
    scaler = StandardScaler.fit(sine_series())
    model = tiny_model(scaler=scaler.to_dict())
    model.train()(torch.randn(4, 12, 3), torch.randn(4, 4, 3))  # move the queue pointer
    model.eval().save_pretrained(tmp_path)
    reloaded = TSForecaster.from_pretrained(tmp_path).eval()
    state, reloaded_state = model.state_dict(), reloaded.state_dict()
    assert state.keys() == reloaded_state.keys() and reloaded.objective.queue_ptr.item() == 4
    assert all(torch.equal(state[name], reloaded_state[name]) for name in state)
    assert reloaded.config.scaler == scaler.to_dict()
    history = sine_series()[:30]
    np.testing.assert_array_equal(reloaded.forecast(history), model.forecast(history))


def test_push_to_hub_uploads_a_card_and_downloads_back(tmp_path, fake_hub):
    model = tiny_model(scaler=StandardScaler.fit(sine_series()).to_dict()).eval()
    model.push_to_hub("fake-user/tiny-forecaster", token=fake_hub.token)
    files = fake_hub.files("fake-user/tiny-forecaster")
    readme = files["README.md"].decode()
    metadata = yaml.safe_load(readme.split("---")[1])
    assert metadata["pipeline_tag"] == "time-series-forecasting" and "arxiv:2306.12086" in metadata["tags"]
    assert "model.forecast(history)" in readme and "MoCo contrastive term (weight 0.5)" in readme
    downloaded = TSForecaster.from_pretrained("fake-user/tiny-forecaster", cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(downloaded.forecast(sine_series()[:12]), model.forecast(sine_series()[:12]))


# ------------------------------------------------------------------------ bad input
def test_bad_histories_are_refused_with_clear_errors():
    model = tiny_model()
    history = sine_series()[:20]
    with pytest.raises(ValueError, match="history has 8 time steps; the model reads windows of seq_len=12"):
        model.forecast(history[:8])
    with pytest.raises(ValueError, match=r"enc_in channels"):
        model.forecast(history[:, :2])
    history[15, 1] = np.nan
    with pytest.raises(ValueError, match="NaN/inf value .*step 7 of the last 12, channel 1"):
        model.forecast(history)
    with pytest.raises(ValueError, match=r"past_values must be \[B, seq_len=12, enc_in=3\]"):
        model(torch.randn(2, 10, 3))


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="pred_len must be in"):
        tiny_config(pred_len=13)
    with pytest.raises(ValueError, match="target_channels must be indices"):
        tiny_config(target_channels=[3])
    with pytest.raises(ValueError, match="contrastive_weight must be in"):
        tiny_model(contrastive_weight=1.5)


def test_trainer_names_a_nan_row_and_a_wrong_shape_before_training(tmp_path):
    rows = [{"past_values": np.zeros((12, 3)), "future_values": np.zeros((4, 3))} for _ in range(4)]
    rows[2]["past_values"][5, 1] = np.nan
    with pytest.raises(ValueError, match=r"train_dataset row 2: 'past_values' has a NaN/inf at step 5, channel 1"):
        TSForecastingTrainer(tiny_model(), training_args(tmp_path), train_dataset=rows)
    rows[2]["past_values"] = np.zeros((12, 3))
    rows[3]["future_values"] = np.zeros((6, 3))
    with pytest.raises(ValueError, match=r"row 3: 'future_values' has shape \(6, 3\); the model expects \(4, 3\)"):
        TSForecastingTrainer(tiny_model(), training_args(tmp_path), train_dataset=rows)


# ------------------------------------------------------------------------ trainer
def test_one_step_applies_the_momentum_update_after_the_optimizer_step(tmp_path):
    model = tiny_model(moco_momentum=0.9)
    before = {k: v.clone() for k, v in model.momentum_encoder.state_dict().items()}
    rows = [{"past_values": np.random.randn(12, 3), "future_values": np.random.randn(4, 3)} for _ in range(4)]
    trainer = TSForecastingTrainer(model, training_args(tmp_path), train_dataset=rows)
    trainer.train()
    online = model.online_encoder().state_dict()
    for name, key_weight in model.momentum_encoder.state_dict().items():
        assert not torch.equal(online[name], before[name]), name  # the online weights moved
        torch.testing.assert_close(key_weight, 0.9 * before[name] + 0.1 * online[name])
        assert not model.momentum_encoder.get_parameter(name).requires_grad
    assert model.objective.queue_ptr.item() == 4
    logged = trainer.state.log_history[0]
    assert {"loss_mse", "loss_contrastive"} <= set(logged)


def test_type1_schedule_halves_after_the_second_epoch():
    assert [type1_factor(step, steps_per_epoch=3) for step in range(12)] == [1.0] * 6 + [0.5] * 3 + [0.25] * 3


def test_training_on_windows_lowers_validation_mse_and_writes_a_card(tmp_path):
    series = ForecastSeries.from_array(sine_series(600), borders=(400, 500, 600))
    model = tiny_model(scaler=series.scaler.to_dict())
    args = training_args(tmp_path, max_steps=60, learning_rate=3e-3, per_device_train_batch_size=8)
    trainer = TSForecastingTrainer(
        model, args, train_dataset=series.windows("train", 12, 4), eval_dataset=series.windows("validation", 12, 4)
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert {"eval_mse", "eval_mae"} <= set(after) and after["eval_mse"] < 0.5 * before["eval_mse"]
    trainer.create_model_card(model_name="tiny-forecaster")
    card = (tmp_path / "README.md").read_text()
    assert "mse" in card and "halve_lr_each_epoch" in card and "time-series-forecasting" in card
