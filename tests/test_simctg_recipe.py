"""Smoke run of recipes/simctg_wiki.py on a slice of the wiki sentences: three tiny models, every decoder, the table."""

import importlib.util
import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "simctg_wiki.py"
DATA = REPO.parent / "shared" / "data" / "wiki-sentences" / "wiki1m_first11914.txt"
TINY = [
    "--data", str(DATA), "--max-lines", "200", "--steps", "2", "--layers", "1", "--hidden", "32", "--heads", "2",
    "--vocab-size", "300", "--block", "32", "--prompts", "3", "--prefix-tokens", "8", "--new-tokens", "6",
    "--batch-size", "4",
]  # fmt: skip


def load_recipe():
    spec = importlib.util.spec_from_file_location("simctg_wiki", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_trains_both_models_and_tabulates_every_decoder(tmp_path, capsys):
    recipe = load_recipe()
    card = tmp_path / "cards" / "simctg-wiki.md"
    results = recipe.main([*TINY, "--output-dir", str(tmp_path), "--card", str(card)])
    printed = capsys.readouterr().out

    assert set(results["models"]) == {"mle", "simctg"}
    assert set(results["generations"]) == {f"{m}/{d}" for m in recipe.MODELS for d in recipe.DECODERS}
    for values in results["models"].values():
        assert values["heldout_perplexity"] > 1 and 0 < values["isotropy"] <= 1
    for values in results["generations"].values():
        assert all(math.isfinite(values[key]) for key in ("rep-2", "diversity", "coherence"))
        assert values["coherence"] < 0 and values["example"]
    report = (tmp_path / "report.md").read_text()
    table = recipe.report(results)
    assert table.count("| contrastive |") == 2 and table in printed and table in report and "How to read it" in report
    assert card.read_text() == report and "--max-lines 200" in report  # the card names the command that made it
    assert json.loads((tmp_path / "results.json").read_text())["models"] == results["models"]
    assert (tmp_path / "simctg" / "model.safetensors").exists()  # each trained model is saved
    model_card = (tmp_path / "simctg" / "README.md").read_text()  # with its numbers as evaluation results
    perplexity = results["models"]["simctg"]["heldout_perplexity"]
    assert "pipeline_tag: text-generation" in model_card and f"{perplexity:.4f}" in model_card


def test_blocks_keep_article_order_and_tokenizer_round_trips(tmp_path):
    recipe = load_recipe()
    lines = recipe.read_lines(str(DATA), 50)
    tokenizer = recipe.train_tokenizer(lines, 300)
    blocks = recipe.token_blocks(lines, tokenizer, 16)
    assert all(len(block) == 16 for block in blocks)
    assert tokenizer.decode(sum(blocks, [])) == " ".join(lines)[: len(tokenizer.decode(sum(blocks, [])))]
