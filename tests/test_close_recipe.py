"""Smoke run of recipes/close_digits.py (--small on a tiny untrained CLIP: every head and captioner, the report) and its
caption metrics on hand cases."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.vision.helpers import save_tiny_clip

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "close_digits.py"
MNIST = REPO.parent / "shared" / "data" / "mnist-test"


def load_recipe():
    spec = importlib.util.spec_from_file_location("close_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_trains_every_setting_and_writes_the_report(tmp_path):
    recipe = load_recipe()
    card = tmp_path / "card.md"
    clip = save_tiny_clip(tmp_path / "clip")
    argv = ["--small", "--clip-path", str(clip), "--mnist", str(MNIST), "--output-dir", str(tmp_path / "out")]
    results = recipe.main([*argv, "--card", str(card)])

    assert len(results["classification"]) == 7 and len(results["captioning"]) == 5
    assert (
        "oracle (trained on images)" in results["classification"]
        and "oracle (trained on images)" in results["captioning"]
    )
    for metrics in [*results["classification"].values(), *results["captioning"].values()]:
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.count("| no noise (sigma 0) |") == 2 and "--small" in report and "## Summary" in report
    assert -1.0 <= results["modality_gap"]["paired cosine"] <= 1.0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["classification"] == results["classification"]
    assert not card.exists()  # smoke runs never overwrite the card


def test_caption_scores_on_hand_cases():
    recipe = load_recipe()
    assert recipe.caption_scores("a handwritten seven", 7) == {
        "digit accuracy": 1.0,
        "exact match": 1.0,
        "token F1": 1.0,
    }
    wrong = recipe.caption_scores("a handwritten one", 7)
    assert wrong["digit accuracy"] == 0.0 and wrong["exact match"] == 0.0
    assert wrong["token F1"] == pytest.approx(2 / 3)  # "a handwritten" of three words each side
    assert recipe.caption_scores("a handwritten seven or one", 7)["digit accuracy"] == 0.0  # two digits named
    assert recipe.caption_scores("a scanned digit 7", 7)["digit accuracy"] == 1.0
    assert recipe.caption_scores("", 7) == {"digit accuracy": 0.0, "exact match": 0.0, "token F1": 0.0}


def test_token_f1_is_bag_of_words_f1():
    recipe = load_recipe()
    assert recipe.token_f1("the the cat", "the cat sat") == pytest.approx(2 / 3)  # overlap 2, P = R = 2/3
    assert recipe.token_f1("Seven", "seven") == 1.0
