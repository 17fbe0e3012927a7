"""label_contrast_dataset (text, label) -> (anchor, positive, negative_1..k) and the few-shot sampler."""

from collections import Counter

import pytest
from datasets import ClassLabel, Dataset, Features, Value

from hf_contrastive.data import infer_text_columns
from hf_contrastive.data.label_contrast import label_contrast_dataset, sample_few_shot

DESCRIPTIONS = {
    "sport": "a text about sport",
    "food": "a text about food",
    "money": "a text about money",
    "music": "a text about music",
}


def labelled(labels):
    return Dataset.from_dict({"text": [f"text {i}" for i in range(len(labels))], "label": list(labels)})


def test_rows_hold_text_own_description_and_distinct_other_descriptions():
    data = labelled(["sport", "food", "money", "music", "food"])
    rows = label_contrast_dataset(data, DESCRIPTIONS, num_negatives=2, seed=3)
    assert rows.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert infer_text_columns(rows.column_names) == rows.column_names
    assert rows["anchor"] == data["text"]
    assert rows["positive"] == [DESCRIPTIONS[y] for y in data["label"]]
    for row in rows:
        negatives = [row["negative_1"], row["negative_2"]]
        assert len(set(negatives)) == 2
        assert row["positive"] not in negatives
        assert set(negatives) <= set(DESCRIPTIONS.values())


def test_default_takes_every_other_label_as_negative():
    rows = label_contrast_dataset(labelled(["food", "music"]), DESCRIPTIONS)
    assert rows.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    for row in rows:
        labels = {row["positive"], row["negative_1"], row["negative_2"], row["negative_3"]}
        assert labels == set(DESCRIPTIONS.values())


def test_same_seed_same_rows_other_seed_other_negatives():
    data = labelled(["sport", "food", "money", "music"] * 10)
    first = label_contrast_dataset(data, DESCRIPTIONS, num_negatives=1, seed=0)
    again = label_contrast_dataset(data, DESCRIPTIONS, num_negatives=1, seed=0)
    other = label_contrast_dataset(data, DESCRIPTIONS, num_negatives=1, seed=1)
    assert first.to_dict() == again.to_dict()
    assert first["negative_1"] != other["negative_1"]
    assert first["positive"] == other["positive"]


def test_uniform_sampling_ignores_frequency_and_power_one_follows_it():
    labels = ["sport"] * 600 + ["food"] * 200 + ["money"] * 99 + ["music"] * 99
    data = labelled(labels)
    uniform = Counter(label_contrast_dataset(data, DESCRIPTIONS, 1, seed=0)["negative_1"][:600])
    frequency = Counter(label_contrast_dataset(data, DESCRIPTIONS, 1, seed=0, sampling_power=1.0)["negative_1"][:600])
    # Uniform: 1/3 each. Power 1: (count + 1) / sum = 201/401, 100/401, 100/401 for food, money, music.
    assert uniform["a text about food"] / 600 == pytest.approx(1 / 3, abs=0.06)
    assert frequency["a text about food"] / 600 == pytest.approx(201 / 401, abs=0.06)
    assert frequency["a text about money"] / 600 == pytest.approx(100 / 401, abs=0.06)
    assert "a text about sport" not in frequency


def test_integer_labels_of_a_class_label_column():
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    data = Dataset.from_dict({"text": ["bad film", "good film"], "label": [0, 1]}, features=features)
    rows = label_contrast_dataset(data, {0: "a negative review", 1: "a positive review"})
    assert rows["positive"] == ["a negative review", "a positive review"]
    assert rows["negative_1"] == ["a positive review", "a negative review"]


def test_other_column_names():
    data = Dataset.from_dict({"sentence": ["a", "b"], "topic": ["food", "sport"]})
    rows = label_contrast_dataset(data, DESCRIPTIONS, 1, text_column="sentence", label_column="topic")
    assert rows["anchor"] == ["a", "b"]


@pytest.mark.parametrize(
    ("labels", "descriptions", "kwargs", "message"),
    [
        (["food", "cars"], DESCRIPTIONS, {}, "Row 1: label 'cars' has no description"),
        (["food"], {"food": "same", "sport": "same"}, {}, "distinct descriptions"),
        (["food"], {"food": "x", "sport": "  "}, {}, "non-blank"),
        (["food"], {"food": "x"}, {}, "at least 2 labels"),
        (["food"], DESCRIPTIONS, {"num_negatives": 4}, "between 1 and 3"),
        (["food"], DESCRIPTIONS, {"num_negatives": 0}, "between 1 and 3"),
        (["food"], DESCRIPTIONS, {"label_column": "class"}, "Missing column"),
    ],
)
def test_bad_inputs_are_refused(labels, descriptions, kwargs, message):
    with pytest.raises(ValueError, match=message):
        label_contrast_dataset(labelled(labels), descriptions, **kwargs)


def test_few_shot_keeps_exactly_k_rows_per_label_deterministically():
    data = labelled(["sport"] * 10 + ["food"] * 5 + ["money"] * 7)
    few = sample_few_shot(data, shots_per_label=4, seed=1)
    assert Counter(few["label"]) == {"sport": 4, "food": 4, "money": 4}
    assert few.to_dict() == sample_few_shot(data, shots_per_label=4, seed=1).to_dict()
    assert few["text"] != sample_few_shot(data, shots_per_label=4, seed=2)["text"]
    rows = [int(text.split()[1]) for text in few["text"]]
    assert rows == sorted(rows)  # original order kept


def test_smaller_few_shot_set_is_a_subset_of_a_larger_one():
    data = labelled(["sport", "food", "money"] * 8)
    small = set(sample_few_shot(data, 2, seed=5)["text"])
    large = set(sample_few_shot(data, 6, seed=5)["text"])
    assert small < large


def test_few_shot_refuses_a_label_with_too_few_rows():
    with pytest.raises(ValueError, match="Label 'food' has 1 rows"):
        sample_few_shot(labelled(["sport", "sport", "food"]), shots_per_label=2)
