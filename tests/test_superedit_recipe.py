"""recipes/superedit_shapes.py: its word-level tokenizer, deterministic tiny VAE, and a smoke run (< 30 s)."""

import importlib.util
import json
import sys
from pathlib import Path

import torch

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "superedit_shapes.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("superedit_shapes", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_instruction_word_is_one_token(tmp_path):
    recipe = load_recipe()
    tokenizer = recipe.word_clip_tokenizer(recipe.shape_words(), tmp_path)
    ids = tokenizer("move the red circle to the top right").input_ids
    assert len(ids) == 2 + 8 and ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.convert_ids_to_tokens(ids[1:-1])[2] == "red</w>"
    assert len(tokenizer("zebra").input_ids) == 2 + 5  # unknown words are spelt letter by letter


def test_the_tiny_vae_encodes_deterministically_at_unit_scale(tmp_path):
    recipe = load_recipe()
    pipeline = recipe.tiny_pipeline(recipe.word_clip_tokenizer(recipe.shape_words(), tmp_path), 32, seed=0)
    images = recipe.shape_edit_dataset(16, 32, seed=0)["edited_image"]
    scale = recipe.calibrate_latent_scale(pipeline.vae, images)
    pixels = torch.stack([torch.from_numpy(__import__("numpy").array(i)).permute(2, 0, 1) for i in images]) / 127.5 - 1
    with torch.no_grad():
        posterior = pipeline.vae.encode(pixels).latent_dist
        sampled = posterior.sample() * pipeline.vae.config.scaling_factor
    assert pipeline.vae.config.scaling_factor == scale
    assert abs(sampled.std().item() - 1.0) < 0.01
    torch.testing.assert_close(sampled, posterior.mode() * scale, atol=1e-5, rtol=0)


def test_small_run_reports_both_methods_over_training(tmp_path):
    recipe = load_recipe()
    card = tmp_path / "card.md"
    results = recipe.main(["--small", "--output-dir", str(tmp_path), "--card", str(card)])
    assert list(results) == list(recipe.METHODS)
    for by_step in results.values():
        assert list(by_step) == [0, 3, 6]
        for metrics in by_step.values():
            assert metrics["d_pos"] > 0 and 0.0 <= metrics["d_neg > d_pos"] <= 1.0
            assert abs(metrics["gap"] - (metrics["d_neg"] - metrics["d_pos"])) < 1e-6
    plain, triplet = (results[method] for method in recipe.METHODS)
    assert plain[0] == triplet[0]  # the same initial pipeline and held-out noise for both methods
    assert plain[6] != triplet[6]
    assert "| SuperEdit (MSE + triplet), step 6 |" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text()).keys() == set(recipe.METHODS)
    assert not card.exists()
