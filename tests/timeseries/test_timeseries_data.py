"""Time-series data: split borders, leak-free windows, the train-only scaler, loaders and their errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hf_contrastive.data.timeseries import (
    ETT_HOURLY_BORDERS,
    ForecastSeries,
    StandardScaler,
    load_ett,
    load_exchange_rate,
    load_ucr,
    ratio_borders,
    read_ts_file,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def ramp_series(length: int = 40, borders=(20, 30, 40)) -> ForecastSeries:
    """Channel 0 = the step index (so a window's values are its indices), channel 1 = -index."""
    steps = np.arange(length, dtype=np.float64)
    return ForecastSeries.from_array(np.stack([steps, -steps], axis=1), borders, channels=["a", "b"])


def test_training_windows_stop_before_the_validation_border():
    series = ramp_series()
    starts = series.window_starts("train", input_length=4, horizon=3)
    # the last window reads steps 13..16 and forecasts 17..19 < train_end = 20
    np.testing.assert_array_equal(starts, np.arange(0, 14))


def test_validation_windows_look_back_into_train_but_forecast_inside_the_split():
    series = ramp_series()
    starts = series.window_starts("validation", input_length=4, horizon=3)
    np.testing.assert_array_equal(starts, np.arange(16, 24))  # futures span [20, 30) exactly
    within = series.window_starts("validation", input_length=4, horizon=3, context="within")
    np.testing.assert_array_equal(within, np.arange(20, 24))


def test_window_values_are_the_scaled_steps_at_those_indices():
    series = ramp_series()
    windows = series.windows("test", input_length=4, horizon=3, stride=2)
    first = windows[0]
    # test = [30, 40): first start 30 - 4 = 26, last start 40 - 4 - 3 = 33 (its future is 37..39)
    np.testing.assert_array_equal(windows.starts, [26, 28, 30, 32])
    raw_past = series.scaler.inverse_transform(first["past_values"].numpy().astype(np.float64))
    np.testing.assert_allclose(raw_past[:, 0], [26, 27, 28, 29], atol=1e-4)
    raw_future = series.scaler.select(series.target_channels).inverse_transform(
        first["future_values"].double().numpy()
    )
    np.testing.assert_allclose(raw_future[:, 0], [30, 31, 32], atol=1e-4)
    past, future = windows.arrays()
    assert past.shape == (4, 4, 2) and future.shape == (4, 3, 2) and past.dtype == torch.float32


def test_no_window_future_crosses_its_split():
    series = ramp_series(60, (30, 45, 60))
    for split in ("train", "validation", "test"):
        start, end = series.split_bounds(split)
        for index, (_, future) in enumerate(zip(*series.windows(split, 5, 4).arrays())):
            raw = series.scaler.inverse_transform(future.double().numpy())[:, 0]
            assert start <= round(raw.min()) and round(raw.max()) < end, (split, index)


def test_scaler_is_fitted_on_the_training_rows_only():
    values = np.concatenate([np.zeros(10), np.full(10, 100.0)])
    values[:10] = np.arange(10)  # train = 0..9: mean 4.5, population std sqrt(8.25)
    series = ForecastSeries.from_array(values, (10, 15, 20))
    np.testing.assert_allclose(series.scaler.mean, [4.5])
    np.testing.assert_allclose(series.scaler.scale, [np.sqrt(8.25)])
    np.testing.assert_allclose(series.scaled()[12, 0], (100 - 4.5) / np.sqrt(8.25), rtol=1e-6)


def test_scaler_round_trips_through_its_dict_and_handles_tensors():
    scaler = StandardScaler.fit(np.array([[1.0, 5.0], [3.0, 5.0]]))  # second channel constant: scale 1
    restored = StandardScaler.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(restored.scale, [1.0, 1.0])
    values = torch.tensor([[2.0, 6.0]])
    torch.testing.assert_close(restored.transform(values), torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(restored.inverse_transform(restored.transform(values)), values)
    with pytest.raises(ValueError, match="'mean' and 'scale'"):
        StandardScaler.from_dict({"mean": [0.0]})


def test_nan_in_a_series_is_reported_with_channel_and_row():
    values = np.ones((30, 2))
    values[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"channel 'b' .* row 7"):
        ForecastSeries.from_array(values, (10, 20, 30), channels=["a", "b"])


def test_too_short_split_for_the_window_is_refused():
    series = ramp_series()
    with pytest.raises(ValueError, match="too short for one window of input_length 8 \\+ horizon 4"):
        series.window_starts("test", input_length=8, horizon=4, context="within")
    with pytest.raises(ValueError, match="shorter than test_end"):
        ForecastSeries.from_array(np.ones(25), (10, 20, 30))


def test_ratio_borders_follow_the_ltsf_custom_split():
    assert ratio_borders(7588) == (5311, 6071, 7588)


def test_ett_loader_uses_the_12_4_4_month_split_and_calendar_covariates():
    series = load_ett(DATA / "ett" / "ETTh1.csv", mode="univariate", calendar_covariates=True)
    assert series.borders == ETT_HOURLY_BORDERS == (8640, 11520, 14400)
    assert series.values.shape == (14400, 8) and series.target_names == ("OT",)
    assert series.target_channels == (7,)
    np.testing.assert_allclose(series.values[0, 7], 30.5310001373291)
    np.testing.assert_allclose(series.scaler.mean[7], series.values[:8640, 7].mean())
    multi = load_ett(DATA / "ett" / "ETTh1.csv", mode="multivariate")
    assert multi.values.shape == (14400, 7) and len(multi.target_channels) == 7


def test_exchange_rate_loader_modes():
    series = load_exchange_rate(DATA / "ltsf-small" / "exchange_rate.csv", mode="multivariate_to_target")
    assert series.values.shape == (7588, 8) and series.target_names == ("OT",)
    with pytest.raises(ValueError, match="target column 'price'"):
        load_exchange_rate(DATA / "ltsf-small" / "exchange_rate.csv", target="price")


def test_ucr_loader_reads_classes_channels_and_regression_targets():
    gun = load_ucr("GunPoint", DATA / "ucr-uea-sktime")
    assert gun.train_values.shape == (50, 150, 1) and gun.test_values.shape == (150, 150, 1)
    assert gun.classes == ("1", "2") and set(gun.train_labels) == {0, 1}
    motions = load_ucr("BasicMotions", DATA / "ucr-uea-sktime")
    assert motions.train_values.shape == (40, 100, 6) and len(motions.classes) == 4
    tecator = load_ucr("Tecator", DATA / "ucr-uea-sktime")
    assert tecator.classes == () and tecator.train_labels.dtype == np.float64


def test_ts_file_with_missing_value_or_unknown_label_is_refused(tmp_path):
    header = "@problemName Toy\n@univariate true\n@classLabel true a b\n@data\n"
    missing = tmp_path / "missing.ts"
    missing.write_text(header + "1,2,3:a\n1,?,3:b\n")
    with pytest.raises(ValueError, match="line 6: missing value"):
        read_ts_file(missing)
    unknown = tmp_path / "unknown.ts"
    unknown.write_text(header + "1,2,3:c\n")
    with pytest.raises(ValueError, match="label 'c' is not among"):
        read_ts_file(unknown)
