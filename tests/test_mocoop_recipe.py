"""Smoke run of recipes/mocoop_digits.py (--small) on a tiny untrained CLIP: every method, the report, reloadable
prompt learners that do not contain the CLIP."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_contrastive.models.mocoop import MoCoOpModel
from tests.vision.helpers import save_tiny_clip

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "mocoop_digits.py"
MNIST = REPO.parent / "shared" / "data" / "mnist-test"


def load_recipe():
    spec = importlib.util.spec_from_file_location("mocoop_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def clip_folder(tmp_path) -> Path:
    return save_tiny_clip(tmp_path / "clip")


def test_small_run_reports_every_method_and_saves_small_prompt_learners(tmp_path, clip_folder):
    recipe = load_recipe()
    card, output = tmp_path / "card.md", tmp_path / "out"
    argv = ["--small", "--clip-path", str(clip_folder), "--mnist", str(MNIST), "--output-dir", str(output)]
    results = recipe.main([*argv, "--card", str(card)])

    assert list(results["runs"]) == ["zero-shot CLIP (templates)", *recipe.SETTINGS]
    for metrics in results["runs"].values():
        assert all(0.0 <= metrics[column] <= 100.0 for column in recipe.COLUMNS)
        assert metrics["harmonic_mean"] <= max(metrics["base_accuracy"], metrics["novel_accuracy"]) + 1e-9
    report = (output / "report.md").read_text()
    assert "| MoCoOp |" in report and "--small" in report
    assert json.loads((output / "results.json").read_text())["runs"] == results["runs"]
    assert not card.exists()  # smoke runs never overwrite the card

    reloaded = MoCoOpModel.from_pretrained(output / "mocoop-seed1")  # the CLIP comes from config.clip_name_or_path
    assert reloaded.config.num_experts == len(recipe.TEMPLATE_GROUPS)
    assert MoCoOpModel.from_pretrained(output / "coop-style-seed1").config.num_experts == 1
    saved = load_file(output / "mocoop-seed1" / "model.safetensors")
    assert not any("text_model" in key or "logit_scale" in key for key in saved)
    pixels = torch.zeros(2, 3, 16, 16)
    assert reloaded(pixels, classnames=["five", "six", "seven"]).logits.shape == (2, 3)


def test_few_shot_rows_take_shots_per_digit_and_relabel(tmp_path):
    recipe = load_recipe()
    from datasets import Dataset

    rows = Dataset.from_dict({"label": [7, 3, 3, 9, 7, 3, 5]})
    picked = recipe.few_shot_rows(rows, [3, 7], shots=2, seed=0)
    assert sorted(picked["label"]) == [0, 0, 1, 1]
