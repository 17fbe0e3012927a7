"""The synthetic shapes-editing set: pictures match their instructions, negatives differ, rows are seeded."""

import numpy as np
import pytest

from hf_contrastive.data.editing import validate_editing_dataset
from hf_contrastive.data.shapes import CELLS, SHAPE_COLOURS, Shape, render, shape_edit_dataset

RESOLUTION = 32


def cell_colour(image, cell: int) -> tuple[int, int, int]:
    """The pixel at the centre of ``cell``: every shape kind covers its cell's centre."""
    top, left = divmod(cell, 2)
    quarter = RESOLUTION // 4
    return image.getpixel((left * RESOLUTION // 2 + quarter, top * RESOLUTION // 2 + quarter + 2))


def parse(instruction: str) -> tuple[str, str, str | None]:
    """(edit, named shape, rest) of an instruction of the shapes world."""
    words = instruction.split()
    if words[0] == "make":
        return "recolour", " ".join(words[2:4]), words[4]
    if words[0] == "move":
        return "move", " ".join(words[2:4]), " ".join(words[6:])
    if words[0] == "add":
        return "add", " ".join(words[2:4]), " ".join(words[6:])
    return "remove", " ".join(words[2:4]), None


def test_render_draws_each_shape_in_its_cell_on_black():
    image = render([Shape("red", "circle", 0), Shape("blue", "triangle", 3)], RESOLUTION)
    assert image.mode == "RGB" and image.size == (RESOLUTION, RESOLUTION)
    assert cell_colour(image, 0) == SHAPE_COLOURS["red"] and cell_colour(image, 3) == SHAPE_COLOURS["blue"]
    assert cell_colour(image, 1) == cell_colour(image, 2) == (0, 0, 0)
    pixels = np.asarray(image)
    assert (pixels[0, 0] == 0).all()  # the circle leaves the cell's corner black, unlike a square
    assert (np.asarray(render([Shape("red", "square", 0)], RESOLUTION))[4, 4] == SHAPE_COLOURS["red"]).all()


def test_every_edited_image_shows_what_its_instruction_says():
    dataset = shape_edit_dataset(60, RESOLUTION, seed=3)
    assert set(dataset["edit"]) == {"recolour", "move", "add", "remove"}
    for row in dataset:
        edit, name, rest = parse(row["edit_prompt"])
        assert edit == row["edit"]
        colour = SHAPE_COLOURS[name.split()[0]]
        before = [cell_colour(row["input_image"], cell) for cell in range(4)]
        after = [cell_colour(row["edited_image"], cell) for cell in range(4)]
        changed = [cell for cell in range(4) if before[cell] != after[cell]]
        if edit == "recolour":
            assert len(changed) == 1 and before[changed[0]] == colour and after[changed[0]] == SHAPE_COLOURS[rest]
        elif edit == "move":
            target = CELLS.index(rest)
            (source,) = set(changed) - {target}  # two shapes may share a colour: find the one that left
            assert after[target] == colour and before[target] == (0, 0, 0)
            assert before[source] == colour and after[source] == (0, 0, 0)
        elif edit == "add":
            target = CELLS.index(rest)
            assert changed == [target] and after[target] == colour
        else:
            assert len(changed) == 1 and before[changed[0]] == colour and after[changed[0]] == (0, 0, 0)


def test_rows_follow_the_editing_contract_with_distinct_negatives_from_the_shapes_world():
    dataset = shape_edit_dataset(40, RESOLUTION, num_negatives=3, seed=0)
    validate_editing_dataset(dataset, resolution=RESOLUTION)
    words = set(SHAPE_COLOURS) | {"circle", "square", "triangle", "top", "bottom", "left", "right"}
    words |= {"make", "move", "add", "remove", "the", "a", "to", "at"}
    for row in dataset:
        negatives = row["negative_prompts"]
        assert len(negatives) == 3 and len(set(negatives)) == 3 and row["edit_prompt"] not in negatives
        assert all(set(negative.split()) <= words for negative in negatives)


def test_the_same_seed_gives_the_same_rows_and_another_seed_other_rows():
    def fingerprint(dataset):
        return [
            (row["edit_prompt"], tuple(row["negative_prompts"]), np.asarray(row["edited_image"]).tobytes())
            for row in dataset
        ]

    assert fingerprint(shape_edit_dataset(12, seed=5)) == fingerprint(shape_edit_dataset(12, seed=5))
    assert fingerprint(shape_edit_dataset(12, seed=5)) != fingerprint(shape_edit_dataset(12, seed=6))
    assert set(shape_edit_dataset(10, edits=("recolour",), seed=1)["edit"]) == {"recolour"}
    assert shape_edit_dataset(2, resolution=48)[0]["input_image"].size == (48, 48)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"edits must be a non-empty subset of .*got \['rotate'\]"):
        shape_edit_dataset(2, edits=("rotate",))
    with pytest.raises(ValueError, match="resolution must be >= 8"):
        shape_edit_dataset(2, resolution=4)
