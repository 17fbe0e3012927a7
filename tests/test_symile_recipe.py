"""Symile's XOR data (its generating rules and missingness) and a small run of recipes/symile_xor.py."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_contrastive.data.xor import (
    binary_candidates,
    candidate_index,
    stack_vectors_with_missing,
    xor_arrays,
    xor_dataset,
)

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "symile_xor.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("symile_xor", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_c_is_a_xor_b_on_the_xor_rows_and_a_elsewhere(p):
    data = xor_arrays(4000, 3, p, seed=1)
    xor_rows = data["i"] == 1
    np.testing.assert_array_equal(data["c"][xor_rows], np.logical_xor(data["a"], data["b"])[xor_rows])
    np.testing.assert_array_equal(data["c"][~xor_rows], data["a"][~xor_rows])
    assert xor_rows.mean() == pytest.approx(p, abs=0.03)
    assert data["a"].mean() == pytest.approx(0.5, abs=0.03) and data["b"].mean() == pytest.approx(0.5, abs=0.03)


def test_at_p_one_every_pair_is_independent_but_the_triple_is_not():
    data = xor_arrays(20000, 1, 1.0, seed=2)
    a, b, c = (data[m][:, 0].astype(int) for m in ("a", "b", "c"))
    for x, y in ((a, b), (a, c), (b, c)):
        joint = np.histogram2d(x, y, bins=2)[0] / len(x)
        np.testing.assert_allclose(joint, 0.25, atol=0.01)
    assert ((a ^ c) == b).all()


def test_missing_values_are_none_with_their_flags_and_the_processor_marks_them():
    dataset = xor_dataset(3000, 2, p=0.5, missing_probability=0.2, seed=3)
    for modality in ("a", "b", "c"):
        flags = np.array(dataset[f"{modality}_missing"])
        assert flags.mean() == pytest.approx(0.2, abs=0.03)
        assert all((value is None) == bool(flag) for value, flag in zip(dataset[modality], flags))
    features = stack_vectors_with_missing([[1.0, 0.0], None, [0.0, 1.0]], dim=2)
    torch.testing.assert_close(features["values"], torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
    assert features["missing"].tolist() == [0, 1, 0]
    assert stack_vectors_with_missing([None], dim=3)["values"].shape == (1, 3)  # a batch that misses every row


def test_the_same_seed_gives_the_same_data_and_bad_arguments_are_refused():
    assert xor_dataset(50, 2, 0.5, 0.1, seed=4).to_dict() == xor_dataset(50, 2, 0.5, 0.1, seed=4).to_dict()
    assert xor_dataset(50, 2, 0.5, seed=4)["a"] != xor_dataset(50, 2, 0.5, seed=5)["a"]
    with pytest.raises(ValueError, match="p \\(the probability of the XOR branch\\)"):
        xor_arrays(10, 1, 1.5, seed=0)
    with pytest.raises(ValueError, match="missing_probability"):
        xor_dataset(10, missing_probability=1.0)


def test_binary_candidates_and_their_indices_agree():
    candidates = binary_candidates(3)
    assert candidates.shape == (8, 3) and len({tuple(row) for row in candidates}) == 8
    np.testing.assert_array_equal(candidate_index(candidates), np.arange(8))


def test_small_run_shows_symile_solves_xor_where_pairwise_clip_is_at_chance(tmp_path):
    recipe = load_recipe()
    results = recipe.main(["--small", "--output", str(tmp_path / "symile-xor.md")])
    row = results["p = 1"]
    assert row["Symile"] > 0.95 and row["Symile (20% missing)"] > 0.95
    assert abs(row["pairwise CLIP"] - 0.5) < 0.05 and abs(row["pairwise CLIP (20% missing)"] - 0.5) < 0.05
    report = (tmp_path / "symile-xor.md").read_text()
    assert "python recipes/symile_xor.py --small" in report and "| p = 1 | 1.0000 |" in report
