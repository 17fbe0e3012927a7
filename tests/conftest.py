"""Shared fixtures: a tiny WordPiece tokenizer and tiny BERT encoders built from configs (no downloads)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SENTENCES = [
    "the cat sat on the mat",
    "a dog runs in the park",
    "rain falls on the quiet town",
    "the chef cooks pasta with garlic",
    "stocks rose after the bank report",
    "the band played a loud song",
    "children read books in the library",
    "a storm hit the coast at night",
    "the team won the final match",
    "fresh bread smells good in the morning",
    "the river flows past the old mill",
    "she plays the violin every evening",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from hf_contrastive.models.tokenizer import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer(SENTENCES * 4, vocab_size=200)


def make_tiny_encoder(vocab_size: int, seed: int = 0, **encoder_kwargs):
    from transformers import BertConfig

    from hf_contrastive import ContrastiveEncoder

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return ContrastiveEncoder.from_backbone(config, **encoder_kwargs)


@pytest.fixture
def tiny_encoder(tiny_tokenizer):
    return make_tiny_encoder(len(tiny_tokenizer))
