"""Small real image sets read offline (MNIST test split, scikit-learn digits) and the captions recipes write for them.

No captioned images are available offline, so recipes caption labelled digits from templates
(``"a photo of the digit seven"``). Loaders return ``datasets.Dataset`` rows ``{"image": PIL.Image (mode "L"),
"label": int}``; nothing is copied into the project.
"""

from __future__ import annotations

import gzip
import random
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, Features, Image, Value

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Caption templates for training pairs; ``{word}`` is the digit's name, ``{digit}`` its numeral.
CAPTION_TEMPLATES = (
    "a photo of the digit {word}",
    "a handwritten {word}",
    "the number {word} written by hand",
    "a black and white image of a {word}",
    "a scanned digit {digit}",
    "a small picture of the numeral {word}",
)

# CLIP-style class prompts for zero-shot classification (class embedding = mean of the normalised prompts).
CLASS_PROMPT_TEMPLATES = ("a photo of the digit {word}", "a handwritten {word}", "the number {word}")

IMAGE_FEATURES = Features({"image": Image(), "label": Value("int64")})


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a gzip'd IDX file (the MNIST format): big-endian magic, dimension sizes, then uint8 values."""
    with gzip.open(path, "rb") as handle:
        found, *_ = struct.unpack(">I", handle.read(4))
        if found != magic:
            raise ValueError(f"{path}: expected IDX magic number {magic}, found {found}; is this an MNIST file?")
        dims = struct.unpack(">" + "I" * (magic & 0xFF), handle.read(4 * (magic & 0xFF)))
        return np.frombuffer(handle.read(), dtype=np.uint8).reshape(dims)


def load_mnist(directory: str | Path, limit: int | None = None) -> Dataset:
    """The MNIST test split in ``directory`` (``t10k-images-idx3-ubyte.gz`` + labels) as ``{"image", "label"}`` rows.

    ``limit``: keep the first ``limit`` rows (the file order is already mixed across classes).
    """
    directory = Path(directory)
    images = _read_idx(directory / "t10k-images-idx3-ubyte.gz", 2051)
    labels = _read_idx(directory / "t10k-labels-idx1-ubyte.gz", 2049)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return _image_dataset(images, labels)


def load_sklearn_digits(path: str | Path, upscale: int = 1) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (``digits.csv.gz``: 64 pixel values 0-16, then the label) as image rows.

    ``upscale``: repeat each pixel this many times per side (nearest neighbour), e.g. 4 for 32x32 images.
    """
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    pixels = (table[:, :64].reshape(-1, 8, 8) * (255.0 / 16.0)).round().astype(np.uint8)
    if upscale > 1:
        pixels = pixels.repeat(upscale, axis=1).repeat(upscale, axis=2)
    return _image_dataset(pixels, table[:, 64].astype(np.int64))


def _image_dataset(images: np.ndarray, labels: np.ndarray) -> Dataset:
    from PIL import Image as PILImage

    rows = {"image": [PILImage.fromarray(image, mode="L") for image in images], "label": labels.tolist()}
    return Dataset.from_dict(rows, features=IMAGE_FEATURES)


def digit_caption(label: int, template: str) -> str:
    """Fill a caption template for digit ``label`` (``{word}``: "seven", ``{digit}``: "7")."""
    return template.format(word=DIGIT_WORDS[label], digit=label)


def add_captions(
    dataset: Dataset, templates: Sequence[str] = CAPTION_TEMPLATES, seed: int = 0, column: str = "caption"
) -> Dataset:
    """Add a ``caption`` column: each row's label written with a template drawn at random (seeded)."""
    rng = random.Random(seed)
    captions = [digit_caption(label, rng.choice(templates)) for label in dataset["label"]]
    return dataset.add_column(column, captions)


def class_prompts(labels: Sequence[int], templates: Sequence[str] = CLASS_PROMPT_TEMPLATES) -> list[list[str]]:
    """For each class label, its prompts under every template (zero-shot classification)."""
    return [[digit_caption(label, template) for template in templates] for label in labels]
