"""Collate image, text and vector columns (and augmented views of them) for the ``MultiModalTrainer``.

Column contract: one dataset column per input role. A column whose name starts with ``image`` holds images (PIL
images, file paths, encoded bytes, ``datasets.Image`` values, or ``H x W [x C]`` uint8 arrays); one starting with
``text`` holds strings; any other name (``a``, ``b``, ...) holds what its processor accepts (e.g. float vectors).
A *view* (``image_view_1``) is a per-row transform of a source column, processed like its source.

========================  ===============================================================================
collated batch key        value
========================  ===============================================================================
``features[column]``      the column's processor output, e.g. ``{"pixel_values": [B, 3, H, W]}`` or
                          ``{"input_ids": [B, L], "attention_mask": [B, L]}``
``labels``                ``[B]`` labels (only with ``label_column``): classes or regression targets
========================  ===============================================================================

Bad values fail before training (:func:`validate_multimodal_dataset` on a sample of rows) and again, lazily, for
every row the collator sees, with the same message naming the column and the row.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .collator import _checked_text

Processor = Callable[[list[Any]], dict[str, torch.Tensor]]
View = tuple[str, Callable[[Any], Any]]  # (source column, per-row transform)

IMAGE_PREFIX = "image"
TEXT_PREFIX = "text"


def is_image_column(column: str) -> bool:
    return column.startswith(IMAGE_PREFIX)


def is_text_column(column: str) -> bool:
    return column.startswith(TEXT_PREFIX)


def load_image(value: Any, column: str, row: int) -> Image.Image:
    """Open one image value as a PIL image, or raise a ValueError naming ``column`` and ``row`` and the cause.

    Accepts a PIL image, a file path, encoded bytes, a ``datasets.Image`` dict (``{"bytes", "path"}``) or an
    ``H x W`` / ``H x W x C`` (C in 1, 3, 4) uint8 array or tensor.
    """
    where = f"Column {column!r}, row {row}"
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, torch.Tensor):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return _image_from_array(value, where)
    if isinstance(value, str | os.PathLike):
        if not os.path.isfile(value):
            raise ValueError(f"{where}: the image file {str(value)!r} does not exist.")
        return _decode(value, where, f"the file {str(value)!r}")
    if isinstance(value, bytes | bytearray):
        return _decode(io.BytesIO(value), where, f"the {len(value)} bytes")
    raise ValueError(
        f"{where}: expected an image (PIL image, file path, encoded bytes or an HxW[xC] uint8 array), "
        f"got {type(value).__name__}."
    )


def _decode(source, where: str, what: str) -> Image.Image:
    try:
        image = Image.open(source)
        image.load()  # decode now: a truncated file fails here, not inside the processor
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{where}: {what} cannot be read as an image ({error}).") from None
    return image


def _image_from_array(array: np.ndarray, where: str) -> Image.Image:
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(
            f"{where}: an image array must be uint8 of shape HxW or HxWxC with C in (1, 3, 4), got {array.dtype} "
            f"of shape {tuple(array.shape)}."
        )
    return Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)


def check_image_size(image: Image.Image, image_size: int | None, column: str, row: int) -> None:
    """Raise when a fixed ``image_size`` x ``image_size`` input is required and ``image`` has another size."""
    if image_size is not None and image.size != (image_size, image_size):
        width, height = image.size
        raise ValueError(
            f"Column {column!r}, row {row}: the image is {width}x{height} pixels but {image_size}x{image_size} is "
            "required (image_size: the model's input size, with a processor that does not resize). Resize the "
            "images, or use an image processor that resizes and leave image_size unset."
        )


def checked_value(row: Mapping[str, Any], column: str, index: int, image_size: int | None = None) -> Any:
    """``row[column]``, opened and checked for its modality (image: readable, of ``image_size``; text: non-blank)."""
    if column not in row:
        raise ValueError(f"Row {index} has no column {column!r}; it has {sorted(row)}.")
    if is_image_column(column):
        image = load_image(row[column], column, index)
        check_image_size(image, image_size, column, index)
        return image
    if is_text_column(column):
        return _checked_text(row, column, index)
    return row[column]


def validate_multimodal_dataset(
    dataset, columns: Sequence[str], image_size: int | None = None, sample_size: int = 256
) -> None:
    """Check before training that ``dataset`` has ``columns`` and that sampled rows hold usable values.

    Every row is checked when the dataset has at most ``sample_size`` rows, else ``sample_size`` rows spread evenly
    over it (the collator checks every row it collates anyway). Raises a ValueError naming the column and row.
    """
    names = list(getattr(dataset, "column_names", None) or (dataset[0].keys() if len(dataset) else []))
    missing = [column for column in columns if column not in names]
    if missing:
        raise ValueError(f"The dataset has no column(s) {missing}; it has {names}. Rename or add them.")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty.")
    indices = np.linspace(0, len(dataset) - 1, min(sample_size, len(dataset))).round().astype(int).tolist()
    for column in columns:
        for index, value in zip(indices, _raw_values(dataset, column, indices)):
            checked_value({column: value}, column, index, image_size)


def _raw_values(dataset, column: str, indices: list[int]) -> list[Any]:
    """The column's values at ``indices``; ``datasets.Image`` columns undecoded, so a bad file names its row."""
    features = getattr(dataset, "features", None)
    if features is not None and type(features.get(column)).__name__ == "Image":
        from datasets import Image as ImageFeature

        dataset = dataset.cast_column(column, ImageFeature(decode=False))
    if hasattr(dataset, "select"):
        return list(dataset.select(indices)[column])
    return [dataset[index][column] for index in indices]


def stack_vectors(values: list[Sequence[float]]) -> dict[str, torch.Tensor]:
    """Processor for numeric vector columns: ``{"values": [B, d]}`` float32."""
    return {"values": torch.as_tensor(np.asarray(values, dtype=np.float32))}


def process_images(image_processor, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """``{"pixel_values": [B, C, H, W]}`` from an image processor (resizing, RGB conversion, normalisation)."""
    return {"pixel_values": image_processor(images=images, return_tensors="pt")["pixel_values"]}


def process_texts(tokenizer, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
    """``{"input_ids", "attention_mask"}`` [B, L], padded to the longest text and truncated to ``max_length``."""
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def clip_processors(processor, max_length: int | None = None) -> dict[str, Processor]:
    """Processors of a ``CLIPProcessor`` for every ``image*`` (pixel_values) and ``text*`` (token ids) column.

    ``max_length`` defaults to the tokenizer's ``model_max_length``.
    """
    return {
        f"{IMAGE_PREFIX}*": partial(process_images, processor.image_processor),
        f"{TEXT_PREFIX}*": partial(process_texts, processor.tokenizer, max_length=max_length),
    }


class MultiModalCollator:
    """Turn rows into ``{"features": {column: {name: Tensor[B, ...]}}, "labels": [B]}`` (see the module docstring).

    Args:
        processors: ``{column: processor}``; a key ending in ``*`` serves every column with that prefix (the
            longest matching prefix wins; an exact name wins over any prefix). A processor maps the batch's list of
            values to ``{name: Tensor[B, ...]}``. Dataset columns without a processor are not collated.
        views: ``{view_column: (source_column, transform)}``; ``transform(value) -> value`` runs on every row's
            (opened) source value, then the source column's processor runs.
        label_column: a dataset column of labels, collated as ``labels`` [B]: int64 for class labels, float32 for
            regression targets.
        image_size: require every image to be ``image_size`` x ``image_size`` pixels (a processor that does not
            resize); None accepts any size.
    """

    def __init__(
        self,
        processors: Mapping[str, Processor],
        views: Mapping[str, View] | None = None,
        label_column: str | None = None,
        image_size: int | None = None,
    ) -> None:
        self.processors = dict(processors)
        self.views = dict(views or {})
        self.label_column = label_column
        self.image_size = image_size
        for view, (source, _) in self.views.items():
            if self.processor_for(source) is None:
                raise ValueError(f"View {view!r} reads column {source!r}, which has no processor.")

    def processor_for(self, column: str) -> Processor | None:
        """The processor of ``column`` (a view's is its source's); None when no key matches."""
        if column in self.views and self.views[column][0] != column:  # a view may replace its source in place
            return self.processor_for(self.views[column][0])
        if column in self.processors:
            return self.processors[column]
        prefixes = [key[:-1] for key in self.processors if key.endswith("*") and column.startswith(key[:-1])]
        return self.processors[max(prefixes, key=len) + "*"] if prefixes else None

    def columns(self, column_names: Sequence[str]) -> list[str]:
        """The collated columns for a dataset with ``column_names``: those with a processor, then the views."""
        return [c for c in column_names if c != self.label_column and self.processor_for(c) is not None] + [
            view for view in self.views if view not in column_names
        ]

    def source_columns(self, columns: Sequence[str]) -> list[str]:
        """The dataset columns that ``columns`` (collated columns or views) read."""
        return list(dict.fromkeys(self.views[c][0] if c in self.views else c for c in columns))

    def process(
        self, column: str, values: list[Any], first_row: int = 0, augment: bool = True
    ) -> dict[str, torch.Tensor]:
        """Check, transform (views, unless ``augment=False``) and process raw ``values`` of ``column``.

        Rows are numbered from ``first_row`` in error messages. Evaluation embeds with ``augment=False``, so a view
        that replaces its source column (``{"image": ("image", weak_crop)}``) never augments evaluation inputs.
        """
        processor = self.processor_for(column)
        if processor is None:
            raise ValueError(f"Column {column!r} has no processor; processors: {sorted(self.processors)}.")
        source, transform = self.views.get(column, (column, None))
        if not augment:
            transform = None
        checked = [
            checked_value({source: value}, source, first_row + index, self.image_size)
            for index, value in enumerate(values)
        ]
        return processor([transform(value) for value in checked] if transform is not None else checked)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        columns = self.columns(list(rows[0]))
        features = {}
        for column in columns:
            source = self.views[column][0] if column in self.views else column
            if any(source not in row for row in rows):
                index = next(i for i, row in enumerate(rows) if source not in row)
                raise ValueError(f"Row {index} has no column {source!r}; it has {sorted(rows[index])}.")
            features[column] = self.process(column, [row[source] for row in rows])
        batch: dict[str, Any] = {"features": features}
        if self.label_column is not None:
            batch["labels"] = torch.tensor([row[self.label_column] for row in rows])  # int64 classes, float targets
        return batch
