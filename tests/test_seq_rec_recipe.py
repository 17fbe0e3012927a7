"""A small run of recipes/seq_rec_compare.py: SASRec, CL4SRec and MCLRec train on real Beauty sequences."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "seq_rec_compare.py"


@pytest.mark.skipif(not (REPO / "../shared/data/seqrec-amazon").is_dir(), reason="../shared/data/seqrec-amazon absent")
def test_small_run_scores_every_method_and_leaves_the_card_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe reads ../shared/data relative to the repository root
    spec = importlib.util.spec_from_file_location("seq_rec_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        card = tmp_path / "card.md"
        results = module.main(["--small", "--output_dir", str(tmp_path), "--card", str(card)])
    finally:
        del sys.modules[spec.name]
    assert list(results) == ["Beauty / SASRec", "Beauty / CL4SRec", "Beauty / MCLRec"]
    for row in results.values():
        assert 0 <= row["hr@10"] <= row["hr@20"] <= 1 and 0 <= row["ndcg@20"] <= row["hr@20"]
        assert row["train s"] > 0
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert not card.exists()  # small runs never overwrite the shipped card
