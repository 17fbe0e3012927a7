"""Tiny CLIP models, processors and images for the vision-language tests (built from configs, no downloads)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from hf_contrastive.data.images import CAPTION_TEMPLATES, DIGIT_WORDS, digit_caption
from hf_contrastive.models.clip import clip_processor, small_clip
from hf_contrastive.models.tokenizer import train_wordpiece_tokenizer

IMAGE_SIZE = 16
CAPTIONS = [digit_caption(label, template) for label in range(10) for template in CAPTION_TEMPLATES]


def tiny_clip_tokenizer():
    """A WordPiece tokenizer over every digit caption (and the digit names) that ends each text with [SEP]."""
    return train_wordpiece_tokenizer(CAPTIONS + list(DIGIT_WORDS), vocab_size=300, model_max_length=24)


def tiny_clip(tokenizer, seed: int = 0, **config_kwargs):
    """A 1-layer CLIP with 16x16 images, 8x8 patches and 16-dim embeddings."""
    options = {"image_size": IMAGE_SIZE, "patch_size": 8, "hidden_size": 16, "num_layers": 1, "num_heads": 2}
    options.update(projection_dim=16, max_text_length=24, **config_kwargs)
    return small_clip(tokenizer, seed=seed, **options)


def tiny_clip_processor(tokenizer):
    return clip_processor(tokenizer, image_size=IMAGE_SIZE)


def save_tiny_clip(folder, seed: int = 0):
    """Save an untrained tiny ``CLIPModel`` and its processor to ``folder`` (what recipes take as ``--clip-path``)."""
    tokenizer = tiny_clip_tokenizer()
    tiny_clip(tokenizer, seed=seed).save_pretrained(folder)
    tiny_clip_processor(tokenizer).save_pretrained(folder)
    return folder


def random_images(count: int, size: int = IMAGE_SIZE, seed: int = 0, mode: str = "L") -> list[Image.Image]:
    """``count`` random greyscale (or RGB) PIL images of ``size`` x ``size`` pixels."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode) for _ in range(count)]
