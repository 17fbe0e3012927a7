"""recipes/autotcl_ett.py: a smoke run of both methods on ETTh1 and one UCR set (< 30 s)."""

import importlib.util
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "autotcl_ett.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("autotcl_ett", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_reports_both_methods_without_writing_the_card(tmp_path):
    recipe = load_recipe()
    card = tmp_path / "card.md"
    results = recipe.main(["--small", "--output-dir", str(tmp_path), "--card", str(card)])
    for method in recipe.METHODS:
        (run,) = results["forecasting"][method]
        assert set(run) == {"h24_mse", "h24_mae", "h24_alpha", "avg_mse", "avg_mae"}
        assert 0 < run["h24_mse"] < 2.0  # standardised scale: a ridge head is not worse than predicting 0 by much
        (accuracy,) = results["ucr"][method]["ItalyPowerDemand"]
        assert accuracy > 0.6  # two balanced classes: above chance after one step
    report = (tmp_path / "report.md").read_text()
    assert "| AutoTCL |" in report and "| fixed augmentation |" in report
    assert not card.exists()
