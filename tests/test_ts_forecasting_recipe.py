"""recipes/ts_forecasting_ett.py: a smoke run of both methods on ETTh1 (< 30 s) and the saved models."""

import importlib.util
import math
from pathlib import Path

from hf_contrastive.data.timeseries import load_ett
from hf_contrastive.evaluation.forecasting import forecast_errors
from hf_contrastive.models.ts_forecaster import TSForecaster

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "ts_forecasting_ett.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("ts_forecasting_ett", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_reports_both_methods_and_saves_reloadable_models(tmp_path):
    recipe = load_recipe()
    card = tmp_path / "card.md"
    means = recipe.main(["--small", "--output-dir", str(tmp_path), "--card", str(card)])
    assert list(means) == list(recipe.METHODS)
    for per_horizon in means.values():
        assert set(per_horizon) == {24}
        # standardised scale: a forecaster after a few steps is far from perfect but not diverging
        assert all(
            0.05 < per_horizon[24][metric] < 3.0 and math.isfinite(per_horizon[24][metric])
            for metric in ("mse", "mae")
        )
    report = (tmp_path / "report.md").read_text()
    assert "| MSE + MoCo (lambda 0.5) | 48 -> 24 |" in report and "| MSE only | 48 -> 24 |" in report
    assert not card.exists()

    series = load_ett(recipe.ETTH1, mode="multivariate")
    contrastive = TSForecaster.from_pretrained(tmp_path / "moco-h24" / "model")
    baseline = TSForecaster.from_pretrained(tmp_path / "mse-h24" / "model")
    assert contrastive.config.scaler == series.scaler.to_dict() == baseline.config.scaler
    assert contrastive.objective.queue.shape[1] == 512 and baseline.objective.queue.numel() == 0
    start = series.borders[1]  # forecast the first test steps from the validation tail, in original units
    forecast = contrastive.forecast(series.values[start - 48 : start])
    assert forecast.shape == (24, 7)
    errors = forecast_errors(series.scaler.transform(forecast), series.scaled()[start : start + 24])
    assert errors["mse"] < 3.0  # back on the standardised scale, the forecast is a sane one for these very steps
