"""The offline image loaders read the real files in ../shared/data and caption rows reproducibly."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from hf_contrastive.data.images import (
    CAPTION_TEMPLATES,
    add_captions,
    class_prompts,
    digit_caption,
    load_mnist,
    load_sklearn_digits,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_load_mnist_reads_images_and_labels_in_file_order():
    dataset = load_mnist(DATA / "mnist-test", limit=20)
    assert len(dataset) == 20
    first = dataset[0]
    assert first["image"].size == (28, 28) and first["image"].mode == "L"
    assert dataset["label"][:10] == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known head of the MNIST test split
    assert np.asarray(first["image"]).max() == 255


def test_load_mnist_rejects_a_file_that_is_not_idx(tmp_path):
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(b"\x00\x00\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="expected IDX magic number 2051"):
        load_mnist(tmp_path)


def test_sklearn_digits_are_scaled_to_bytes_and_upscaled():
    dataset = load_sklearn_digits(DATA / "sklearn-bundled" / "digits.csv.gz", upscale=4)
    assert len(dataset) == 1797
    assert dataset[0]["image"].size == (32, 32)
    pixels = np.asarray(dataset[0]["image"])
    assert pixels.max() == round(15 * 255 / 16)  # the first digit's brightest value is 15 of 16
    assert (pixels[:4, :4] == pixels[0, 0]).all() and (pixels[8:12, 8:12] == pixels[8, 8]).all()  # 4x4 blocks
    assert sorted(set(dataset["label"])) == list(range(10))


def test_captions_follow_the_labels_and_the_seed():
    dataset = load_mnist(DATA / "mnist-test", limit=30)
    first, again = add_captions(dataset, seed=3), add_captions(dataset, seed=3)
    assert first["caption"] == again["caption"]
    assert add_captions(dataset, seed=4)["caption"] != first["caption"]
    expected = {digit_caption(7, template) for template in CAPTION_TEMPLATES}
    assert first[0]["caption"] in expected
    assert digit_caption(3, "a scanned digit {digit} ({word})") == "a scanned digit 3 (three)"
    assert class_prompts([0, 9], ["the number {word}"]) == [["the number zero"], ["the number nine"]]
