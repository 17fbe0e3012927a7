"""recipes/sepclr_digits.py: the background / target images it builds, and a smoke run (< 30 s)."""

import importlib.util
from pathlib import Path

import numpy as np

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sepclr_digits.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("sepclr_digits", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_background_rows_are_half_textures_and_targets_add_a_digit():
    recipe = load_recipe()
    textures = [np.full((40, 40), 1.0), np.zeros((40, 40))]
    digits = np.zeros((8, 28, 28))
    digits[:, 10:18, 10:18] = 1.0
    split = recipe.build_split(8, digits, np.arange(8), textures, seed=0)
    pixels = np.stack([np.asarray(image, dtype=np.float64) / 255 for image in split["image"]])
    assert sum(split["is_target"]) == 4
    for row, (target, texture, digit) in enumerate(zip(split["is_target"], split["texture"], split["digit"])):
        base = 0.5 * (1.0 - texture)  # texture 0 is white, texture 1 black
        centre = pixels[row, 10:18, 10:18]
        assert (digit >= 0) == bool(target)
        np.testing.assert_allclose(pixels[row, :5], base, atol=1 / 255)
        np.testing.assert_allclose(centre, base + 0.5 * target, atol=1 / 255)


def test_small_run_reports_the_four_probes_of_every_method(tmp_path):
    recipe = load_recipe()
    card = tmp_path / "card.md"
    means = recipe.main(["--small", "--output-dir", str(tmp_path), "--card", str(card)])
    assert list(means) == list(recipe.objectives())
    for probes in means.values():
        assert set(probes) == set(recipe.PROBES) and all(0.0 <= value <= 1.0 for value in probes.values())
    assert "| SepCLR |" in (tmp_path / "report.md").read_text()
    assert not card.exists()
