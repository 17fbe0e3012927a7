"""Smoke run of the CLIP-rocket digits recipe: trains tiny variants on MNIST rows and writes the zero-shot table."""

import json
from pathlib import Path

import pytest

MNIST = Path(__file__).resolve().parents[1] / "../shared/data/mnist-test"


@pytest.mark.slow
def test_small_recipe_writes_a_zero_shot_table(tmp_path):
    from recipes.clip_rocket_digits import main

    variants = ["clip", "clip_rocket", "clip_rocket_swalip"]
    argv = ["--small", "--data", str(MNIST), "--output-dir", str(tmp_path), "--variants", *variants]
    results = main(argv)
    assert list(results) == variants
    for metrics in results.values():
        assert 0.0 <= metrics["top1_accuracy"] <= metrics["top5_accuracy"] <= 1.0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["mean"] == results and len(saved["per_seed"]["clip"]) == 1
    report = (tmp_path / "report.md").read_text()
    assert "| clip_rocket_swalip |" in report and "--small" in report
