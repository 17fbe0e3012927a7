"""The CACR / Hydra digits recipe in small mode: every objective trains, is probed, and lands in the report."""

import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def recipe(monkeypatch):
    import importlib.util

    monkeypatch.chdir(REPO)  # the recipe reads ../shared/data relative to the repository root
    spec = importlib.util.spec_from_file_location("cacr_hydra_digits", REPO / "recipes" / "cacr_hydra_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_probes_every_objective_and_writes_the_report(recipe, tmp_path):
    card = tmp_path / "card.md"
    results = recipe.main(["--small", "--output-dir", str(tmp_path), "--card", str(card)])
    expected = {
        "untrained encoder",
        "infonce",
        "cacr",
        "cacr (4 views)",
        "hydra (identical pairs)",
        "hydra (arbitrary pairs)",
    }
    assert set(results) == expected
    for metrics in results.values():
        assert set(metrics) == set(recipe.METRICS)
        assert all(math.isfinite(v) for values in metrics.values() for v in values)
        assert 0.1 <= metrics["linear_accuracy"][0] <= 1.0  # 10 classes: above chance on real digits
        assert 1.0 <= metrics["effective_rank"][0] <= 64.0
    assert json.loads((tmp_path / "results.json").read_text()) == results
    report = (tmp_path / "report.md").read_text()
    assert "| hydra (arbitrary pairs) |" in report and "python recipes/cacr_hydra_digits.py --small" in report
    assert not card.exists()  # small runs never overwrite the card
