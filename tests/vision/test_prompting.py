"""The soft-prompt text encoder equals CLIP's text tower on hard-prompt contexts, routes gradients only to contexts,
and refuses class names that cannot be laid out."""

from __future__ import annotations

import pytest
import torch

from hf_contrastive.models.clip import text_embeddings
from hf_contrastive.models.prompting import (
    build_prompt_layout,
    class_token_ids,
    encode_prompts,
    prompt_special_ids,
    template_context_words,
    word_embeddings,
)

from .helpers import tiny_clip, tiny_clip_tokenizer

NAMES = ["three", "seven", "zero"]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_clip_tokenizer()


@pytest.fixture(scope="module")
def clip(tokenizer):
    return tiny_clip(tokenizer, seed=3).eval().requires_grad_(False)


def _layout(tokenizer, names, n_before, n_after, max_length=24):
    ids = class_token_ids(tokenizer, names)
    return build_prompt_layout(ids, n_before, n_after, prompt_special_ids(tokenizer), max_length, names)


def _reference(clip, tokenizer, texts):
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    return text_embeddings(clip, encoded["input_ids"], encoded["attention_mask"])


def test_hard_prompt_context_equals_text_tower(clip, tokenizer):
    before = word_embeddings(clip, tokenizer, "a photo of the")
    after = word_embeddings(clip, tokenizer, "digit")
    layout = _layout(tokenizer, NAMES, len(before), len(after))
    features = encode_prompts(clip, layout, before, after)
    expected = _reference(clip, tokenizer, [f"a photo of the {name} digit" for name in NAMES])
    assert features.shape == (3, 16)
    torch.testing.assert_close(features, expected, atol=1e-6, rtol=0)


def test_per_expert_and_per_class_contexts(clip, tokenizer):
    """[E, 1, n, H] gives one prompt set per expert; [C, n, H] gives each class its own words."""
    contexts = {words: word_embeddings(clip, tokenizer, words) for words in ("a photo of the", "a small picture of")}
    layout = _layout(tokenizer, NAMES, 4, 0)
    per_expert = torch.stack(list(contexts.values())).unsqueeze(1)
    features = encode_prompts(clip, layout, per_expert)
    for expert, words in enumerate(contexts):
        expected = _reference(clip, tokenizer, [f"{words} {name}" for name in NAMES])
        torch.testing.assert_close(features[expert], expected, atol=1e-6, rtol=0)
    per_class = torch.stack([contexts["a photo of the"], contexts["a small picture of"], contexts["a photo of the"]])
    mixed = encode_prompts(clip, layout, per_class)
    expected = _reference(clip, tokenizer, ["a photo of the three", "a small picture of seven", "a photo of the zero"])
    torch.testing.assert_close(mixed, expected, atol=1e-6, rtol=0)


def test_gradient_reaches_only_the_context(clip, tokenizer):
    before = word_embeddings(clip, tokenizer, "a photo of the").requires_grad_(True)
    layout = _layout(tokenizer, NAMES, len(before), 0)
    encode_prompts(clip, layout, before).square().sum().backward()
    assert before.grad is not None and before.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in clip.parameters())


def test_template_context_words_drop_periods():
    assert template_context_words("a photo of the digit {}.") == ("a photo of the digit", "")
    assert template_context_words("a {} in a video game.") == ("a", "in a video game")
    with pytest.raises(ValueError, match="exactly one"):
        template_context_words("a photo of a digit.")


def test_empty_class_name_is_refused(tokenizer):
    with pytest.raises(ValueError, match=r"\['  '\].*no tokens"):
        class_token_ids(tokenizer, ["three", "  "])


def test_prompt_too_long_names_the_class(tokenizer):
    with pytest.raises(ValueError, match="seven.*exceed the text tower's 8 positions"):
        _layout(tokenizer, ["seven"], 5, 2, max_length=8)


def test_context_shape_mismatch_is_refused(clip, tokenizer):
    layout = _layout(tokenizer, NAMES, 4, 0)
    with pytest.raises(ValueError, match="does not match the layout"):
        encode_prompts(clip, layout, torch.zeros(3, 16))
