"""The MNIST digit-segmentation set (class layout, seeding) and the row checks / collator of segmentation data."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_contrastive.data.images import load_mnist
from hf_contrastive.data.segmentation import (
    DIGIT_CLASS_NAMES,
    IGNORE_INDEX,
    SEGMENTATION_FEATURES,
    SegmentationCollator,
    check_segmentation_dataset,
    check_segmentation_row,
    digit_canvases,
)

MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist-test"


@pytest.fixture(scope="module")
def digits():
    return load_mnist(MNIST, limit=60)


def test_class_layout_is_background_then_the_ten_digits():
    assert len(DIGIT_CLASS_NAMES) == 11
    assert DIGIT_CLASS_NAMES[0] == "background" and DIGIT_CLASS_NAMES[8] == "seven"


def test_one_digit_canvas_labels_its_stroke_its_edge_and_the_background(digits):
    digit = digits.select([0])  # every canvas pastes this one digit
    pixels, label = np.asarray(digit[0]["image"]), digit[0]["label"]
    rows = digit_canvases(digit, count=4, canvas_size=40, max_digits=1, threshold=128, edge_low=32, seed=3)
    for row in rows:
        image, mask = np.asarray(row["image"]), np.asarray(row["label"])
        assert image.shape == mask.shape == (40, 40)
        assert set(np.unique(mask)) == {0, 1 + label, IGNORE_INDEX}
        assert np.array_equal(mask == 0, image < 32)
        assert np.array_equal(mask == IGNORE_INDEX, (image >= 32) & (image < 128))
        assert np.array_equal(mask == 1 + label, image >= 128)
        assert (mask == 1 + label).sum() == (pixels >= 128).sum() and image.sum() == pixels.astype(int).sum()


def test_canvases_are_seeded_and_hold_up_to_max_digits(digits):
    first = digit_canvases(digits, count=8, canvas_size=56, max_digits=3, seed=1)
    again = digit_canvases(digits, count=8, canvas_size=56, max_digits=3, seed=1)
    other = digit_canvases(digits, count=8, canvas_size=56, max_digits=3, seed=2)
    masks = [np.asarray(m) for m in first["label"]]
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(masks, again["label"]))
    assert not all(np.array_equal(a, np.asarray(b)) for a, b in zip(masks, other["label"]))
    assert all(len(set(np.unique(m)) - {0, IGNORE_INDEX}) <= 3 for m in masks)
    assert any(len(set(np.unique(m)) - {0, IGNORE_INDEX}) >= 2 for m in masks)
    no_edges = digit_canvases(digits, count=4, canvas_size=56, edge_low=None, seed=1)
    assert all(IGNORE_INDEX not in np.asarray(m) for m in no_edges["label"])


def test_bad_canvas_arguments_are_refused(digits):
    with pytest.raises(ValueError, match="smaller than a digit"):
        digit_canvases(digits, count=1, canvas_size=20)
    with pytest.raises(ValueError, match="edge_low <= threshold"):
        digit_canvases(digits, count=1, threshold=100, edge_low=120)


def _rows(images, masks):
    return Dataset.from_dict({"image": images, "label": masks}, features=SEGMENTATION_FEATURES)


def test_collator_normalises_pixels_and_keeps_masks_aligned():
    image = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    mask = np.array([[0, 1], [IGNORE_INDEX, 2]], dtype=np.uint8)
    batch = SegmentationCollator(3, image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.5, 1.0))(
        list(_rows([image], [mask]))
    )
    assert batch["pixel_values"].shape == (1, 3, 2, 2) and batch["labels"].dtype == torch.int64
    expected = (torch.tensor([[0, 1.0], [0.2, 0.4]]) - 0.5) / torch.tensor([0.25, 0.5, 1.0]).view(3, 1, 1)
    torch.testing.assert_close(batch["pixel_values"][0], expected)
    assert batch["labels"][0].tolist() == [[0, 1], [IGNORE_INDEX, 2]]


def test_mask_of_another_size_is_refused_naming_the_row():
    rows = _rows([np.zeros((4, 4), np.uint8)] * 2, [np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8)])
    with pytest.raises(ValueError, match=r"Row 1: image 'image' is 4x4 but its mask 'label' is 4x5"):
        check_segmentation_dataset(rows, num_classes=3)


def test_mask_values_out_of_range_are_refused_naming_the_row_and_the_ids():
    rows = _rows([np.zeros((3, 3), np.uint8)] * 3, [np.zeros((3, 3), np.uint8)] * 2 + [np.full((3, 3), 11, np.uint8)])
    with pytest.raises(ValueError, match=r"Row 2: mask 'label' holds class ids \[11\], outside \[0, 11\)"):
        check_segmentation_dataset(rows, num_classes=11)
    check_segmentation_row({"image": np.zeros((3, 3), np.uint8), "label": np.full((3, 3), 255)}, 0, num_classes=11)


def test_missing_or_unreadable_image_and_wrong_size_are_refused():
    mask = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match=r"Row 0 has no 'image' value"):
        check_segmentation_row({"label": mask}, 0, num_classes=2)
    with pytest.raises(ValueError, match=r"Column 'image', row 5: .*cannot be read as an image"):
        check_segmentation_row({"image": b"not a png", "label": mask}, 5, num_classes=2)
    with pytest.raises(ValueError, match=r"Row 0: image 'image' is 4x4, expected 8x8"):
        check_segmentation_row({"image": mask, "label": mask}, 0, num_classes=2, image_size=(8, 8))
    with pytest.raises(ValueError, match="must share a size"):
        SegmentationCollator(2)(
            [{"image": mask, "label": mask}, {"image": np.zeros((2, 2), np.uint8), "label": mask[:2, :2]}]
        )


def test_rows_read_from_png_bytes_paths_and_int_arrays(tmp_path):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((3, 3), 7, np.uint8)).save(buffer, format="PNG")
    path = tmp_path / "mask.png"
    Image.fromarray(np.ones((3, 3), np.uint8)).save(path)
    image, mask = check_segmentation_row({"image": buffer.getvalue(), "label": str(path)}, 0, num_classes=2)
    assert image.shape == (3, 3, 3) and int(image[0, 0, 0]) == 7 and mask.tolist() == [[1] * 3] * 3
    _, mask = check_segmentation_row({"image": image, "label": torch.zeros(3, 3, dtype=torch.long)}, 0, num_classes=2)
    assert mask.dtype == np.int64
