"""Semantic-segmentation rows: a real-data digit-segmentation set built from MNIST, row checks and the collator.

No segmentation data exists offline, so :func:`digit_canvases` pastes 1..``max_digits`` MNIST digits at random
positions on a black ``canvas_size`` x ``canvas_size`` canvas and labels every pixel:

- class layout, K = 11 (:data:`DIGIT_CLASS_NAMES`): 0 = background, ``1 + d`` = digit ``d`` (so "one" is class 2);
- a pixel is digit ``d`` where that digit's grey value is >= ``threshold`` (128 of 255);
- the anti-aliased stroke edge (grey value in ``[edge_low, threshold)``) is ``IGNORE_INDEX`` (255): whether such a
  pixel is "digit" is a matter of taste, so it is neither rewarded nor punished (``edge_low=None``: edge pixels
  are background);
- overlapping digits: the image is the pixel-wise maximum and a later digit's stroke (and edge) overwrites an
  earlier one's label.

Rows are ``{"image": PIL "L", "label": PIL "L" mask}`` (the ``scene_parse_150`` layout: the mask is an image of
class ids). :func:`check_segmentation_dataset` and :class:`SegmentationCollator` refuse rows whose image is missing
or unreadable, whose mask is not H x W like its image, or whose mask holds ids outside ``[0, K)`` and
``ignore_index``, naming the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Features, Image

from .images import DIGIT_WORDS
from .multimodal import load_image

IGNORE_INDEX = 255
DIGIT_CLASS_NAMES = ("background", *DIGIT_WORDS)
SEGMENTATION_FEATURES = Features({"image": Image(), "label": Image()})


def digit_canvases(
    digits: Dataset,
    count: int,
    canvas_size: int = 56,
    max_digits: int = 3,
    threshold: int = 128,
    edge_low: int | None = 32,
    seed: int = 0,
) -> Dataset:
    """``count`` canvases with 1..``max_digits`` digits of ``digits`` (``{"image", "label"}`` rows) and their masks.

    Seeded: the same arguments give the same rows. See the module docstring for the class layout.
    """
    images = np.stack([np.asarray(image.convert("L"), dtype=np.uint8) for image in digits["image"]])
    labels = np.asarray(digits["label"], dtype=np.int64)
    digit_size = images.shape[1]
    if canvas_size < digit_size:
        raise ValueError(f"canvas_size {canvas_size} is smaller than a digit ({digit_size} pixels).")
    if not 0 < threshold <= 255 or (edge_low is not None and not 0 < edge_low <= threshold):
        raise ValueError(f"Need 0 < edge_low <= threshold <= 255, got edge_low={edge_low}, threshold={threshold}.")
    rng = np.random.default_rng(seed)
    rows = {"image": [], "label": []}
    for _ in range(count):
        canvas = np.zeros((canvas_size, canvas_size), dtype=np.uint8)
        mask = np.zeros_like(canvas)
        for index in rng.choice(len(images), size=rng.integers(1, max_digits + 1)):
            top, left = rng.integers(0, canvas_size - digit_size + 1, size=2)
            window = (slice(top, top + digit_size), slice(left, left + digit_size))
            _paste_digit(canvas[window], mask[window], images[index], int(labels[index]) + 1, threshold, edge_low)
        rows["image"].append(canvas)
        rows["label"].append(mask)
    return Dataset.from_dict(rows, features=SEGMENTATION_FEATURES)


def _paste_digit(
    canvas: np.ndarray, mask: np.ndarray, digit: np.ndarray, class_id: int, threshold: int, edge_low: int | None
) -> None:
    """Draw ``digit`` into the canvas window (pixel-wise max) and label its stroke (and edge) in the mask window."""
    np.maximum(canvas, digit, out=canvas)
    if edge_low is not None:
        mask[(digit >= edge_low) & (digit < threshold)] = IGNORE_INDEX
    mask[digit >= threshold] = class_id


# ----------------------------------------------------------------------------------------------- row checks
def _mask_array(value: Any, column: str, row: int) -> np.ndarray:
    """A mask value as an array: integer arrays and tensors as they are, anything else opened as an image."""
    if isinstance(value, torch.Tensor):
        value = value.numpy()
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.integer):
        return value
    return np.asarray(load_image(value, column, row))


def check_segmentation_row(
    row: dict,
    index: int,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    image_column: str = "image",
    mask_column: str = "label",
    image_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The row's image as H x W x 3 uint8 and its mask as H x W int64, or a ValueError naming row ``index``.

    Checked: both columns present and readable, mask 2-D with the image's H x W (and ``image_size`` when given),
    mask ids in ``[0, num_classes)`` or ``ignore_index``.
    """
    for column in (image_column, mask_column):
        if column not in row or row[column] is None:
            raise ValueError(f"Row {index} has no {column!r} value; the row's columns are {sorted(row)}.")
    image = np.asarray(load_image(row[image_column], image_column, index).convert("RGB"))
    mask = _mask_array(row[mask_column], mask_column, index)
    if mask.ndim != 2:
        raise ValueError(f"Row {index}: the {mask_column!r} mask must be H x W class ids, got shape {mask.shape}.")
    if image.shape[:2] != mask.shape:
        raise ValueError(
            f"Row {index}: image {image_column!r} is {image.shape[0]}x{image.shape[1]} but its mask {mask_column!r} "
            f"is {mask.shape[0]}x{mask.shape[1]}; they must have the same size."
        )
    if image_size is not None and image.shape[:2] != tuple(image_size):
        raise ValueError(
            f"Row {index}: image {image_column!r} is {image.shape[0]}x{image.shape[1]}, expected "
            f"{image_size[0]}x{image_size[1]}."
        )
    mask = mask.astype(np.int64)
    bad = (mask != ignore_index) & ((mask < 0) | (mask >= num_classes))
    if bad.any():
        raise ValueError(
            f"Row {index}: mask {mask_column!r} holds class ids {sorted(set(mask[bad].tolist()))[:5]}, outside "
            f"[0, {num_classes}) and ignore_index {ignore_index}."
        )
    return image, mask


def check_segmentation_dataset(dataset: Dataset, num_classes: int, **row_checks) -> None:
    """Check every row with :func:`check_segmentation_row` (one pass that decodes every image) before training."""
    for index, row in enumerate(dataset):
        check_segmentation_row(row, index, num_classes, **row_checks)


class SegmentationCollator:
    """Rows ``{image, mask}`` -> ``{"pixel_values": [B, 3, H, W] float, "labels": [B, H, W] int64}``.

    Pixels are scaled to [0, 1] and normalised per channel with ``image_mean`` / ``image_std`` (the CLIP image
    processor's); images are not resized, so mask and image stay aligned (use crops or resize ahead of time). Every
    row is checked (:func:`check_segmentation_row`); all images of a batch must have one size.
    """

    def __init__(
        self,
        num_classes: int,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        ignore_index: int = IGNORE_INDEX,
        image_column: str = "image",
        mask_column: str = "label",
        image_size: tuple[int, int] | None = None,
    ):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.row_checks = {
            "ignore_index": ignore_index,
            "image_column": image_column,
            "mask_column": mask_column,
            "image_size": image_size,
        }
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        checked = [check_segmentation_row(row, i, self.num_classes, **self.row_checks) for i, row in enumerate(rows)]
        sizes = {image.shape[:2] for image, _ in checked}
        if len(sizes) > 1:
            raise ValueError(f"Images of one batch must share a size; this batch has {sorted(sizes)}.")
        images = torch.from_numpy(np.stack([image for image, _ in checked])).permute(0, 3, 1, 2).float() / 255.0
        return {
            "pixel_values": (images - self.image_mean) / self.image_std,
            "labels": torch.from_numpy(np.stack([mask for _, mask in checked])),
        }
