"""Image loading, dataset validation and the multimodal collator: accepted values, views, and named errors."""

import io

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from hf_contrastive.data.multimodal import (
    MultiModalCollator,
    clip_processors,
    load_image,
    stack_vectors,
    validate_multimodal_dataset,
)

from .helpers import CAPTIONS, IMAGE_SIZE, random_images, tiny_clip_processor, tiny_clip_tokenizer


@pytest.fixture(scope="module")
def processor():
    return tiny_clip_processor(tiny_clip_tokenizer())


def png_bytes(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_accepted_image_form_opens_to_the_same_pixels(tmp_path):
    image = random_images(1, size=5)[0]
    path = tmp_path / "digit.png"
    image.save(path)
    pixels = np.asarray(image)
    forms = [image, str(path), path, png_bytes(image), {"bytes": png_bytes(image), "path": None}, pixels]
    forms += [pixels[:, :, None], torch.from_numpy(pixels.copy())]
    for value in forms:
        np.testing.assert_array_equal(np.asarray(load_image(value, "image", 0)), pixels)
    rgb = np.stack([pixels] * 3, axis=-1)
    assert load_image(rgb, "image", 0).mode == "RGB"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/no/such/file.png", "does not exist"),
        (b"not an image", "cannot be read as an image"),
        (42, "expected an image"),
        (np.zeros((4, 4), dtype=np.float32), "must be uint8"),
        (np.zeros((4, 4, 2), dtype=np.uint8), "must be uint8 of shape"),
    ],
)
def test_unreadable_images_name_the_column_and_row(value, message):
    with pytest.raises(ValueError, match=rf"Column 'image_view', row 7: .*{message}"):
        load_image(value, "image_view", 7)


def test_validation_finds_missing_columns_bad_rows_and_wrong_sizes(tmp_path):
    images = random_images(6)
    paths = []
    for index, image in enumerate(images):
        paths.append(str(tmp_path / f"{index}.png"))
        image.save(paths[-1])
    paths[4] = str(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"no column\(s\) \['text'\]"):
        validate_multimodal_dataset(Dataset.from_dict({"image": paths}), ["image", "text"])
    with pytest.raises(ValueError, match=r"Column 'image', row 4: .*does not exist"):
        validate_multimodal_dataset(Dataset.from_dict({"image": paths, "text": CAPTIONS[:6]}), ["image", "text"])
    with pytest.raises(ValueError, match=r"Column 'text', row 2: the text is empty"):
        validate_multimodal_dataset(Dataset.from_dict({"text": ["a", "b", " ", "c"]}), ["text"])
    sized = Dataset.from_dict({"image": images[:3] + random_images(1, size=IMAGE_SIZE + 4)})
    validate_multimodal_dataset(sized, ["image"])  # any size is fine without a required size
    with pytest.raises(ValueError, match=rf"Column 'image', row 3: the image is 20x20 pixels but {IMAGE_SIZE}x"):
        validate_multimodal_dataset(sized, ["image"], image_size=IMAGE_SIZE)


def test_validation_reads_corrupt_bytes_of_an_image_feature_without_crashing_in_datasets():
    rows = {"image": [{"bytes": png_bytes(image), "path": None} for image in random_images(3)], "label": [0, 1, 2]}
    rows["image"][1] = {"bytes": b"\x89PNG broken", "path": None}
    dataset = Dataset.from_dict(rows, features=Features({"image": Image(), "label": Value("int64")}))
    with pytest.raises(ValueError, match=r"Column 'image', row 1: the 11 bytes cannot be read"):
        validate_multimodal_dataset(dataset, ["image"])


def test_validation_samples_large_datasets_evenly():
    texts = [f"text {i}" for i in range(1000)]
    texts[500] = ""  # between the sampled rows: the collator will catch it
    validate_multimodal_dataset(Dataset.from_dict({"text": texts}), ["text"], sample_size=10)
    texts[999] = ""  # the last row is always sampled
    with pytest.raises(ValueError, match="row 999"):
        validate_multimodal_dataset(Dataset.from_dict({"text": texts}), ["text"], sample_size=10)


def test_collator_processes_images_texts_views_and_labels(processor):
    images = random_images(3, mode="RGB")

    def flip(image):
        return image.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT)

    collator = MultiModalCollator(
        clip_processors(processor), views={"image_view_1": ("image", flip)}, label_column="label"
    )
    rows = [
        {"image": image, "text": text, "label": i, "other": 0} for i, (image, text) in enumerate(zip(images, CAPTIONS))
    ]
    batch = collator(rows)
    assert list(batch["features"]) == ["image", "text", "image_view_1"]  # "other" has no processor
    pixels = batch["features"]["image"]["pixel_values"]
    assert pixels.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(batch["features"]["image_view_1"]["pixel_values"], pixels.flip(-1))
    expected = processor.tokenizer(CAPTIONS[:3], padding=True, return_tensors="pt")
    torch.testing.assert_close(batch["features"]["text"]["input_ids"], expected["input_ids"])
    assert batch["labels"].tolist() == [0, 1, 2]


def test_exact_processor_names_win_over_prefixes():
    exact, prefix, longer = (lambda v: {"which": 0}), (lambda v: {"which": 1}), (lambda v: {"which": 2})
    collator = MultiModalCollator({"image_a": exact, "image*": prefix, "image_b*": longer})
    assert collator.processor_for("image_a") is exact
    assert collator.processor_for("image_x") is prefix
    assert collator.processor_for("image_b2") is longer
    assert collator.processor_for("caption") is None
    with pytest.raises(ValueError, match="View 'v' reads column 'caption', which has no processor"):
        MultiModalCollator({"image*": prefix}, views={"v": ("caption", lambda value: value)})


def test_collator_checks_every_row_with_the_same_messages(processor):
    collator = MultiModalCollator(clip_processors(processor), image_size=IMAGE_SIZE)
    rows = [{"image": image, "text": "a handwritten one"} for image in random_images(2)]
    rows[1]["image"] = random_images(1, size=8)[0]
    with pytest.raises(ValueError, match=rf"Column 'image', row 1: the image is 8x8 pixels but {IMAGE_SIZE}x"):
        collator(rows)
    with pytest.raises(ValueError, match="Row 1 has no column 'image'"):
        collator([{"image": random_images(1)[0], "text": "x"}, {"text": "y"}])


def test_vectors_are_stacked_as_float32():
    batch = MultiModalCollator({"a": stack_vectors})([{"a": [1, 2]}, {"a": [3, 4]}])
    assert batch["features"]["a"]["values"].dtype == torch.float32
    assert batch["features"]["a"]["values"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
