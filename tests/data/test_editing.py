"""The editing column contract: row checks naming column and row, loading, rule-based negatives, the VLM prompts."""

import json

import numpy as np
import pytest
from datasets import Dataset
from PIL import Image

from hf_contrastive.data.editing import (
    NEGATIVE_PERTURBATIONS,
    TIMESTEP_PRIOR_GUIDE,
    RectificationPromptBuilder,
    RuleBasedNegatives,
    checked_editing_row,
    load_editing_dataset,
    validate_editing_dataset,
)


def rgb(size=(16, 16), value=0, mode="RGB") -> Image.Image:
    return Image.new(mode, size, value)


def row(**overrides):
    values = {
        "input_image": rgb(),
        "edited_image": rgb(value=(200, 0, 0)),
        "edit_prompt": "make the red circle blue",
        "negative_prompts": ["make the red circle green"],
    }
    return {**values, **overrides}


def dataset_of(rows) -> Dataset:
    return Dataset.from_list(rows)


def test_a_valid_dataset_passes_and_a_row_opens_as_rgb_images_and_texts():
    validate_editing_dataset(dataset_of([row(), row()]), resolution=16)
    checked = checked_editing_row(row(), 0, resolution=16)
    assert checked.input_image.mode == "RGB" and checked.edited_image.getpixel((0, 0)) == (200, 0, 0)
    assert checked.edit_prompt == "make the red circle blue"
    assert checked.negative_prompts == ["make the red circle green"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"input_image": "/no/such/file.png"},
            r"Column 'input_image', row 2: the image file '/no/such/file.png' does",
        ),
        ({"edited_image": b"not an image"}, r"Column 'edited_image', row 2: the 12 bytes cannot be read"),
        ({"input_image": rgb(mode="L")}, r"Column 'input_image', row 2: the image has mode 'L' but 'RGB'"),
        ({"edited_image": rgb(mode="RGBA")}, r"Column 'edited_image', row 2: the image has mode 'RGBA'"),
        ({"input_image": rgb((12, 20))}, r"Column 'input_image', row 2: the image is 12x20 pixels, smaller than"),
        (
            {"input_image": rgb((20, 16)), "edited_image": rgb((16, 20))},
            r"Row 2: 'input_image' is 20x16 pixels but 'edited_image' is 16x20",
        ),
        ({"edit_prompt": "  "}, r"Column 'edit_prompt', row 2: the text is empty"),
        ({"negative_prompts": []}, r"Column 'negative_prompts', row 2: the list of wrong instructions is empty"),
        ({"negative_prompts": ["fine", ""]}, r"Column 'negative_prompts', row 2: the text is empty"),
        ({"negative_prompts": "one string"}, r"Column 'negative_prompts', row 2: expected a list"),
    ],
)
def test_a_bad_value_is_refused_naming_its_column_and_row(bad, message):
    rows = [row(), row(), row(**bad)]
    with pytest.raises(ValueError, match=message):
        checked_editing_row(rows[2], 2, resolution=16)
    if not isinstance(bad.get("negative_prompts"), str):  # a str cell cannot share a column with list cells
        with pytest.raises(ValueError, match=message):
            validate_editing_dataset(dataset_of(rows), resolution=16)


def test_missing_columns_and_empty_datasets_are_refused():
    with pytest.raises(ValueError, match=r"no column\(s\) \['negative_prompts'\].*SUPEREDIT_COLUMNS"):
        validate_editing_dataset(Dataset.from_dict({"input_image": [], "edited_image": [], "edit_prompt": []}))
    empty = Dataset.from_dict({name: [] for name in row()})
    with pytest.raises(ValueError, match="empty"):
        validate_editing_dataset(empty)


def test_a_local_folder_with_jsonl_loads_relative_image_paths_and_renames_columns(tmp_path):
    (tmp_path / "images").mkdir()
    rgb(value=(0, 0, 255)).save(tmp_path / "images" / "a.png")
    rgb(value=(255, 0, 0)).save(tmp_path / "images" / "b.png")
    rows = [
        {"input_image": "images/a.png", "edited_image": "images/b.png", "edit_prompts": "make it red",
         "neg_prompts": ["make it green", "make it yellow"]},
        {"input_image": "images/a.png", "edited_image": "images/missing.png", "edit_prompts": "make it red",
         "neg_prompts": ["make it green"]},
    ]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    dataset = load_editing_dataset(
        str(tmp_path), column_mapping={"edit_prompts": "edit_prompt", "neg_prompts": "negative_prompts"}
    )
    assert dataset[0]["edited_image"].getpixel((3, 3)) == (255, 0, 0)
    assert dataset[0]["negative_prompts"] == ["make it green", "make it yellow"]
    validate_editing_dataset(dataset.select([0]), resolution=16)
    with pytest.raises(
        ValueError, match=r"Column 'edited_image', row 1: the image file '.*missing.png' does not exist"
    ):
        validate_editing_dataset(dataset, resolution=16)
    with pytest.raises(ValueError, match=r"column_mapping names column\(s\) \['prompt'\]"):
        load_editing_dataset(str(tmp_path), column_mapping={"prompt": "edit_prompt"})


SMALL_WORLD = RuleBasedNegatives(num_negatives=50, colours=("red", "blue", "green"), objects=("circle", "square"))


def test_rules_give_every_single_edit_by_hand():
    assert SMALL_WORLD.candidates("Make the red circle blue.") == {
        "colour": [
            "Make the blue circle blue.",
            "Make the green circle blue.",
            "Make the red circle red.",
            "Make the red circle green.",
        ],
        "object": ["Make the red square blue."],
        "colour swap": ["Make the blue circle red."],
    }
    assert SMALL_WORLD.candidates("Put two squares left of the circle") == {
        "quantity": [f"Put {n} squares left of the circle" for n in NUMBER_WORDS_AFTER_TWO],
        "position": ["Put two squares right of the circle"],
        "object": ["Put two circles left of the circle", "Put two squares left of the square"],
    }  # plural squares -> circles; "squares" and "circle" are not swapped (plural with singular)
    assert SMALL_WORLD.candidates("ADD 3 Squares") == {
        "position": ["REMOVE 3 Squares"],
        "quantity": [f"ADD {n} Squares" for n in (2, 4, 5, 6, 7, 8, 9, 10)],
        "object": ["ADD 3 Circles"],
    }


NUMBER_WORDS_AFTER_TWO = ("three", "four", "five", "six", "seven", "eight", "nine", "ten")


def test_negatives_are_distinct_never_the_instruction_and_cover_the_candidates():
    instruction = "Make the red circle blue."
    negatives = SMALL_WORLD.negatives(instruction)
    candidates = [c for texts in SMALL_WORLD.candidates(instruction).values() for c in texts]
    assert sorted(negatives) == sorted(candidates) and len(set(negatives)) == len(negatives) == 6
    few = RuleBasedNegatives(num_negatives=2, colours=("red",), objects=("circle", "square"))
    assert few.negatives("move the circle to the left") in (
        ["move the square to the left", "move the circle to the right"],
        ["move the circle to the right", "move the square to the left"],
    )  # one per rule family before a second from any family


def test_an_instruction_equal_to_a_candidate_is_dropped_and_no_rule_is_an_error():
    generator = RuleBasedNegatives(num_negatives=5, colours=("red",), objects=(), opposites=(("over", "over"),))
    with pytest.raises(ValueError, match=r"No rule applies to the instruction 'jump over it'"):
        generator.negatives("jump over it")  # its only candidate is the instruction itself
    with pytest.raises(ValueError, match="No rule applies to the instruction 'do something nice'"):
        RuleBasedNegatives().negatives("do something nice")


def test_negatives_are_seeded_by_seed_and_instruction():
    instruction = "move the two cats to the left of the tree"
    first = RuleBasedNegatives(num_negatives=4, seed=7)
    assert first.negatives(instruction) == RuleBasedNegatives(num_negatives=4, seed=7).negatives(instruction)
    assert first({"edit_prompt": instruction}) == {"negative_prompts": first.negatives(instruction)}
    outputs = {tuple(RuleBasedNegatives(num_negatives=4, seed=seed).negatives(instruction)) for seed in range(5)}
    assert len(outputs) > 1
    assert all(instruction not in negatives for negatives in outputs)


class RecordingVLM:
    """A VLM stand-in: records its calls and answers from a list of replies."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []

    def __call__(self, images, prompt):
        self.calls.append((images, prompt))
        return self.replies.pop(0)


def test_the_rectification_prompt_follows_the_timestep_prior_guide():
    builder = RectificationPromptBuilder(vlm=RecordingVLM([]), max_words=20)
    prompt = builder.rectification_prompt("turn the cat into a dog")
    assert '"turn the cat into a dog"' in prompt and "at most 20 words" in prompt
    positions = [prompt.index(f"{number}. {category.name.capitalize()}") for number, category in
                 enumerate(TIMESTEP_PRIOR_GUIDE, start=1)]  # fmt: skip
    assert positions == sorted(positions)
    for category in TIMESTEP_PRIOR_GUIDE:
        assert f"({category.stage}): {category.changes}." in prompt
    assert "early denoising steps" in prompt and "every denoising step" in prompt
    negatives_prompt = RectificationPromptBuilder(vlm=RecordingVLM([]), num_negatives=4).negatives_prompt("x y")
    assert "Write 4 wrong editing instructions" in negatives_prompt and '"x y"' in negatives_prompt
    assert all(perturbation in negatives_prompt for perturbation in NEGATIVE_PERTURBATIONS)


def test_the_builder_rectifies_then_asks_for_negatives_and_parses_the_replies():
    vlm = RecordingVLM(
        [
            'Instruction: "Turn the cat into a brown dog."',
            "1. Turn the cat into a black dog.\n- Turn the cat into a brown dog\n\n2) Turn the cat into a bird.\n"
            "3. turn the cat into a black dog.\n4. Turn the dog into a cat.",
        ]
    )
    builder = RectificationPromptBuilder(vlm=vlm, num_negatives=2)
    images = [rgb(value=(1, 2, 3)), rgb(value=(4, 5, 6))]
    result = builder({"input_image": images[0], "edited_image": images[1], "edit_prompt": "make a dog"})
    assert result == {
        "edit_prompt": "Turn the cat into a brown dog.",
        "negative_prompts": ["Turn the cat into a black dog.", "Turn the cat into a bird."],
    }  # the positive itself and a case-only duplicate are dropped, then the first two are kept
    (first_images, first_prompt), (_, second_prompt) = vlm.calls
    assert [image.getpixel((0, 0)) for image in first_images] == [(1, 2, 3), (4, 5, 6)]
    assert '"make a dog"' in first_prompt and '"Turn the cat into a brown dog."' in second_prompt


def test_the_builder_falls_back_or_names_the_reply_when_the_vlm_gives_no_negative():
    images = {"input_image": rgb(), "edited_image": rgb(), "edit_prompt": "make the red circle blue"}
    fallback = RuleBasedNegatives(num_negatives=2)
    builder = RectificationPromptBuilder(vlm=RecordingVLM(["make the red circle blue"]), rectify=False,
                                         fallback=fallback.negatives)  # fmt: skip
    assert builder(images)["negative_prompts"] == fallback.negatives("make the red circle blue")
    silent = RectificationPromptBuilder(vlm=RecordingVLM(["\n"]), rectify=False)
    with pytest.raises(ValueError, match=r"wrote no usable wrong instruction for 'make the red circle blue'"):
        silent(images)


def test_an_image_array_of_the_wrong_layout_is_refused_with_its_row():
    with pytest.raises(ValueError, match=r"Column 'input_image', row 4: an image array must be uint8"):
        checked_editing_row(row(input_image=np.zeros((16, 16, 2), dtype=np.uint8)), 4)
