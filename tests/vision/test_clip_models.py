"""Small CLIP builders: the text tower pools at the tokenizer's [SEP], and the accessors return [B, D] tensors."""

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from hf_contrastive.models.clip import image_embeddings, small_clip_config, text_embeddings

from .helpers import CAPTIONS, random_images, tiny_clip, tiny_clip_processor, tiny_clip_tokenizer


def test_text_tower_pools_at_the_separator_token():
    tokenizer = tiny_clip_tokenizer()
    model = tiny_clip(tokenizer).eval()
    assert model.config.text_config.eos_token_id == tokenizer.sep_token_id
    batch = tokenizer(CAPTIONS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = text_embeddings(model, batch["input_ids"], batch["attention_mask"])
        hidden = model.text_model(**batch).last_hidden_state
        sep_positions = (batch["input_ids"] == tokenizer.sep_token_id).int().argmax(dim=1)
        expected = model.text_projection(hidden[torch.arange(2), sep_positions])
    torch.testing.assert_close(pooled, expected)


def test_accessors_return_projected_embeddings():
    tokenizer = tiny_clip_tokenizer()
    model = tiny_clip(tokenizer)
    inputs = tiny_clip_processor(tokenizer)(images=random_images(3), return_tensors="pt")
    assert image_embeddings(model, inputs["pixel_values"]).shape == (3, model.config.projection_dim)


def test_a_tokenizer_without_an_end_token_is_refused():
    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]")))
    with pytest.raises(ValueError, match="sep_token or eos_token"):
        small_clip_config(bare)
