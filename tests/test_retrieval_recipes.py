"""The retrieval recipes end to end on a small slice of SciFact with the real all-MiniLM-L6-v2 weights (offline)."""

import importlib.util
import json
from pathlib import Path

import pytest

from hf_contrastive import ContrastiveEncoder
from hf_contrastive.models.reranker import AnswerTokenReranker

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "../shared/data"
SLICE = ["--dataset", "scifact", "--data-dir", str(DATA), "--max-queries", "40", "--max-corpus", "160"]
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_data
def test_retrieval_recipe_scores_three_models_in_two_regimes_and_saves_reloadable_models_with_cards(tmp_path):
    recipe = load_recipe("retrieval_ranking")
    results = recipe.main(
        [*SLICE, "--output-dir", str(tmp_path), "--max-length", "48", "--infonce-batch-size", "8", "--infonce-epochs",
         "1", "--pgrank-epochs", "1", "--num-candidates", "6", "--rerank-candidates", "20", "--eval-batch-size", "64"]
    )  # fmt: skip
    assert list(results) == ["untrained", "infonce", "pgrank (from infonce)"]
    for metrics in results.values():
        assert set(metrics) == {f"{p}_{m}" for p in ("retrieval", "rerank") for m in recipe.METRICS}
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
        # Dev candidates hold every relevant document, so re-ranking recall@100 is complete.
        assert metrics["rerank_recall@100"] == 1.0
    # Training moved the model: the three rows differ (a frozen model would repeat the untrained row).
    assert results["infonce"] != results["untrained"] and results["pgrank (from infonce)"] != results["infonce"]
    saved = json.loads((tmp_path / "results.json").read_text())["results"]
    assert saved == results  # JSON keeps floats exactly
    card = (tmp_path / "pgrank" / "README.md").read_text()
    assert "plackett_luce" in card and "information-retrieval" in card and "re-ranking the untrained" in card
    assert "| Before |" in card and "after InfoNCE" in card
    reloaded = ContrastiveEncoder.load(str(tmp_path / "pgrank"))
    assert reloaded.config.training_objective == "plackett_luce"


@needs_data
def test_reranker_recipe_trains_sft_and_contrastive_rerankers_on_the_same_groups(tmp_path):
    recipe = load_recipe("reranker_sft_vs_cl")
    results = recipe.main(
        [*SLICE, "--output-dir", str(tmp_path), "--max-length", "96", "--num-candidates", "6", "--num-negatives",
         "3", "--rerank-depth", "10", "--epochs", "1", "--batch-size", "4", "--eval-batch-size", "64"]
    )  # fmt: skip
    assert list(results) == ["first stage (retriever order)", "sft", "contrastive"]
    assert all(0.0 <= value <= 1.0 for metrics in results.values() for value in metrics.values())
    sft = AnswerTokenReranker.from_pretrained(str(tmp_path / "sft"))
    contrastive = AnswerTokenReranker.from_pretrained(str(tmp_path / "contrastive"))
    assert (sft.settings.score, contrastive.settings.score) == ("sft", "yes_logit")  # never sigmoid for CL
    card = (tmp_path / "contrastive" / "README.md").read_text()
    assert "z_yes" in card or "yes_logit" in card
    assert "Reranking" in card and "the retriever's top 10 + gold" in card and "| Before |" in card
