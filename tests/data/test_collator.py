import hashlib

import pytest
import torch

from hf_contrastive.data import ContrastiveCollator, infer_text_columns, text_hash

ROWS = [
    {"anchor": "The dog chases the rabbit.", "positive": "A hound pursues a bunny.", "negative_1": "The cat sleeps."},
    {"anchor": "The chef chops onions.", "positive": "The cook dices onions in the evening.", "negative_1": "Rain."},
]
COLUMNS = ["anchor", "positive", "negative_1"]


def test_text_hash_is_blake2b_as_signed_int64():
    digest = hashlib.blake2b(b"hello", digest_size=8).digest()
    expected = int.from_bytes(digest, "little", signed=True)
    assert text_hash("hello") == expected
    assert -(2**63) <= text_hash("anything") < 2**63
    assert text_hash("a") != text_hash("a ")


def test_batch_is_column_major_and_matches_per_text_tokenization(tokenizer):
    batch = ContrastiveCollator(tokenizer, COLUMNS)(ROWS)
    texts = [row[c] for c in COLUMNS for row in ROWS]
    assert batch["input_ids"].shape[0] == 6
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    for i, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        n = len(ids)
        assert batch["input_ids"][i, :n].tolist() == ids
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    assert batch["input_ids"].shape[1] == max(len(tokenizer(t)["input_ids"]) for t in texts)
    assert batch["column_names"] == ("anchor", "positive", "negative_1")
    assert "token_type_ids" not in batch


def test_input_hashes_are_per_column_and_row(tokenizer):
    batch = ContrastiveCollator(tokenizer, COLUMNS)(ROWS)
    expected = [[text_hash(row[c]) for row in ROWS] for c in COLUMNS]
    assert batch["input_hashes"].shape == (3, 2)
    assert batch["input_hashes"].tolist() == expected


def test_truncation_to_max_length(tokenizer):
    rows = [{"anchor": "the dog " * 50, "positive": "a cat"}]
    batch = ContrastiveCollator(tokenizer, ["anchor", "positive"], max_length=8)(rows)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"][0, -1].item() == tokenizer.sep_token_id


def test_single_text_column_becomes_two_identical_views(tokenizer):
    rows = [{"text": "The dog chases the rabbit."}, {"text": "A cat sleeps."}]
    batch = ContrastiveCollator(tokenizer, ["text"])(rows)
    assert batch["column_names"] == ("anchor", "positive")
    assert batch["input_ids"].shape[0] == 4
    assert torch.equal(batch["input_ids"][:2], batch["input_ids"][2:])
    assert batch["input_hashes"].tolist() == [[text_hash(r["text"]) for r in rows]] * 2


def test_more_single_column_views(tokenizer):
    batch = ContrastiveCollator(tokenizer, ["text"], single_column_views=3)([{"text": "a dog"}])
    assert batch["column_names"] == ("anchor", "positive", "positive_2")
    assert batch["input_ids"].shape[0] == 3


def test_score_and_label_pass_through_as_float(tokenizer):
    rows = [
        {"anchor": "a dog", "positive": "a cat", "score": 4, "label": 1},
        {"anchor": "x", "positive": "y", "score": 0.5, "label": 0},
    ]
    batch = ContrastiveCollator(tokenizer, ["anchor", "positive"])(rows)
    assert batch["score"].dtype == torch.float32 and batch["score"].tolist() == [4.0, 0.5]
    assert batch["label"].tolist() == [1.0, 0.0]


def test_non_numeric_score_names_the_row(tokenizer):
    rows = [{"anchor": "a", "positive": "b", "score": 1.0}, {"anchor": "a", "positive": "b", "score": "high"}]
    with pytest.raises(ValueError, match=r"'score', row 1"):
        ContrastiveCollator(tokenizer, ["anchor", "positive"])(rows)


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"anchor": "ok"}, r"Row 1 has no column 'positive'"),
        ({"anchor": "ok", "positive": None}, r"Column 'positive', row 1: expected a string, got NoneType"),
        ({"anchor": "ok", "positive": 3}, r"Column 'positive', row 1: expected a string, got int"),
        ({"anchor": "ok", "positive": "   \n"}, r"Column 'positive', row 1: the text is empty"),
        ({"anchor": "ok", "positive": ""}, r"Column 'positive', row 1: the text is empty"),
    ],
)
def test_bad_cells_raise_naming_column_and_row(tokenizer, bad_row, message):
    rows = [{"anchor": "fine", "positive": "fine too"}, bad_row]
    with pytest.raises(ValueError, match=message):
        ContrastiveCollator(tokenizer, ["anchor", "positive"])(rows)


def test_constructor_refuses_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        ContrastiveCollator(tokenizer, [])
    with pytest.raises(ValueError, match="duplicates"):
        ContrastiveCollator(tokenizer, ["anchor", "anchor"])
    with pytest.raises(ValueError, match="single_column_views"):
        ContrastiveCollator(tokenizer, ["text"], single_column_views=1)


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["text"], ["text"]),
        (["positive", "anchor"], ["anchor", "positive"]),
        (["negative", "anchor", "positive", "id"], ["anchor", "positive", "negative"]),
        (
            ["negative_10", "negative_2", "anchor", "negative_1", "positive"],
            ["anchor", "positive", "negative_1", "negative_2", "negative_10"],
        ),
        (["text", "anchor", "positive"], ["anchor", "positive"]),
    ],
)
def test_infer_text_columns(columns, expected):
    assert infer_text_columns(columns) == expected


def test_infer_text_columns_names_found_and_expected():
    with pytest.raises(ValueError, match=r"\['sentence1', 'sentence2'\].*'text'.*'anchor' and 'positive'"):
        infer_text_columns(["sentence1", "sentence2"])
    with pytest.raises(ValueError, match="anchor"):
        infer_text_columns(["anchor", "negative_1"])
