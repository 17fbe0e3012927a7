"""Smoke run of recipes/denseclip_digits.py (--small): every variant trains and is scored, the report is written."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "denseclip_digits.py"
MNIST = REPO.parent / "shared" / "data" / "mnist-test"


def load_recipe():
    spec = importlib.util.spec_from_file_location("denseclip_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_trains_every_variant_and_writes_the_report(tmp_path):
    recipe = load_recipe()
    card = tmp_path / "card.md"
    argv = [
        "--small",
        "--mnist",
        str(MNIST),
        "--output-dir",
        str(tmp_path),
        "--card",
        str(card),
        "--canvas-size",
        "28",
    ]
    results = recipe.main(argv)

    assert set(results["summary"]) == set(recipe.VARIANTS)
    for summary in results["summary"].values():
        assert all(0.0 <= summary[column] <= 1.0 for column in recipe.COLUMNS)
        assert summary["final loss_seg"] > 0 and summary["mIoU std"] == 0.0  # one seed in --small
    report = (tmp_path / "report.md").read_text()
    assert "| DenseCLIP |" in report and "| CLIP + head (baseline) |" in report and "--small" in report
    assert json.loads((tmp_path / "results.json").read_text())["summary"] == results["summary"]
    assert not card.exists()  # smoke runs never overwrite the card


def test_canvases_have_the_requested_counts_and_size():
    recipe = load_recipe()
    args = recipe.parse_args(["--small", "--mnist", str(MNIST), "--canvas-size", "28"])
    train, evaluation = recipe.load_canvases(args)
    assert len(train) == args.train_canvases and len(evaluation) == args.eval_canvases
    assert train[0]["image"].size == evaluation[0]["label"].size == (28, 28)
