"""Build a small WordPiece tokenizer offline (quickstart, tests): no download, BERT-style special tokens.

The vocabulary is counted in Python and sorted by (frequency, word), so the same texts give the same tokenizer in
every process. (The ``tokenizers`` WordPiece trainer breaks frequency ties differently from run to run, which made
runs irreproducible and would give each rank of a distributed run its own vocabulary.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_vocabulary(texts: Iterable[str], vocab_size: int) -> dict[str, int]:
    """Special tokens, every character (alone and as a ``##`` continuation), then the most frequent words.

    Characters come first so that WordPiece can spell any word it has seen characters of; words fill the rest of
    ``vocab_size`` by descending frequency, ties broken alphabetically.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    characters = sorted({char for word in counts for char in word})
    tokens = [*SPECIAL_TOKENS, *characters, *(f"##{char}" for char in characters)]
    known = set(tokens)
    for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(tokens) >= vocab_size:
            break
        if word not in known:
            tokens.append(word)
            known.add(word)
    return {token: index for index, token in enumerate(tokens)}


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 2000, model_max_length: int = 128
) -> PreTrainedTokenizerFast:
    """A lower-casing WordPiece tokenizer built from ``texts``, wrapped for transformers (adds [CLS] ... [SEP])."""
    vocabulary = build_vocabulary(texts, vocab_size)
    tokenizer = Tokenizer(models.WordPiece(vocab=vocabulary, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    cls_id, sep_id = vocabulary["[CLS]"], vocabulary["[SEP]"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )
