"""Reranker rows: prompt rendering, checks with clear errors, group-to-pair conversion, collation and truncation."""

import pytest
import torch
from datasets import Dataset

from hf_contrastive.data.reranking import (
    DEFAULT_INSTRUCTION,
    DEFAULT_PROMPT_TEMPLATE,
    RerankerCollator,
    answer_token_id,
    check_prompt_template,
    groups_from_ranking_rows,
    groups_to_pairs,
    render_prompt,
    render_prompt_parts,
    to_trl_sft_dataset,
    validate_reranker_dataset,
)
from tests.models.test_reranker import tiny_word_tokenizer

TEMPLATE = "Instruction: {instruction}\nQuery: {query}\nDocument: {document}\nAnswer:"
GROUPS = [
    {"query": "the cat sat", "positive": "the cat sat on the mat", "negatives": ["stocks rose", "rain falls"]},
    {
        "query": "a dog",
        "positive": "a dog runs in the park",
        "negatives": ["the band played"],
        "instruction": "Match.",
    },
]


@pytest.fixture(scope="module")
def word_tokenizer():
    return tiny_word_tokenizer([TEMPLATE, "the cat sat on mat a dog runs in park stocks rose rain falls band played"])


# ------------------------------------------------------------------------ prompts
def test_render_prompt_fills_the_template_and_splits_around_the_document():
    prompt = render_prompt(TEMPLATE, "q {x}", "d", "ins", suffix="[MASK]")
    assert prompt == "Instruction: ins\nQuery: q {x}\nDocument: d\nAnswer:[MASK]"  # braces in values stay literal
    head, tail = render_prompt_parts(TEMPLATE, "ins", "q")
    assert head == "Instruction: ins\nQuery: q\nDocument: " and tail == "\nAnswer:"
    check_prompt_template(DEFAULT_PROMPT_TEMPLATE)


@pytest.mark.parametrize(
    "template, message",
    [
        ("{query} {document} {title}", r"unknown field\(s\) \['title'\]"),
        ("{query} only", "exactly once"),
        ("{document} {document} {query}", "exactly once"),
        ("{document} and {}", "unknown field"),
        ("{query} {document!r}", "no format spec or conversion"),
        ("{query {document}", "not a valid format string"),
    ],
)
def test_bad_prompt_templates_are_refused_with_the_reason(template, message):
    with pytest.raises(ValueError, match=message):
        check_prompt_template(template)


def test_answer_token_id_names_what_a_missing_token_tokenises_to(word_tokenizer):
    assert word_tokenizer.convert_ids_to_tokens(answer_token_id(word_tokenizer, "cat")) == "cat"
    with pytest.raises(ValueError, match=r"'sofa' must be a single token.*\['<unk>'\]"):
        answer_token_id(word_tokenizer, "sofa")
    with pytest.raises(ValueError, match=r"'the cat'.*\['the', 'cat'\]"):
        answer_token_id(word_tokenizer, "the cat")


# ------------------------------------------------------------------------ row checks
def test_group_rows_without_negatives_are_refused_for_contrastive_losses_naming_the_row():
    rows = Dataset.from_list([GROUPS[0], {"query": "q", "positive": "p", "negatives": []}])
    assert validate_reranker_dataset(rows) == "groups"  # SFT may train positives alone
    with pytest.raises(ValueError, match=r"Column 'negatives', row 1: the list is empty"):
        validate_reranker_dataset(rows, require_negatives=True)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"query": "q", "document": "d", "label": 2}, r"Column 'label', row 1: expected 0 or 1, got 2"),
        ({"query": "q", "document": "d", "label": True}, r"Column 'label', row 1: expected 0 or 1"),
        ({"query": " ", "document": "d", "label": 1}, r"Column 'query', row 1: expected non-blank text"),
        ({"query": "q", "document": None, "label": 0}, r"Column 'document', row 1"),
    ],
)
def test_bad_pair_rows_are_named_by_column_and_row(row, message):
    with pytest.raises(ValueError, match=message):
        validate_reranker_dataset([{"query": "q", "document": "d", "label": 1}, row])


def test_bad_negatives_are_named_by_row_and_item():
    rows = [{"query": "q", "positive": "p", "negatives": ["n", ""]}]
    with pytest.raises(ValueError, match=r"Column 'negatives', row 0, item 1: expected non-blank text"):
        validate_reranker_dataset(rows)
    with pytest.raises(ValueError, match=r"Column 'negatives', row 0: expected a list of texts, got str"):
        validate_reranker_dataset([{"query": "q", "positive": "p", "negatives": "n"}])


def test_missing_columns_are_listed_and_pairs_are_refused_for_contrastive_losses():
    with pytest.raises(ValueError, match=r"missing \['negatives'\]"):
        validate_reranker_dataset([{"query": "q", "positive": "p"}])
    with pytest.raises(ValueError, match=r"missing \['label'\]"):
        validate_reranker_dataset([{"query": "q", "document": "d"}])
    with pytest.raises(ValueError, match="needs group rows"):
        validate_reranker_dataset([{"query": "q", "document": "d", "label": 1}], require_negatives=True)
    with pytest.raises(ValueError, match="empty"):
        validate_reranker_dataset([])


# ------------------------------------------------------------------------ group -> pairs
def test_groups_to_pairs_gives_the_positive_then_each_negative_with_labels_and_instructions():
    rows = [{**GROUPS[0], "instruction": None}, GROUPS[1]]
    expected = [
        ("the cat sat", "the cat sat on the mat", 1, None),
        ("the cat sat", "stocks rose", 0, None),
        ("the cat sat", "rain falls", 0, None),
        ("a dog", "a dog runs in the park", 1, "Match."),
        ("a dog", "the band played", 0, "Match."),
    ]
    for pairs in (groups_to_pairs(rows), groups_to_pairs(Dataset.from_list(rows))):
        assert [(p["query"], p["document"], p["label"], p["instruction"]) for p in pairs] == expected
    assert isinstance(groups_to_pairs(Dataset.from_list(rows)), Dataset)
    with pytest.raises(ValueError, match="expects group rows"):
        groups_to_pairs([{"query": "q", "document": "d", "label": 1}])


# ------------------------------------------------------------------------ collator
def test_group_collation_flattens_row_major_and_masks_short_groups(word_tokenizer):
    collator = RerankerCollator(word_tokenizer, TEMPLATE, instruction="Find it.", max_length=64)
    batch = collator(GROUPS)
    assert batch["group_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["labels"].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    prompts = [
        render_prompt(TEMPLATE, "the cat sat", document, "Find it.")
        for document in ("the cat sat on the mat", "stocks rose", "rain falls")
    ] + [
        render_prompt(TEMPLATE, "a dog", document, "Match.")
        for document in ("a dog runs in the park", "the band played")
    ]
    for row, prompt in enumerate(prompts):
        ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
        assert ids.tolist() == word_tokenizer(prompt)["input_ids"]


def test_max_negatives_keeps_the_first_negatives(word_tokenizer):
    batch = RerankerCollator(word_tokenizer, TEMPLATE, max_negatives=1)(GROUPS)
    assert batch["group_mask"].shape == (2, 2) and bool(batch["group_mask"].all())
    assert batch["input_ids"].shape[0] == 4


def test_pair_collation_reads_the_labels(word_tokenizer):
    pairs = groups_to_pairs(GROUPS)
    batch = RerankerCollator(word_tokenizer, TEMPLATE)(pairs)
    assert batch["labels"].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0] and "group_mask" not in batch
    assert torch.equal(batch["input_ids"], RerankerCollator(word_tokenizer, TEMPLATE)(GROUPS)["input_ids"])


def test_collator_checks_every_row_it_builds(word_tokenizer):
    with pytest.raises(ValueError, match=r"Column 'positive', row 1"):
        RerankerCollator(word_tokenizer, TEMPLATE)([GROUPS[0], {"query": "q", "positive": "", "negatives": []}])


def test_a_long_document_loses_its_end_and_the_template_end_is_kept(word_tokenizer):
    document = " ".join(["the cat sat on the mat"] * 10)
    full = word_tokenizer(render_prompt(TEMPLATE, "a dog", document, "Find it."))["input_ids"]
    collator = RerankerCollator(word_tokenizer, TEMPLATE, instruction="Find it.", max_length=30)
    ids = collator.prompt_ids(["a dog"], [document])[0]
    tail = word_tokenizer("\nAnswer:", add_special_tokens=False)["input_ids"]
    assert len(full) > 30 and len(ids) == 30
    assert ids[-len(tail) :] == tail  # the answer position survives
    assert ids[: 30 - len(tail)] == full[: 30 - len(tail)]  # the head and the start of the document are intact


def test_truncation_keeps_the_special_tokens_of_an_encoder_tokenizer(tokenizer):
    document = " ".join(["the dog chases the rabbit in the park"] * 10)
    collator = RerankerCollator(tokenizer, TEMPLATE, "the", max_length=60, prompt_suffix=tokenizer.mask_token)
    ids = collator.prompt_ids(["the dog"], [document])[0]
    assert len(ids) == 60 and ids[0] == tokenizer.cls_token_id
    assert ids[-2:] == [tokenizer.mask_token_id, tokenizer.sep_token_id]


def test_a_prompt_too_long_even_without_its_document_is_refused(word_tokenizer):
    collator = RerankerCollator(word_tokenizer, TEMPLATE, max_length=8)
    with pytest.raises(ValueError, match=r"Row 0: the prompt without its document takes about \d+ tokens"):
        collator.prompt_ids(["the cat sat on the mat"], ["a dog runs"])


def test_collator_refuses_a_tokenizer_without_pad_token_and_bad_sizes(word_tokenizer):
    from copy import deepcopy

    no_pad = deepcopy(word_tokenizer)
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        RerankerCollator(no_pad, TEMPLATE)
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        RerankerCollator(word_tokenizer, TEMPLATE, max_length=0)


# ------------------------------------------------------------------------ trl rows
def test_trl_rows_are_prompt_completion_text_or_pretokenised_with_a_one_token_completion(word_tokenizer):
    text_rows = to_trl_sft_dataset(GROUPS, yes_token="cat", no_token="dog", prompt_template=TEMPLATE)
    assert text_rows[0] == {
        "prompt": render_prompt(TEMPLATE, "the cat sat", "the cat sat on the mat", DEFAULT_INSTRUCTION),
        "completion": "cat",
    }
    assert text_rows["completion"] == ["cat", "dog", "dog", "cat", "dog"]
    tokenised = to_trl_sft_dataset(GROUPS, "cat", "dog", TEMPLATE, tokenizer=word_tokenizer)
    prompt_ids = RerankerCollator(word_tokenizer, TEMPLATE).prompt_ids(["a dog"], ["the band played"], ["Match."])[0]
    assert tokenised[4]["input_ids"] == prompt_ids + [word_tokenizer.convert_tokens_to_ids("dog")]
    assert tokenised[4]["completion_mask"] == [0] * len(prompt_ids) + [1]


def test_groups_from_ranking_rows_pair_each_relevant_candidate_with_the_first_non_relevant_ones():
    rows = [
        {"query": "q1", "documents": ["a", "b", "c", "d", "e"], "labels": [0, 2, 0, 1, 0]},
        {"query": "q2", "documents": ["f", "g"], "labels": [0, 0]},  # no relevant candidate: no group
        {"query": "q3", "documents": ["h"], "labels": [1]},  # no non-relevant candidate: no group
    ]
    assert groups_from_ranking_rows(rows, num_negatives=2) == [
        {"query": "q1", "positive": "b", "negatives": ["a", "c"]},
        {"query": "q1", "positive": "d", "negatives": ["a", "c"]},
    ]
    with pytest.raises(ValueError, match="num_negatives must be >= 1"):
        groups_from_ranking_rows(rows, num_negatives=0)
