"""Smoke run of recipes/supremix_abalone.py (< 30 s): every representation is probed and the report is written."""

import importlib.util
import math
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "supremix_abalone.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("supremix_abalone", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_probes_every_representation_and_writes_the_report(tmp_path):
    recipe = load_recipe()
    card = tmp_path / "card.md"
    results = recipe.main(["--small", "--output-dir", str(tmp_path), "--card", str(card)])
    expected = ["raw features", "untrained encoder", *recipe.objectives(recipe.parse_args([]))]
    assert list(results) == expected
    for metrics in results.values():
        assert all(math.isfinite(metrics[column]) for column in recipe.COLUMNS)
    assert results["raw features"]["linear_r2"] > 0.3  # rings are predictable from the measurements
    report = (tmp_path / "report.md").read_text()
    assert "| SupReMix |" in report and "Command: `python recipes/supremix_abalone.py`" in report
    assert not card.exists()  # smoke runs leave the card alone
