"""A tiny BERT-style WordPiece tokenizer built offline from a few sentences (the library's own builder)."""

import pytest
from transformers import PreTrainedTokenizerFast

from hf_contrastive.models.tokenizer import train_wordpiece_tokenizer

SENTENCES = [
    "The dog chases the rabbit in the park.",
    "A cat sleeps on the warm sofa.",
    "The striker kicks the ball at the weekend.",
    "The chef chops onions in the evening.",
    "The investor buys shares in the city.",
    "The doctor treats the patient in the laboratory.",
]


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    """A lower-casing WordPiece tokenizer that adds [CLS] ... [SEP] and pads with [PAD] (id 0)."""
    return train_wordpiece_tokenizer(SENTENCES, vocab_size=200)
