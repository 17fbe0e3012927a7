"""recipes/cmim_digits.py: its train / test split and a smoke run of the three methods (< 30 s)."""

import importlib.util
from pathlib import Path

import numpy as np

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "cmim_digits.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("cmim_digits", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_splits_are_disjoint_and_cover_the_digits():
    recipe = load_recipe()
    train, test = recipe.load_splits(recipe.parse_args([]))
    assert len(test["x"]) == recipe.TEST_ROWS and len(train["x"]) + len(test["x"]) == 1797
    assert train["x"].shape[1] == 64 and 0.0 <= train["x"].min() and train["x"].max() <= 1.0
    train_rows = {row.tobytes() for row in train["x"]}
    # Some digits images are exact duplicates in the data; the split itself is by row index, so allow a few.
    assert sum(row.tobytes() in train_rows for row in test["x"]) <= 5
    assert set(np.unique(test["label"])) == set(range(10))


def test_small_run_reports_every_metric_of_every_method(tmp_path):
    recipe = load_recipe()
    card = tmp_path / "card.md"
    means = recipe.main(["--small", "--output-dir", str(tmp_path), "--card", str(card)])
    assert list(means) == list(recipe.METHODS)
    for metrics in means.values():
        assert set(metrics) == set(recipe.METRICS)
        assert all(0.0 <= metrics[name] <= 1.0 for name in recipe.METRICS)
        assert metrics["mean linear"] > 0.3  # far above chance (0.1) even after 5 steps: the probe sees real digits
    assert "| cMIM |" in (tmp_path / "report.md").read_text()
    assert not card.exists()
