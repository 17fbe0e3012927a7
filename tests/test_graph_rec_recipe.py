"""A small run of recipes/graph_rec_compare.py: all three methods train on real ml-100k pairs and are scored."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "graph_rec_compare.py"


@pytest.mark.skipif(not (REPO / "../shared/data/ml-100k").is_dir(), reason="../shared/data/ml-100k not present")
def test_small_run_scores_every_method_and_leaves_the_card_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe reads ../shared/data relative to the repository root
    spec = importlib.util.spec_from_file_location("graph_rec_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        card = tmp_path / "card.md"
        results = module.main(["--small", "--output_dir", str(tmp_path), "--card", str(card)])
    finally:
        del sys.modules[spec.name]
    assert list(results) == ["ml-100k / LightGCN", "ml-100k / XSimGCL", "ml-100k / DCCF"]
    for row in results.values():
        assert 0 <= row["recall@10"] <= row["recall@20"] <= 1 and 0 < row["ndcg@20"] <= 1
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert "| ml-100k / DCCF |" in (tmp_path / "report.md").read_text()
    assert not card.exists()  # small runs never overwrite the shipped card
