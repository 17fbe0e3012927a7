"""Image views (sizes, determinism, weak = no colour) and EDA text operations on hand examples."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_contrastive.data.augment import (
    PILColorJitter,
    PILRandomResizedCrop,
    TextView,
    clip_rocket_views,
    random_deletion,
    random_swap,
    remove_stopwords,
    strong_image_view,
    synonym_replacement,
    weak_image_view,
)
from tests.vision.helpers import random_images

COLOUR = (200, 30, 90)


def _constant_rgb(size=(24, 20)):
    return Image.new("RGB", size, COLOUR)


def _backends():
    """The PIL backend always; torchvision v2 too where it imports (the GPU machine)."""
    try:
        weak_image_view(8, backend="torchvision")
    except ImportError:
        return ["pil"]
    return ["pil", "torchvision"]


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("mode,size", [("L", 28), ("RGB", 20)])
def test_views_have_the_requested_size_and_keep_the_mode(backend, mode, size):
    image = random_images(1, size=size, mode=mode)[0]
    for view in (weak_image_view(16, backend=backend), strong_image_view(16, flip=True, backend=backend)):
        for seed in range(5):
            torch.manual_seed(seed)
            out = view(image)
            assert out.size == (16, 16) and out.mode == mode


@pytest.mark.parametrize("backend", _backends())
def test_views_are_deterministic_under_a_seed(backend):
    image = random_images(1, size=28, mode="RGB")[0]
    view = strong_image_view(16, backend=backend)
    torch.manual_seed(3)
    first = np.asarray(view(image))
    torch.manual_seed(3)
    second = np.asarray(view(image))
    others = []
    for seed in range(4, 8):
        torch.manual_seed(seed)
        others.append(np.asarray(view(image)))
    np.testing.assert_array_equal(first, second)
    assert any(not np.array_equal(first, other) for other in others)


@pytest.mark.parametrize("backend", _backends())
def test_weak_view_never_changes_colours_but_strong_jitter_does(backend):
    weak = weak_image_view(12, backend=backend)
    strong = strong_image_view(12, color_jitter_p=1.0, grayscale_p=0.0, blur_p=0.0, flip=False, backend=backend)
    changed = 0
    for seed in range(10):
        torch.manual_seed(seed)
        pixels = np.asarray(weak(_constant_rgb())).reshape(-1, 3)
        assert (pixels == COLOUR).all(), "the weak (global) view must only crop and resize"
        changed += not (np.asarray(strong(_constant_rgb())).reshape(-1, 3) == COLOUR).all()
    assert changed == 10


def test_strong_view_steps_follow_the_flags():
    with_flip = strong_image_view(16, flip=True, backend="pil")
    without_flip = strong_image_view(16, flip=False, backend="pil")
    assert len(with_flip.steps) == len(without_flip.steps) + 1
    assert "PILHorizontalFlip" not in repr(without_flip) and "RandomApply" in repr(with_flip)
    assert [type(step).__name__ for step in weak_image_view(16, backend="pil").steps] == ["PILRandomResizedCrop"]


def test_crop_box_lies_inside_the_image_with_area_in_the_scale_range():
    crop = PILRandomResizedCrop(8, scale=(0.3, 0.6))
    torch.manual_seed(0)
    for _ in range(50):
        left, top, width, height = crop.crop_box(40, 30)
        assert 0 <= left and left + width <= 40 and 0 <= top and top + height <= 30
        # Rounding the sides moves the area a little around the drawn fraction.
        assert 0.25 <= width * height / 1200 <= 0.66


def test_color_jitter_leaves_grey_images_grey():
    image = random_images(1, size=16, mode="L")[0]
    torch.manual_seed(0)
    assert PILColorJitter(0.4, 0.4, 0.4, 0.1)(image).mode == "L"


def test_unreadable_image_value_is_a_clear_error():
    with pytest.raises(TypeError, match="Cannot read an image from a int"):
        weak_image_view(8, backend="pil")(3)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be"):
        weak_image_view(8, backend="opencv")


# ------------------------------------------------------------------------------------------------ text
def test_stopword_removal_on_hand_examples():
    assert remove_stopwords("a photo of the digit seven") == "photo digit seven"
    assert remove_stopwords("The number Two") == "number Two"
    assert remove_stopwords("of the a") == "of the a"  # nothing would remain: keep the caption


def test_synonym_replacement_replaces_every_occurrence_of_one_word():
    words = "a photo and a photo of seven".split()
    out = synonym_replacement(words, {"photo": ["picture"], "a": ["one"]})
    assert out == "a picture and a picture of seven".split()  # "a" is a stopword: never replaced
    assert synonym_replacement(words, {}) == words


def test_random_swap_exchanges_exactly_two_positions():
    words = "one two three four".split()
    torch.manual_seed(0)
    for _ in range(20):
        out = random_swap(words)
        assert sorted(out) == sorted(words)
        assert sum(a != b for a, b in zip(out, words)) == 2
    assert random_swap(["alone"]) == ["alone"]


def test_random_deletion_limits():
    words = "one two three four".split()
    assert random_deletion(words, 0.0) == words
    torch.manual_seed(0)
    survivor = random_deletion(words, 1.0)
    assert len(survivor) == 1 and survivor[0] in words
    assert random_deletion(["alone"], 1.0) == ["alone"]


def test_text_views():
    caption = "a photo of the digit seven"
    assert TextView(stopword_prob=1.0)(caption) == "photo digit seven"
    assert TextView(stopword_prob=0.0)(caption) == caption
    swap_only = TextView(stopword_prob=0.0, strong=True, weights={"random_swap": 1.0})
    torch.manual_seed(0)
    swapped = swap_only(caption).split()
    assert sorted(swapped) == sorted(caption.split()) and swapped != caption.split()
    synonyms = TextView(
        stopword_prob=1.0, strong=True, synonyms={"photo": ["picture"]}, weights={"synonym_replacement": 1}
    )
    assert synonyms(caption) == "picture digit seven"
    assert TextView(lowercase=True, stopword_prob=0.0)("  A  Photo ") == "a photo"
    with pytest.raises(TypeError, match="string caption"):
        TextView()(None)
    with pytest.raises(ValueError, match="weights"):
        TextView(weights={"back_translation": 1.0})


def test_text_view_is_deterministic_under_a_seed():
    view = TextView(stopword_prob=0.5, strong=True, synonyms={"photo": ["picture", "image"]})
    captions = ["a photo of the digit seven", "the number two written by hand"] * 5
    torch.manual_seed(1)
    first = [view(c) for c in captions]
    torch.manual_seed(1)
    assert [view(c) for c in captions] == first


def test_clip_rocket_views_name_the_local_columns_and_replace_the_global_ones():
    views = clip_rocket_views(16, num_augs=2, image_column="image", text_column="text", backend="pil")
    assert sorted(views) == ["image", "image_view_1", "image_view_2", "text", "text_view_1", "text_view_2"]
    assert views["image_view_1"][0] == "image" and views["text_view_2"][0] == "text"
    assert views["image"][0] == "image" and views["text"][0] == "text"  # weak views in place of the sources
    local_only = clip_rocket_views(16, num_augs=2, backend="pil", global_views=False)
    assert sorted(local_only) == ["image_view_1", "image_view_2", "text_view_1", "text_view_2"]


def test_in_place_views_augment_training_batches_but_not_evaluation_inputs():
    from hf_contrastive.data.multimodal import MultiModalCollator

    collator = MultiModalCollator({"text": lambda texts: {"texts": texts}}, views={"text": ("text", str.upper)})
    assert collator.columns(["text"]) == ["text"]
    assert collator([{"text": "a seven"}])["features"]["text"] == {"texts": ["A SEVEN"]}
    assert collator.process("text", ["a seven"], augment=False) == {"texts": ["a seven"]}
