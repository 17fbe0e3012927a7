"""The offline tokenizer: deterministic across processes, spells unseen words from characters."""

import subprocess
import sys

from hf_contrastive.models.tokenizer import build_vocabulary, train_wordpiece_tokenizer

TEXTS = ["the cat sat", "the dog sat", "a cat ran", "The end."]


def test_vocabulary_orders_specials_characters_then_words_by_frequency():
    vocabulary = build_vocabulary(TEXTS, vocab_size=1000)
    tokens = list(vocabulary)
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [t for t in tokens if len(t) > 1 and not t.startswith(("##", "["))]
    assert words == ["the", "cat", "sat", "dog", "end", "ran"]  # 3, 2, 2 then alphabetical ties of 1


def test_vocab_size_caps_the_words():
    full = build_vocabulary(TEXTS, vocab_size=1000)
    capped = build_vocabulary(TEXTS, vocab_size=len(full) - 2)
    assert len(capped) == len(full) - 2 and "the" in capped and "ran" not in capped


def test_unseen_words_are_spelled_and_specials_added():
    tokenizer = train_wordpiece_tokenizer(TEXTS, vocab_size=1000)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("the cast")["input_ids"])
    assert tokens == ["[CLS]", "the", "c", "##a", "##s", "##t", "[SEP]"]
    assert tokenizer.pad_token_id == 0


def test_same_texts_give_the_same_tokenizer_in_another_process():
    code = (
        "from hf_contrastive.models.tokenizer import build_vocabulary; "
        f"print(sorted(build_vocabulary({TEXTS!r}, 1000).items()))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other == str(sorted(build_vocabulary(TEXTS, 1000).items())) + "\n"
