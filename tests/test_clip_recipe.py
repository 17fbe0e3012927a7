"""The CLIP digits recipe end to end on a small MNIST slice: evaluates before/after, saves a reloadable CLIP + card."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPModel, CLIPProcessor

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "../shared/data"


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (DATA / "mnist-test").is_dir(), reason="../shared/data/mnist-test not present")
def test_clip_recipe_reports_zero_shot_and_retrieval_and_saves_a_reloadable_clip(tmp_path):
    recipe = load_recipe("clip_digits")
    argv = ["--data-dir", str(DATA), "--output-dir", str(tmp_path), "--max-steps", "3", "--train-rows", "64"]
    results = recipe.main([*argv, "--eval-rows", "40", "--batch-size", "16"])
    assert list(results) == ["before", "after"]
    for metrics in results.values():
        assert {"zero_shot_top1_accuracy", "zero_shot_top5_accuracy", "retrieval_image_to_text_recall@1"} <= set(
            metrics
        )
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
    assert results["after"] != results["before"]  # three steps moved the model
    assert json.loads((tmp_path / "results.json").read_text())["results"] == results

    model = CLIPModel.from_pretrained(tmp_path).eval()
    processor = CLIPProcessor.from_pretrained(tmp_path)
    inputs = processor(
        text=["a handwritten seven"], images=[torch.zeros(28, 28, 3).byte().numpy()], return_tensors="pt"
    )
    assert model(**inputs).logits_per_image.shape == (1, 1)
    assert model.logit_scale.item() != pytest.approx(2.6592, abs=1e-6)  # the trained temperature was written back
    card = (tmp_path / "README.md").read_text()
    assert "zero_shot_top1_accuracy" in card and "clip" in card
