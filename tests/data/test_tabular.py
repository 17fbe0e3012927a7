"""Tabular loaders on the real files in ../shared/data, and the seeded vector views (noise, masking, SCARF)."""

from pathlib import Path

import numpy as np
import pytest

from hf_contrastive.data.tabular import (
    Compose,
    FeatureMask,
    GaussianNoise,
    ScarfCorruption,
    load_abalone,
    load_breast_cancer,
    load_digits_vectors,
    standardize,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_digits_load_as_64_dimensional_vectors_in_unit_range():
    digits = load_digits_vectors(DATA / "sklearn-bundled" / "digits.csv.gz")
    assert len(digits) == 1797
    x = np.array(digits["x"])
    assert x.shape == (1797, 64) and x.min() == 0.0 and x.max() == 1.0
    assert sorted(set(digits["label"])) == list(range(10))
    assert digits[0]["x"][:6] == pytest.approx([0, 0, 5 / 16, 13 / 16, 9 / 16, 1 / 16])  # first row of the file


def test_breast_cancer_skips_the_count_line():
    table = load_breast_cancer(DATA / "sklearn-bundled" / "breast_cancer.csv")
    assert len(table) == 569 and len(table[0]["x"]) == 30
    assert table[0]["x"][0] == pytest.approx(17.99) and table[0]["label"] == 0
    assert sorted(set(table["label"])) == [0, 1]


def test_abalone_one_hot_sex_and_float_rings():
    abalone = load_abalone(DATA / "abalone" / "abalone.data")
    assert len(abalone) == 4177
    first = abalone[0]  # M,0.455,0.365,0.095,0.514,0.2245,0.101,0.15,15
    assert first["x"] == pytest.approx([1, 0, 0, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15])
    assert first["label"] == 15.0 and isinstance(first["label"], float)


def test_a_malformed_table_is_refused_with_the_row(tmp_path):
    path = tmp_path / "abalone.data"
    path.write_text("sex,length,diameter,height,w,s,v,sh,rings\nM,1,1,1,1,1,1,1,3\nX,1,1,1,1,1,1,1,3\n")
    with pytest.raises(ValueError, match="row 3"):
        load_abalone(path)


def test_standardize_uses_train_statistics_only():
    train = np.array([[0.0, 5.0], [2.0, 5.0]])
    test = np.array([[4.0, 6.0]])
    train_z, test_z = standardize(train, test)
    assert train_z.tolist() == [[-1.0, 0.0], [1.0, 0.0]]  # constant column: centred only
    assert test_z.tolist() == [[3.0, 1.0]]


def test_gaussian_noise_is_seeded_and_has_the_requested_spread():
    x = np.zeros(20000, dtype=np.float32)
    first, again = GaussianNoise(0.5, seed=3)(x), GaussianNoise(0.5, seed=3)(x)
    assert np.array_equal(first, again)
    assert first.std() == pytest.approx(0.5, rel=0.03)
    assert not np.array_equal(first, GaussianNoise(0.5, seed=4)(x))


def test_feature_mask_fills_about_rate_of_the_features():
    x = np.ones(20000, dtype=np.float32)
    masked = FeatureMask(rate=0.3, fill=-1.0, seed=0)(x)
    assert set(np.unique(masked)) == {-1.0, 1.0}
    assert (masked == -1.0).mean() == pytest.approx(0.3, abs=0.02)
    assert np.array_equal(FeatureMask(rate=0.0)(x), x)


def test_scarf_draws_replacements_from_each_columns_marginal():
    # Column j of the table only holds values 10*j + {1, 2}: a replaced feature must come from its own column.
    table = np.array([[1.0, 11.0, 21.0], [2.0, 12.0, 22.0]])
    scarf = ScarfCorruption(table, rate=1.0, seed=0)
    for _ in range(20):
        row = scarf(np.zeros(3))
        assert all(row[j] in (10 * j + 1, 10 * j + 2) for j in range(3))
    untouched = ScarfCorruption(table, rate=0.0)(np.array([5.0, 6.0, 7.0]))
    assert untouched.tolist() == [5.0, 6.0, 7.0]
    with pytest.raises(ValueError, match="table has 3"):
        scarf(np.zeros(2))


def test_compose_applies_transforms_in_order():
    view = Compose([FeatureMask(rate=1.0, fill=2.0), lambda v: v * 3])
    assert view(np.zeros(2)).tolist() == [6.0, 6.0]


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="rate"):
        FeatureMask(rate=1.5)
    with pytest.raises(ValueError, match="std"):
        GaussianNoise(std=-1)
    with pytest.raises(ValueError, match="1-D vector"):
        GaussianNoise()(np.zeros((2, 2)))
