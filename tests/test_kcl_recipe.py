"""recipes/kcl_moleculenet.py: leakage-free pre-training pool, the linear protocol, and a smoke run (< 30 s)."""

import importlib.util
import math
from pathlib import Path

import numpy as np

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "kcl_moleculenet.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("kcl_moleculenet", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretraining_pool_holds_no_test_molecule_and_every_other_one_once():
    recipe = load_recipe()
    tasks = recipe.load_tasks(recipe.parse_args(["--max-molecules", "120"]))
    pool = recipe.pretraining_smiles(tasks)
    test_molecules = {table.smiles[i] for table, splits in tasks.values() for i in splits[2]}
    every = {s for table, _ in tasks.values() for s in table.smiles}
    assert len(pool) == len(set(pool)) and set(pool) == every - test_molecules


def test_linear_protocol_scores_a_separable_task_perfectly_and_skips_one_class_tasks():
    recipe = load_recipe()
    from hf_contrastive.data.molecules import MoleculeTable

    labels = np.array([[0, 1], [1, 1], [0, 1], [1, 1], [0, np.nan], [1, 1], [0, 1], [1, 1]], dtype=float)
    table = MoleculeTable(["C"] * 8, labels, ["a", "b"], "classification")
    features = labels[:, :1] * 2 - 1 + np.random.default_rng(0).normal(0, 0.1, (8, 3))
    assert recipe.linear_protocol_roc_auc(features, table, ([0, 1, 2, 3], [], [4, 5, 6, 7])) == 1.0


def test_small_run_reports_every_method_encoder_and_data_set(tmp_path):
    recipe = load_recipe()
    card = tmp_path / "card.md"
    means = recipe.main(["--small", "--output-dir", str(tmp_path), "--card", str(card)])
    assert set(means) == {f"{m} ({e})" for m in recipe.METHODS for e in recipe.ENCODERS}
    for scores in means.values():
        assert set(scores) == set(recipe.DATASETS)
        assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in scores.values())
        assert not math.isnan(scores["bbbp"])
    assert "| KCL (GCN) |" in (tmp_path / "report.md").read_text()
    assert not card.exists()
